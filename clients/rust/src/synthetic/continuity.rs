//! Checks that a received synthetic VP8 stream is one continuous stream, as a decoder needs it,
//! even though an SFU switched it between simulcast layers: sequence numbers without gaps
//! other than real loss, timestamps that never go back, picture ids and TL0PICIDX that advance
//! by one per frame, and every layer switch beginning with a keyframe.
//!
//! Real loss is told apart from a rewriting gap by the stamps: the packets a gap skips must be
//! exactly the ones missing from the same layer's packet counter. The SFU may leave out packets
//! of a layer without a gap only to resume that layer on a keyframe (after a pause). TL0PICIDX
//! is expected to advance every frame, as [`super::Vp8Source`] sends only temporal layer 0.

use super::Vp8PacketInfo;

/// A change of layer in the received stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerSwitch {
    /// Index, in sequence number order, of the first packet of the new layer.
    pub index: usize,
    /// Layer marker before.
    pub from: u8,
    /// Layer marker after.
    pub to: u8,
}

/// What [`check_continuity`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContinuityReport {
    /// Distinct packets (retransmitted duplicates counted once).
    pub packets: usize,
    /// Packets missing because they were lost (their layer's counter skips them too).
    pub lost: u64,
    /// Frames (first packets of a frame) seen.
    pub frames: usize,
    /// Layer changes, in order.
    pub switches: Vec<LayerSwitch>,
    /// Places where the same layer resumes on a keyframe after packets of it were left out.
    pub resumes: usize,
    /// Everything that breaks continuity, described; empty when the stream is continuous.
    pub problems: Vec<String>,
}

impl ContinuityReport {
    /// No problems.
    pub fn is_continuous(&self) -> bool {
        self.problems.is_empty()
    }

    /// The layer markers in the order the stream went through them.
    pub fn layers(&self, first: Option<u8>) -> Vec<u8> {
        first
            .into_iter()
            .chain(self.switches.iter().map(|s| s.to))
            .collect()
    }

    fn problem(&mut self, p: String) {
        // Enough to diagnose; a broken stream would otherwise report every packet.
        if self.problems.len() < 20 {
            self.problems.push(p);
        }
    }
}

/// Unwraps 16-bit sequence numbers given in arrival order (reordering allowed), then returns
/// the packets by extended sequence number without duplicates.
fn by_sequence(packets: &[Vp8PacketInfo]) -> Vec<(i64, &Vp8PacketInfo)> {
    let mut out: Vec<(i64, &Vp8PacketInfo)> = Vec::with_capacity(packets.len());
    let mut last: Option<i64> = None;
    for p in packets {
        let ext = match last {
            None => i64::from(p.sequence_number),
            Some(last) => {
                let delta = p.sequence_number.wrapping_sub(last as u16) as i16;
                last + i64::from(delta)
            }
        };
        last = Some(last.map_or(ext, |l| l.max(ext)));
        out.push((ext, p));
    }
    out.sort_by_key(|(ext, _)| *ext);
    out.dedup_by_key(|(ext, _)| *ext);
    out
}

/// Checks a stream given as received (arrival order); see the module notes.
pub fn check_continuity(packets: &[Vp8PacketInfo]) -> ContinuityReport {
    let sorted = by_sequence(packets);
    let mut report = ContinuityReport {
        packets: sorted.len(),
        ..Default::default()
    };
    let Some((_, first)) = sorted.first() else {
        return report;
    };
    if !first.keyframe_start {
        report.problem(format!(
            "the stream does not begin with a keyframe (seq {})",
            first.sequence_number
        ));
    }
    // The latest frame start: (picture id, TL0PICIDX, timestamp), and whether packets were
    // lost since (a lost frame may explain a jump).
    let mut frame: Option<FrameStart> = None;
    let mut lost_since_frame = false;
    for (i, pair) in sorted.windows(2).enumerate() {
        let [(ext_a, a), (ext_b, b)] = pair else {
            unreachable!()
        };
        let (layer_a, layer_b) = (layer(a), layer(b));
        let gap = ext_b - ext_a;
        if gap > 1 {
            let explained =
                layer_a.is_some() && layer_a == layer_b && counter_gap(a, b) == Some(gap as u64);
            if explained {
                report.lost += (gap - 1) as u64;
                lost_since_frame = true;
            } else {
                report.problem(format!(
                    "sequence jumps from {} to {} (layer {:?} -> {:?}) with no packet lost",
                    a.sequence_number, b.sequence_number, layer_a, layer_b
                ));
            }
        } else if layer_a == layer_b && counter_gap(a, b).is_some_and(|g| g != 1) {
            if b.keyframe_start {
                report.resumes += 1;
                continue_frames(&mut report, &mut frame, &mut lost_since_frame, b);
                continue;
            }
            report.problem(format!(
                "packets of layer {layer_a:?} dropped without a sequence gap (seq {})",
                b.sequence_number
            ));
        }
        if (b.timestamp.wrapping_sub(a.timestamp) as i32) < 0 {
            report.problem(format!(
                "timestamp goes back from {} to {} at seq {}",
                a.timestamp, b.timestamp, b.sequence_number
            ));
        }
        if layer_a != layer_b {
            report.switches.push(LayerSwitch {
                index: i + 1,
                from: layer_a.unwrap_or(u8::MAX),
                to: layer_b.unwrap_or(u8::MAX),
            });
            if !b.keyframe_start {
                report.problem(format!(
                    "switch from layer {layer_a:?} to {layer_b:?} at seq {} does not begin with a keyframe",
                    b.sequence_number
                ));
            }
        }
        continue_frames(&mut report, &mut frame, &mut lost_since_frame, b);
    }
    if first.frame_start {
        report.frames += 1;
    }
    report
}

/// The latest frame start: picture id, TL0PICIDX, timestamp.
type FrameStart = (Option<u16>, Option<u8>, u32);

/// Frame-level checks for packet `b`: a new frame continues the previous one's numbering
/// (unless packets were lost in between), a continuation packet keeps its frame's picture id.
fn continue_frames(
    report: &mut ContinuityReport,
    frame: &mut Option<FrameStart>,
    lost_since_frame: &mut bool,
    b: &Vp8PacketInfo,
) {
    if b.frame_start {
        report.frames += 1;
        if let Some(prev) = *frame
            && !*lost_since_frame
        {
            check_next_frame(report, prev, b);
        }
        *frame = Some((b.picture_id, b.tl0picidx, b.timestamp));
        *lost_since_frame = false;
    } else if let Some((pid, ..)) = *frame
        && b.picture_id != pid
        && !*lost_since_frame
    {
        report.problem(format!(
            "picture id changes inside a frame at seq {}",
            b.sequence_number
        ));
    }
}

fn layer(p: &Vp8PacketInfo) -> Option<u8> {
    p.stamp.map(|s| s.layer)
}

fn counter_gap(a: &Vp8PacketInfo, b: &Vp8PacketInfo) -> Option<u64> {
    Some(b.stamp?.counter.wrapping_sub(a.stamp?.counter))
}

fn check_next_frame(report: &mut ContinuityReport, (pid, tl0, ts): FrameStart, b: &Vp8PacketInfo) {
    if let (Some(prev), Some(next)) = (pid, b.picture_id)
        && next != (prev + 1) & 0x7fff
    {
        report.problem(format!(
            "picture id goes from {prev} to {next} at seq {}",
            b.sequence_number
        ));
    }
    if let (Some(prev), Some(next)) = (tl0, b.tl0picidx)
        && next != prev.wrapping_add(1)
    {
        report.problem(format!(
            "TL0PICIDX goes from {prev} to {next} at seq {}",
            b.sequence_number
        ));
    }
    if (b.timestamp.wrapping_sub(ts) as i32) <= 0 {
        report.problem(format!(
            "frame at seq {} does not advance the timestamp",
            b.sequence_number
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::{Vp8Config, Vp8Source};
    use rtc::rtp::Packet;

    fn source(layer: u8, seq: u16, pid: u16) -> Vp8Source {
        Vp8Source::new(Vp8Config {
            layer,
            bitrate_bps: 300_000,
            initial_sequence: seq,
            initial_picture_id: pid,
            initial_tl0picidx: 10 * layer,
            keyframe_interval: std::time::Duration::from_secs(60),
            ..Default::default()
        })
    }

    /// Rewrites packets as a correct SFU would: consecutive sequence numbers, timestamps,
    /// picture ids and TL0PICIDX continuing from the previous layer.
    struct Munger {
        seq: u16,
        ts_offset: u32,
        pid_offset: u16,
        tl0_offset: u8,
    }

    impl Munger {
        fn info(&mut self, p: &Packet) -> Vp8PacketInfo {
            let mut info = Vp8PacketInfo::parse(p).unwrap();
            info.sequence_number = self.seq;
            self.seq = self.seq.wrapping_add(1);
            info.timestamp = info.timestamp.wrapping_add(self.ts_offset);
            info.picture_id = info
                .picture_id
                .map(|x| x.wrapping_add(self.pid_offset) & 0x7fff);
            info.tl0picidx = info.tl0picidx.map(|x| x.wrapping_add(self.tl0_offset));
            info
        }
    }

    /// Layer 0 for 5 frames, then layer 1 from its keyframe, rewritten continuously.
    fn switched_stream() -> Vec<Vp8PacketInfo> {
        let mut low = source(0, 65_530, 32_760);
        let mut high = source(1, 20_000, 5_000);
        let mut m = Munger {
            seq: 65_000,
            ts_offset: 0,
            pid_offset: 0,
            tl0_offset: 0,
        };
        let mut out = vec![];
        for _ in 0..5 {
            out.extend(low.next_frame().iter().map(|p| m.info(p)));
        }
        let last = *out.last().unwrap();
        let first_high = Vp8PacketInfo::parse(&high.next_frame()[0]).unwrap();
        high = source(1, 20_000, 5_000);
        m.ts_offset = last
            .timestamp
            .wrapping_add(3000)
            .wrapping_sub(first_high.timestamp);
        m.pid_offset = (last.picture_id.unwrap() + 1).wrapping_sub(5_000);
        m.tl0_offset = last.tl0picidx.unwrap().wrapping_add(1).wrapping_sub(10);
        for _ in 0..5 {
            out.extend(high.next_frame().iter().map(|p| m.info(p)));
        }
        out
    }

    #[test]
    fn a_correctly_switched_stream_is_continuous() {
        let stream = switched_stream();
        let report = check_continuity(&stream);
        assert!(report.is_continuous(), "{:?}", report.problems);
        assert_eq!(report.frames, 10);
        assert_eq!(report.lost, 0);
        assert_eq!(
            report.switches,
            vec![LayerSwitch {
                index: stream
                    .iter()
                    .position(|p| p.stamp.unwrap().layer == 1)
                    .unwrap(),
                from: 0,
                to: 1
            }]
        );
        assert_eq!(report.layers(Some(0)), vec![0, 1]);
    }

    #[test]
    fn reordering_duplicates_and_real_loss_are_tolerated() {
        let mut stream = switched_stream();
        stream.swap(3, 4);
        let dup = stream[6];
        stream.push(dup);
        // Lose one packet in the middle of layer 1 (not a frame start).
        let lost = stream.len() - 4;
        assert!(!stream[lost].frame_start);
        stream.remove(lost);
        let report = check_continuity(&stream);
        assert!(report.is_continuous(), "{:?}", report.problems);
        assert_eq!(report.lost, 1);
    }

    #[test]
    fn a_layer_may_resume_on_a_keyframe_after_a_pause() {
        let mut src = source(0, 100, 100);
        let mut m = Munger {
            seq: 1,
            ts_offset: 0,
            pid_offset: 0,
            tl0_offset: 0,
        };
        let mut stream: Vec<Vp8PacketInfo> = vec![];
        for _ in 0..3 {
            stream.extend(src.next_frame().iter().map(|p| m.info(p)));
        }
        // The SFU forwards nothing for 10 frames, then resumes on a keyframe with the
        // numbering continued.
        for _ in 0..10 {
            let _ = src.next_frame();
        }
        src.request_keyframe();
        m.pid_offset = 0u16.wrapping_sub(10);
        m.tl0_offset = 0u8.wrapping_sub(10);
        stream.extend(src.next_frame().iter().map(|p| m.info(p)));
        let report = check_continuity(&stream);
        assert!(report.is_continuous(), "{:?}", report.problems);
        assert_eq!((report.resumes, report.switches.len()), (1, 0));
        // Resuming on a delta frame is a break.
        let mut delta = stream.clone();
        let resume = delta.iter().rposition(|p| p.keyframe_start).unwrap();
        assert!(resume > 0);
        delta[resume].keyframe_start = false;
        assert!(!check_continuity(&delta).is_continuous());
    }

    #[test]
    fn each_kind_of_break_is_reported() {
        let stream = switched_stream();
        let switch = stream
            .iter()
            .position(|p| p.stamp.unwrap().layer == 1)
            .unwrap();
        let broken = |what: &str, f: &dyn Fn(&mut Vec<Vp8PacketInfo>)| {
            let mut s = stream.clone();
            f(&mut s);
            let report = check_continuity(&s);
            assert!(
                report.problems.iter().any(|p| p.contains(what)),
                "{what}: {:?}",
                report.problems
            );
        };
        broken("with no packet lost", &|s| {
            for p in &mut s[switch..] {
                p.sequence_number = p.sequence_number.wrapping_add(1);
            }
        });
        broken("timestamp goes back", &|s| {
            for p in &mut s[switch..] {
                p.timestamp = p.timestamp.wrapping_sub(90_000);
            }
        });
        broken("picture id goes", &|s| {
            for p in &mut s[switch..] {
                p.picture_id = p.picture_id.map(|x| (x + 7) & 0x7fff);
            }
        });
        broken("TL0PICIDX goes", &|s| {
            for p in &mut s[switch..] {
                p.tl0picidx = p.tl0picidx.map(|x| x.wrapping_add(3));
            }
        });
        broken("does not begin with a keyframe", &|s| {
            s[switch].keyframe_start = false;
        });
        broken("does not begin with a keyframe (seq", &|s| {
            s[0].keyframe_start = false;
        });
        broken("dropped without a sequence gap", &|s| {
            s.remove(switch + 2);
            for p in &mut s[switch + 2..] {
                p.sequence_number = p.sequence_number.wrapping_sub(1);
            }
        });
    }
}
