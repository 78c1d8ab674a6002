//! One published track as the worker receives it: its codec, its layers (one per simulcast
//! encoding, or one for a plain stream), who subscribes to it, and the keyframe-request throttle.

use std::time::{Duration, Instant};

use rtc::rtp_transceiver::RTCRtpReceiverId;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpHeaderExtensionParameters, RtpCodecKind,
};

use super::codec::Codec;
use super::reports::SenderClock;
use super::{DownTrackId, ReceiverId};
use crate::transport::ConnId;

/// One incoming RTP stream of the track.
#[derive(Debug)]
pub struct Layer {
    pub ssrc: u32,
    pub rid: Option<String>,
    pub last_keyframe_request: Option<Instant>,
    pub packets: u64,
    pub bytes: u64,
    /// The publisher's latest sender report for this stream.
    pub sender_clock: Option<SenderClock>,
}

/// Where a subscriber's copy of this track lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubscriberRef {
    pub conn: ConnId,
    pub down_track: DownTrackId,
}

#[derive(Debug)]
pub struct Receiver {
    pub id: ReceiverId,
    pub publisher: ConnId,
    /// The publisher's id for the track (msid track id).
    pub track_id: String,
    pub rtc_receiver: RTCRtpReceiverId,
    pub kind: RtpCodecKind,
    pub codec: Codec,
    pub rtp_codec: RTCRtpCodec,
    pub extensions: Vec<RTCRtpHeaderExtensionParameters>,
    pub layers: Vec<Layer>,
    pub subscribers: Vec<SubscriberRef>,
    keyframe_interval: Duration,
}

impl Receiver {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: ReceiverId,
        publisher: ConnId,
        track_id: String,
        rtc_receiver: RTCRtpReceiverId,
        kind: RtpCodecKind,
        rtp_codec: RTCRtpCodec,
        extensions: Vec<RTCRtpHeaderExtensionParameters>,
        keyframe_interval: Duration,
    ) -> Self {
        Self {
            id,
            publisher,
            track_id,
            rtc_receiver,
            kind,
            codec: Codec::from_mime(&rtp_codec.mime_type),
            rtp_codec,
            extensions,
            layers: Vec::new(),
            subscribers: Vec::new(),
            keyframe_interval,
        }
    }

    pub fn is_video(&self) -> bool {
        self.kind == RtpCodecKind::Video
    }

    pub fn add_layer(&mut self, ssrc: u32, rid: Option<String>) {
        if self.layer(ssrc).is_none() {
            self.layers.push(Layer {
                ssrc,
                rid,
                last_keyframe_request: None,
                packets: 0,
                bytes: 0,
                sender_clock: None,
            });
        }
    }

    pub fn layer(&self, ssrc: u32) -> Option<&Layer> {
        self.layers.iter().find(|l| l.ssrc == ssrc)
    }

    pub fn layer_mut(&mut self, ssrc: u32) -> Option<&mut Layer> {
        self.layers.iter_mut().find(|l| l.ssrc == ssrc)
    }

    /// The layer a subscriber gets until per-subscriber layer selection exists: the best one
    /// the publisher sends (RIDs f > h > q, else the last to start).
    pub fn preferred_layer(&self) -> Option<u32> {
        let rank = |l: &Layer| match l.rid.as_deref() {
            Some("f") => 3,
            Some("h") => 2,
            Some("q") => 1,
            _ => 0,
        };
        self.layers
            .iter()
            .enumerate()
            .max_by_key(|(i, l)| (rank(l), *i))
            .map(|(_, l)| l.ssrc)
    }

    /// Whether a keyframe may be requested for `ssrc` now; records the request if so. One
    /// request per layer per interval, however many subscribers are waiting.
    pub fn allow_keyframe_request(&mut self, ssrc: u32, now: Instant) -> bool {
        let interval = self.keyframe_interval;
        let Some(layer) = self.layer_mut(ssrc) else {
            return false;
        };
        if layer
            .last_keyframe_request
            .is_some_and(|at| now.saturating_duration_since(at) < interval)
        {
            return false;
        }
        layer.last_keyframe_request = Some(now);
        true
    }

    pub fn remove_subscriber(&mut self, conn: ConnId, down_track: DownTrackId) {
        self.subscribers
            .retain(|s| !(s.conn == conn && s.down_track == down_track));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receiver() -> Receiver {
        Receiver::new(
            ReceiverId(1),
            ConnId(1),
            "t".into(),
            Default::default(),
            RtpCodecKind::Video,
            RTCRtpCodec {
                mime_type: "video/VP8".into(),
                clock_rate: 90_000,
                ..Default::default()
            },
            vec![],
            Duration::from_millis(500),
        )
    }

    #[test]
    fn keyframe_requests_are_throttled_per_layer() {
        let mut r = receiver();
        r.add_layer(10, None);
        r.add_layer(20, None);
        let t0 = Instant::now();
        assert!(r.allow_keyframe_request(10, t0));
        assert!(!r.allow_keyframe_request(10, t0 + Duration::from_millis(100)));
        assert!(r.allow_keyframe_request(20, t0 + Duration::from_millis(100)));
        assert!(r.allow_keyframe_request(10, t0 + Duration::from_millis(500)));
        assert!(!r.allow_keyframe_request(99, t0));
    }

    #[test]
    fn prefers_the_full_layer() {
        let mut r = receiver();
        r.add_layer(1, Some("q".into()));
        r.add_layer(3, Some("f".into()));
        r.add_layer(2, Some("h".into()));
        assert_eq!(r.preferred_layer(), Some(3));
    }
}
