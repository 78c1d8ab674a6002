//! Interceptors that let a simulated client see RTCP: one on the application side that hands
//! PLI, FIR and sender reports to the application (the engine's chain drops inbound RTCP at its
//! end otherwise), and one on the wire side that logs the RTCP the client sends.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rtc::interceptor::{Attribute, Interceptor, Packet, Slot, StreamInfo, TaggedPacket};
use rtc::rtcp;
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::sender_report::SenderReport;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::sansio::Protocol;
use rtc::shared::error::Error;

/// Application-most: after every built-in interceptor has consumed what it needs.
pub fn app_slot() -> Slot {
    Slot::from(14_000)
}

/// Wire-most: below the NACK responder (4 000), so it sees every RTCP packet that leaves.
pub fn wire_slot() -> Slot {
    Slot::from(500)
}

/// A sender report as it left the client.
#[derive(Debug, Clone, Copy)]
pub struct SentReport {
    pub ssrc: u32,
    pub ntp: u64,
    pub rtp: u32,
    pub at: Instant,
}

/// What the client put on the wire, counted by the wire-side tap.
#[derive(Debug, Default)]
pub struct WireLog {
    /// Sequence numbers this client NACKed, and NACKed to it.
    pub nacked_packets: u64,
    pub nacked_to_us: u64,
    pub plis: u64,
    pub sender_reports: Vec<SentReport>,
}

/// Shared between the tap (inside the engine) and the test.
pub type SharedWireLog = Arc<Mutex<WireLog>>;

#[derive(Default)]
struct Queues {
    read: VecDeque<TaggedPacket>,
    write: VecDeque<TaggedPacket>,
}

/// Tags inbound PLI, FIR and sender reports for the application; passes everything through.
#[derive(Default)]
pub struct ToApplication(Queues);

impl Protocol<TaggedPacket, TaggedPacket, ()> for ToApplication {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Error> {
        if let Packet::Rtcp(packets) = &msg.message.packet
            && packets.iter().any(|p| {
                let any = p.as_any();
                any.is::<PictureLossIndication>()
                    || any.is::<FullIntraRequest>()
                    || any.is::<SenderReport>()
            })
        {
            msg.message.add(Attribute::DeliverToApplication);
        }
        self.0.read.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.0.read.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Error> {
        self.0.write.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.0.write.pop_front()
    }
}

impl Interceptor for ToApplication {
    fn bind_local_stream(&mut self, _: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _: &StreamInfo) {}
}

/// Sequence numbers one NACK asks for.
fn nacked(nack: &TransportLayerNack) -> u64 {
    nack.nacks
        .iter()
        .map(|n| 1 + u64::from(n.lost_packets.count_ones()))
        .sum()
}

/// Logs the RTCP the client sends into a [`WireLog`]; passes everything through.
pub struct WireTap {
    queues: Queues,
    log: SharedWireLog,
}

impl WireTap {
    pub fn new(log: SharedWireLog) -> Self {
        Self {
            queues: Queues::default(),
            log,
        }
    }

    fn record(&self, packet: &dyn rtcp::Packet, at: Instant) {
        let Ok(mut log) = self.log.lock() else {
            return;
        };
        let any = packet.as_any();
        if let Some(nack) = any.downcast_ref::<TransportLayerNack>() {
            log.nacked_packets += nacked(nack);
        } else if any.is::<PictureLossIndication>() {
            log.plis += 1;
        } else if let Some(sr) = any.downcast_ref::<SenderReport>() {
            log.sender_reports.push(SentReport {
                ssrc: sr.ssrc,
                ntp: sr.ntp_time,
                rtp: sr.rtp_time,
                at,
            });
        }
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for WireTap {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Error> {
        if let Packet::Rtcp(packets) = &msg.message.packet
            && let Ok(mut log) = self.log.lock()
        {
            for p in packets {
                if let Some(nack) = p.as_any().downcast_ref::<TransportLayerNack>() {
                    log.nacked_to_us += nacked(nack);
                }
            }
        }
        self.queues.read.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.queues.read.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Error> {
        if let Packet::Rtcp(packets) = &msg.message.packet {
            for p in packets {
                self.record(p.as_ref(), msg.now);
            }
        }
        self.queues.write.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.queues.write.pop_front()
    }
}

impl Interceptor for WireTap {
    fn bind_local_stream(&mut self, _: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _: &StreamInfo) {}
}
