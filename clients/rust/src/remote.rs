//! Subscribed (remote) tracks: their media, and what the subscriber asks the server to forward.

use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};

use prism_proto::signal::VideoQuality;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use tokio::sync::{mpsc, oneshot, watch};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};

use crate::error::{ClientError, Result};
use crate::layers::{SettingsChange, StreamState};
use crate::room::Command;
use crate::track::TrackKind;

/// A subscribed track's media.
#[derive(Clone)]
pub struct RemoteTrack {
    pub(crate) sid: String,
    pub(crate) participant_sid: String,
    pub(crate) kind: TrackKind,
    pub(crate) track: Arc<dyn TrackRemote>,
    pub(crate) repair: Arc<RtxRepair>,
    pub(crate) sender_report: Arc<std::sync::Mutex<Option<SenderReportTime>>>,
    pub(crate) stream_state: watch::Receiver<Option<StreamState>>,
    pub(crate) commands: mpsc::WeakSender<Command>,
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

    /// What the server forwards of this track (layer, or paused), from its latest
    /// `StreamStateUpdate`; `None` until the server sent one.
    pub fn stream_state(&self) -> Option<StreamState> {
        self.stream_state.borrow().clone()
    }

    /// The stream state, to await changes with (`changed().await`).
    pub fn watch_stream_state(&self) -> watch::Receiver<Option<StreamState>> {
        self.stream_state.clone()
    }

    /// Asks for a simulcast quality (`Low`, `Medium`, `High`), or `QualityUnspecified` to let
    /// the rendered size decide. The other settings stay as they were.
    pub async fn set_quality(&self, quality: VideoQuality) -> Result<()> {
        self.change_settings(SettingsChange::Quality(quality)).await
    }

    /// Tells the server how large the video is shown (pixels), so it can forward the smallest
    /// layer at least that large (when no quality is set).
    pub async fn set_dimensions(&self, width: u32, height: u32) -> Result<()> {
        self.change_settings(SettingsChange::Dimensions(width, height))
            .await
    }

    /// Pauses the video (nothing forwarded) or resumes it, without unsubscribing.
    pub async fn set_paused(&self, paused: bool) -> Result<()> {
        self.change_settings(SettingsChange::Paused(paused)).await
    }

    /// Pins the track (shown large) or unpins it: on a short downlink the server gives a
    /// pinned track its layers before the subscriber's other video.
    pub async fn set_pinned(&self, pinned: bool) -> Result<()> {
        self.change_settings(SettingsChange::Pinned(pinned)).await
    }

    async fn change_settings(&self, change: SettingsChange) -> Result<()> {
        let tx = self.commands.upgrade().ok_or(ClientError::Closed)?;
        let (reply, rx) = oneshot::channel();
        let command = Command::TrackSettings {
            sid: self.sid.clone(),
            change,
            reply,
        };
        tx.send(command).await.map_err(|_| ClientError::Closed)?;
        rx.await.map_err(|_| ClientError::Closed)?
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
