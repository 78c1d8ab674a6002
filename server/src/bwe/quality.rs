//! The connection-quality grade a subscriber is told (and its SDK shows), from what the
//! downlink estimator and allocator know.

use prism_proto::signal as pb;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Quality {
    Excellent,
    Good,
    Poor,
    Lost,
}

/// One report to a subscriber (`ConnectionQualityUpdate` in signal.proto).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QualityReport {
    pub quality: Quality,
    pub estimate_bps: u64,
    pub allocated_bps: u64,
    pub wanted_bps: u64,
    pub loss: f32,
    pub rtt_ms: u32,
    pub paused_tracks: u32,
}

/// Loss above which the grade drops (the tolerated band of GCC, then heavy loss).
const NOTICEABLE_LOSS: f32 = 0.03;
const HEAVY_LOSS: f32 = 0.10;

/// Grades a downlink: lost without feedback; poor with video paused for bandwidth or heavy
/// loss; good with video below the wanted layers or noticeable loss; excellent otherwise.
pub fn grade(feedback_lost: bool, paused_tracks: u32, below_wanted: bool, loss: f32) -> Quality {
    if feedback_lost {
        Quality::Lost
    } else if paused_tracks > 0 || loss > HEAVY_LOSS {
        Quality::Poor
    } else if below_wanted || loss > NOTICEABLE_LOSS {
        Quality::Good
    } else {
        Quality::Excellent
    }
}

impl QualityReport {
    pub fn to_proto(self) -> pb::ConnectionQualityUpdate {
        use pb::connection_quality_update::Quality as Q;
        let quality = match self.quality {
            Quality::Excellent => Q::Excellent,
            Quality::Good => Q::Good,
            Quality::Poor => Q::Poor,
            Quality::Lost => Q::Lost,
        };
        pb::ConnectionQualityUpdate {
            quality: quality as i32,
            estimate_bps: self.estimate_bps,
            allocated_bps: self.allocated_bps,
            wanted_bps: self.wanted_bps,
            loss: self.loss,
            rtt_ms: self.rtt_ms,
            paused_tracks: self.paused_tracks,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grades() {
        assert_eq!(grade(true, 0, false, 0.0), Quality::Lost);
        assert_eq!(grade(false, 1, false, 0.0), Quality::Poor);
        assert_eq!(grade(false, 0, false, 0.2), Quality::Poor);
        assert_eq!(grade(false, 0, true, 0.0), Quality::Good);
        assert_eq!(grade(false, 0, false, 0.05), Quality::Good);
        assert_eq!(grade(false, 0, false, 0.01), Quality::Excellent);
    }
}
