//! What the control plane changes in a room on a participant's behalf: name, metadata and
//! permissions (taking effect at once), and subscriptions by identity.

use prism_proto::signal::signal_response::Message;
use prism_proto::signal::{self as pb, ParticipantInfo, ParticipantPermission};

use super::RoomError;
use super::events;
use super::state::{Room, message};

/// What UpdateParticipant changes; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct ParticipantUpdate {
    pub name: Option<String>,
    pub metadata: Option<String>,
    pub permission: Option<ParticipantPermission>,
}

impl Room {
    /// Updates a participant. Revoking `can_publish` unpublishes its tracks; revoking
    /// `can_subscribe` ends its subscriptions; granting `can_subscribe` to an auto-subscriber
    /// subscribes it to every track. Everyone, the participant included, is told.
    pub fn update_participant(
        &self,
        identity: &str,
        update: ParticipantUpdate,
    ) -> Result<ParticipantInfo, RoomError> {
        let mut guard = self.lock();
        let s = &mut *guard;
        let sid = Self::sid_of(s, identity)?;
        let m = s
            .members
            .get_mut(&sid)
            .ok_or_else(|| RoomError::IdentityNotFound(identity.to_owned()))?;
        if let Some(name) = update.name {
            m.info.name = name;
        }
        if let Some(metadata) = update.metadata {
            m.info.metadata = metadata;
        }
        let before = m.permission();
        if let Some(p) = update.permission {
            m.info.permission = Some(p);
        }
        let after = m.permission();
        let auto_subscribe = m.auto_subscribe;
        let conn = m.conn;

        if before.can_publish && !after.can_publish {
            let tracks: Vec<String> = s
                .publications
                .iter()
                .filter(|(_, p)| p.publisher_sid == sid)
                .map(|(t, _)| t.clone())
                .collect();
            for track_sid in tracks {
                if let Err(e) = self.unpublish_locked(s, &sid, &track_sid) {
                    tracing::warn!(room = %self.name, participant = %sid, track = %track_sid, error = %e, "unpublish on revoke");
                }
            }
        }
        if before.can_subscribe && !after.can_subscribe {
            let subscriptions: Vec<String> = s
                .members
                .get_mut(&sid)
                .map(|m| m.subscriptions.drain().collect())
                .unwrap_or_default();
            for track_sid in subscriptions {
                if let Err(e) = self.worker.unsubscribe(conn, track_sid.clone()) {
                    tracing::warn!(room = %self.name, participant = %sid, track = %track_sid, error = %e, "unsubscribe on revoke");
                }
            }
        }
        if !before.can_subscribe && after.can_subscribe && auto_subscribe {
            let tracks: Vec<String> = s.publications.keys().cloned().collect();
            for track_sid in tracks {
                self.subscribe_locked(s, &sid, &track_sid);
            }
        }

        let info = s
            .members
            .get(&sid)
            .map(|m| m.info.clone())
            .ok_or_else(|| RoomError::IdentityNotFound(identity.to_owned()))?;
        for m in s.members.values() {
            m.send(message(Message::ParticipantUpdated(
                pb::ParticipantUpdated {
                    participant: Some(info.clone()),
                },
            )));
        }
        self.emit(
            s,
            events::PARTICIPANT_UPDATED,
            Some(info.clone()),
            None,
            None,
        );
        Ok(info)
    }

    /// Subscribes the participant with this identity to tracks, or unsubscribes it.
    pub fn update_subscriptions_of(
        &self,
        identity: &str,
        track_sids: &[String],
        subscribe: bool,
    ) -> Result<(), RoomError> {
        let sid = self.participant_sid(identity)?;
        self.update_subscription(&sid, track_sids, subscribe)
    }
}
