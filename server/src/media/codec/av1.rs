//! AV1 RTP payload (AOM "RTP Payload Format for AV1", section 4.4): the aggregation header.
//!
//! ```text
//!  0 1 2 3 4 5 6 7
//! +-+-+-+-+-+-+-+-+
//! |Z|Y| W |N|-|-|-|
//! +-+-+-+-+-+-+-+-+
//! ```
//! Z: the first OBU element continues one from the previous packet; Y: the last element
//! continues in the next packet; W: number of OBU elements (0 = each carries a LEB128 length,
//! otherwise all but the last do); N: first packet of a coded video sequence, which is where
//! a decoder can start.

use super::{ParseError, byte_at};

const Z_BIT: u8 = 0x80;
const Y_BIT: u8 = 0x40;
const N_BIT: u8 = 0x08;
/// A LEB128 OBU length has at most 8 bytes (AV1 spec 4.10.5).
const MAX_LEB128_LEN: usize = 8;

/// The parsed aggregation header, plus the type of the first OBU when this packet starts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Av1AggregationHeader {
    /// Z bit.
    pub continues_previous: bool,
    /// Y bit.
    pub continues_next: bool,
    /// W field (0..=3).
    pub obu_count: u8,
    /// N bit.
    pub new_coded_video_sequence: bool,
    /// `obu_type` of the first OBU element's header; None when Z = 1 (it has no header here).
    pub first_obu_type: Option<u8>,
}

impl Av1AggregationHeader {
    /// Parses the aggregation header and, unless Z = 1, checks the first OBU element (its
    /// length field fits the packet and its OBU header's forbidden bit is 0).
    pub fn parse(payload: &[u8]) -> Result<Self, ParseError> {
        let b = *payload.first().ok_or(ParseError::Empty)?;
        let mut h = Av1AggregationHeader {
            continues_previous: b & Z_BIT != 0,
            continues_next: b & Y_BIT != 0,
            obu_count: (b >> 4) & 0x03,
            new_coded_video_sequence: b & N_BIT != 0,
            first_obu_type: None,
        };
        let mut i = 1;
        // With W = 1 the only element runs to the end of the packet without a length.
        let len = if h.obu_count == 1 {
            payload.len() - i
        } else {
            let (len, used) = read_leb128(payload, i)?;
            i += used;
            usize::try_from(len).map_err(|_| ParseError::Malformed("av1: OBU length"))?
        };
        if len == 0 || len > payload.len() - i {
            return Err(if len == 0 {
                ParseError::Malformed("av1: empty OBU element")
            } else {
                ParseError::Truncated {
                    needed: i.saturating_add(len),
                    len: payload.len(),
                }
            });
        }
        if !h.continues_previous {
            let obu_header = byte_at(payload, i)?;
            if obu_header & 0x80 != 0 {
                return Err(ParseError::Malformed("av1: OBU forbidden bit set"));
            }
            h.first_obu_type = Some((obu_header >> 3) & 0x0f);
        }
        Ok(h)
    }

    /// N = 1 and Z = 0: the packet begins a new coded video sequence with a whole OBU.
    pub fn is_keyframe_start(&self) -> bool {
        self.new_coded_video_sequence && !self.continues_previous
    }
}

/// See [`Av1AggregationHeader::is_keyframe_start`]; false when the payload does not parse.
pub fn is_keyframe_start(payload: &[u8]) -> bool {
    Av1AggregationHeader::parse(payload).is_ok_and(|h| h.is_keyframe_start())
}

/// Reads an unsigned LEB128 value at `i`; returns it and the number of bytes it used.
fn read_leb128(buf: &[u8], i: usize) -> Result<(u64, usize), ParseError> {
    let mut value = 0u64;
    for n in 0..MAX_LEB128_LEN {
        let b = byte_at(buf, i + n)?;
        value |= u64::from(b & 0x7f) << (7 * n);
        if b & 0x80 == 0 {
            return Ok((value, n + 1));
        }
    }
    Err(ParseError::Malformed("av1: LEB128 longer than 8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// OBU header of a sequence header OBU with obu_has_size_field: type 1, S = 1.
    const OBU_SEQ_HDR: u8 = 0x0a;
    /// OBU header of a frame OBU: type 6, S = 1.
    const OBU_FRAME: u8 = 0x32;

    #[test]
    fn new_sequence_with_one_obu() {
        let p = [0x18, OBU_SEQ_HDR, 0x0b, 0x00, 0x00, 0x00];
        let h = Av1AggregationHeader::parse(&p).unwrap();
        assert!(h.new_coded_video_sequence);
        assert_eq!(h.obu_count, 1);
        assert_eq!(h.first_obu_type, Some(1));
        assert!(h.is_keyframe_start());
        assert!(is_keyframe_start(&p));
    }

    #[test]
    fn new_sequence_with_length_prefixed_elements() {
        // W = 2: first element has a length (3), the second runs to the end.
        let p = [0x28, 0x03, OBU_SEQ_HDR, 0x01, 0x00, OBU_FRAME, 0x05, 0x00];
        assert!(is_keyframe_start(&p));
        // W = 0: every element has a length; a two-byte LEB128 (130) overruns the packet.
        let p = [0x08, 0x82, 0x01, OBU_SEQ_HDR, 0x00];
        assert_eq!(
            Av1AggregationHeader::parse(&p),
            Err(ParseError::Truncated {
                needed: 133,
                len: 5
            })
        );
        assert!(!is_keyframe_start(&p));
    }

    #[test]
    fn delta_frames_and_continuations_are_not_starts() {
        // N = 0.
        assert!(!is_keyframe_start(&[0x10, OBU_FRAME, 0x00]));
        // Z = 1 with N = 1 (second packet of the sequence's first OBU): not a start.
        let h = Av1AggregationHeader::parse(&[0x98, 0x12, 0x34]).unwrap();
        assert_eq!(h.first_obu_type, None);
        assert!(!h.is_keyframe_start());
    }

    #[test]
    fn malformed() {
        assert_eq!(Av1AggregationHeader::parse(&[]), Err(ParseError::Empty));
        // Aggregation header only.
        assert!(!is_keyframe_start(&[0x18]));
        assert!(!is_keyframe_start(&[0x08]));
        // Forbidden bit in the OBU header.
        assert!(!is_keyframe_start(&[0x18, 0x8a, 0x00]));
        // Zero-length element.
        assert!(!is_keyframe_start(&[0x08, 0x00, OBU_SEQ_HDR]));
        // LEB128 that never ends.
        let p = [0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
        assert_eq!(
            Av1AggregationHeader::parse(&p),
            Err(ParseError::Malformed("av1: LEB128 longer than 8 bytes"))
        );
    }
}
