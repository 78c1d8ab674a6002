//! Local (published) tracks, their options and codecs.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use prism_proto::signal::{LayerActivity, TrackInfo, TrackKind as ProtoTrackKind, TrackSource};
use rtc::media::Sample;
use rtc::media_stream::MediaStreamTrack;
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::sdp::extmap::{SDES_MID_URI, SDES_RTP_STREAM_ID_URI};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use webrtc::media_stream::track_local::static_sample::TrackLocalStaticSample;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::rtp_transceiver::{RtpSender, RtpTransceiver};

use crate::error::{ClientError, Result};
use crate::layers::{LayerState, SimulcastLayer};
use crate::room::Command;

/// Audio or video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TrackKind {
    /// Audio.
    Audio,
    /// Video.
    Video,
}

impl TrackKind {
    pub(crate) fn to_proto(self) -> ProtoTrackKind {
        match self {
            TrackKind::Audio => ProtoTrackKind::Audio,
            TrackKind::Video => ProtoTrackKind::Video,
        }
    }

    pub(crate) fn to_rtc(self) -> RtpCodecKind {
        match self {
            TrackKind::Audio => RtpCodecKind::Audio,
            TrackKind::Video => RtpCodecKind::Video,
        }
    }

    pub(crate) fn from_rtc(kind: RtpCodecKind) -> Option<Self> {
        match kind {
            RtpCodecKind::Audio => Some(TrackKind::Audio),
            RtpCodecKind::Video => Some(TrackKind::Video),
            _ => None,
        }
    }
}

/// A codec a local track can be published with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// Opus, 48 kHz, stereo capable.
    Opus,
    /// VP8.
    Vp8,
    /// VP9 profile 0.
    Vp9,
    /// H.264 constrained baseline, packetization mode 1.
    H264,
    /// AV1.
    Av1,
}

impl Codec {
    /// The MIME type, as in SDP and `TrackInfo.mime_type`.
    pub fn mime_type(self) -> &'static str {
        match self {
            Codec::Opus => "audio/opus",
            Codec::Vp8 => "video/VP8",
            Codec::Vp9 => "video/VP9",
            Codec::H264 => "video/H264",
            Codec::Av1 => "video/AV1",
        }
    }

    /// RTP clock rate.
    pub fn clock_rate(self) -> u32 {
        match self {
            Codec::Opus => 48_000,
            _ => 90_000,
        }
    }

    /// Audio or video.
    pub fn kind(self) -> TrackKind {
        match self {
            Codec::Opus => TrackKind::Audio,
            _ => TrackKind::Video,
        }
    }

    pub(crate) fn rtc_codec(self) -> RTCRtpCodec {
        let (channels, fmtp) = match self {
            Codec::Opus => (2, "minptime=10;useinbandfec=1"),
            Codec::Vp8 => (0, ""),
            Codec::Vp9 => (0, "profile-id=0"),
            Codec::H264 => (
                0,
                "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
            ),
            Codec::Av1 => (0, "profile-id=0"),
        };
        RTCRtpCodec {
            mime_type: self.mime_type().to_owned(),
            clock_rate: self.clock_rate(),
            channels,
            sdp_fmtp_line: fmtp.to_owned(),
            rtcp_feedback: vec![],
        }
    }
}

/// What to publish.
#[derive(Debug, Clone)]
pub struct TrackOptions {
    /// Display name.
    pub name: String,
    /// Codec; also decides the kind (audio for Opus, video otherwise).
    pub codec: Codec,
    /// Where the media comes from (camera, microphone, ...).
    pub source: TrackSource,
    /// Video width in pixels (0 if unknown or audio).
    pub width: u32,
    /// Video height in pixels (0 if unknown or audio).
    pub height: u32,
    /// Simulcast layers (video only), lowest first; empty for a single stream. Each layer is
    /// its own RTP stream with its own SSRC; write to it with [`LocalTrack::write_layer_rtp`].
    pub simulcast: Vec<SimulcastLayer>,
}

impl TrackOptions {
    /// A camera video track.
    pub fn video(name: impl Into<String>, codec: Codec, width: u32, height: u32) -> Self {
        Self {
            name: name.into(),
            codec,
            source: TrackSource::Camera,
            width,
            height,
            simulcast: vec![],
        }
    }

    /// A camera video track sent as RID simulcast with these layers (lowest first); its size
    /// is the top layer's.
    pub fn simulcast_video(
        name: impl Into<String>,
        codec: Codec,
        layers: Vec<SimulcastLayer>,
    ) -> Self {
        let (width, height) = layers.last().map_or((0, 0), |l| (l.width, l.height));
        Self {
            simulcast: layers,
            ..Self::video(name, codec, width, height)
        }
    }

    /// A microphone Opus track.
    pub fn audio(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            codec: Codec::Opus,
            source: TrackSource::Microphone,
            width: 0,
            height: 0,
            simulcast: vec![],
        }
    }

    /// The kind implied by the codec.
    pub fn kind(&self) -> TrackKind {
        self.codec.kind()
    }
}

/// A request from the server for a new keyframe on a local video track.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyframeRequest {
    /// RTCP Picture Loss Indication.
    Pli {
        /// The SSRC the request is about.
        media_ssrc: u32,
    },
    /// RTCP Full Intra Request.
    Fir {
        /// The SSRC the request is about.
        media_ssrc: u32,
    },
}

impl KeyframeRequest {
    /// The SSRC the request is about (see [`LocalTrack::rid_of_ssrc`] for its layer).
    pub fn media_ssrc(&self) -> u32 {
        match *self {
            KeyframeRequest::Pli { media_ssrc } | KeyframeRequest::Fir { media_ssrc } => media_ssrc,
        }
    }
}

/// Keyframe requests of one local track; see [`LocalTrack::keyframe_requests`].
#[derive(Debug)]
pub struct KeyframeRequests {
    rx: broadcast::Receiver<KeyframeRequest>,
}

impl KeyframeRequests {
    /// The next request, or `None` once the track is unpublished or the room closed.
    /// Requests that pile up unread are coalesced (a keyframe answers all of them).
    pub async fn recv(&mut self) -> Option<KeyframeRequest> {
        loop {
            match self.rx.recv().await {
                Ok(r) => return Some(r),
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    /// A request if one is pending, without waiting.
    pub fn try_recv(&mut self) -> Option<KeyframeRequest> {
        loop {
            match self.rx.try_recv() {
                Ok(r) => return Some(r),
                Err(broadcast::error::TryRecvError::Lagged(_)) => continue,
                Err(_) => return None,
            }
        }
    }
}

/// One RTP stream of a local track: the track itself, or one simulcast layer of it.
pub(crate) struct LocalLayer {
    /// "" for a track without simulcast.
    pub(crate) rid: String,
    pub(crate) ssrc: u32,
    /// The rid header extension's value, made once.
    rid_value: Bytes,
    sent: AtomicU64,
}

/// What the latest negotiation decided for a local track's packets.
#[derive(Clone)]
struct Negotiated {
    payload_type: u8,
    /// The mid extension (id, value) and the rid extension id, which a simulcast layer's
    /// packets carry: the server's engine learns from them which SSRC is which layer (the SDP
    /// of a RID-based section names no SSRCs).
    mid: Option<(u8, Bytes)>,
    rid_id: Option<u8>,
}

/// State of a local track shared between its handle and the room task.
pub(crate) struct LocalTrackShared {
    pub(crate) cid: String,
    pub(crate) codec: Codec,
    pub(crate) layers: Vec<LocalLayer>,
    simulcast: bool,
    layer_state: watch::Sender<Vec<LayerState>>,
    /// `None` until looked up; reset after each negotiation.
    negotiated: std::sync::Mutex<Option<Negotiated>>,
    pub(crate) track: Arc<TrackLocalStaticSample>,
    pub(crate) sender: std::sync::Mutex<Option<Arc<dyn RtpSender>>>,
    pub(crate) transceiver: std::sync::Mutex<Option<Arc<dyn RtpTransceiver>>>,
    keyframes: broadcast::Sender<KeyframeRequest>,
}

impl LocalTrackShared {
    /// Builds the webrtc track for `options` (a random SSRC per layer, msid
    /// `<stream_id> <cid>`).
    pub(crate) fn new(options: &TrackOptions, stream_id: String) -> Result<Arc<Self>> {
        let simulcast = !options.simulcast.is_empty();
        if simulcast && options.kind() != TrackKind::Video {
            return Err(ClientError::InvalidArgument(
                "simulcast is for video tracks".into(),
            ));
        }
        let rids: Vec<&str> = if simulcast {
            options.simulcast.iter().map(|l| l.rid.as_str()).collect()
        } else {
            vec![""]
        };
        for (i, rid) in rids.iter().enumerate() {
            if simulcast && (rid.is_empty() || rids[..i].contains(rid)) {
                return Err(ClientError::InvalidArgument(format!(
                    "simulcast layer rids must be distinct and non-empty: {rids:?}"
                )));
            }
        }
        let cid = format!("TC_{:016x}", rand::random::<u64>());
        let layers: Vec<LocalLayer> = rids
            .iter()
            .map(|rid| LocalLayer {
                rid: (*rid).to_owned(),
                ssrc: rand::random::<u32>() | 1,
                rid_value: Bytes::copy_from_slice(rid.as_bytes()),
                sent: AtomicU64::new(0),
            })
            .collect();
        let encodings = layers
            .iter()
            .map(|l| RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    rid: l.rid.clone(),
                    ssrc: Some(l.ssrc),
                    ..Default::default()
                },
                codec: options.codec.rtc_codec(),
                ..Default::default()
            })
            .collect();
        let media = MediaStreamTrack::new(
            stream_id,
            cid.clone(),
            options.name.clone(),
            options.kind().to_rtc(),
            encodings,
        );
        let track = Arc::new(TrackLocalStaticSample::new(Instant::now(), media)?);
        let (keyframes, _) = broadcast::channel(16);
        let states = layers
            .iter()
            .map(|l| LayerState {
                rid: l.rid.clone(),
                ssrc: l.ssrc,
                enabled: true,
                wanted: true,
            })
            .collect();
        Ok(Arc::new(Self {
            cid,
            codec: options.codec,
            layers,
            simulcast,
            layer_state: watch::channel(states).0,
            negotiated: std::sync::Mutex::new(None),
            track,
            sender: std::sync::Mutex::new(None),
            transceiver: std::sync::Mutex::new(None),
            keyframes,
        }))
    }

    /// Forgets what was negotiated so the next write looks it up again (after a renegotiation).
    pub(crate) fn invalidate_payload_type(&self) {
        *self.negotiated.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    async fn negotiated(&self) -> Result<Negotiated> {
        if let Some(n) = self
            .negotiated
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            return Ok(n);
        }
        let sender = self
            .sender
            .lock()
            .map_err(|_| ClientError::Closed)?
            .clone()
            .ok_or(ClientError::Closed)?;
        let params = sender.get_parameters().await?;
        let mime = self.codec.mime_type();
        let payload_type = params
            .rtp_parameters
            .codecs
            .iter()
            .find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(mime))
            .map(|c| c.payload_type)
            .ok_or_else(|| {
                ClientError::Protocol(format!("{mime} was not negotiated for this track"))
            })?;
        let extension_id = |uri: &str| {
            params
                .rtp_parameters
                .header_extensions
                .iter()
                .find(|e| e.uri == uri)
                .and_then(|e| u8::try_from(e.id).ok())
        };
        let (mut mid, mut rid_id) = (None, None);
        if self.simulcast {
            let transceiver = self
                .transceiver
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            let mid_value = match transceiver {
                Some(t) => t.mid().await?,
                None => None,
            };
            mid = extension_id(SDES_MID_URI).zip(mid_value.map(Bytes::from));
            rid_id = extension_id(SDES_RTP_STREAM_ID_URI);
            if mid.is_none() || rid_id.is_none() {
                return Err(ClientError::Protocol(
                    "simulcast needs the mid and rid header extensions negotiated".into(),
                ));
            }
        }
        let n = Negotiated {
            payload_type,
            mid,
            rid_id,
        };
        *self.negotiated.lock().unwrap_or_else(|p| p.into_inner()) = Some(n.clone());
        Ok(n)
    }

    /// Applies the server's dynacast update; true if a layer changed.
    pub(crate) fn set_wanted(&self, layers: &[LayerActivity]) -> bool {
        self.layer_state.send_if_modified(|states| {
            let mut changed = false;
            for update in layers {
                if let Some(s) = states.iter_mut().find(|s| s.rid == update.rid)
                    && s.wanted != update.active
                {
                    s.wanted = update.active;
                    changed = true;
                }
            }
            changed
        })
    }

    fn layer(&self, rid: &str) -> Option<&LocalLayer> {
        self.layers.iter().find(|l| l.rid == rid)
    }

    async fn write(&self, layer: &LocalLayer, packet: &rtc::rtp::Packet) -> Result<()> {
        let negotiated = self.negotiated().await?;
        let mut packet = packet.clone();
        packet.header.ssrc = layer.ssrc;
        packet.header.payload_type = negotiated.payload_type;
        // Extensions are per-leg; unnegotiated ids would be rejected.
        packet.header.extension = false;
        packet.header.extensions.clear();
        if let (Some((mid_id, mid)), Some(rid_id)) = (negotiated.mid, negotiated.rid_id) {
            packet
                .header
                .set_extension(mid_id, mid)
                .and_then(|_| packet.header.set_extension(rid_id, layer.rid_value.clone()))
                .map_err(|e| ClientError::Protocol(format!("header extension: {e}")))?;
        }
        self.track.write_rtp(packet).await?;
        layer.sent.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Reads RTCP delivered to this track until it is unbound, publishing keyframe requests.
    pub(crate) async fn forward_keyframe_requests(self: Arc<Self>) {
        while let Some(event) = self.track.poll().await {
            let TrackLocalEvent::OnRtcpPacket(packets) = event else {
                continue;
            };
            for packet in packets {
                let any = packet.as_any();
                let request = if let Some(pli) = any.downcast_ref::<PictureLossIndication>() {
                    KeyframeRequest::Pli {
                        media_ssrc: pli.media_ssrc,
                    }
                } else if let Some(fir) = any.downcast_ref::<FullIntraRequest>() {
                    KeyframeRequest::Fir {
                        media_ssrc: fir.media_ssrc,
                    }
                } else {
                    continue;
                };
                tracing::debug!(cid = %self.cid, ?request, "keyframe request");
                // No receivers is fine: nobody is listening yet.
                let _ = self.keyframes.send(request);
            }
        }
    }
}

/// A track this participant publishes.
///
/// Cheap to clone. Write either raw RTP ([`write_rtp`](Self::write_rtp), or
/// [`write_layer_rtp`](Self::write_layer_rtp) for each layer of a simulcast track) or encoded
/// frames ([`write_sample`](Self::write_sample)) to it, not both: each numbers packets its own
/// way.
#[derive(Clone)]
pub struct LocalTrack {
    pub(crate) shared: Arc<LocalTrackShared>,
    pub(crate) info: TrackInfo,
    pub(crate) commands: mpsc::WeakSender<Command>,
}

impl std::fmt::Debug for LocalTrack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalTrack")
            .field("sid", &self.info.sid)
            .field("cid", &self.shared.cid)
            .field("codec", &self.shared.codec)
            .field("layers", &*self.shared.layer_state.borrow())
            .finish()
    }
}

impl LocalTrack {
    /// Server-assigned track sid.
    pub fn sid(&self) -> &str {
        &self.info.sid
    }

    /// Our own id for the track (the track id in the msid).
    pub fn cid(&self) -> &str {
        &self.shared.cid
    }

    /// The track as the server announced it.
    pub fn info(&self) -> &TrackInfo {
        &self.info
    }

    /// The codec it was published with.
    pub fn codec(&self) -> Codec {
        self.shared.codec
    }

    /// The SSRC its packets are sent with (the lowest layer's, for a simulcast track).
    pub fn ssrc(&self) -> u32 {
        self.shared.layers[0].ssrc
    }

    /// Whether it is sent as simulcast.
    pub fn is_simulcast(&self) -> bool {
        self.shared.simulcast
    }

    /// The simulcast layer an SSRC belongs to (e.g. of a [`KeyframeRequest`]); `Some("")` for
    /// the one stream of a track without simulcast.
    pub fn rid_of_ssrc(&self, ssrc: u32) -> Option<&str> {
        self.shared
            .layers
            .iter()
            .find(|l| l.ssrc == ssrc)
            .map(|l| l.rid.as_str())
    }

    /// Its layers (one, with rid "", for a track without simulcast) and whether each is sent.
    pub fn layers(&self) -> Vec<LayerState> {
        self.shared.layer_state.borrow().clone()
    }

    /// The layers, updated whenever the application or the server (dynacast) turns one on or
    /// off.
    pub fn watch_layers(&self) -> watch::Receiver<Vec<LayerState>> {
        self.shared.layer_state.subscribe()
    }

    /// Whether the layer is sent now: enabled here and wanted by the server. False for an
    /// unknown rid.
    pub fn layer_active(&self, rid: &str) -> bool {
        self.shared
            .layer_state
            .borrow()
            .iter()
            .any(|s| s.rid == rid && s.active())
    }

    /// Starts or stops sending one layer (as a browser's `encodings[i].active`): while
    /// inactive, [`write_layer_rtp`](Self::write_layer_rtp) drops its packets. Independent of
    /// what the server wants (dynacast); a layer is sent when both want it.
    pub fn set_layer_active(&self, rid: &str, active: bool) -> Result<()> {
        let mut found = false;
        self.shared.layer_state.send_if_modified(|states| {
            let Some(s) = states.iter_mut().find(|s| s.rid == rid) else {
                return false;
            };
            found = true;
            let changed = s.enabled != active;
            s.enabled = active;
            changed
        });
        if found {
            Ok(())
        } else {
            Err(ClientError::InvalidArgument(format!("no layer {rid:?}")))
        }
    }

    /// RTP packets handed to the connection for this layer so far.
    pub fn packets_sent(&self, rid: &str) -> u64 {
        self.shared
            .layer(rid)
            .map_or(0, |l| l.sent.load(Ordering::Relaxed))
    }

    /// Sends one RTP packet of a track without simulcast. SSRC and payload type are rewritten
    /// to the negotiated ones; sequence number, timestamp, marker and payload are sent as given.
    pub async fn write_rtp(&self, packet: &rtc::rtp::Packet) -> Result<()> {
        if self.shared.simulcast {
            return Err(ClientError::InvalidArgument(
                "a simulcast track is written per layer: use write_layer_rtp".into(),
            ));
        }
        self.shared.write(&self.shared.layers[0], packet).await
    }

    /// Sends one RTP packet of simulcast layer `rid`, as [`write_rtp`](Self::write_rtp) does,
    /// adding the mid and rid header extensions. Returns false, sending nothing, while the
    /// layer is inactive (see [`layer_active`](Self::layer_active)).
    pub async fn write_layer_rtp(&self, rid: &str, packet: &rtc::rtp::Packet) -> Result<bool> {
        let layer = self
            .shared
            .layer(rid)
            .ok_or_else(|| ClientError::InvalidArgument(format!("no layer {rid:?}")))?;
        if !self.layer_active(rid) {
            return Ok(false);
        }
        self.shared.write(layer, packet).await?;
        Ok(true)
    }

    /// Packetizes and sends one encoded frame (or audio packet) lasting `duration` (tracks
    /// without simulcast).
    pub async fn write_sample(&self, data: Bytes, duration: Duration) -> Result<()> {
        if self.shared.simulcast {
            return Err(ClientError::InvalidArgument(
                "write_sample does not support simulcast tracks".into(),
            ));
        }
        let pt = self.shared.negotiated().await?.payload_type;
        let sample = Sample {
            data,
            duration,
            ..Sample::new(Instant::now())
        };
        self.shared
            .track
            .write_sample(self.ssrc(), pt, &sample, &[])
            .await?;
        Ok(())
    }

    /// PLI/FIR requests the server sends for this track (any of its layers). Each call gives
    /// an independent receiver that sees requests from now on.
    pub fn keyframe_requests(&self) -> KeyframeRequests {
        KeyframeRequests {
            rx: self.shared.keyframes.subscribe(),
        }
    }

    async fn command<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T>>) -> Command,
    ) -> Result<T> {
        let tx = self.commands.upgrade().ok_or(ClientError::Closed)?;
        let (reply, rx) = oneshot::channel();
        tx.send(make(reply))
            .await
            .map_err(|_| ClientError::Closed)?;
        rx.await.map_err(|_| ClientError::Closed)?
    }

    /// Mutes or unmutes the publication (tells the server; keep or stop writing as you like).
    pub async fn set_muted(&self, muted: bool) -> Result<()> {
        let sid = self.info.sid.clone();
        self.command(|reply| Command::Mute { sid, muted, reply })
            .await
    }

    /// Stops publishing: tells the server, removes the sender and renegotiates.
    pub async fn unpublish(&self) -> Result<()> {
        let cid = self.shared.cid.clone();
        self.command(|reply| Command::Unpublish { cid, reply })
            .await
    }
}
