//! Prism's own pieces of the engine's interceptor chain.
//!
//! - [`ReadTap`] with [`mark_for_application`] lets the RTCP the worker acts on (PLI, FIR, sender and receiver reports,
//!   NACK for counting) reach the application; the chain otherwise drops it at its end.
//! - [`CountingNackResponder`] answers subscribers' NACKs from the packets recently sent on each
//!   down track (RTX when the subscriber negotiated it, the same stream otherwise) and counts
//!   what it received, resent and could not find. The cached packets share their payload with
//!   every other subscriber (`Bytes`), so the cache holds headers, not copies of media.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use rtc::interceptor::{
    Attribute, AttributedPacket, Interceptor, Packet, StreamInfo, TaggedPacket,
};
use rtc::rtcp;
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::sender_report::SenderReport;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::rtp;
use rtc::sansio::Protocol;
use rtc::shared::TransportContext;
use rtc::shared::error::Error;

use super::WorkerStats;

/// Where the tap sits: application-ward of every built-in interceptor, so they have all acted
/// on a packet before the application sees it.
pub const FEEDBACK_TAP_SLOT: usize = 14_000;

/// Packets kept per down track for retransmission: about a second of a 4 Mbit/s stream (more
/// of slower ones). A power of two so a sequence number indexes the ring directly.
const NACK_CACHE: usize = 512;

fn wanted_by_application(packet: &dyn rtcp::Packet) -> bool {
    let any = packet.as_any();
    any.is::<PictureLossIndication>()
        || any.is::<FullIntraRequest>()
        || any.is::<SenderReport>()
        || any.is::<ReceiverReport>()
        || any.is::<TransportLayerNack>()
        || any.is::<ReceiverEstimatedMaximumBitrate>()
}

/// Marks the inbound RTCP the worker consumes.
pub fn mark_for_application(msg: &mut TaggedPacket) {
    if let Packet::Rtcp(packets) = &msg.message.packet
        && packets.iter().any(|p| wanted_by_application(p.as_ref()))
    {
        msg.message.add(Attribute::DeliverToApplication);
    }
}

/// An interceptor that shows every inbound packet to `inspect` (which may mark it) and passes
/// everything through unchanged: the feedback tap, and the estimator's feedback scope.
pub struct ReadTap<F> {
    inspect: F,
    read_queue: VecDeque<TaggedPacket>,
    write_queue: VecDeque<TaggedPacket>,
}

impl<F: FnMut(&mut TaggedPacket)> ReadTap<F> {
    pub fn new(inspect: F) -> Self {
        Self {
            inspect,
            read_queue: VecDeque::new(),
            write_queue: VecDeque::new(),
        }
    }
}

impl<F: FnMut(&mut TaggedPacket)> Protocol<TaggedPacket, TaggedPacket, ()> for ReadTap<F> {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        (self.inspect)(&mut msg);
        self.read_queue.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.read_queue.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.write_queue.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.write_queue.pop_front()
    }

    fn handle_timeout(&mut self, _now: Instant) -> Result<(), Self::Error> {
        Ok(())
    }

    fn poll_timeout(&mut self) -> Option<Self::Time> {
        None
    }
}

impl<F: FnMut(&mut TaggedPacket) + Send + Sync> Interceptor for ReadTap<F> {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

/// A packet resent more often than this is given up on: the receiver evidently cannot get it
/// (or cannot tell it got it), and each resend costs its link.
const MAX_RESENDS: u8 = 3;
/// Minimum time between two resends of one packet: a NACK repeated before our retransmission
/// could have arrived is not a new loss.
const RESEND_GAP: std::time::Duration = std::time::Duration::from_millis(100);

struct Sent {
    packet: rtp::Packet,
    resends: u8,
    last_resend: Option<Instant>,
}

/// Recently sent packets of one outgoing stream, by sequence number.
struct SentStream {
    ring: Vec<Option<Sent>>,
    rtx: Option<(u32, u8)>,
    rtx_sequence: u16,
}

impl SentStream {
    fn get_mut(&mut self, seq: u16) -> Option<&mut Sent> {
        self.ring
            .get_mut(seq as usize % NACK_CACHE)?
            .as_mut()
            .filter(|s| s.packet.header.sequence_number == seq)
    }

    /// The packet to send for a NACKed one: wrapped in RTX (RFC 4588: the original sequence
    /// number, then the original payload) when negotiated, else the packet itself again.
    fn retransmission(&mut self, seq: u16, now: Instant) -> Resend {
        let Some(sent) = self.get_mut(seq) else {
            return Resend::Gone;
        };
        if sent.resends >= MAX_RESENDS
            || sent
                .last_resend
                .is_some_and(|at| now.saturating_duration_since(at) < RESEND_GAP)
        {
            return Resend::Suppressed;
        }
        sent.resends += 1;
        sent.last_resend = Some(now);
        let original = sent.packet.clone();
        let Some((ssrc, payload_type)) = self.rtx else {
            return Resend::Packet(original);
        };
        let mut payload = Vec::with_capacity(2 + original.payload.len());
        payload.extend_from_slice(&seq.to_be_bytes());
        payload.extend_from_slice(&original.payload);
        let sequence_number = self.rtx_sequence;
        self.rtx_sequence = self.rtx_sequence.wrapping_add(1);
        Resend::Packet(rtp::Packet {
            header: rtp::header::Header {
                version: 2,
                marker: original.header.marker,
                payload_type,
                sequence_number,
                timestamp: original.header.timestamp,
                ssrc,
                ..Default::default()
            },
            payload: payload.into(),
        })
    }
}

enum Resend {
    Packet(rtp::Packet),
    /// Resent too often or too recently.
    Suppressed,
    /// No longer (or never) in the cache.
    Gone,
}

/// Answers NACKs for this connection's outgoing streams; counts into the worker's stats.
pub struct CountingNackResponder {
    streams: HashMap<u32, SentStream>,
    stats: Arc<WorkerStats>,
    read_queue: VecDeque<TaggedPacket>,
    write_queue: VecDeque<TaggedPacket>,
}

impl CountingNackResponder {
    pub fn new(stats: Arc<WorkerStats>) -> Self {
        Self {
            streams: HashMap::new(),
            stats,
            read_queue: VecDeque::new(),
            write_queue: VecDeque::new(),
        }
    }

    fn answer(&mut self, now: Instant, nack: &TransportLayerNack) {
        let Some(stream) = self.streams.get_mut(&nack.media_ssrc) else {
            // Not a stream we keep packets for (no NACK negotiated): count what is asked.
            let asked: u32 = nack
                .nacks
                .iter()
                .map(|p| 1 + p.lost_packets.count_ones())
                .sum();
            self.stats
                .nacks_received
                .fetch_add(asked as u64, Ordering::Relaxed);
            self.stats
                .nack_missed
                .fetch_add(asked as u64, Ordering::Relaxed);
            return;
        };
        for pair in &nack.nacks {
            let lost = std::iter::once(pair.packet_id).chain(
                (0..16u16)
                    .filter(|bit| pair.lost_packets & (1 << bit) != 0)
                    .map(|bit| pair.packet_id.wrapping_add(bit + 1)),
            );
            for seq in lost {
                self.stats.nacks_received.fetch_add(1, Ordering::Relaxed);
                match stream.retransmission(seq, now) {
                    Resend::Packet(packet) => {
                        self.stats
                            .nack_retransmitted
                            .fetch_add(1, Ordering::Relaxed);
                        self.write_queue.push_back(TaggedPacket {
                            now,
                            transport: TransportContext::default(),
                            message: AttributedPacket::new(Packet::Rtp(packet))
                                .with(Attribute::Retransmission),
                        });
                    }
                    Resend::Suppressed => {
                        self.stats.nack_suppressed.fetch_add(1, Ordering::Relaxed);
                    }
                    Resend::Gone => {
                        self.stats.nack_missed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for CountingNackResponder {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtcp(packets) = &msg.message.packet {
            for p in packets {
                if let Some(nack) = p.as_any().downcast_ref::<TransportLayerNack>() {
                    self.answer(msg.now, nack);
                }
            }
        }
        self.read_queue.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.read_queue.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        // Probe padding is not kept: resending it repairs nothing, and a receiver that discards
        // it would ask again and again.
        if let Packet::Rtp(packet) = &msg.message.packet
            && !msg.message.has(&Attribute::Retransmission)
            && !(packet.header.padding && packet.payload.is_empty())
            && let Some(stream) = self.streams.get_mut(&packet.header.ssrc)
        {
            // A header clone and a reference count on the shared payload.
            if stream.ring.is_empty() {
                stream.ring.resize_with(NACK_CACHE, || None);
            }
            stream.ring[packet.header.sequence_number as usize % NACK_CACHE] = Some(Sent {
                packet: packet.clone(),
                resends: 0,
                last_resend: None,
            });
        }
        self.write_queue.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.write_queue.pop_front()
    }

    fn handle_timeout(&mut self, _now: Instant) -> Result<(), Self::Error> {
        Ok(())
    }

    fn poll_timeout(&mut self) -> Option<Self::Time> {
        None
    }
}

impl Interceptor for CountingNackResponder {
    fn bind_local_stream(&mut self, info: &StreamInfo) {
        tracing::trace!(ssrc = info.ssrc, rtx = ?info.ssrc_rtx, mime = %info.mime_type, feedback = ?info.rtcp_feedback, "local stream bound");
        let nack = info
            .rtcp_feedback
            .iter()
            .any(|fb| fb.typ == "nack" && fb.parameter.is_empty());
        if nack {
            self.streams.insert(
                info.ssrc,
                SentStream {
                    // Allocated on the first packet: a stream that never sends costs nothing.
                    ring: Vec::new(),
                    rtx: info.ssrc_rtx.zip(info.payload_type_rtx),
                    rtx_sequence: rand::random(),
                },
            );
        }
    }

    fn unbind_local_stream(&mut self, info: &StreamInfo) {
        self.streams.remove(&info.ssrc);
    }

    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}
