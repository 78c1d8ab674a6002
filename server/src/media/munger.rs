//! Sequence number and timestamp rewriting for one down track (one subscriber, one track).
//!
//! The incoming packets may come from several sources over time (simulcast layers, an SSRC
//! replaced after a pause); the subscriber must see one continuous stream. Design, after
//! LiveKit's RTPMunger and mediasoup's SeqManager bug history (see shared/LESSONS.md):
//!
//! - All arithmetic is on 64-bit extended sequence numbers, so wraparound never appears in a
//!   comparison. Only the current source is unwrapped; every new segment (switch or resume)
//!   restarts its unwrapper, because a source we left may have wrapped any number of times.
//! - A small fixed ring of ranges maps input ranges to output ranges. Late packets from before
//!   a drop point still find their number; a NACKed output number finds its source packet.
//! - Every discard of an in-order packet goes through one place ([`RtpMunger::process`] ->
//!   `exclude`), which is what keeps the output free of both false gaps and duplicate numbers.
//! - Real upstream losses keep their output numbers, so the subscriber NACKs them.
//! - On a switch the output timestamp continues from the newest one sent plus the wall-clock
//!   time elapsed (at least one tick), so it never goes backwards.
//!
//! No allocation per packet: the state is a handful of fixed-size arrays.

use std::time::Instant;

/// What the munger needs to know about one incoming RTP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IncomingPacket {
    /// SSRC of the layer the packet came in on.
    pub source: u32,
    pub seq: u16,
    pub timestamp: u32,
    /// Carried for callers that act on frame boundaries; the munger itself does not use it.
    pub marker: bool,
    /// RTP payload length; 0 means a padding-only packet (bandwidth probing), which is cut out.
    pub payload_len: usize,
    /// First packet of a keyframe (see `codec::is_keyframe_start`).
    pub keyframe_start: bool,
    pub arrival: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MungeOutcome {
    /// Send the packet with these header values.
    Forward {
        seq: u16,
        timestamp: u32,
    },
    Drop(DropReason),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// From the target source, before its first keyframe start.
    WaitingForKeyframe,
    /// Padding-only packet; removed from the output numbering.
    PaddingOnly,
    /// Older than the current segment's start or than what the munger still remembers.
    TooOld,
    /// Already forwarded, or a copy of a packet that was cut out.
    Duplicate,
    Paused,
    /// From a source that is neither forwarded nor targeted (another layer, a replaced one).
    NotSelected,
}

/// How many input→output ranges are remembered. A range is added per segment and per padding
/// burst, so this bounds how far back late packets and NACK lookups reach (a few seconds).
const RANGES: usize = 32;
/// Output numbers remembered for duplicate detection, behind the newest one.
const SENT_WINDOW: u64 = 256;
/// Extended numbers start here so a packet from just before a segment's first one never goes
/// below zero.
const EXT_BASE: u64 = 1 << 32;
/// Cap on the wall-clock timestamp jump at a switch: the new timestamp must stay "newer" in
/// 32-bit serial arithmetic (a pause of 3 h at 90 kHz would not).
const MAX_TS_JUMP: u64 = 1 << 30;

/// Input `[in_start, in_start + len)` of `source` maps to output `[out_start, out_start + len)`.
/// Within a segment the input ranges are separated by cut-out packets; output ranges are
/// contiguous across all ranges, which is what "no gaps of our making" means.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Range {
    source: u32,
    in_start: u64,
    out_start: u64,
    len: u64,
}

/// Fixed-capacity ring of ranges, indexed by absolute position (0, 1, 2... since creation).
#[derive(Debug, Clone)]
struct RangeMap {
    entries: [Range; RANGES],
    pushed: usize,
}

impl RangeMap {
    fn oldest(&self) -> usize {
        self.pushed.saturating_sub(RANGES)
    }

    fn get(&self, idx: usize) -> &Range {
        &self.entries[idx % RANGES]
    }

    fn push(&mut self, r: Range) -> usize {
        self.entries[self.pushed % RANGES] = r;
        self.pushed += 1;
        self.pushed - 1
    }

    fn tail_mut(&mut self) -> &mut Range {
        debug_assert!(self.pushed > 0);
        &mut self.entries[self.pushed.wrapping_sub(1) % RANGES]
    }

    /// Output number of input `x` among ranges from `first` on (one segment), newest first.
    fn lookup(&self, first: usize, x: u64) -> Result<u64, DropReason> {
        for idx in (first.max(self.oldest())..self.pushed).rev() {
            let r = self.get(idx);
            if x >= r.in_start {
                return if x < r.in_start + r.len {
                    Ok(r.out_start + (x - r.in_start))
                } else {
                    // Between two ranges: a packet that was cut out.
                    Err(DropReason::Duplicate)
                };
            }
        }
        Err(DropReason::TooOld)
    }
}

/// Which of the last [`SENT_WINDOW`] output numbers were forwarded (a ring bitmap).
#[derive(Debug, Clone)]
struct SentWindow {
    newest: u64,
    bits: [u64; (SENT_WINDOW / 64) as usize],
}

impl SentWindow {
    fn bit(out: u64) -> (usize, u64) {
        let i = out % SENT_WINDOW;
        ((i / 64) as usize, 1 << (i % 64))
    }

    /// Records `out` as sent, or says why it must not be sent again.
    fn insert(&mut self, out: u64) -> Result<(), DropReason> {
        if out > self.newest {
            if out - self.newest >= SENT_WINDOW {
                self.bits = [0; (SENT_WINDOW / 64) as usize];
            } else {
                for n in self.newest + 1..out {
                    let (w, b) = Self::bit(n);
                    self.bits[w] &= !b;
                }
            }
            self.newest = out;
        } else if self.newest - out >= SENT_WINDOW {
            return Err(DropReason::TooOld);
        } else {
            let (w, b) = Self::bit(out);
            if self.bits[w] & b != 0 {
                return Err(DropReason::Duplicate);
            }
        }
        let (w, b) = Self::bit(out);
        self.bits[w] |= b;
        Ok(())
    }
}

/// The stretch of output taken from one source, from a keyframe start (or, for audio, any
/// packet) until the next switch or pause.
#[derive(Debug, Clone, Copy)]
struct Segment {
    source: u32,
    /// Absolute index of the segment's first range in the [`RangeMap`].
    first_range: usize,
    /// Extended input number of the segment's first packet: anything older is dropped.
    start_in: u64,
    /// Highest extended input number seen, forwarded or cut out.
    highest_in: u64,
    ts_offset: u32,
}

/// The newest output timestamp sent and when its packet arrived.
#[derive(Debug, Clone, Copy)]
struct TsMark {
    ts: u32,
    arrival: Instant,
}

/// Rewrites one down track's sequence numbers and timestamps. See the module docs.
#[derive(Debug, Clone)]
pub struct RtpMunger {
    clock_rate: u32,
    needs_keyframe: bool,
    paused: bool,
    /// Source to lock onto at its next keyframe start; the current segment (if any) keeps
    /// forwarding until then, so a layer switch has no hole.
    target: Option<u32>,
    segment: Option<Segment>,
    /// Source and timestamp offset of the latest segment, kept across a pause so resuming the
    /// same source keeps its natural timestamps (and so its sender-report mapping).
    last_ts_offset: Option<(u32, u32)>,
    ranges: RangeMap,
    sent: SentWindow,
    /// Next unassigned extended output number.
    next_out: u64,
    /// Highest extended output number forwarded and its timestamp.
    last: Option<(u64, u32)>,
    newest_ts: Option<TsMark>,
    /// Segments started so far; a rewriter of codec fields (picture IDs) re-bases on a change.
    segments_started: u64,
    /// The newest output packet ended a frame (marker bit): padding may follow it.
    frame_ended: bool,
}

impl RtpMunger {
    /// `initial_seq` should be random (RFC 3550); `clock_rate` is the codec's RTP clock;
    /// `needs_keyframe` is true for video (forwarding starts only at a keyframe start) and
    /// false for audio (any packet will do). Nothing is forwarded until [`Self::switch_to`].
    pub fn new(initial_seq: u16, clock_rate: u32, needs_keyframe: bool) -> Self {
        Self {
            clock_rate,
            needs_keyframe,
            paused: false,
            target: None,
            segment: None,
            last_ts_offset: None,
            ranges: RangeMap {
                entries: [Range::default(); RANGES],
                pushed: 0,
            },
            sent: SentWindow {
                newest: 0,
                bits: [0; (SENT_WINDOW / 64) as usize],
            },
            next_out: EXT_BASE + u64::from(initial_seq),
            last: None,
            newest_ts: None,
            segments_started: 0,
            frame_ended: false,
        }
    }

    /// How many segments (starts, switches, resumes) have begun; the packet just forwarded
    /// belongs to the latest.
    pub fn segments_started(&self) -> u64 {
        self.segments_started
    }

    /// Decides the fate of one incoming packet and, when forwarded, its output header values.
    pub fn process(&mut self, pkt: &IncomingPacket) -> MungeOutcome {
        if self.paused {
            return MungeOutcome::Drop(DropReason::Paused);
        }
        if let Some(seg) = self.segment.filter(|s| s.source == pkt.source) {
            return self.process_in_segment(seg, pkt);
        }
        if self.target != Some(pkt.source) {
            return MungeOutcome::Drop(DropReason::NotSelected);
        }
        if pkt.payload_len == 0 {
            return MungeOutcome::Drop(DropReason::PaddingOnly);
        }
        if self.needs_keyframe && !pkt.keyframe_start {
            return MungeOutcome::Drop(DropReason::WaitingForKeyframe);
        }
        self.start_segment(pkt)
    }

    /// Targets `source` from now on. The current source keeps being forwarded until `source`
    /// sends a keyframe start (any packet for audio); output numbers then continue from the
    /// last one and the timestamp from the newest one plus the elapsed wall time. Targeting the
    /// source already forwarded cancels a pending switch.
    pub fn switch_to(&mut self, source: u32) {
        self.target = match self.segment {
            Some(seg) if seg.source == source => None,
            _ => Some(source),
        };
    }

    /// Targets `source` and stops forwarding the current source at once: nothing goes out
    /// until `source` sends a keyframe start. For a link that cannot carry the current source
    /// any more, where its packets would only overflow the link and hold the new keyframe back.
    pub fn switch_now(&mut self, source: u32) {
        if self.segment.is_some_and(|seg| seg.source == source) {
            self.target = None;
            return;
        }
        self.segment = None;
        self.target = Some(source);
    }

    /// Stops forwarding; every packet is dropped until [`Self::resume`]. Output numbers do not
    /// advance meanwhile.
    pub fn pause(&mut self) {
        self.paused = true;
        if let Some(seg) = self.segment.take() {
            self.target = self.target.or(Some(seg.source));
        }
    }

    /// Forwarding restarts at the target's next keyframe start (next packet for audio).
    pub fn resume(&mut self) {
        self.paused = false;
    }

    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// A keyframe of [`Self::target_source`] is needed before the switch (or the start, or the
    /// resume) completes: the caller should see that one is requested.
    pub fn waiting_for_keyframe(&self) -> bool {
        self.needs_keyframe && !self.paused && self.target.is_some()
    }

    /// The source being forwarded now.
    pub fn current_source(&self) -> Option<u32> {
        self.segment.map(|s| s.source)
    }

    /// The source waiting for its keyframe to take over.
    pub fn target_source(&self) -> Option<u32> {
        self.target
    }

    /// Reserves `n` output numbers for padding-only packets (bandwidth probes) right after
    /// the newest packet sent, and returns the first and the timestamp to send them with.
    /// Only between frames (a frame's packets must stay consecutive for the receiver to
    /// assemble it) or while paused; the current segment's next packets continue after them.
    pub fn padding(&mut self, n: u16) -> Option<(u16, u32)> {
        let (last_out, ts) = self.last?;
        let n = u64::from(n);
        if n == 0 || last_out + 1 != self.next_out || !(self.frame_ended || self.paused) {
            return None;
        }
        let first = self.next_out;
        for out in first..first + n {
            let _ = self.sent.insert(out);
        }
        self.next_out = first + n;
        self.last = Some((first + n - 1, ts));
        if let Some(seg) = self.segment {
            let next_in = seg.highest_in + 1;
            let tail = self.ranges.tail_mut();
            if tail.len == 0 && tail.in_start == next_in {
                tail.out_start = self.next_out;
            } else {
                self.ranges.push(Range {
                    source: seg.source,
                    in_start: next_in,
                    out_start: self.next_out,
                    len: 0,
                });
            }
        }
        Some((first as u16, ts))
    }

    /// Output sequence number and timestamp of the forwarded packet with the highest output
    /// sequence number.
    pub fn last_output(&self) -> Option<(u16, u32)> {
        self.last.map(|(seq, ts)| (seq as u16, ts))
    }

    /// Output timestamp for `timestamp` of the current `source` (e.g. a sender report's RTP
    /// time); None when `source` is not being forwarded.
    pub fn translate_timestamp(&self, source: u32, timestamp: u32) -> Option<u32> {
        let seg = self.segment.filter(|s| s.source == source)?;
        Some(timestamp.wrapping_add(seg.ts_offset))
    }

    /// Source and input sequence number behind an output number, for answering a NACK. Covers
    /// lost packets too (their numbers are kept); None for numbers never assigned or too old.
    pub fn translate_outgoing_seq(&self, out_seq: u16) -> Option<(u32, u16)> {
        // Unwrap next to the newest output number; the ranges are contiguous in output space.
        let delta = i64::from(out_seq.wrapping_sub(self.next_out as u16) as i16);
        let out = self.next_out.checked_add_signed(delta)?;
        for idx in (self.ranges.oldest()..self.ranges.pushed).rev() {
            let r = self.ranges.get(idx);
            if out >= r.out_start {
                return (out < r.out_start + r.len)
                    .then(|| (r.source, (r.in_start + (out - r.out_start)) as u16));
            }
        }
        None
    }

    fn process_in_segment(&mut self, mut seg: Segment, pkt: &IncomingPacket) -> MungeOutcome {
        let x = unwrap_seq(seg.highest_in, pkt.seq);
        let timestamp = pkt.timestamp.wrapping_add(seg.ts_offset);
        if x > seg.highest_in {
            seg.highest_in = x;
            self.segment = Some(seg);
            if pkt.payload_len == 0 {
                self.exclude(seg.source, x);
                return MungeOutcome::Drop(DropReason::PaddingOnly);
            }
            // Numbers between the previous highest and x stay reserved for the lost packets.
            let tail = self.ranges.tail_mut();
            tail.len = x - tail.in_start + 1;
            let out = tail.out_start + (x - tail.in_start);
            let outcome = self.forward(out, timestamp, pkt.arrival);
            self.frame_ended = pkt.marker;
            return outcome;
        }
        if x < seg.start_in {
            return MungeOutcome::Drop(DropReason::TooOld);
        }
        // Late or duplicate: it goes where its number was reserved, even a padding packet
        // (it fills a hole the subscriber would otherwise NACK).
        match self.ranges.lookup(seg.first_range, x) {
            Ok(out) => self.forward(out, timestamp, pkt.arrival),
            Err(reason) => MungeOutcome::Drop(reason),
        }
    }

    /// The one drop path for in-order packets of the current segment: cuts input `x` (the new
    /// highest) out of the numbering so later packets close up behind it.
    fn exclude(&mut self, source: u32, x: u64) {
        let tail = self.ranges.tail_mut();
        let out = tail.out_start + (x - tail.in_start);
        if x == tail.in_start {
            // Nothing forwarded since the last cut: slide the empty range past x.
            tail.in_start += 1;
        } else {
            tail.len = x - tail.in_start;
            self.ranges.push(Range {
                source,
                in_start: x + 1,
                out_start: out,
                len: 0,
            });
        }
        self.next_out = out;
    }

    fn start_segment(&mut self, pkt: &IncomingPacket) -> MungeOutcome {
        let ts_offset = self.pick_ts_offset(pkt);
        let start_in = EXT_BASE + u64::from(pkt.seq);
        let out = self.next_out;
        let first_range = self.ranges.push(Range {
            source: pkt.source,
            in_start: start_in,
            out_start: out,
            len: 1,
        });
        self.segment = Some(Segment {
            source: pkt.source,
            first_range,
            start_in,
            highest_in: start_in,
            ts_offset,
        });
        self.last_ts_offset = Some((pkt.source, ts_offset));
        self.target = None;
        self.segments_started += 1;
        self.frame_ended = pkt.marker;
        self.forward(out, pkt.timestamp.wrapping_add(ts_offset), pkt.arrival)
    }

    /// Timestamp offset for a new segment starting with `pkt`: identity for the very first;
    /// when resuming the source of the latest segment, its own offset if that moves time
    /// forward by no more than the elapsed wall time plus a second (a plausible clock, and it
    /// keeps the source's sender-report mapping valid); otherwise the newest timestamp sent
    /// plus the elapsed wall time, at least one tick.
    fn pick_ts_offset(&self, pkt: &IncomingPacket) -> u32 {
        let Some(newest) = self.newest_ts else {
            return 0;
        };
        let elapsed = pkt.arrival.saturating_duration_since(newest.arrival);
        let ticks = (elapsed.as_nanos() * u128::from(self.clock_rate) / 1_000_000_000)
            .clamp(1, u128::from(MAX_TS_JUMP)) as u32;
        if let Some((source, offset)) = self.last_ts_offset {
            let advance = pkt.timestamp.wrapping_add(offset).wrapping_sub(newest.ts);
            if source == pkt.source
                && advance != 0
                && u64::from(advance) <= u64::from(ticks) + u64::from(self.clock_rate)
            {
                return offset;
            }
        }
        newest.ts.wrapping_add(ticks).wrapping_sub(pkt.timestamp)
    }

    fn forward(&mut self, out: u64, timestamp: u32, arrival: Instant) -> MungeOutcome {
        if let Err(reason) = self.sent.insert(out) {
            return MungeOutcome::Drop(reason);
        }
        self.next_out = self.next_out.max(out + 1);
        if self.last.is_none_or(|(seq, _)| out > seq) {
            self.last = Some((out, timestamp));
        }
        if self.newest_ts.is_none_or(|n| ts_newer(timestamp, n.ts)) {
            self.newest_ts = Some(TsMark {
                ts: timestamp,
                arrival,
            });
        }
        MungeOutcome::Forward {
            seq: out as u16,
            timestamp,
        }
    }
}

/// Extends `seq` to the 64-bit number closest to `highest`.
fn unwrap_seq(highest: u64, seq: u16) -> u64 {
    let delta = i64::from(seq.wrapping_sub(highest as u16) as i16);
    highest.wrapping_add_signed(delta)
}

/// RFC 1982 serial comparison: `a` is later than `b`.
fn ts_newer(a: u32, b: u32) -> bool {
    let d = a.wrapping_sub(b);
    d != 0 && d < 1 << 31
}

#[cfg(test)]
#[path = "munger_tests.rs"]
mod tests;
