//! Keeps VP8 and VP9 picture IDs and TL0PICIDX continuous for one down track across layer
//! switches.
//!
//! Each simulcast layer numbers its pictures on its own, so after a switch the subscriber would
//! see the picture ID jump (libwebrtc's frame reference finder then holds or drops frames it
//! takes for old). The munger marks where a new segment starts (a keyframe of the new layer);
//! there the offsets are chosen so the first picture continues one after the newest one sent,
//! and TL0PICIDX one after its newest. Within a segment the offsets stay fixed, so late and
//! retransmitted packets keep the numbers of their frame.
//!
//! Packets of the first segment go out untouched and share the publisher's payload. After a
//! switch the descriptor is rewritten in a copy made in a per-down-track buffer, which is
//! reclaimed once the engine has sent the previous copies, so it does not allocate per packet.

use bytes::{Bytes, BytesMut};

use super::codec::vp8::{self, Vp8Descriptor};
use super::codec::vp9::{self, Vp9Descriptor};

/// The payload descriptor of a packet whose picture numbering the rewriter keeps continuous.
#[derive(Debug, Clone, Copy)]
pub enum PictureDescriptor {
    Vp8(Vp8Descriptor),
    Vp9(Vp9Descriptor),
}

impl PictureDescriptor {
    fn picture_id(&self) -> Option<u16> {
        match self {
            Self::Vp8(d) => d.picture_id,
            Self::Vp9(d) => d.picture_id,
        }
    }

    fn tl0picidx(&self) -> Option<u8> {
        match self {
            Self::Vp8(d) => d.tl0picidx,
            Self::Vp9(d) => d.tl0picidx,
        }
    }

    fn write(&self, buf: &mut [u8], picture_id: u16, tl0picidx: u8) {
        // Cannot fail: the descriptor was parsed from these very bytes.
        let _ = match self {
            Self::Vp8(d) => vp8::write_picture_id_and_tl0(buf, d, picture_id, tl0picidx),
            Self::Vp9(d) => vp9::write_picture_id_and_tl0(buf, d, picture_id, tl0picidx),
        };
    }
}

const PID_MASK: u16 = 0x7fff;
const SCRATCH: usize = 16 * 1024;

#[derive(Debug, Default)]
pub struct PictureIdRewriter {
    /// The munger segment the offsets were chosen for.
    segment: u64,
    pid_offset: u16,
    tl0_offset: u8,
    newest_pid: Option<u16>,
    newest_tl0: Option<u8>,
    scratch: BytesMut,
}

impl PictureIdRewriter {
    /// The payload to send for a packet of munger segment `segment` (see
    /// `RtpMunger::segments_started`), with its picture ID and TL0PICIDX rewritten when needed.
    pub fn rewrite(&mut self, segment: u64, desc: &PictureDescriptor, payload: &Bytes) -> Bytes {
        if segment != self.segment {
            self.segment = segment;
            if let (Some(pid), Some(newest)) = (desc.picture_id(), self.newest_pid) {
                self.pid_offset = newest.wrapping_add(1).wrapping_sub(pid) & PID_MASK;
            }
            if let (Some(tl0), Some(newest)) = (desc.tl0picidx(), self.newest_tl0) {
                self.tl0_offset = newest.wrapping_add(1).wrapping_sub(tl0);
            }
        }
        let pid = desc
            .picture_id()
            .map(|p| p.wrapping_add(self.pid_offset) & PID_MASK);
        let tl0 = desc.tl0picidx().map(|t| t.wrapping_add(self.tl0_offset));
        if let Some(pid) = pid
            && self.newest_pid.is_none_or(|n| pid_newer(pid, n))
        {
            self.newest_pid = Some(pid);
        }
        if let Some(tl0) = tl0
            && self
                .newest_tl0
                .is_none_or(|n| tl0.wrapping_sub(n) < 128 && tl0 != n)
        {
            self.newest_tl0 = Some(tl0);
        }
        if self.pid_offset == 0 && self.tl0_offset == 0 {
            return payload.clone();
        }
        if self.scratch.capacity() < payload.len() {
            // Takes the old allocation back when every copy made from it has been sent.
            self.scratch.reserve(SCRATCH.max(payload.len()));
        }
        self.scratch.extend_from_slice(payload);
        let mut copy = self.scratch.split();
        desc.write(&mut copy, pid.unwrap_or(0), tl0.unwrap_or(0));
        copy.freeze()
    }
}

/// 15-bit serial comparison: `a` comes after `b`.
fn pid_newer(a: u16, b: u16) -> bool {
    let d = a.wrapping_sub(b) & PID_MASK;
    d != 0 && d < 0x4000
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A VP8 packet with a 15-bit picture ID and TL0PICIDX, keyframe or not.
    fn packet(pid: u16, tl0: u8, key: bool) -> Bytes {
        let first = if key { 0x10 } else { 0x11 };
        Bytes::from(vec![
            0x90,
            0xc0,
            0x80 | (pid >> 8) as u8,
            pid as u8,
            tl0,
            first,
            0x00,
            0x00,
        ])
    }

    fn out(r: &mut PictureIdRewriter, segment: u64, p: &Bytes) -> (u16, u8) {
        let d = PictureDescriptor::Vp8(Vp8Descriptor::parse(p).unwrap());
        let o = r.rewrite(segment, &d, p);
        let od = Vp8Descriptor::parse(&o).unwrap();
        assert_eq!(o.len(), p.len());
        assert_eq!(o[5..], p[5..], "only the descriptor changes");
        (od.picture_id.unwrap(), od.tl0picidx.unwrap())
    }

    #[test]
    fn first_segment_is_untouched_and_shared() {
        let mut r = PictureIdRewriter::default();
        let p = packet(1000, 7, true);
        let d = PictureDescriptor::Vp8(Vp8Descriptor::parse(&p).unwrap());
        let o = r.rewrite(1, &d, &p);
        assert_eq!(o.as_ptr(), p.as_ptr(), "no copy");
        assert_eq!(out(&mut r, 1, &packet(1001, 8, false)), (1001, 8));
    }

    #[test]
    fn a_switch_continues_both_counters() {
        let mut r = PictureIdRewriter::default();
        for i in 0..5 {
            out(&mut r, 1, &packet(100 + i, 20 + i as u8, i == 0));
        }
        // The new layer numbers its pictures far away; output continues at 105 / 25.
        assert_eq!(out(&mut r, 2, &packet(30_000, 200, true)), (105, 25));
        assert_eq!(out(&mut r, 2, &packet(30_001, 201, false)), (106, 26));
        // A late packet of the same frame keeps its number.
        assert_eq!(out(&mut r, 2, &packet(30_000, 200, false)), (105, 25));
        // Back down, across the 15-bit wrap of the input.
        assert_eq!(out(&mut r, 3, &packet(0x7fff, 255, true)), (107, 27));
        assert_eq!(out(&mut r, 3, &packet(0, 0, false)), (108, 28));
    }

    #[test]
    fn vp9_switches_continue_too() {
        // Non-flexible VP9: I (15-bit picture ID), L (layer byte + TL0PICIDX), B set.
        let vp9 = |pid: u16, tl0: u8| {
            Bytes::from(vec![
                0xa8,
                0x80 | (pid >> 8) as u8,
                pid as u8,
                0x00,
                tl0,
                0x55,
            ])
        };
        let mut r = PictureIdRewriter::default();
        let run = |r: &mut PictureIdRewriter, seg, p: &Bytes| {
            let d = PictureDescriptor::Vp9(Vp9Descriptor::parse(p).unwrap());
            let o = r.rewrite(seg, &d, p);
            let od = Vp9Descriptor::parse(&o).unwrap();
            (od.picture_id.unwrap(), od.tl0picidx.unwrap())
        };
        assert_eq!(run(&mut r, 1, &vp9(40, 4)), (40, 4));
        assert_eq!(run(&mut r, 2, &vp9(9000, 90)), (41, 5));
        assert_eq!(run(&mut r, 2, &vp9(9001, 91)), (42, 6));
    }

    #[test]
    fn output_wraps_at_15_bits() {
        let mut r = PictureIdRewriter::default();
        out(&mut r, 1, &packet(0x7ffe, 255, true));
        assert_eq!(out(&mut r, 2, &packet(10, 3, true)), (0x7fff, 0));
        assert_eq!(out(&mut r, 2, &packet(11, 4, false)), (0, 1));
    }

    #[test]
    fn copies_reuse_the_buffer_once_sent() {
        let mut r = PictureIdRewriter::default();
        out(&mut r, 1, &packet(1, 1, true));
        let p = packet(500, 9, true);
        let d = PictureDescriptor::Vp8(Vp8Descriptor::parse(&p).unwrap());
        let first = r.rewrite(2, &d, &p);
        let first_ptr = first.as_ptr();
        drop(first);
        // Enough packets to exhaust the scratch space more than once, each dropped as the
        // engine would after sending: the allocation is reclaimed, never grown.
        for _ in 0..10_000 {
            let _sent = r.rewrite(2, &d, &p);
        }
        assert!(
            r.scratch.capacity() <= 2 * SCRATCH,
            "{}",
            r.scratch.capacity()
        );
        let _ = first_ptr;
    }

    proptest::proptest! {
        /// Frames from two layers with unrelated numbering, switching between them at
        /// keyframes at random: the output picture ID rises by exactly one per frame and
        /// TL0PICIDX by exactly one per (all base-layer) frame, whatever the wraps.
        #[test]
        fn numbering_stays_continuous_across_random_switches(
            starts in proptest::array::uniform2(0u16..0x8000),
            tl0_starts in proptest::array::uniform2(proptest::num::u8::ANY),
            frames in proptest::collection::vec((proptest::bool::ANY, 1usize..4), 1..200),
        ) {
            let mut r = PictureIdRewriter::default();
            let mut next_pid = starts;
            let mut next_tl0 = tl0_starts;
            let (mut layer, mut segment) = (0usize, 1u64);
            let mut last: Option<(u16, u8)> = None;
            for (i, (switch, packets)) in frames.into_iter().enumerate() {
                if switch && i > 0 {
                    layer ^= 1;
                    segment += 1;
                }
                let (pid, tl0) = (next_pid[layer], next_tl0[layer]);
                // Both layers keep counting whether forwarded or not.
                for l in 0..2 {
                    next_pid[l] = next_pid[l].wrapping_add(1) & PID_MASK;
                    next_tl0[l] = next_tl0[l].wrapping_add(1);
                }
                for p in 0..packets {
                    let key = (switch || i == 0) && p == 0;
                    let got = out(&mut r, segment, &packet(pid, tl0, key));
                    if let Some((lp, lt)) = last.filter(|_| p == 0) {
                        proptest::prop_assert_eq!(got, ((lp + 1) & PID_MASK, lt.wrapping_add(1)));
                    } else if let Some(prev) = last {
                        proptest::prop_assert_eq!(got, prev, "same frame, same numbers");
                    }
                    last = Some(got);
                }
            }
        }
    }
}
