//! Where each transport-wide feedback packet starts, told to the estimator before the engine's
//! congestion-control interceptor resolves that feedback.
//!
//! The engine reports every packet sent before the newest acknowledged one that no feedback
//! mentioned as lost. A receiver's feedback packets each start where the previous one ended,
//! so when one of them is lost on the way back (or the receiver started recording after our
//! first packets), the packets it covered read as lost although nobody said so. On a link with
//! 5% loss each way that doubled the loss the estimator saw and cut a healthy estimate. With
//! the first sequence number of the feedback at hand, the estimator counts only the losses a
//! feedback actually reported.

use std::collections::VecDeque;
use std::time::Instant;

use rtc::interceptor::{Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::rtcp::transport_feedbacks::transport_layer_cc::TransportLayerCc;
use rtc::sansio::Protocol;
use rtc::shared::error::Error;

use super::link::SharedLink;

/// Wire-ward of the engine's congestion control (1_000): the read walk reaches this first.
pub const FEEDBACK_SCOPE_SLOT: usize = 500;

pub struct FeedbackScope {
    link: SharedLink,
    read_queue: VecDeque<TaggedPacket>,
    write_queue: VecDeque<TaggedPacket>,
}

impl FeedbackScope {
    pub fn new(link: SharedLink) -> Self {
        Self {
            link,
            read_queue: VecDeque::new(),
            write_queue: VecDeque::new(),
        }
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for FeedbackScope {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtcp(packets) = &msg.message.packet {
            for feedback in packets
                .iter()
                .filter_map(|p| p.as_any().downcast_ref::<TransportLayerCc>())
            {
                self.link
                    .estimator()
                    .note_feedback_start(feedback.base_sequence_number);
            }
        }
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

impl Interceptor for FeedbackScope {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}
