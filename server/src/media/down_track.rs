//! One subscriber's copy of one track: the sender on the subscriber's connection, the SSRC,
//! payload type and extension ids negotiated there, and the munger that keeps its sequence
//! numbers and timestamps continuous. The payload is never copied or touched here.

use std::time::{Duration, Instant};

/// How often each down track gets a sender report (RFC 3550 suggests about 5 s at low rates;
/// browsers send them every second, and lip sync converges faster with frequent ones).
const SENDER_REPORT_INTERVAL: Duration = Duration::from_secs(1);

use rtc::rtp::{self, header::Extension};
use rtc::rtp_transceiver::RTCRtpSenderId;

use rtc::rtcp::sender_report::SenderReport;

use super::extensions::ExtensionMap;
use super::layers::LayerRequest;
use super::munger::{IncomingPacket, MungeOutcome, RtpMunger};
use super::picture_id::{PictureDescriptor, PictureIdRewriter};
use super::reports::{SenderClock, ntp_middle, round_trip};
use super::{DownTrackId, ReceiverId};

#[derive(Debug)]
pub struct DownTrack {
    pub id: DownTrackId,
    pub track_sid: String,
    pub receiver: ReceiverId,
    pub sender: RTCRtpSenderId,
    pub ssrc: u32,
    /// Set once the subscriber's answer is applied: only then are payload type and extension
    /// ids known and media may flow.
    pub negotiated: Option<Negotiated>,
    /// The publisher layer (SSRC) this down track forwards.
    pub source: Option<u32>,
    /// The server offer that first carried this track (its answer activates it).
    pub offered_in: Option<u32>,
    pub munger: RtpMunger,
    pub packets_sent: u64,
    pub bytes_sent: u64,
    pub dropped: u64,
    /// When the next sender report is due, and the last one sent (its NTP middle bits, as a
    /// receiver report echoes them, and when it left) for round-trip times.
    pub next_sender_report: Option<Instant>,
    pub last_sender_report: Option<(u32, Instant)>,
    pub rtt: Option<Duration>,
    /// What the subscriber asked for (simulcast layer selection).
    pub request: LayerRequest,
    /// The stream state last reported to the subscriber.
    pub reported: Option<StreamReport>,
    /// When the subscription started, until its first packet goes out (time-to-first-packet
    /// histogram).
    pub awaiting_first_packet: Option<Instant>,
    /// The loss fraction (of 256) in the subscriber's latest report block about this track.
    pub fraction_lost: Option<u8>,
    /// The downlink allocator's decision (None: no estimate, no limit).
    pub allocation: Option<crate::bwe::allocator::Decision>,
    /// A screen share (allocated first, like a pinned track).
    pub screen_share: bool,
    picture_ids: PictureIdRewriter,
}

/// What a subscriber is told it receives: the layer forwarded, or paused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamReport {
    pub source: Option<u32>,
    pub paused: bool,
    pub reason: PauseReason,
}

/// Why a down track forwards nothing (`StreamStateUpdate.Reason` in signal.proto).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PauseReason {
    #[default]
    None,
    Requested,
    NoLayer,
    Bandwidth,
}

impl PauseReason {
    /// The proto enum value.
    pub fn to_proto(self) -> i32 {
        match self {
            Self::None => 0,
            Self::Requested => 1,
            Self::NoLayer => 2,
            Self::Bandwidth => 3,
        }
    }
}

#[derive(Debug)]
pub struct Negotiated {
    pub payload_type: u8,
    pub extensions: ExtensionMap,
}

impl DownTrack {
    pub fn new(
        id: DownTrackId,
        track_sid: String,
        receiver: ReceiverId,
        sender: RTCRtpSenderId,
        ssrc: u32,
        munger: RtpMunger,
    ) -> Self {
        Self {
            id,
            track_sid,
            receiver,
            sender,
            ssrc,
            negotiated: None,
            source: None,
            offered_in: None,
            munger,
            packets_sent: 0,
            bytes_sent: 0,
            dropped: 0,
            next_sender_report: None,
            last_sender_report: None,
            rtt: None,
            request: LayerRequest::default(),
            reported: None,
            awaiting_first_packet: None,
            fraction_lost: None,
            allocation: None,
            screen_share: false,
            picture_ids: PictureIdRewriter::default(),
        }
    }

    /// The sender report to send now, if one is due and the publisher's clock is known:
    /// its (NTP, RTP) pair translated through this down track's rewriting.
    pub fn sender_report(
        &mut self,
        clock: Option<&SenderClock>,
        clock_rate: u32,
        now: Instant,
    ) -> Option<SenderReport> {
        if self.negotiated.is_none() || self.packets_sent == 0 {
            return None;
        }
        if self.next_sender_report.is_some_and(|due| now < due) {
            return None;
        }
        let source = self.source?;
        let (ntp, rtp) = clock?.translated_at(now, clock_rate, |ts| {
            self.munger.translate_timestamp(source, ts)
        })?;
        self.next_sender_report = Some(now + SENDER_REPORT_INTERVAL);
        self.last_sender_report = Some((ntp_middle(ntp), now));
        Some(SenderReport {
            ssrc: self.ssrc,
            ntp_time: ntp,
            rtp_time: rtp,
            packet_count: self.packets_sent as u32,
            octet_count: self.bytes_sent as u32,
            ..Default::default()
        })
    }

    /// Takes a receiver's report block about this down track; updates the round-trip time when
    /// it echoes our last sender report.
    pub fn on_report_block(&mut self, lsr: u32, dlsr: u32, now: Instant) -> Option<Duration> {
        let (sent_mid, sent_at) = self.last_sender_report?;
        if lsr == 0 || lsr != sent_mid {
            return None;
        }
        let rtt = round_trip(sent_at, now, dlsr);
        self.rtt = Some(rtt);
        Some(rtt)
    }

    /// Whether this down track still waits for a keyframe of its source before it can start.
    pub fn waiting_for_keyframe(&self) -> bool {
        self.negotiated.is_some() && self.munger.waiting_for_keyframe()
    }

    /// Follows `ssrc` from now on; forwarding resumes at its next keyframe.
    pub fn set_source(&mut self, ssrc: u32) {
        if self.source != Some(ssrc) {
            self.source = Some(ssrc);
            self.munger.switch_to(ssrc);
        }
    }

    /// Follows `ssrc` from now on and drops the current source at once (see
    /// [`RtpMunger::switch_now`]).
    pub fn cut_to_source(&mut self, ssrc: u32) {
        self.source = Some(ssrc);
        self.munger.switch_now(ssrc);
    }

    /// `n` padding-only packets (a bandwidth probe), with sequence numbers of their own right
    /// after the newest packet sent, into `out`. None when padding cannot go now (in the
    /// middle of a frame, or nothing sent yet). They leave the worker empty; the pacer gives
    /// them their size (see `bwe::pacer::inflate_padding`).
    pub fn padding(&mut self, n: u16, out: &mut Vec<rtp::Packet>) -> Option<()> {
        let payload_type = self.negotiated.as_ref()?.payload_type;
        let (first, timestamp) = self.munger.padding(n)?;
        for i in 0..n {
            out.push(rtp::Packet {
                header: rtp::header::Header {
                    version: 2,
                    padding: true,
                    payload_type,
                    sequence_number: first.wrapping_add(i),
                    timestamp,
                    ssrc: self.ssrc,
                    ..Default::default()
                },
                payload: bytes::Bytes::new(),
            });
        }
        Some(())
    }

    /// The packet this subscriber gets for `src`, or None when it is not forwarded (not yet
    /// negotiated, another layer, waiting for a keyframe, padding...). `picture` is the
    /// payload's descriptor for VP8 and VP9, whose picture IDs are kept continuous across
    /// switches.
    pub fn rewrite(
        &mut self,
        src: &rtp::Packet,
        keyframe_start: bool,
        picture: Option<&PictureDescriptor>,
        now: Instant,
    ) -> Option<rtp::Packet> {
        let negotiated = self.negotiated.as_ref()?;
        // The layer switched to, or the one still forwarded until that layer's keyframe (the
        // munger keeps the old one going meanwhile, so a switch does not freeze the video).
        if self.source != Some(src.header.ssrc)
            && self.munger.current_source() != Some(src.header.ssrc)
        {
            return None;
        }
        let outcome = self.munger.process(&IncomingPacket {
            source: src.header.ssrc,
            seq: src.header.sequence_number,
            timestamp: src.header.timestamp,
            marker: src.header.marker,
            payload_len: src.payload.len(),
            keyframe_start,
            arrival: now,
        });
        let MungeOutcome::Forward { seq, timestamp } = outcome else {
            self.dropped += 1;
            return None;
        };
        let extensions: Vec<Extension> = src
            .header
            .extensions
            .iter()
            .filter_map(|e| {
                negotiated.extensions.map(e.id).map(|id| Extension {
                    id,
                    payload: e.payload.clone(),
                })
            })
            .collect();
        let payload = match picture {
            Some(desc) => {
                self.picture_ids
                    .rewrite(self.munger.segments_started(), desc, &src.payload)
            }
            None => src.payload.clone(),
        };
        self.packets_sent += 1;
        self.bytes_sent += src.payload.len() as u64;
        Some(rtp::Packet {
            header: rtp::header::Header {
                version: 2,
                padding: false,
                extension: !extensions.is_empty(),
                marker: src.header.marker,
                payload_type: negotiated.payload_type,
                sequence_number: seq,
                timestamp,
                ssrc: self.ssrc,
                csrc: src.header.csrc.clone(),
                extension_profile: src.header.extension_profile,
                extensions,
                extensions_padding: 0,
            },
            payload,
        })
    }
}
