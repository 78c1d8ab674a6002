//! Packet groups for the delay trend: packets that left together, and the delay change from
//! one group to the next.
//!
//! A group is the packets sent within [`SEND_BURST`] of its first one, as in the engine's
//! grouping, plus (unlike it) the packets that arrive back to back behind a burst while the
//! queue the burst made drains: within [`ARRIVAL_BURST`] of the one before, and delayed no
//! more than the group's most delayed packet (the queue is not growing). Without that, the pacer's own burst (a keyframe's first
//! 40 ms released at once) reads as a queue growing over the next ten groups, while the link
//! drains it faster than the pacer sends: overuse on a link with room to spare.
//!
//! Pure: departures are instants, arrivals the receiver's clock.

use std::time::{Duration, Instant};

use rtc::interceptor::PacketReport;

/// Packets sent this close after a group's first one belong to it.
const SEND_BURST: Duration = Duration::from_millis(5);
/// A packet arriving this close after the group's last one, sooner after it than it was sent,
/// was queued behind the group.
const ARRIVAL_BURST: Duration = Duration::from_millis(5);
/// No group spans more arrival time than this.
const MAX_BURST: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Copy)]
struct Group {
    first_departure: Instant,
    last_departure: Instant,
    first_arrival: Duration,
    last_arrival: Duration,
    /// The most any packet was delayed beyond the group's first one, in seconds.
    max_extra_delay: f64,
}

/// The delay change between two consecutive groups.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GroupDelta {
    /// How much later (or sooner, when negative) the group arrived after the previous one
    /// than it left after it, in ms.
    pub delta_ms: f64,
    /// When the group's last packet left.
    pub departure: Instant,
}

#[derive(Debug, Clone, Default)]
pub struct PacketGroups {
    current: Option<Group>,
    previous: Option<Group>,
}

impl PacketGroups {
    /// Adds one acknowledged packet (in send order); returns the delta of the group it closed.
    /// Lost packets, and packets that left before the current group (reordered reports), are
    /// skipped.
    pub fn add(&mut self, report: &PacketReport) -> Option<GroupDelta> {
        let arrival = report.arrival.filter(|_| report.arrived)?;
        let departure = report.departure;
        let Some(group) = self.current.as_mut() else {
            self.current = Some(Group::new(departure, arrival));
            return None;
        };
        if departure < group.first_departure {
            return None;
        }
        if departure.saturating_duration_since(group.first_departure) <= SEND_BURST
            || group.drains_into(departure, arrival)
        {
            group.last_departure = group.last_departure.max(departure);
            group.last_arrival = group.last_arrival.max(arrival);
            group.max_extra_delay = group
                .max_extra_delay
                .max(group.extra_delay(departure, arrival));
            return None;
        }
        let closed = *group;
        self.current = Some(Group::new(departure, arrival));
        let previous = self.previous.replace(closed)?;
        let arrival_delta = closed.last_arrival.as_secs_f64() - previous.last_arrival.as_secs_f64();
        let departure_delta = closed
            .last_departure
            .saturating_duration_since(previous.last_departure)
            .as_secs_f64();
        Some(GroupDelta {
            delta_ms: (arrival_delta - departure_delta) * 1000.0,
            departure: closed.last_departure,
        })
    }
}

impl Group {
    fn new(departure: Instant, arrival: Duration) -> Self {
        Self {
            first_departure: departure,
            last_departure: departure,
            first_arrival: arrival,
            last_arrival: arrival,
            max_extra_delay: 0.0,
        }
    }

    /// How much longer a packet took than the group's first one, in seconds.
    fn extra_delay(&self, departure: Instant, arrival: Duration) -> f64 {
        arrival.as_secs_f64()
            - self.first_arrival.as_secs_f64()
            - departure
                .saturating_duration_since(self.first_departure)
                .as_secs_f64()
    }

    /// Whether a packet arrived queued right behind this group: right after its last packet,
    /// delayed no more than the group's most delayed one, and within the burst limit.
    /// (Comparing with the last packet alone fails behind a small one: an audio packet
    /// leaves the queue in a fraction of the time the video packet after it takes.)
    fn drains_into(&self, departure: Instant, arrival: Duration) -> bool {
        let Some(arrival_delta) = arrival.checked_sub(self.last_arrival) else {
            return false;
        };
        arrival_delta <= ARRIVAL_BURST
            && arrival.saturating_sub(self.first_arrival) < MAX_BURST
            && self.extra_delay(departure, arrival) <= self.max_extra_delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::rtcp::transport_feedbacks::cc_feedback_report::Ecn;

    fn report(departure: Instant, arrival_us: u64) -> PacketReport {
        PacketReport {
            ssrc: 1,
            id: 0,
            rtp_sequence_number: 0,
            is_twcc: true,
            twcc_sequence_number: 0,
            size: 1200,
            arrived: true,
            departure,
            arrival: Some(Duration::from_micros(arrival_us)),
            ecn: Ecn::default(),
        }
    }

    /// Packets (sent µs after t0, µs the link takes for it) through a FIFO link; returns the
    /// deltas of the closed groups.
    fn through_link(sends: &[(u64, u64)]) -> Vec<f64> {
        let t0 = Instant::now();
        let mut groups = PacketGroups::default();
        let mut free_at = 0;
        let mut deltas = Vec::new();
        for &(sent, service_us) in sends {
            let arrival = sent.max(free_at) + service_us;
            free_at = arrival;
            if let Some(d) = groups.add(&report(t0 + Duration::from_micros(sent), arrival)) {
                deltas.push(d.delta_ms);
            }
        }
        deltas
    }

    #[test]
    fn a_burst_that_drains_behind_it_is_one_group() {
        // A frame of 12 packets released at once, then packets every 3.9 ms, on a link that
        // takes 3.25 ms per packet (and a small one after every fifth, as audio would be):
        // the queue the burst made drains while they arrive.
        let mut sends = vec![(0, 3_250); 12];
        for i in 1..40 {
            sends.push((i * 3_900, 3_250));
            if i % 5 == 0 {
                sends.push((i * 3_900 + 300, 270));
            }
        }
        let deltas = through_link(&sends);
        let total: f64 = deltas.iter().sum();
        assert!(
            deltas.iter().all(|d| d.abs() < 5.0),
            "no group reads a queue: {deltas:?}"
        );
        assert!(total.abs() < 5.0, "accumulated {total} ms");
    }

    #[test]
    fn a_link_slower_than_the_sender_reads_as_a_growing_delay() {
        // A packet every 4 ms on a link that takes 5 ms per packet: 1 ms more per packet.
        let sends: Vec<(u64, u64)> = (0..60).map(|i| (i * 4_000, 5_000)).collect();
        let deltas = through_link(&sends);
        let total: f64 = deltas.iter().sum();
        assert!(
            total > 40.0,
            "accumulated {total} ms over {} groups",
            deltas.len()
        );
    }

    #[test]
    fn packets_sent_together_form_one_group() {
        let t0 = Instant::now();
        let mut groups = PacketGroups::default();
        for i in 0..5 {
            let sent = t0 + Duration::from_millis(i);
            assert_eq!(groups.add(&report(sent, 100_000 + i * 1000)), None);
        }
        assert_eq!(
            groups.add(&report(t0 + Duration::from_millis(20), 120_000)),
            None
        );
        let d = groups
            .add(&report(t0 + Duration::from_millis(40), 140_000))
            .expect("the second group closes");
        // Every packet took 100 ms: the first group (five packets) closes against the second.
        assert!(d.delta_ms.abs() < 1e-6, "{d:?}");
    }
}
