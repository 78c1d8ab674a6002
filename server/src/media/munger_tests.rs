//! Tests for [`super::RtpMunger`]: one unit test per guaranteed behaviour, then properties over
//! random streams of in-order, reordered, lost, duplicated and padding packets with switches
//! and pauses.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;

const A: u32 = 0xaaaa_0001;
const B: u32 = 0xbbbb_0002;
const VIDEO_HZ: u32 = 90_000;

/// A munger plus a clock, so tests read as "at t ms, source S sends seq N with ts T".
struct H {
    m: RtpMunger,
    t0: Instant,
}

impl H {
    fn video(initial_seq: u16) -> Self {
        let mut m = RtpMunger::new(initial_seq, VIDEO_HZ, true);
        m.switch_to(A);
        H {
            m,
            t0: Instant::now(),
        }
    }

    fn audio(initial_seq: u16) -> Self {
        let mut m = RtpMunger::new(initial_seq, 48_000, false);
        m.switch_to(A);
        H {
            m,
            t0: Instant::now(),
        }
    }

    fn send(
        &mut self,
        source: u32,
        seq: u16,
        ts: u32,
        len: usize,
        key: bool,
        ms: u64,
    ) -> MungeOutcome {
        self.m.process(&IncomingPacket {
            source,
            seq,
            timestamp: ts,
            marker: false,
            payload_len: len,
            keyframe_start: key,
            arrival: self.t0 + Duration::from_millis(ms),
        })
    }

    fn key(&mut self, source: u32, seq: u16, ts: u32, ms: u64) -> MungeOutcome {
        self.send(source, seq, ts, 1000, true, ms)
    }

    fn data(&mut self, source: u32, seq: u16, ts: u32, ms: u64) -> MungeOutcome {
        self.send(source, seq, ts, 1000, false, ms)
    }

    fn pad(&mut self, source: u32, seq: u16, ts: u32, ms: u64) -> MungeOutcome {
        self.send(source, seq, ts, 0, false, ms)
    }
}

fn fwd(o: MungeOutcome) -> (u16, u32) {
    match o {
        MungeOutcome::Forward { seq, timestamp } => (seq, timestamp),
        other => panic!("expected Forward, got {other:?}"),
    }
}

fn dropped(o: MungeOutcome) -> DropReason {
    match o {
        MungeOutcome::Drop(r) => r,
        other => panic!("expected Drop, got {other:?}"),
    }
}

#[test]
fn nothing_is_forwarded_without_a_target() {
    let mut m = RtpMunger::new(7, VIDEO_HZ, false);
    let pkt = IncomingPacket {
        source: A,
        seq: 1,
        timestamp: 1,
        marker: true,
        payload_len: 10,
        keyframe_start: true,
        arrival: Instant::now(),
    };
    assert_eq!(m.process(&pkt), MungeOutcome::Drop(DropReason::NotSelected));
    assert_eq!(m.last_output(), None);
    assert_eq!(m.translate_outgoing_seq(7), None);
    assert_eq!(m.current_source(), None);
}

#[test]
fn video_starts_at_a_keyframe_start() {
    let mut h = H::video(1000);
    assert!(h.m.waiting_for_keyframe());
    assert_eq!(
        dropped(h.data(A, 10, 3000, 0)),
        DropReason::WaitingForKeyframe
    );
    assert_eq!(dropped(h.data(B, 10, 3000, 0)), DropReason::NotSelected);
    // The first forwarded packet keeps its timestamp and gets the initial sequence number.
    assert_eq!(fwd(h.key(A, 11, 6000, 5)), (1000, 6000));
    assert!(!h.m.waiting_for_keyframe());
    assert_eq!(h.m.current_source(), Some(A));
    assert_eq!(fwd(h.data(A, 12, 6000, 6)), (1001, 6000));
    // From before the start: too old, even though the number would be free.
    assert_eq!(dropped(h.data(A, 10, 3000, 7)), DropReason::TooOld);
    assert_eq!(h.m.last_output(), Some((1001, 6000)));
}

#[test]
fn audio_starts_on_any_packet() {
    let mut h = H::audio(5);
    assert!(!h.m.waiting_for_keyframe());
    assert_eq!(fwd(h.data(A, 300, 960, 0)), (5, 960));
    assert_eq!(fwd(h.data(A, 301, 1920, 20)), (6, 1920));
}

#[test]
fn padding_is_cut_out_without_a_gap() {
    let mut h = H::video(100);
    assert_eq!(fwd(h.key(A, 10, 0, 0)).0, 100);
    assert_eq!(fwd(h.data(A, 11, 0, 1)).0, 101);
    assert_eq!(dropped(h.pad(A, 12, 0, 2)), DropReason::PaddingOnly);
    assert_eq!(dropped(h.pad(A, 13, 0, 3)), DropReason::PaddingOnly);
    assert_eq!(fwd(h.data(A, 14, 3000, 4)).0, 102);
    assert_eq!(dropped(h.pad(A, 15, 3000, 5)), DropReason::PaddingOnly);
    assert_eq!(fwd(h.data(A, 16, 3000, 6)).0, 103);
    // A copy of a cut-out packet must not steal a number.
    assert_eq!(dropped(h.pad(A, 12, 0, 7)), DropReason::Duplicate);
    assert_eq!(dropped(h.pad(A, 15, 0, 7)), DropReason::Duplicate);
    // NACK lookups skip the cut-out packets.
    assert_eq!(h.m.translate_outgoing_seq(101), Some((A, 11)));
    assert_eq!(h.m.translate_outgoing_seq(102), Some((A, 14)));
    assert_eq!(h.m.translate_outgoing_seq(103), Some((A, 16)));
    assert_eq!(h.m.translate_outgoing_seq(104), None);
}

#[test]
fn upstream_loss_passes_through_and_late_packets_fill_it() {
    let mut h = H::video(0);
    assert_eq!(fwd(h.key(A, 10, 0, 0)).0, 0);
    assert_eq!(fwd(h.data(A, 11, 0, 1)).0, 1);
    assert_eq!(
        fwd(h.data(A, 14, 0, 2)).0,
        4,
        "12 and 13 lost: a gap to NACK"
    );
    assert_eq!(h.m.translate_outgoing_seq(2), Some((A, 12)));
    assert_eq!(h.m.translate_outgoing_seq(3), Some((A, 13)));
    assert_eq!(fwd(h.data(A, 13, 0, 3)).0, 3);
    assert_eq!(fwd(h.data(A, 12, 0, 4)).0, 2);
    assert_eq!(
        h.m.last_output(),
        Some((4, 0)),
        "late packets do not move last_output"
    );
}

#[test]
fn late_packets_from_before_a_cut_keep_their_numbers() {
    let mut h = H::video(0);
    fwd(h.key(A, 10, 0, 0));
    fwd(h.data(A, 11, 0, 1));
    assert_eq!(fwd(h.data(A, 13, 0, 2)).0, 3); // 12 missing
    assert_eq!(dropped(h.pad(A, 14, 0, 3)), DropReason::PaddingOnly);
    assert_eq!(fwd(h.data(A, 15, 0, 4)).0, 4);
    assert_eq!(
        fwd(h.data(A, 12, 0, 5)).0,
        2,
        "translated through the older range"
    );
    // Padding after a loss: the lost numbers stay, the padding goes.
    assert_eq!(dropped(h.pad(A, 18, 0, 6)), DropReason::PaddingOnly); // 16, 17 lost
    assert_eq!(fwd(h.data(A, 19, 0, 7)).0, 7);
    assert_eq!(fwd(h.data(A, 17, 0, 8)).0, 6);
    assert_eq!(fwd(h.data(A, 16, 0, 9)).0, 5);
}

#[test]
fn late_padding_fills_its_hole() {
    let mut h = H::video(0);
    fwd(h.key(A, 10, 0, 0));
    assert_eq!(fwd(h.data(A, 12, 0, 1)).0, 2);
    // Padding that arrives late has a number reserved; sending it saves a NACK round trip.
    assert_eq!(fwd(h.pad(A, 11, 0, 2)).0, 1);
}

#[test]
fn duplicates_are_dropped() {
    let mut h = H::video(0);
    fwd(h.key(A, 10, 0, 0));
    fwd(h.data(A, 11, 0, 1));
    assert_eq!(dropped(h.data(A, 11, 0, 2)), DropReason::Duplicate);
    assert_eq!(dropped(h.key(A, 10, 0, 3)), DropReason::Duplicate);
    fwd(h.data(A, 13, 0, 4));
    fwd(h.data(A, 12, 0, 5));
    assert_eq!(dropped(h.data(A, 12, 0, 6)), DropReason::Duplicate);
}

#[test]
fn very_late_packets_are_too_old() {
    let mut h = H::video(0);
    fwd(h.key(A, 0, 0, 0));
    for seq in (1..=300).filter(|&s| s != 5) {
        fwd(h.data(A, seq, 0, 1));
    }
    // Its number (5) is 295 behind the newest output, beyond the duplicate window.
    assert_eq!(dropped(h.data(A, 5, 0, 2)), DropReason::TooOld);
}

#[test]
fn input_sequence_wraps() {
    let mut h = H::video(500);
    assert_eq!(fwd(h.key(A, 65533, 0, 0)).0, 500);
    assert_eq!(fwd(h.data(A, 65534, 0, 1)).0, 501);
    assert_eq!(fwd(h.data(A, 0, 0, 2)).0, 503, "65535 is late");
    assert_eq!(fwd(h.data(A, 65535, 0, 3)).0, 502);
    assert_eq!(dropped(h.pad(A, 1, 0, 4)), DropReason::PaddingOnly);
    assert_eq!(fwd(h.data(A, 2, 0, 5)).0, 504);
    assert_eq!(h.m.translate_outgoing_seq(502), Some((A, 65535)));
    assert_eq!(h.m.translate_outgoing_seq(504), Some((A, 2)));
}

#[test]
fn output_sequence_wraps() {
    let mut h = H::video(65534);
    assert_eq!(fwd(h.key(A, 100, 0, 0)).0, 65534);
    assert_eq!(fwd(h.data(A, 101, 0, 1)).0, 65535);
    assert_eq!(dropped(h.pad(A, 102, 0, 2)), DropReason::PaddingOnly);
    assert_eq!(fwd(h.data(A, 103, 0, 3)).0, 0);
    assert_eq!(fwd(h.data(A, 105, 0, 4)).0, 2);
    assert_eq!(h.m.translate_outgoing_seq(65535), Some((A, 101)));
    assert_eq!(h.m.translate_outgoing_seq(0), Some((A, 103)));
    assert_eq!(h.m.translate_outgoing_seq(1), Some((A, 104)));
    assert_eq!(fwd(h.data(A, 104, 0, 5)).0, 1);
}

#[test]
fn timestamps_wrap() {
    let mut h = H::video(0);
    let ts = u32::MAX - 1000;
    assert_eq!(fwd(h.key(A, 1, ts, 0)).1, ts);
    assert_eq!(fwd(h.data(A, 2, ts.wrapping_add(3000), 33)).1, 1999);
    // Switching right after the wrap: 10 ms later is 900 ticks on.
    h.m.switch_to(B);
    assert_eq!(fwd(h.key(B, 9, u32::MAX - 5, 43)), (2, 1999 + 900));
}

#[test]
fn switch_continues_old_source_until_the_keyframe_then_stays_continuous() {
    let mut h = H::video(40);
    assert_eq!(fwd(h.key(A, 100, 1000, 0)), (40, 1000));
    assert_eq!(fwd(h.data(A, 101, 4000, 33)), (41, 4000));
    h.m.switch_to(B);
    assert!(h.m.waiting_for_keyframe());
    assert_eq!(
        (h.m.current_source(), h.m.target_source()),
        (Some(A), Some(B))
    );
    assert_eq!(
        dropped(h.data(B, 500, 900_000, 50)),
        DropReason::WaitingForKeyframe
    );
    assert_eq!(dropped(h.pad(B, 501, 900_000, 55)), DropReason::PaddingOnly);
    // The old layer keeps flowing meanwhile: no freeze during the switch.
    assert_eq!(fwd(h.data(A, 102, 7000, 66)), (42, 7000));
    // B's keyframe: next number, timestamp = newest + 34 ms at 90 kHz.
    assert_eq!(fwd(h.key(B, 502, 900_000, 100)), (43, 7000 + 3060));
    assert!(!h.m.waiting_for_keyframe());
    assert_eq!(h.m.current_source(), Some(B));
    assert_eq!(
        dropped(h.data(A, 103, 10_000, 101)),
        DropReason::NotSelected
    );
    assert_eq!(fwd(h.data(B, 503, 900_000, 102)), (44, 10_060));
    assert_eq!(fwd(h.data(B, 504, 903_000, 133)), (45, 13_060));
    // NACKs for numbers sent before the switch still find the old layer's packets.
    assert_eq!(h.m.translate_outgoing_seq(42), Some((A, 102)));
    assert_eq!(h.m.translate_outgoing_seq(43), Some((B, 502)));
    assert_eq!(h.m.translate_timestamp(B, 903_000), Some(13_060));
    assert_eq!(h.m.translate_timestamp(A, 903_000), None);
}

#[test]
fn switch_now_drops_the_old_source_at_once_and_stays_continuous() {
    let mut h = H::video(40);
    assert_eq!(fwd(h.key(A, 100, 1000, 0)), (40, 1000));
    assert_eq!(fwd(h.data(A, 101, 4000, 33)), (41, 4000));
    h.m.switch_now(B);
    assert!(h.m.waiting_for_keyframe());
    assert_eq!((h.m.current_source(), h.m.target_source()), (None, Some(B)));
    // The old layer stops at once (a link that cannot carry it gains nothing from more).
    assert_eq!(dropped(h.data(A, 102, 7000, 66)), DropReason::NotSelected);
    assert_eq!(
        dropped(h.data(B, 500, 900_000, 70)),
        DropReason::WaitingForKeyframe
    );
    // B's keyframe takes the next number; the timestamp moves on by the time since A's newest.
    assert_eq!(fwd(h.key(B, 502, 900_000, 100)), (42, 4000 + 6030));
    assert_eq!(fwd(h.data(B, 503, 903_000, 133)), (43, 13_030));
    assert_eq!(h.m.translate_outgoing_seq(41), Some((A, 101)));
    // Cutting to the source already forwarded changes nothing.
    h.m.switch_now(B);
    assert_eq!(fwd(h.data(B, 504, 906_000, 166)), (44, 16_030));
}

#[test]
fn switch_without_elapsed_time_still_advances_one_tick() {
    let mut h = H::video(0);
    fwd(h.key(A, 1, 5000, 10));
    h.m.switch_to(B);
    assert_eq!(fwd(h.key(B, 1, 4_000_000_000, 10)), (1, 5001));
    // A clock that went backwards (arrival before the previous packet) too.
    h.m.switch_to(A);
    assert_eq!(fwd(h.key(A, 2, 0, 5)), (2, 5002));
}

#[test]
fn switch_uses_the_newest_timestamp_not_the_last_packet() {
    let mut h = H::video(0);
    fwd(h.key(A, 1, 9000, 0));
    fwd(h.data(A, 3, 12_000, 10));
    assert_eq!(
        fwd(h.data(A, 2, 9000, 20)),
        (1, 9000),
        "late, older timestamp"
    );
    h.m.switch_to(B);
    // 10 ms after the packet carrying the newest timestamp (12 000).
    assert_eq!(fwd(h.key(B, 50, 7, 20)), (3, 12_900));
}

#[test]
fn switching_back_restarts_the_unwrapper() {
    let mut h = H::video(0);
    fwd(h.key(A, 100, 0, 0));
    fwd(h.data(A, 101, 0, 1));
    h.m.switch_to(B);
    fwd(h.key(B, 7, 0, 2));
    h.m.switch_to(A);
    // A moved on by more than half the sequence space while it was not forwarded.
    assert_eq!(fwd(h.key(A, 101 + 40_000, 0, 3)).0, 3);
    assert_eq!(fwd(h.data(A, 101 + 40_001, 0, 4)).0, 4);
    assert_eq!(dropped(h.data(A, 101 + 39_999, 0, 5)), DropReason::TooOld);
    assert_eq!(dropped(h.data(B, 8, 0, 5)), DropReason::NotSelected);
    assert_eq!(h.m.translate_outgoing_seq(1), Some((A, 101)));
    assert_eq!(h.m.translate_outgoing_seq(2), Some((B, 7)));
    assert_eq!(h.m.translate_outgoing_seq(3), Some((A, 40_101)));
}

#[test]
fn switching_to_the_current_source_cancels_a_pending_switch() {
    let mut h = H::video(0);
    fwd(h.key(A, 1, 0, 0));
    h.m.switch_to(B);
    h.m.switch_to(A);
    assert_eq!(h.m.target_source(), None);
    assert!(!h.m.waiting_for_keyframe());
    assert_eq!(dropped(h.key(B, 1, 0, 1)), DropReason::NotSelected);
    assert_eq!(fwd(h.data(A, 2, 0, 2)).0, 1);
}

#[test]
fn pause_and_resume_keep_numbers_continuous() {
    let mut h = H::video(10);
    fwd(h.key(A, 1, 0, 0));
    fwd(h.data(A, 2, 3000, 33));
    h.m.pause();
    assert!(h.m.is_paused());
    assert!(!h.m.waiting_for_keyframe());
    assert_eq!(dropped(h.data(A, 3, 6000, 66)), DropReason::Paused);
    assert_eq!(dropped(h.key(A, 4, 9000, 99)), DropReason::Paused);
    h.m.resume();
    assert!(h.m.waiting_for_keyframe());
    assert_eq!(
        dropped(h.data(A, 5, 12_000, 133)),
        DropReason::WaitingForKeyframe
    );
    // Same source, its own clock still plausible: its timestamps pass through unchanged.
    assert_eq!(fwd(h.key(A, 6, 15_000, 166)), (12, 15_000));
    assert_eq!(dropped(h.data(A, 2, 3000, 170)), DropReason::TooOld);
    assert_eq!(dropped(h.data(A, 3, 6000, 170)), DropReason::TooOld);
}

#[test]
fn resume_with_a_reset_source_clock_uses_the_wall_clock() {
    let mut h = H::video(0);
    fwd(h.key(A, 1, 1_000_000, 0));
    h.m.pause();
    h.m.resume();
    // The publisher restarted its RTP clock lower: never backwards.
    assert_eq!(fwd(h.key(A, 2, 50, 1000)), (1, 1_000_000 + 90_000));
    h.m.pause();
    h.m.resume();
    // Or far ahead of the time that passed: no jump into the future either.
    assert_eq!(
        fwd(h.key(A, 3, 2_000_000_000, 2000)),
        (2, 1_090_000 + 90_000)
    );
}

#[test]
fn audio_resumes_on_the_next_packet() {
    let mut h = H::audio(0);
    fwd(h.data(A, 1, 960, 0));
    h.m.pause();
    assert_eq!(dropped(h.data(A, 2, 1920, 20)), DropReason::Paused);
    h.m.resume();
    assert_eq!(fwd(h.data(A, 3, 2880, 40)), (1, 2880));
}

#[test]
fn switch_requested_while_paused_applies_on_resume() {
    let mut h = H::video(0);
    fwd(h.key(A, 1, 0, 0));
    h.m.pause();
    h.m.switch_to(B);
    h.m.resume();
    assert_eq!(dropped(h.key(A, 2, 0, 10)), DropReason::NotSelected);
    assert_eq!(fwd(h.key(B, 80, 0, 10)), (1, 900));
}

#[test]
fn long_pauses_do_not_wrap_the_timestamp_backwards() {
    let mut h = H::video(0);
    fwd(h.key(A, 1, 0, 0));
    h.m.switch_to(B);
    // Ten hours at 90 kHz is more than 2^31 ticks; the jump is capped to stay "forward".
    let ten_hours = 10 * 3600 * 1000;
    let (_, ts) = fwd(h.key(B, 1, 0, ten_hours));
    assert_eq!(ts, MAX_TS_JUMP as u32);
    assert!(ts_newer(ts, 0));
}

#[test]
fn the_range_ring_forgets_the_oldest_ranges() {
    let mut h = H::video(0);
    fwd(h.key(A, 0, 0, 0));
    // seq 1 lost; then 40 padding cuts, each after a forwarded packet: 41 ranges.
    for i in 1..=40u16 {
        assert_eq!(dropped(h.pad(A, 2 * i, 0, 1)), DropReason::PaddingOnly);
        assert_eq!(fwd(h.data(A, 2 * i + 1, 0, 1)).0, i + 1);
    }
    assert_eq!(
        dropped(h.data(A, 1, 0, 2)),
        DropReason::TooOld,
        "its range was evicted"
    );
    assert_eq!(h.m.translate_outgoing_seq(1), None);
    assert_eq!(h.m.translate_outgoing_seq(41), Some((A, 81)));
    assert_eq!(h.m.translate_outgoing_seq(20), Some((A, 39)));
}

#[test]
fn unwrap_and_serial_helpers() {
    assert_eq!(unwrap_seq(EXT_BASE + 65535, 0), EXT_BASE + 65536);
    assert_eq!(unwrap_seq(EXT_BASE + 65536, 65535), EXT_BASE + 65535);
    assert_eq!(unwrap_seq(EXT_BASE + 10, 10 + 32767), EXT_BASE + 10 + 32767);
    assert!(ts_newer(0, u32::MAX));
    assert!(!ts_newer(5, 5));
    assert!(!ts_newer(u32::MAX, 0));
}

// ---- properties -------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Ev {
    Pkt {
        src: usize,
        lost: bool,
        padding: bool,
        key: bool,
        new_frame: bool,
        /// Deliver after the next delivered packet (reordering).
        hold: bool,
        dup: bool,
    },
    Switch(usize),
    Pause,
    Resume,
}

fn ev() -> impl Strategy<Value = Ev> {
    let pkt = (
        0..2usize,
        prop::bool::weighted(0.1),
        prop::bool::weighted(0.15),
        prop::bool::weighted(0.1),
        any::<bool>(),
        prop::bool::weighted(0.15),
        prop::bool::weighted(0.05),
    )
        .prop_map(|(src, lost, padding, key, new_frame, hold, dup)| Ev::Pkt {
            src,
            lost,
            padding,
            key,
            new_frame,
            hold,
            dup,
        });
    prop_oneof![
        40 => pkt,
        2 => (0..2usize).prop_map(Ev::Switch),
        1 => Just(Ev::Pause),
        2 => Just(Ev::Resume),
    ]
}

fn near_wrap_u16() -> impl Strategy<Value = u16> {
    prop_oneof![65_400u16..=65_535, any::<u16>()]
}

fn near_wrap_u32() -> impl Strategy<Value = u32> {
    prop_oneof![u32::MAX - 200_000..=u32::MAX, any::<u32>()]
}

/// One delivery of a generated packet and what the munger made of it.
struct Delivery {
    src: usize,
    /// Position in the source's generated stream (its unwrapped sequence number).
    idx: u64,
    key: bool,
    padding: bool,
    outcome: MungeOutcome,
}

struct Run {
    deliveries: Vec<Delivery>,
    /// Per source: indices that never reached the munger, arrived after a higher one (late), or
    /// overtook a lower one. Only these may leave a hole in the output.
    lost_or_late: [HashSet<u64>; 2],
    seq_base: [u16; 2],
}

fn run(m: &mut RtpMunger, seq_base: [u16; 2], ts_base: [u32; 2], events: &[Ev]) -> Run {
    let sources = [A, B];
    let t0 = Instant::now();
    let mut now = t0;
    let mut count = [0u64; 2];
    let mut ts = ts_base;
    let mut highest: [Option<u64>; 2] = [None, None];
    let mut held: Option<(usize, u64, IncomingPacket)> = None;
    let mut out = Run {
        deliveries: Vec::new(),
        lost_or_late: [HashSet::new(), HashSet::new()],
        seq_base,
    };
    let mut deliver =
        |m: &mut RtpMunger, out: &mut Run, src: usize, idx: u64, pkt: IncomingPacket, now| {
            let pkt = IncomingPacket {
                arrival: now,
                ..pkt
            };
            if highest[src].is_some_and(|h| h >= idx) {
                out.lost_or_late[src].insert(idx);
            }
            highest[src] = Some(highest[src].map_or(idx, |h| h.max(idx)));
            out.deliveries.push(Delivery {
                src,
                idx,
                key: pkt.keyframe_start,
                padding: pkt.payload_len == 0,
                outcome: m.process(&pkt),
            });
        };
    m.switch_to(A);
    for e in events {
        now += Duration::from_millis(5);
        match *e {
            Ev::Pkt {
                src,
                lost,
                padding,
                key,
                new_frame,
                hold,
                dup,
            } => {
                let idx = count[src];
                count[src] += 1;
                if new_frame {
                    ts[src] = ts[src].wrapping_add(3000);
                }
                let pkt = IncomingPacket {
                    source: sources[src],
                    seq: seq_base[src].wrapping_add(idx as u16),
                    timestamp: ts[src],
                    marker: false,
                    payload_len: if padding { 0 } else { 100 },
                    keyframe_start: key && !padding,
                    arrival: now,
                };
                if lost {
                    out.lost_or_late[src].insert(idx);
                    continue;
                }
                if hold && held.is_none() {
                    held = Some((src, idx, pkt));
                    continue;
                }
                if held.is_some_and(|(s, _, _)| s == src) {
                    // Overtakes a held packet: if the held one is a keyframe start, this one
                    // is dropped before the start yet gets a number (recovered by NACK).
                    out.lost_or_late[src].insert(idx);
                }
                deliver(m, &mut out, src, idx, pkt, now);
                if dup {
                    deliver(m, &mut out, src, idx, pkt, now);
                }
                if let Some((s, i, p)) = held.take() {
                    deliver(m, &mut out, s, i, p, now);
                }
            }
            Ev::Switch(s) => m.switch_to(sources[s]),
            Ev::Pause => m.pause(),
            Ev::Resume => m.resume(),
        }
    }
    if let Some((s, i, p)) = held.take() {
        deliver(m, &mut out, s, i, p, now);
    }
    out
}

proptest! {
    #[test]
    fn output_is_unique_ordered_and_gapless_except_for_real_losses(
        initial in near_wrap_u16(),
        seq_base in [near_wrap_u16(), near_wrap_u16()],
        ts_base in [near_wrap_u32(), near_wrap_u32()],
        needs_keyframe in any::<bool>(),
        events in prop::collection::vec(ev(), 1..300),
    ) {
        let mut m = RtpMunger::new(initial, VIDEO_HZ, needs_keyframe);
        let r = run(&mut m, seq_base, ts_base, &events);
        let sources = [A, B];

        // (offset from `initial`, delivery) for every forwarded packet.
        let mut sent: Vec<(u64, u32, &Delivery)> = Vec::new();
        let mut seen = HashSet::new();
        for d in &r.deliveries {
            if let MungeOutcome::Forward { seq, timestamp } = d.outcome {
                if sent.is_empty() && needs_keyframe {
                    prop_assert!(d.key, "first forwarded packet must be a keyframe start");
                }
                prop_assert!(seen.insert(seq), "output seq {} sent twice", seq);
                sent.push((u64::from(seq.wrapping_sub(initial)), timestamp, d));
            } else if let MungeOutcome::Drop(DropReason::PaddingOnly) = d.outcome {
                prop_assert!(d.padding);
            }
        }
        let forwarded: HashMap<(usize, u64), u64> =
            sent.iter().map(|&(o, _, d)| ((d.src, d.idx), o)).collect();

        // Output order is input order within a segment and timestamps never go backwards,
        // also across switches and pauses.
        sent.sort_by_key(|&(o, _, _)| o);
        for w in sent.windows(2) {
            let step = w[1].1.wrapping_sub(w[0].1) as i32;
            prop_assert!(step >= 0, "timestamp went back {} at output {}", step, w[1].0);
        }

        // Every hole in the output is a packet lost upstream or one that came too late; a
        // NACK for it finds that packet.
        let evicted = m.ranges.pushed > RANGES;
        if let Some(&(max, _, _)) = sent.last() {
            for hole in (0..max).filter(|o| !sent.iter().any(|s| s.0 == *o)) {
                match m.translate_outgoing_seq(initial.wrapping_add(hole as u16)) {
                    None => prop_assert!(evicted, "hole {} not translatable", hole),
                    Some((source, in_seq)) => {
                        let src = sources.iter().position(|&s| s == source).unwrap();
                        let idx = u64::from(in_seq.wrapping_sub(r.seq_base[src]));
                        prop_assert!(
                            r.lost_or_late[src].contains(&idx) && !forwarded.contains_key(&(src, idx)),
                            "hole {} is {:?}/{}, which was delivered in order", hole, source, idx
                        );
                    }
                }
            }
        }

        // NACK lookups of forwarded numbers give back the packet (unless forgotten).
        for &(o, _, d) in &sent {
            match m.translate_outgoing_seq(initial.wrapping_add(o as u16)) {
                None => prop_assert!(evicted),
                Some(t) => prop_assert_eq!(
                    t,
                    (sources[d.src], r.seq_base[d.src].wrapping_add(d.idx as u16))
                ),
            }
        }
    }
}

#[test]
fn probe_padding_goes_between_frames_and_media_continues_after_it() {
    let mut h = H::video(100);
    assert_eq!(fwd(h.key(A, 10, 0, 0)).0, 100);
    // Mid-frame (no marker yet): no padding, it would split the frame.
    assert_eq!(h.m.padding(3), None);
    let end = h.m.process(&IncomingPacket {
        source: A,
        seq: 11,
        timestamp: 0,
        marker: true,
        payload_len: 1000,
        keyframe_start: false,
        arrival: h.t0,
    });
    assert_eq!(fwd(end).0, 101);
    assert_eq!(
        h.m.padding(3),
        Some((102, 0)),
        "three numbers after the frame"
    );
    assert_eq!(h.m.last_output(), Some((104, 0)));
    // The next frame continues after the padding; a late packet still finds its number.
    assert_eq!(
        fwd(h.data(A, 13, 3000, 2)).0,
        106,
        "12 lost: 105 stays its hole"
    );
    assert_eq!(h.m.translate_outgoing_seq(105), Some((A, 12)));
    assert_eq!(fwd(h.data(A, 12, 3000, 3)).0, 105);
    assert_eq!(h.m.translate_outgoing_seq(101), Some((A, 11)));
    assert_eq!(
        h.m.translate_outgoing_seq(103),
        None,
        "padding has no source packet"
    );
    // Paused: padding may go whatever the last packet was (probing with all video paused).
    h.m.pause();
    assert_eq!(h.m.padding(2), Some((107, 3000)));
}
