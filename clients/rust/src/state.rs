//! What the client knows about the room: participants and their tracks, kept up to date from
//! server pushes. Pure state; turns pushes into [`RoomEvent`]s.

use std::collections::HashMap;

use prism_proto::signal::{
    JoinResponse, ParticipantInfo, Room as RoomInfo, TrackInfo, signal_response::Message,
};

use crate::events::RoomEvent;

#[derive(Debug, Clone, Default)]
pub(crate) struct RoomState {
    pub(crate) room: RoomInfo,
    pub(crate) local: ParticipantInfo,
    pub(crate) participants: HashMap<String, ParticipantInfo>,
}

impl RoomState {
    pub(crate) fn from_join(join: &JoinResponse) -> Self {
        Self {
            room: join.room.clone().unwrap_or_default(),
            local: join.participant.clone().unwrap_or_default(),
            participants: join
                .other_participants
                .iter()
                .map(|p| (p.sid.clone(), p.clone()))
                .collect(),
        }
    }

    /// The track with this sid and its publisher's sid.
    pub(crate) fn track(&self, track_sid: &str) -> Option<(String, TrackInfo)> {
        self.participants
            .values()
            .chain(std::iter::once(&self.local))
            .find_map(|p| {
                p.tracks
                    .iter()
                    .find(|t| t.sid == track_sid)
                    .map(|t| (p.sid.clone(), t.clone()))
            })
    }

    fn participant_mut(&mut self, sid: &str) -> Option<&mut ParticipantInfo> {
        if self.local.sid == sid {
            Some(&mut self.local)
        } else {
            self.participants.get_mut(sid)
        }
    }

    /// Applies a server push about participants or tracks and returns the events it makes.
    /// Messages that are not about room state return nothing.
    pub(crate) fn apply(&mut self, message: &Message) -> Vec<RoomEvent> {
        match message {
            Message::ParticipantJoined(m) => {
                let Some(p) = m.participant.clone() else {
                    return vec![];
                };
                if p.sid == self.local.sid {
                    return vec![];
                }
                self.participants.insert(p.sid.clone(), p.clone());
                vec![RoomEvent::ParticipantJoined(p)]
            }
            Message::ParticipantUpdated(m) => {
                let Some(p) = m.participant.clone() else {
                    return vec![];
                };
                if p.sid == self.local.sid {
                    self.local = p.clone();
                    return vec![RoomEvent::LocalParticipantUpdated(p)];
                }
                self.participants.insert(p.sid.clone(), p.clone());
                vec![RoomEvent::ParticipantUpdated(p)]
            }
            Message::ParticipantLeft(m) => {
                self.participants.remove(&m.participant_sid);
                vec![RoomEvent::ParticipantLeft {
                    participant_sid: m.participant_sid.clone(),
                    identity: m.identity.clone(),
                    reason: m.reason(),
                }]
            }
            Message::TrackPublished(m) => {
                let Some(track) = m.track.clone() else {
                    return vec![];
                };
                let local = m.participant_sid == self.local.sid;
                if let Some(p) = self.participant_mut(&m.participant_sid) {
                    p.tracks.retain(|t| t.sid != track.sid);
                    p.tracks.push(track.clone());
                } else {
                    // A publisher we were never told about: remember it minimally so the
                    // track can still be matched when its media arrives.
                    self.participants.insert(
                        m.participant_sid.clone(),
                        ParticipantInfo {
                            sid: m.participant_sid.clone(),
                            tracks: vec![track.clone()],
                            ..Default::default()
                        },
                    );
                }
                if local {
                    vec![RoomEvent::LocalTrackPublished { track }]
                } else {
                    vec![RoomEvent::TrackPublished {
                        participant_sid: m.participant_sid.clone(),
                        track,
                    }]
                }
            }
            Message::TrackUnpublished(m) => {
                if let Some(p) = self.participant_mut(&m.participant_sid) {
                    p.tracks.retain(|t| t.sid != m.track_sid);
                }
                vec![RoomEvent::TrackUnpublished {
                    participant_sid: m.participant_sid.clone(),
                    track_sid: m.track_sid.clone(),
                }]
            }
            Message::TrackMuted(m) => {
                if let Some(p) = self.participant_mut(&m.participant_sid)
                    && let Some(t) = p.tracks.iter_mut().find(|t| t.sid == m.track_sid)
                {
                    t.muted = m.muted;
                }
                vec![RoomEvent::TrackMuted {
                    participant_sid: m.participant_sid.clone(),
                    track_sid: m.track_sid.clone(),
                    muted: m.muted,
                }]
            }
            Message::Subscription(m) => vec![RoomEvent::SubscriptionUpdate(m.clone())],
            _ => vec![],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prism_proto::signal::*;

    fn joined() -> RoomState {
        let json = r#"{"join":{"room":{"sid":"RM_1","name":"r"},
            "participant":{"sid":"PA_me","identity":"me"},
            "otherParticipants":[{"sid":"PA_a","identity":"a",
               "tracks":[{"sid":"TR_a1","kind":"VIDEO","mimeType":"video/VP8"}]}],
            "pingIntervalMs":1000}}"#;
        let Ok(signal_response::Message::Join(join)) = crate::signaling::decode(json) else {
            panic!("join decodes");
        };
        RoomState::from_join(&join)
    }

    #[test]
    fn join_and_track_lookup() {
        let s = joined();
        assert_eq!(s.local.identity, "me");
        let (publisher, t) = s.track("TR_a1").unwrap();
        assert_eq!(publisher, "PA_a");
        assert_eq!(t.kind(), TrackKind::Video);
        assert!(s.track("TR_zz").is_none());
    }

    #[test]
    fn pushes_update_state_and_make_events() {
        let mut s = joined();
        let ev = s.apply(&signal_response::Message::TrackPublished(TrackPublished {
            participant_sid: "PA_me".into(),
            track: Some(TrackInfo {
                sid: "TR_mine".into(),
                cid: "c1".into(),
                ..Default::default()
            }),
        }));
        assert!(matches!(&ev[..], [RoomEvent::LocalTrackPublished { track }] if track.cid == "c1"));
        assert_eq!(s.local.tracks.len(), 1);

        let ev = s.apply(&signal_response::Message::TrackMuted(TrackMuted {
            participant_sid: "PA_a".into(),
            track_sid: "TR_a1".into(),
            muted: true,
        }));
        assert_eq!(ev.len(), 1);
        assert!(s.track("TR_a1").unwrap().1.muted);

        let ev = s.apply(&signal_response::Message::TrackUnpublished(
            TrackUnpublished {
                participant_sid: "PA_a".into(),
                track_sid: "TR_a1".into(),
            },
        ));
        assert_eq!(ev.len(), 1);
        assert!(s.track("TR_a1").is_none());

        let ev = s.apply(&signal_response::Message::ParticipantLeft(
            ParticipantLeft {
                participant_sid: "PA_a".into(),
                identity: "a".into(),
                reason: DisconnectReason::ClientInitiated as i32,
            },
        ));
        assert!(
            matches!(&ev[..], [RoomEvent::ParticipantLeft { reason, .. }]
            if *reason == DisconnectReason::ClientInitiated)
        );
        assert!(s.participants.is_empty());
    }

    #[test]
    fn messages_without_payload_are_ignored() {
        let mut s = joined();
        let ev = s.apply(&signal_response::Message::ParticipantJoined(
            ParticipantJoined { participant: None },
        ));
        assert!(ev.is_empty());
        let ev = s.apply(&signal_response::Message::TrackPublished(TrackPublished {
            participant_sid: "PA_x".into(),
            track: None,
        }));
        assert!(ev.is_empty());
    }
}
