//! One published track as the worker receives it: its codec, its layers (one per simulcast
//! encoding, or one for a plain stream), who subscribes to it, and the keyframe-request throttle.

use std::time::{Duration, Instant};

use rtc::rtp_transceiver::RTCRtpReceiverId;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpHeaderExtensionParameters, RtpCodecKind,
};

use super::audio_level::AudioLevelTap;
use super::codec::Codec;
use super::layers::LayerSize;
use super::rate::{PACKET_OVERHEAD, RateMeter};
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
    /// The frame size its latest keyframe declared (VP8), for layers declared without one.
    pub observed_size: Option<LayerSize>,
    /// Its bitrate on the wire over the last second.
    pub rate: RateMeter,
}

/// A layer without media for this long counts as paused (30 fps video sends a packet at least
/// every 33 ms, 5 fps every 200 ms).
pub const LAYER_STALE: Duration = Duration::from_millis(500);
/// A layer that (re)started is followed once it has kept arriving this long, so a layer the
/// publisher toggles does not drag subscribers through a keyframe wait each time.
pub const LAYER_SETTLE: Duration = Duration::from_secs(1);

/// The usual simulcast RIDs, lowest first.
fn name_rank(rid: &str) -> Option<u8> {
    match rid {
        "q" => Some(0),
        "h" => Some(1),
        "f" => Some(2),
        _ => None,
    }
}

impl Layer {
    /// Media arrived within [`LAYER_STALE`].
    pub fn arriving(&self, now: Instant) -> bool {
        self.last_packet
            .is_some_and(|at| now.saturating_duration_since(at) < LAYER_STALE)
    }

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
    /// RIDs lowest quality first (empty without simulcast), and their declared sizes.
    rid_order: Vec<String>,
    sizes: Vec<LayerSize>,
    /// RIDs in the publisher's SDP order, and the layers it declared when publishing.
    sdp_rids: Vec<String>,
    declared: Vec<DeclaredLayer>,
    pub dynacast: Dynacast,
}

/// A simulcast layer as the publisher declared it (AddTrackRequest.layers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclaredLayer {
    pub rid: String,
    pub size: LayerSize,
}

/// What the publisher was last told to send (dynacast).
#[derive(Debug, Default)]
pub struct Dynacast {
    /// The highest rank it was told to keep; None: never told, so it sends them all.
    pub told: Option<usize>,
    /// Since when fewer layers have been needed than it was told (changes down are debounced).
    pub lower_since: Option<Instant>,
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
            rid_order: Vec::new(),
            sizes: vec![LayerSize::default()],
            sdp_rids: Vec::new(),
            declared: Vec::new(),
            dynacast: Dynacast::default(),
        }
    }

    pub fn is_video(&self) -> bool {
        self.kind == RtpCodecKind::Video
    }

    pub fn add_layer(&mut self, ssrc: u32, rid: Option<String>) {
        if self.layer(ssrc).is_none() {
            if let Some(rid) = &rid
                && !self.sdp_rids.contains(rid)
            {
                self.sdp_rids.push(rid.clone());
                self.order_layers();
            }
            self.layers.push(Layer {
                ssrc,
                rid,
                last_keyframe_request: None,
                packets: 0,
                bytes: 0,
                last_packet: None,
                live_since: None,
                sender_clock: None,
                observed_size: None,
                rate: RateMeter::default(),
            });
        }
    }

    pub fn layer(&self, ssrc: u32) -> Option<&Layer> {
        self.layers.iter().find(|l| l.ssrc == ssrc)
    }

    pub fn layer_mut(&mut self, ssrc: u32) -> Option<&mut Layer> {
        self.layers.iter_mut().find(|l| l.ssrc == ssrc)
    }

    /// The RIDs of the publisher's SDP, in its order (the engine's receive codings).
    pub fn set_sdp_rids(&mut self, rids: Vec<String>) {
        if rids != self.sdp_rids {
            self.sdp_rids = rids;
            self.order_layers();
        }
    }

    /// The layers the publisher declared, with their sizes.
    pub fn declare(&mut self, declared: Vec<DeclaredLayer>) {
        if declared != self.declared {
            self.declared = declared;
            self.order_layers();
        }
    }

    /// Ranks the RIDs: by declared width when every layer has one, else by the usual names
    /// (q < h < f), else in SDP order.
    fn order_layers(&mut self) {
        let width = |rid: &str| {
            self.declared
                .iter()
                .find(|d| d.rid == rid)
                .map_or(0, |d| d.size.width)
        };
        let mut order = self.sdp_rids.clone();
        if order.iter().all(|r| width(r) > 0) {
            order.sort_by_key(|r| width(r));
        } else if order.iter().all(|r| name_rank(r).is_some()) {
            order.sort_by_key(|r| name_rank(r));
        }
        self.rid_order = order;
        self.update_sizes();
    }

    /// A keyframe of `ssrc` declared its frame size.
    pub fn observe_size(&mut self, ssrc: u32, size: LayerSize) {
        if let Some(layer) = self.layer_mut(ssrc)
            && layer.observed_size != Some(size)
        {
            layer.observed_size = Some(size);
            self.update_sizes();
        }
    }

    /// Size per rank: as declared, else as the layer's keyframes say.
    fn update_sizes(&mut self) {
        let declared = |rid: &str| {
            self.declared
                .iter()
                .find(|d| d.rid == rid && d.size.width > 0)
                .map(|d| d.size)
        };
        let observed = |rid: Option<&String>| {
            self.layers
                .iter()
                .rev()
                .find(|l| rid.is_none() || l.rid.as_ref() == rid)
                .and_then(|l| l.observed_size)
        };
        let mut sizes: Vec<LayerSize> = self
            .rid_order
            .iter()
            .map(|rid| {
                declared(rid)
                    .or_else(|| observed(Some(rid)))
                    .unwrap_or_default()
            })
            .collect();
        if sizes.is_empty() {
            let size = self
                .declared
                .first()
                .map(|d| d.size)
                .filter(|s| s.width > 0);
            sizes.push(size.or_else(|| observed(None)).unwrap_or_default());
        }
        self.sizes = sizes;
    }

    /// More than one layer, each named by a RID.
    pub fn is_simulcast(&self) -> bool {
        self.rid_order.len() > 1
    }

    /// Declared size per rank, lowest first; one entry without simulcast.
    pub fn sizes(&self) -> &[LayerSize] {
        &self.sizes
    }

    pub fn rank_count(&self) -> usize {
        self.sizes.len()
    }

    /// RIDs lowest first (empty without simulcast).
    pub fn rids(&self) -> &[String] {
        &self.rid_order
    }

    pub fn rank_of(&self, ssrc: u32) -> Option<usize> {
        let layer = self.layer(ssrc)?;
        match &layer.rid {
            Some(rid) => self.rid_order.iter().position(|r| r == rid),
            None => Some(0),
        }
    }

    /// The incoming stream of `rank`. Without simulcast the one that arrived last, since a
    /// publisher may replace its SSRC.
    pub fn layer_at(&self, rank: usize) -> Option<&Layer> {
        match self.rid_order.get(rank) {
            Some(rid) => self.layers.iter().find(|l| l.rid.as_ref() == Some(rid)),
            None if rank == 0 => self
                .layers
                .iter()
                .enumerate()
                .max_by_key(|(i, l)| (l.last_packet, *i))
                .map(|(_, l)| l),
            None => None,
        }
    }

    /// Whether `rank` is arriving now (media within [`LAYER_STALE`]).
    pub fn arriving(&self, rank: usize, now: Instant) -> bool {
        self.layer_at(rank).is_some_and(|l| l.arriving(now))
    }

    /// Samples every layer's byte count (each housekeeping tick).
    pub fn sample_rates(&mut self, now: Instant) {
        for l in &mut self.layers {
            l.rate.sample(now, l.bytes + l.packets * PACKET_OVERHEAD);
        }
    }

    /// What forwarding `rank` costs a subscriber, bits per second: measured over the last
    /// second, or (just started, or paused by dynacast) a typical rate for its size.
    pub fn bitrate(&self, rank: usize) -> u64 {
        let measured = self
            .layer_at(rank)
            .and_then(|l| l.rate.bps())
            .filter(|&bps| bps > 0);
        measured.unwrap_or_else(|| self.nominal_bitrate(rank))
    }

    fn nominal_bitrate(&self, rank: usize) -> u64 {
        if !self.is_video() {
            return 50_000;
        }
        let size = self.sizes.get(rank).copied().unwrap_or_default();
        let pixels = u64::from(size.width) * u64::from(size.height);
        if pixels > 0 {
            // About 1.5 Mbit/s for 720p at 30 fps, scaled by area, at least 100 kbit/s.
            return (pixels * 1_500_000 / (1280 * 720)).max(100_000);
        }
        // Unknown sizes: each rank below the top halves the size, a quarter of the rate.
        let below_top = self.rank_count().saturating_sub(1 + rank) as u32;
        (1_500_000u64 >> (2 * below_top)).max(100_000)
    }

    /// Whether `rank` has kept arriving for [`LAYER_SETTLE`].
    pub fn settled(&self, rank: usize, now: Instant) -> bool {
        self.layer_at(rank).is_some_and(|l| {
            l.arriving(now)
                && l.live_since
                    .is_some_and(|at| now.saturating_duration_since(at) >= LAYER_SETTLE)
        })
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

    fn feed(r: &mut Receiver, ssrcs: &[u32], from: Instant, to: Instant) {
        let mut t = from;
        while t <= to {
            for ssrc in ssrcs {
                r.layer_mut(*ssrc).unwrap().saw_media(t);
            }
            t += Duration::from_millis(33);
        }
    }

    #[test]
    fn orders_layers_by_declared_width_then_names_then_sdp() {
        let mut r = receiver();
        r.set_sdp_rids(vec!["f".into(), "h".into(), "q".into()]);
        assert_eq!(r.rids(), ["q", "h", "f"], "the usual names");
        r.set_sdp_rids(vec!["hi".into(), "lo".into()]);
        assert_eq!(r.rids(), ["hi", "lo"], "unknown names: SDP order");
        let declare = |rid: &str, width| DeclaredLayer {
            rid: rid.into(),
            size: LayerSize {
                width,
                height: width * 9 / 16,
            },
        };
        r.declare(vec![declare("hi", 1280), declare("lo", 320)]);
        assert_eq!(r.rids(), ["lo", "hi"], "declared widths");
        assert_eq!(r.sizes()[1].width, 1280);
        assert!(r.is_simulcast());
    }

    #[test]
    fn ranks_and_liveness() {
        let mut r = receiver();
        r.set_sdp_rids(vec!["q".into(), "h".into(), "f".into()]);
        r.add_layer(3, Some("f".into()));
        r.add_layer(1, Some("q".into()));
        assert_eq!(r.rank_of(3), Some(2));
        assert_eq!(r.rank_of(1), Some(0));
        assert_eq!(r.layer_at(1).map(|l| l.ssrc), None, "h not seen yet");
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        feed(&mut r, &[1, 3], t0, t0 + ms(500));
        assert!(r.arriving(2, t0 + ms(600)));
        assert!(!r.settled(2, t0 + ms(600)));
        feed(&mut r, &[1, 3], t0 + ms(533), t0 + ms(1100));
        assert!(r.settled(2, t0 + ms(1100)));
        // f stops: stale after LAYER_STALE, and settling starts over when it resumes.
        feed(&mut r, &[1], t0 + ms(1133), t0 + ms(1800));
        assert!(!r.arriving(2, t0 + ms(1800)));
        feed(&mut r, &[1, 3], t0 + ms(1833), t0 + ms(2000));
        assert!(r.arriving(2, t0 + ms(2000)));
        assert!(!r.settled(2, t0 + ms(2000)));
    }

    #[test]
    fn keyframes_fill_in_undeclared_sizes() {
        let mut r = receiver();
        r.set_sdp_rids(vec!["q".into(), "f".into()]);
        r.add_layer(1, Some("q".into()));
        r.add_layer(3, Some("f".into()));
        assert_eq!(r.sizes(), [LayerSize::default(); 2]);
        let size = |width, height| LayerSize { width, height };
        r.observe_size(3, size(1280, 720));
        assert_eq!(r.sizes(), [LayerSize::default(), size(1280, 720)]);
        // A declared size wins over an observed one.
        r.declare(vec![DeclaredLayer {
            rid: "f".into(),
            size: size(1920, 1080),
        }]);
        assert_eq!(r.sizes()[1], size(1920, 1080));
        // Without simulcast the one rank takes what the stream shows.
        let mut plain = receiver();
        plain.add_layer(10, None);
        plain.observe_size(10, size(640, 480));
        assert_eq!(plain.sizes(), [size(640, 480)]);
    }

    #[test]
    fn a_plain_track_follows_its_newest_ssrc() {
        let mut r = receiver();
        r.add_layer(10, None);
        r.add_layer(20, None);
        assert!(!r.is_simulcast());
        assert_eq!(r.rank_count(), 1);
        let t0 = Instant::now();
        feed(&mut r, &[10], t0, t0);
        assert_eq!(r.layer_at(0).map(|l| l.ssrc), Some(10));
        feed(
            &mut r,
            &[20],
            t0 + Duration::from_millis(50),
            t0 + Duration::from_millis(50),
        );
        assert_eq!(r.layer_at(0).map(|l| l.ssrc), Some(20));
    }
}
