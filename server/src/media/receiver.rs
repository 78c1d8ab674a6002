//! One published track as the worker receives it: its codec, its layers (one per simulcast
//! encoding, or one for a plain stream), who subscribes to it, and the keyframe-request throttle.

use std::time::{Duration, Instant};

use rtc::rtp_transceiver::RTCRtpReceiverId;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpHeaderExtensionParameters, RtpCodecKind,
};

use super::audio_level::AudioLevelTap;
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
    /// When its latest media (not padding) arrived, and since when it has arrived without a
    /// pause: browsers pause their top layers when their bandwidth estimate falls, and resume
    /// them, sometimes every few seconds.
    pub last_packet: Option<Instant>,
    pub live_since: Option<Instant>,
    /// The publisher's latest sender report for this stream.
    pub sender_clock: Option<SenderClock>,
}

/// A layer without media for this long counts as paused (30 fps video sends a packet at least
/// every 33 ms, 5 fps every 200 ms).
pub const LAYER_STALE: Duration = Duration::from_millis(500);
/// A layer that (re)started is followed once it has kept arriving this long, so a layer the
/// publisher toggles does not drag subscribers through a keyframe wait each time.
pub const LAYER_SETTLE: Duration = Duration::from_secs(1);

/// Simulcast layers by quality: RIDs f > h > q > anything else.
fn layer_rank(l: &Layer) -> u8 {
    match l.rid.as_deref() {
        Some("f") => 3,
        Some("h") => 2,
        Some("q") => 1,
        _ => 0,
    }
}

impl Layer {
    /// A media packet (not padding) of this layer arrived.
    pub fn saw_media(&mut self, now: Instant) {
        let paused = self
            .last_packet
            .is_none_or(|at| now.saturating_duration_since(at) >= LAYER_STALE);
        if paused {
            self.live_since = Some(now);
        }
        self.last_packet = Some(now);
    }
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
    /// Active speaker detection, for audio tracks whose publisher sends audio levels.
    pub audio_level: Option<AudioLevelTap>,
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
        let audio_level = match kind {
            RtpCodecKind::Audio => AudioLevelTap::for_extensions(&extensions),
            _ => None,
        };
        Self {
            id,
            publisher,
            track_id,
            rtc_receiver,
            kind,
            codec: Codec::from_mime(&rtp_codec.mime_type),
            rtp_codec,
            extensions,
            audio_level,
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
                last_packet: None,
                live_since: None,
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
        self.layers
            .iter()
            .enumerate()
            .max_by_key(|(i, l)| (layer_rank(l), *i))
            .map(|(_, l)| l.ssrc)
    }

    /// The layer a subscriber now on `current` should follow: `current` while it keeps
    /// arriving, unless a better layer has been arriving for [`LAYER_SETTLE`]; once `current`
    /// stops (no media for [`LAYER_STALE`]), the best layer arriving at all; with nothing
    /// arriving, the best one. A stopgap until per-subscriber layer selection (issue 4):
    /// without it, subscribers froze whenever a browser paused its top layer.
    pub fn layer_to_follow(&self, current: Option<u32>, now: Instant) -> Option<u32> {
        let arriving = |l: &Layer| {
            l.last_packet
                .is_some_and(|at| now.saturating_duration_since(at) < LAYER_STALE)
        };
        let settled = |l: &Layer| {
            arriving(l)
                && l.live_since
                    .is_some_and(|at| now.saturating_duration_since(at) >= LAYER_SETTLE)
        };
        let best = |keep: &dyn Fn(&Layer) -> bool| {
            self.layers
                .iter()
                .enumerate()
                .filter(|(_, l)| keep(l))
                .max_by_key(|(i, l)| (layer_rank(l), *i))
                .map(|(_, l)| l)
        };
        match current
            .and_then(|ssrc| self.layer(ssrc))
            .filter(|l| arriving(l))
        {
            Some(current) => Some(
                best(&|l: &Layer| settled(l) && layer_rank(l) > layer_rank(current))
                    .map_or(current.ssrc, |l| l.ssrc),
            ),
            None => best(&arriving)
                .map(|l| l.ssrc)
                .or_else(|| self.preferred_layer()),
        }
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
    fn follows_the_best_layer_still_arriving() {
        let mut r = receiver();
        r.add_layer(1, Some("q".into()));
        r.add_layer(2, Some("h".into()));
        r.add_layer(3, Some("f".into()));
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        // Nothing arrived yet: the best declared layer.
        assert_eq!(r.layer_to_follow(None, t0), Some(3));
        // q and h arrive: h, the best arriving, even before it settled.
        let feed = |r: &mut Receiver, ssrcs: &[u32], from: Instant, to: Instant| {
            let mut t = from;
            while t <= to {
                for ssrc in ssrcs {
                    r.layer_mut(*ssrc).unwrap().saw_media(t);
                }
                t += ms(33);
            }
        };
        feed(&mut r, &[1, 2], t0, t0 + ms(100));
        assert_eq!(r.layer_to_follow(None, t0 + ms(100)), Some(2));
        assert_eq!(
            r.layer_to_follow(Some(1), t0 + ms(100)),
            Some(1),
            "h has not settled"
        );
        // f starts: followed only once it has kept arriving for LAYER_SETTLE.
        feed(&mut r, &[1, 2, 3], t0 + ms(133), t0 + ms(1000));
        assert_eq!(r.layer_to_follow(Some(2), t0 + ms(1000)), Some(2));
        feed(&mut r, &[1, 2, 3], t0 + ms(1033), t0 + ms(1200));
        assert_eq!(r.layer_to_follow(Some(2), t0 + ms(1200)), Some(3));
        assert_eq!(r.layer_to_follow(Some(3), t0 + ms(1200)), Some(3));
        // The publisher pauses f: back to h once f is stale.
        feed(&mut r, &[1, 2], t0 + ms(1233), t0 + ms(1800));
        assert_eq!(r.layer_to_follow(Some(3), t0 + ms(1800)), Some(2));
        // f resumes: it has to settle again.
        feed(&mut r, &[1, 2, 3], t0 + ms(1833), t0 + ms(2500));
        assert_eq!(r.layer_to_follow(Some(2), t0 + ms(2500)), Some(2));
        feed(&mut r, &[1, 2, 3], t0 + ms(2533), t0 + ms(2900));
        assert_eq!(r.layer_to_follow(Some(2), t0 + ms(2900)), Some(3));
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
