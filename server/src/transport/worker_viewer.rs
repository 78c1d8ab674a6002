//! Viewers that cannot renegotiate (WHEP): after the answer to its one offer, nothing more can
//! be said to such a viewer, so its connection gets one fixed sender per audio/video section
//! it offered to receive ("slots"), created before that offer is answered. A subscription of
//! such a connection binds a free slot of its kind instead of adding a transceiver; with no
//! slot free it waits, and takes the next slot of its kind that frees up (its publisher left
//! or unpublished). A slot keeps its SSRC and its munger across sources, so the viewer sees
//! one continuous stream whose source changes at a keyframe, exactly like a simulcast layer
//! switch.

use std::time::Instant;

use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_OPUS, MIME_TYPE_VP8};
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpSenderId, RTCRtpTransceiverDirection, RTCRtpTransceiverInit};

use super::{ConnId, SubscribeSpec, TransportError, Worker};
use crate::media::down_track::DownTrack;
use crate::media::munger::RtpMunger;
use crate::media::receiver::SubscriberRef;
use crate::media::{DownTrackId, ReceiverId};

/// One fixed sender of a viewer connection.
#[derive(Debug)]
pub(crate) struct Slot {
    kind: RtpCodecKind,
    sender: RTCRtpSenderId,
    ssrc: u32,
    /// The down track forwarding into this slot now.
    bound: Option<DownTrackId>,
    /// The munger of the last down track bound here, so the next source continues its
    /// sequence numbers and timestamps.
    munger: Option<RtpMunger>,
}

/// The slots of a viewer connection and the subscriptions waiting for one.
#[derive(Debug, Default)]
pub(crate) struct Slots {
    slots: Vec<Slot>,
    waiting: Vec<(RtpCodecKind, SubscribeSpec)>,
}

impl Slots {
    /// Frees the slot `dt` was bound to; true when it was one.
    fn release(&mut self, dt: &DownTrack) -> bool {
        match self.slots.iter_mut().find(|s| s.bound == Some(dt.id)) {
            Some(slot) => {
                slot.bound = None;
                slot.munger = Some(dt.munger.clone());
                true
            }
            None => false,
        }
    }

    /// Forgets a waiting subscription.
    pub(crate) fn forget(&mut self, track_sid: &str) {
        self.waiting.retain(|(_, spec)| spec.track_sid != track_sid);
    }
}

/// The kinds of the audio/video sections of `sdp` that ask to receive (recvonly or sendrecv),
/// in SDP order.
pub(crate) fn receiving_sections(sdp: &str) -> Vec<RtpCodecKind> {
    let mut out = Vec::new();
    let mut section: Option<(RtpCodecKind, bool)> = None;
    let finish = |s: Option<(RtpCodecKind, bool)>, out: &mut Vec<RtpCodecKind>| {
        if let Some((kind, true)) = s {
            out.push(kind);
        }
    };
    for line in sdp.lines() {
        let line = line.trim();
        if let Some(m) = line.strip_prefix("m=") {
            finish(section.take(), &mut out);
            let kind = if m.starts_with("audio ") {
                Some(RtpCodecKind::Audio)
            } else if m.starts_with("video ") {
                Some(RtpCodecKind::Video)
            } else {
                None
            };
            // A section without a direction attribute is sendrecv (RFC 3264).
            section = kind.map(|k| (k, true));
        } else if let Some((_, receiving)) = section.as_mut() {
            match line {
                "a=sendonly" | "a=inactive" => *receiving = false,
                "a=recvonly" | "a=sendrecv" => *receiving = true,
                _ => {}
            }
        }
    }
    finish(section, &mut out);
    out
}

/// A codec to create a slot's sender with. The sender only uses it to set up its
/// interceptors; every payload type the viewer accepted for that kind can be sent on it.
fn placeholder_codec(kind: RtpCodecKind) -> RTCRtpCodec {
    match kind {
        RtpCodecKind::Audio => RTCRtpCodec {
            mime_type: MIME_TYPE_OPUS.to_owned(),
            clock_rate: 48_000,
            channels: 2,
            sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
            rtcp_feedback: vec![],
        },
        _ => RTCRtpCodec {
            mime_type: MIME_TYPE_VP8.to_owned(),
            clock_rate: 90_000,
            channels: 0,
            sdp_fmtp_line: String::new(),
            rtcp_feedback: vec![],
        },
    }
}

impl Worker {
    /// Answers a viewer's one and only offer: a sending slot for each audio/video section it
    /// offers to receive, then the answer. The connection is a viewer from then on.
    pub(super) fn on_viewer_offer(
        &mut self,
        id: ConnId,
        sdp: String,
        now: Instant,
    ) -> Result<String, TransportError> {
        let c = self
            .conns
            .get_mut(&id)
            .ok_or(TransportError::UnknownConnection)?;
        if c.negotiation.started {
            return Err(TransportError::Negotiation(
                "this connection is already negotiated".into(),
            ));
        }
        let kinds = receiving_sections(&sdp);
        if kinds.is_empty() {
            return Err(TransportError::InvalidSdp(
                "the offer has no audio or video section to receive".into(),
            ));
        }
        let mut slots = Slots::default();
        for (i, kind) in kinds.into_iter().enumerate() {
            let ssrc = rand::random::<u32>();
            let track_id = match kind {
                RtpCodecKind::Audio => format!("audio-{i}"),
                _ => format!("video-{i}"),
            };
            let track = MediaStreamTrack::new(
                "prism".to_owned(),
                track_id.clone(),
                track_id,
                kind,
                vec![RTCRtpEncodingParameters {
                    rtp_coding_parameters: RTCRtpCodingParameters {
                        ssrc: Some(ssrc),
                        ..Default::default()
                    },
                    active: true,
                    codec: placeholder_codec(kind),
                    ..Default::default()
                }],
            );
            let init = RTCRtpTransceiverInit {
                direction: RTCRtpTransceiverDirection::Sendonly,
                streams: vec![],
                send_encodings: vec![],
            };
            let transceiver =
                c.pc.add_transceiver_from_track(track, Some(init))
                    .map_err(|e| TransportError::Negotiation(e.to_string()))?;
            // Every codec the viewer accepts stays negotiated: sources come and go.
            if let Some(mut t) = c.pc.rtp_transceiver(transceiver)
                && let Err(e) = t.set_codec_preferences(Vec::new())
            {
                tracing::debug!(conn = id.0, error = %e, "clearing codec preferences");
            }
            slots.slots.push(Slot {
                kind,
                sender: RTCRtpSenderId::from(transceiver),
                ssrc,
                bound: None,
                munger: None,
            });
        }
        let offer = RTCSessionDescription::offer(sdp)
            .map_err(|e| TransportError::InvalidSdp(e.to_string()))?;
        c.pc.set_remote_description(now, offer)
            .map_err(|e| TransportError::InvalidSdp(e.to_string()))?;
        let answer =
            c.pc.create_answer(None)
                .map_err(|e| TransportError::Negotiation(e.to_string()))?;
        c.pc.set_local_description(now, answer.clone())
            .map_err(|e| TransportError::Negotiation(e.to_string()))?;
        c.negotiation.started = true;
        c.slots = Some(slots);
        let sdp =
            c.pc.local_description()
                .map(|d| d.sdp)
                .unwrap_or(answer.sdp);
        self.sync_ice_route(id);
        self.mark_dirty(id);
        Ok(sdp)
    }

    /// Subscribes a viewer: binds a free slot of the track's kind, or waits for one.
    pub(super) fn subscribe_slot(
        &mut self,
        spec: SubscribeSpec,
        receiver_id: ReceiverId,
        now: Instant,
    ) {
        let Some(receiver) = self.receivers.get(&receiver_id) else {
            return;
        };
        let kind = receiver.kind;
        let clock_rate = receiver.rtp_codec.clock_rate;
        let video = receiver.is_video();
        let dt_id = DownTrackId(self.next_id());
        let Some(c) = self.conns.get_mut(&spec.subscriber) else {
            return;
        };
        let Some(slots) = c.slots.as_mut() else {
            return;
        };
        if slots
            .waiting
            .iter()
            .any(|(_, w)| w.track_sid == spec.track_sid)
        {
            return;
        }
        let Some(slot) = slots
            .slots
            .iter_mut()
            .find(|s| s.kind == kind && s.bound.is_none())
        else {
            tracing::debug!(conn = spec.subscriber.0, track = %spec.track_sid, "viewer subscription waits for a free slot");
            slots.waiting.push((kind, spec));
            return;
        };
        let munger = slot
            .munger
            .take()
            .unwrap_or_else(|| RtpMunger::new(rand::random::<u16>() & 0x7fff, clock_rate, video));
        slot.bound = Some(dt_id);
        let mut dt = DownTrack::new(
            dt_id,
            spec.track_sid.clone(),
            receiver_id,
            slot.sender,
            slot.ssrc,
            munger,
        );
        if let Some(request) = c.layer_requests.get(&spec.track_sid) {
            dt.request = *request;
        }
        dt.awaiting_first_packet = Some(now);
        tracing::debug!(conn = spec.subscriber.0, track = %spec.track_sid, ssrc = slot.ssrc, "viewer slot bound");
        c.down_tracks.insert(dt_id, dt);
        c.down_track_by_sid.insert(spec.track_sid, dt_id);
        if let Some(r) = self.receivers.get_mut(&receiver_id) {
            r.subscribers.push(SubscriberRef {
                conn: spec.subscriber,
                down_track: dt_id,
            });
        }
        // The viewer's one negotiation covered this slot already.
        self.activate(spec.subscriber, dt_id, now);
        self.mark_dirty(spec.subscriber);
    }

    /// A down track of `subscriber` ended: when it held a slot, free it (nothing to
    /// renegotiate) and return true.
    pub(super) fn release_slot(&mut self, subscriber: ConnId, dt: &DownTrack) -> bool {
        self.conns
            .get_mut(&subscriber)
            .and_then(|c| c.slots.as_mut())
            .is_some_and(|slots| slots.release(dt))
    }

    /// Binds waiting subscriptions of a viewer to the slots that are free, dropping those
    /// whose track is gone meanwhile.
    pub(super) fn fill_slots(&mut self, subscriber: ConnId, now: Instant) {
        loop {
            let Some(slots) = self
                .conns
                .get_mut(&subscriber)
                .and_then(|c| c.slots.as_mut())
            else {
                return;
            };
            let free: Vec<RtpCodecKind> = slots
                .slots
                .iter()
                .filter(|s| s.bound.is_none())
                .map(|s| s.kind)
                .collect();
            let Some(at) = slots.waiting.iter().position(|(k, _)| free.contains(k)) else {
                return;
            };
            let (_, spec) = slots.waiting.remove(at);
            let receiver_id = self
                .conns
                .get(&spec.publisher)
                .and_then(|p| p.published.get(&spec.track_id))
                .copied();
            if let Some(receiver_id) = receiver_id {
                self.subscribe_slot(spec, receiver_id, now);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_sections_a_viewer_receives() {
        let sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=recvonly\r\n\
                   m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=sendonly\r\n\
                   m=video 9 UDP/TLS/RTP/SAVPF 96\r\n\
                   m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n";
        assert_eq!(
            receiving_sections(sdp),
            vec![RtpCodecKind::Audio, RtpCodecKind::Video]
        );
        assert!(receiving_sections("v=0\r\n").is_empty());
    }
}
