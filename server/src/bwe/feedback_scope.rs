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

use rtc::interceptor::{Packet, TaggedPacket};
use rtc::rtcp::transport_feedbacks::transport_layer_cc::TransportLayerCc;

use super::link::LinkState;

/// Wire-ward of the engine's congestion control (1_000): the read walk reaches this first.
pub const FEEDBACK_SCOPE_SLOT: usize = 500;

/// Tells `link`'s estimator where each transport-wide feedback packet in `msg` starts. The
/// transport runs it on every inbound packet, wire-ward of the engine's congestion control.
pub fn note_feedback_starts(link: &LinkState, msg: &TaggedPacket) {
    if let Packet::Rtcp(packets) = &msg.message.packet {
        for feedback in packets
            .iter()
            .filter_map(|p| p.as_any().downcast_ref::<TransportLayerCc>())
        {
            link.estimator()
                .note_feedback_start(feedback.base_sequence_number);
        }
    }
}
