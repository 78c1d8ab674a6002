//! Local (published) and remote (subscribed) tracks.

use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use prism_proto::signal::{TrackInfo, TrackKind as ProtoTrackKind, TrackSource};
use rtc::media::Sample;
use rtc::media_stream::MediaStreamTrack;
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use tokio::sync::{broadcast, mpsc, oneshot};
use webrtc::media_stream::track_local::static_sample::TrackLocalStaticSample;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::rtp_transceiver::RtpSender;

use crate::error::{ClientError, Result};
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

const PT_UNKNOWN: u16 = u16::MAX;

/// State of a local track shared between its handle and the room task.
pub(crate) struct LocalTrackShared {
    pub(crate) cid: String,
    pub(crate) codec: Codec,
    pub(crate) ssrc: u32,
    /// Negotiated payload type, `PT_UNKNOWN` until looked up; reset after each negotiation.
    payload_type: AtomicU16,
    pub(crate) track: Arc<TrackLocalStaticSample>,
    pub(crate) sender: std::sync::Mutex<Option<Arc<dyn RtpSender>>>,
    keyframes: broadcast::Sender<KeyframeRequest>,
}

impl LocalTrackShared {
    /// Builds the webrtc track for `options` (random SSRC, msid `<stream_id> <cid>`).
    pub(crate) fn new(options: &TrackOptions, stream_id: String) -> Result<Arc<Self>> {
        let cid = format!("TC_{:016x}", rand::random::<u64>());
        let ssrc = rand::random::<u32>() | 1;
        let media = MediaStreamTrack::new(
            stream_id,
            cid.clone(),
            options.name.clone(),
            options.kind().to_rtc(),
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(ssrc),
                    ..Default::default()
                },
                codec: options.codec.rtc_codec(),
                ..Default::default()
            }],
        );
        let track = Arc::new(TrackLocalStaticSample::new(Instant::now(), media)?);
        let (keyframes, _) = broadcast::channel(16);
        Ok(Arc::new(Self {
            cid,
            codec: options.codec,
            ssrc,
            payload_type: AtomicU16::new(PT_UNKNOWN),
            track,
            sender: std::sync::Mutex::new(None),
            keyframes,
        }))
    }

    /// Forgets the payload type so the next write looks it up again (after a renegotiation).
    pub(crate) fn invalidate_payload_type(&self) {
        self.payload_type.store(PT_UNKNOWN, Ordering::Relaxed);
    }

    async fn payload_type(&self) -> Result<u8> {
        let cached = self.payload_type.load(Ordering::Relaxed);
        if cached != PT_UNKNOWN {
            return Ok(cached as u8);
        }
        let sender = self
            .sender
            .lock()
            .map_err(|_| ClientError::Closed)?
            .clone()
            .ok_or(ClientError::Closed)?;
        let params = sender.get_parameters().await?;
        let mime = self.codec.mime_type();
        let pt = params
            .rtp_parameters
            .codecs
            .iter()
            .find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(mime))
            .map(|c| c.payload_type)
            .ok_or_else(|| {
                ClientError::Protocol(format!("{mime} was not negotiated for this track"))
            })?;
        self.payload_type.store(pt as u16, Ordering::Relaxed);
        Ok(pt)
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
/// Cheap to clone. Write either raw RTP ([`write_rtp`](Self::write_rtp)) or encoded frames
/// ([`write_sample`](Self::write_sample)) to it, not both: each numbers packets its own way.
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
            .field("ssrc", &self.shared.ssrc)
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

    /// The SSRC its packets are sent with.
    pub fn ssrc(&self) -> u32 {
        self.shared.ssrc
    }

    /// Sends one RTP packet. SSRC and payload type are rewritten to the negotiated ones;
    /// sequence number, timestamp, marker and payload are sent as given.
    pub async fn write_rtp(&self, packet: &rtc::rtp::Packet) -> Result<()> {
        let mut packet = packet.clone();
        packet.header.ssrc = self.shared.ssrc;
        packet.header.payload_type = self.shared.payload_type().await?;
        // Extensions are per-leg; unnegotiated ids would be rejected.
        packet.header.extension = false;
        packet.header.extensions.clear();
        self.shared.track.write_rtp(packet).await?;
        Ok(())
    }

    /// Packetizes and sends one encoded frame (or audio packet) lasting `duration`.
    pub async fn write_sample(&self, data: Bytes, duration: Duration) -> Result<()> {
        let pt = self.shared.payload_type().await?;
        let sample = Sample {
            data,
            duration,
            ..Sample::new(Instant::now())
        };
        self.shared
            .track
            .write_sample(self.shared.ssrc, pt, &sample, &[])
            .await?;
        Ok(())
    }

    /// PLI/FIR requests the server sends for this track. Each call gives an independent
    /// receiver that sees requests from now on.
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

/// A subscribed track's media.
#[derive(Clone)]
pub struct RemoteTrack {
    pub(crate) sid: String,
    pub(crate) participant_sid: String,
    pub(crate) kind: TrackKind,
    pub(crate) track: Arc<dyn TrackRemote>,
    pub(crate) repair: Arc<RtxRepair>,
    pub(crate) sender_report: Arc<std::sync::Mutex<Option<SenderReportTime>>>,
}

/// The sender's clock as its latest RTCP sender report states it: this NTP time (32.32 fixed
/// point seconds since 1900) corresponds to this RTP timestamp of the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderReportTime {
    /// NTP timestamp.
    pub ntp: u64,
    /// RTP timestamp at that instant.
    pub rtp: u32,
}

/// Undoes RFC 4588 retransmission wrapping for a remote track. webrtc-rs 0.21.1 only unwraps RTX
/// when the receiving transceiver has codec preferences, which a transceiver created by a
/// remote offer does not; its RTX packets then reach the application still wrapped (RTX SSRC,
/// RTX payload type, original sequence number in the first two payload bytes).
#[derive(Debug, Default)]
pub(crate) struct RtxRepair {
    /// RTX SSRC → primary SSRC, from the track's negotiated codings.
    pairs: std::sync::Mutex<Vec<(u32, u32)>>,
    /// SSRCs seen that are not RTX (so their packets need no look-up).
    plain: std::sync::Mutex<Vec<u32>>,
    /// Payload type of the primary stream, learned from its packets.
    primary_payload_type: AtomicU16,
}

impl RtxRepair {
    const UNKNOWN: u16 = u16::MAX;

    pub(crate) fn new() -> Self {
        Self {
            pairs: Default::default(),
            plain: Default::default(),
            primary_payload_type: AtomicU16::new(Self::UNKNOWN),
        }
    }

    fn primary_of(&self, ssrc: u32) -> Option<u32> {
        let pairs = self.pairs.lock().unwrap_or_else(|p| p.into_inner());
        pairs.iter().find(|(rtx, _)| *rtx == ssrc).map(|(_, p)| *p)
    }

    fn is_primary(&self, ssrc: u32) -> bool {
        let plain = self.plain.lock().unwrap_or_else(|p| p.into_inner());
        plain.contains(&ssrc)
    }

    fn mark_primary(&self, ssrc: u32) {
        let mut plain = self.plain.lock().unwrap_or_else(|p| p.into_inner());
        if !plain.contains(&ssrc) && plain.len() < 16 {
            plain.push(ssrc);
        }
    }

    fn learn(&self, codings: &[rtc::rtp_transceiver::rtp_sender::RTCRtpEncodingParameters]) {
        let mut pairs = self.pairs.lock().unwrap_or_else(|p| p.into_inner());
        pairs.clear();
        pairs.extend(codings.iter().filter_map(|c| {
            let p = &c.rtp_coding_parameters;
            Some((p.rtx.as_ref()?.ssrc, p.ssrc?))
        }));
    }

    /// Rewrites an RTX packet into the packet it repairs; false when it carries nothing (a
    /// padding-only probe) and should be skipped.
    fn unwrap(&self, packet: &mut rtc::rtp::Packet, primary_ssrc: u32) -> bool {
        let primary_pt = self.primary_payload_type.load(Ordering::Relaxed);
        if packet.payload.len() < 2 || primary_pt == Self::UNKNOWN {
            return false;
        }
        packet.header.sequence_number = u16::from_be_bytes([packet.payload[0], packet.payload[1]]);
        packet.header.ssrc = primary_ssrc;
        packet.header.payload_type = primary_pt as u8;
        packet.payload = packet.payload.slice(2..);
        true
    }
}

impl std::fmt::Debug for RemoteTrack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteTrack")
            .field("sid", &self.sid)
            .field("participant_sid", &self.participant_sid)
            .field("kind", &self.kind)
            .finish()
    }
}

impl RemoteTrack {
    /// Track sid (from the msid).
    pub fn sid(&self) -> &str {
        &self.sid
    }

    /// Publisher's participant sid (from the msid).
    pub fn participant_sid(&self) -> &str {
        &self.participant_sid
    }

    /// Audio or video.
    pub fn kind(&self) -> TrackKind {
        self.kind
    }

    /// The next RTP packet of this track, payload intact. Fails with
    /// [`ClientError::TrackEnded`] once the track is gone. Read steadily: the queue in front
    /// of this holds 256 packets and drops beyond that.
    pub async fn read_rtp(&self) -> Result<rtc::rtp::Packet> {
        loop {
            match self.track.poll().await {
                Some(TrackRemoteEvent::OnRtpPacket(mut packet)) => {
                    let ssrc = packet.header.ssrc;
                    if !self.repair.is_primary(ssrc) && self.repair.primary_of(ssrc).is_none() {
                        // A stream not seen before: (re)read the negotiated SSRC pairs.
                        self.repair.learn(&self.track.codings().await);
                    }
                    match self.repair.primary_of(ssrc) {
                        Some(primary) => {
                            if !self.repair.unwrap(&mut packet, primary) {
                                continue;
                            }
                        }
                        None => {
                            self.repair.mark_primary(ssrc);
                            self.repair
                                .primary_payload_type
                                .store(packet.header.payload_type as u16, Ordering::Relaxed);
                        }
                    }
                    return Ok(packet);
                }
                Some(TrackRemoteEvent::OnRtcpPacket(packets)) => {
                    for p in packets {
                        if let Some(sr) = p
                            .as_any()
                            .downcast_ref::<rtc::rtcp::sender_report::SenderReport>()
                        {
                            let mut last =
                                self.sender_report.lock().unwrap_or_else(|p| p.into_inner());
                            *last = Some(SenderReportTime {
                                ntp: sr.ntp_time,
                                rtp: sr.rtp_time,
                            });
                        }
                    }
                }
                Some(TrackRemoteEvent::OnEnded) | None => return Err(ClientError::TrackEnded),
                Some(_) => continue,
            }
        }
    }

    /// The latest sender report received for this track (updated while [`Self::read_rtp`] is
    /// being called).
    pub fn last_sender_report(&self) -> Option<SenderReportTime> {
        *self.sender_report.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Asks the publisher (through the server) for a keyframe.
    pub async fn request_keyframe(&self) -> Result<()> {
        let ssrc = webrtc::media_stream::Track::ssrcs(&*self.track)
            .await
            .first()
            .copied()
            .unwrap_or(0);
        self.track
            .write_rtcp(vec![Box::new(PictureLossIndication {
                sender_ssrc: 0,
                media_ssrc: ssrc,
            })])
            .await?;
        Ok(())
    }
}
