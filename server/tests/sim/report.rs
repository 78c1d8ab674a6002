//! Figures from a finished simulation: how complete each subscriber's stream is, printed in a
//! form that can go into docs/benchmarks.md.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use super::peer::{ReceivedPacket, SentPacket};

/// How much of what the publisher sent a subscriber received.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Completeness {
    /// Packets sent between the subscriber's first packet and the cut-off.
    pub expected: usize,
    /// Of those, how many arrived (each counted once).
    pub received: usize,
    /// Packets that arrived more than once.
    pub duplicates: usize,
}

impl Completeness {
    /// Compares what arrived with what was sent from the subscriber's first packet until
    /// `until` (leave time after it for the last retransmissions).
    pub fn of(sent: &[SentPacket], received: &[ReceivedPacket], until: Instant) -> Self {
        let mut seen = HashSet::new();
        let duplicates = received.iter().filter(|p| !seen.insert(p.counter)).count();
        let Some(first) = received.iter().map(|p| p.counter).min() else {
            return Self {
                expected: sent.iter().filter(|p| p.at <= until).count(),
                received: 0,
                duplicates,
            };
        };
        let expected: Vec<u64> = sent
            .iter()
            .filter(|p| p.counter >= first && p.at <= until)
            .map(|p| p.counter)
            .collect();
        let received = expected.iter().filter(|c| seen.contains(c)).count();
        Self {
            expected: expected.len(),
            received,
            duplicates,
        }
    }

    pub fn ratio(&self) -> f64 {
        if self.expected == 0 {
            return 0.0;
        }
        self.received as f64 / self.expected as f64
    }

    pub fn missing(&self) -> usize {
        self.expected - self.received
    }
}

impl std::fmt::Display for Completeness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.2}% ({} of {}, {} duplicates)",
            self.ratio() * 100.0,
            self.received,
            self.expected,
            self.duplicates
        )
    }
}

/// Virtual and real duration of a run, for the printed figures.
pub fn timing(virtual_time: Duration, real: Duration, steps: u64) -> String {
    format!(
        "{:.1} s virtual in {:.2} s real ({:.0}x, {steps} steps)",
        virtual_time.as_secs_f64(),
        real.as_secs_f64(),
        virtual_time.as_secs_f64() / real.as_secs_f64().max(1e-9)
    )
}
