//! VP8 RTP payload descriptor (RFC 7741 section 4.2) and the in-place rewrite of its picture ID
//! and TL0PICIDX that layer switching needs to keep those continuous for the subscriber.
//!
//! ```text
//!       0 1 2 3 4 5 6 7
//!      +-+-+-+-+-+-+-+-+
//!      |X|R|N|S|R| PID | (REQUIRED)
//!      +-+-+-+-+-+-+-+-+
//! X:   |I|L|T|K| RSV   | (OPTIONAL)
//!      +-+-+-+-+-+-+-+-+
//! I:   |M| PictureID   | (OPTIONAL, 7 bits, or 15 bits when M = 1)
//!      +-+-+-+-+-+-+-+-+
//!      |   PictureID   |
//!      +-+-+-+-+-+-+-+-+
//! L:   |   TL0PICIDX   | (OPTIONAL)
//!      +-+-+-+-+-+-+-+-+
//! T/K: |TID|Y| KEYIDX  | (OPTIONAL)
//!      +-+-+-+-+-+-+-+-+
//! ```
//! With S = 1 and PID = 0 the VP8 payload header follows: `|Size0|H|VER|P|`, P = 0 on a
//! keyframe (RFC 7741 section 4.3).

use super::{ParseError, byte_at};

const X_BIT: u8 = 0x80;
const N_BIT: u8 = 0x20;
const S_BIT: u8 = 0x10;
const PID_MASK: u8 = 0x07;
const I_BIT: u8 = 0x80;
const L_BIT: u8 = 0x40;
const T_BIT: u8 = 0x20;
const K_BIT: u8 = 0x10;
const M_BIT: u8 = 0x80;

/// The parsed VP8 payload descriptor of one RTP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Vp8Descriptor {
    /// 7- or 15-bit picture ID, when the I bit is set.
    pub picture_id: Option<u16>,
    /// Whether the picture ID is carried in 15 bits (M bit); a rewrite keeps the width.
    pub picture_id_15bit: bool,
    pub tl0picidx: Option<u8>,
    /// Temporal layer index (T bit).
    pub tid: Option<u8>,
    /// Y bit: this frame only depends on the base temporal layer (meaningful with `tid`).
    pub layer_sync: bool,
    pub keyidx: Option<u8>,
    /// N bit: the frame can be discarded without affecting any other frame.
    pub non_reference: bool,
    /// S bit: first packet of a VP8 partition.
    pub start_of_partition: bool,
    /// PID field (0..=7).
    pub partition_index: u8,
    /// Length of the descriptor in bytes; the VP8 payload starts here.
    pub header_len: usize,
    /// P bit of the VP8 payload header is 0. Only meaningful with S = 1 and PID = 0 (the
    /// payload header is only present there); false otherwise.
    pub is_keyframe: bool,
}

impl Vp8Descriptor {
    /// Parses the descriptor at the start of an RTP payload. A descriptor with no VP8 payload
    /// behind it is [`ParseError::Truncated`].
    pub fn parse(payload: &[u8]) -> Result<Self, ParseError> {
        let b0 = *payload.first().ok_or(ParseError::Empty)?;
        let mut d = Vp8Descriptor {
            non_reference: b0 & N_BIT != 0,
            start_of_partition: b0 & S_BIT != 0,
            partition_index: b0 & PID_MASK,
            ..Default::default()
        };
        let mut i = 1;
        if b0 & X_BIT != 0 {
            let x = byte_at(payload, i)?;
            i += 1;
            if x & I_BIT != 0 {
                let b = byte_at(payload, i)?;
                i += 1;
                if b & M_BIT != 0 {
                    let lo = byte_at(payload, i)?;
                    i += 1;
                    d.picture_id = Some(u16::from(b & 0x7f) << 8 | u16::from(lo));
                    d.picture_id_15bit = true;
                } else {
                    d.picture_id = Some(u16::from(b));
                }
            }
            if x & L_BIT != 0 {
                d.tl0picidx = Some(byte_at(payload, i)?);
                i += 1;
            }
            // T and K share one byte; it is present when either is set.
            if x & (T_BIT | K_BIT) != 0 {
                let b = byte_at(payload, i)?;
                i += 1;
                if x & T_BIT != 0 {
                    d.tid = Some(b >> 6);
                    d.layer_sync = b & 0x20 != 0;
                }
                if x & K_BIT != 0 {
                    d.keyidx = Some(b & 0x1f);
                }
            }
        }
        // Every VP8 RTP packet carries at least one byte of VP8 payload.
        let first = byte_at(payload, i)?;
        d.header_len = i;
        d.is_keyframe = d.starts_frame() && first & 0x01 == 0;
        Ok(d)
    }

    /// S = 1 and PID = 0: the first packet of a frame.
    pub fn starts_frame(&self) -> bool {
        self.start_of_partition && self.partition_index == 0
    }

    /// The first packet of a keyframe: a decoder can start here.
    pub fn is_keyframe_start(&self) -> bool {
        self.starts_frame() && self.is_keyframe
    }
}

/// The frame size a keyframe's header declares (RFC 6386 9.1: a 3-byte frame tag, the start
/// code 9d 01 2a, then 14-bit width and height, little-endian), for the first packet of a
/// keyframe whose descriptor is `desc`; None for anything else or short input.
pub fn keyframe_size(payload: &[u8], desc: &Vp8Descriptor) -> Option<(u16, u16)> {
    if !desc.is_keyframe_start() {
        return None;
    }
    let header = payload.get(desc.header_len..desc.header_len + 10)?;
    if header[3..6] != [0x9d, 0x01, 0x2a] {
        return None;
    }
    let width = u16::from_le_bytes([header[6], header[7]]) & 0x3fff;
    let height = u16::from_le_bytes([header[8], header[9]]) & 0x3fff;
    Some((width, height))
}

/// See [`Vp8Descriptor::is_keyframe_start`]; false when the payload does not parse.
pub fn is_keyframe_start(payload: &[u8]) -> bool {
    Vp8Descriptor::parse(payload).is_ok_and(|d| d.is_keyframe_start())
}

/// Rewrites picture ID and TL0PICIDX in `buf`, a copy of the descriptor bytes `desc` was
/// parsed from (never the shared packet). Fields absent from the original stay absent and
/// each present field keeps its width, so the descriptor length never changes: a 7-bit
/// picture ID takes `picture_id & 0x7f`, a 15-bit one `picture_id & 0x7fff`.
pub fn write_picture_id_and_tl0(
    buf: &mut [u8],
    desc: &Vp8Descriptor,
    picture_id: u16,
    tl0picidx: u8,
) -> Result<(), ParseError> {
    // Offsets follow from the flags alone: the fields sit right after the X byte.
    let pid_len = match (desc.picture_id, desc.picture_id_15bit) {
        (None, _) => 0,
        (Some(_), false) => 1,
        (Some(_), true) => 2,
    };
    let tl0_len = usize::from(desc.tl0picidx.is_some());
    let needed = 2 + pid_len + tl0_len;
    if pid_len + tl0_len == 0 {
        return Ok(());
    }
    if buf.len() < needed {
        return Err(ParseError::Truncated {
            needed,
            len: buf.len(),
        });
    }
    match pid_len {
        1 => buf[2] = (picture_id & 0x7f) as u8,
        2 => {
            buf[2] = M_BIT | ((picture_id >> 8) & 0x7f) as u8;
            buf[3] = picture_id as u8;
        }
        _ => {}
    }
    if tl0_len == 1 {
        buf[2 + pid_len] = tl0picidx;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keyframe start from a typical libwebrtc sender: X, I with 15-bit picture ID 1, then the
    /// VP8 payload header (P = 0) and the keyframe start code 9d 01 2a.
    const KEY_15BIT: [u8; 10] = [0x90, 0x80, 0x80, 0x01, 0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a];

    #[test]
    fn keyframe_start_15bit_picture_id() {
        let d = Vp8Descriptor::parse(&KEY_15BIT).unwrap();
        assert_eq!(d.picture_id, Some(1));
        assert!(d.picture_id_15bit);
        assert_eq!(d.header_len, 4);
        assert!(d.start_of_partition);
        assert_eq!(d.partition_index, 0);
        assert!(d.is_keyframe);
        assert!(d.is_keyframe_start());
        assert!(is_keyframe_start(&KEY_15BIT));
    }

    #[test]
    fn seven_bit_picture_id_shifts_the_payload_header() {
        // M = 0: one picture ID byte (0), so the payload header is 0x01: P = 1, a delta frame.
        let p = [0x90, 0x80, 0x00, 0x01, 0x10, 0x02];
        let d = Vp8Descriptor::parse(&p).unwrap();
        assert_eq!(d.picture_id, Some(0));
        assert!(!d.picture_id_15bit);
        assert_eq!(d.header_len, 3);
        assert!(!d.is_keyframe);
        // The same with a keyframe payload header.
        let p = [0x90, 0x80, 0x7f, 0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a];
        let d = Vp8Descriptor::parse(&p).unwrap();
        assert_eq!(d.picture_id, Some(0x7f));
        assert!(d.is_keyframe_start());
    }

    #[test]
    fn all_extensions() {
        // X; I L T K; 15-bit picture ID 0x1234; TL0PICIDX 0xab; TID 2, Y, KEYIDX 5; delta frame.
        let p = [0x80, 0xf0, 0x92, 0x34, 0xab, 0xa5, 0x01];
        let d = Vp8Descriptor::parse(&p).unwrap();
        assert_eq!(d.picture_id, Some(0x1234));
        assert!(d.picture_id_15bit);
        assert_eq!(d.tl0picidx, Some(0xab));
        assert_eq!(d.tid, Some(2));
        assert!(d.layer_sync);
        assert_eq!(d.keyidx, Some(5));
        assert_eq!(d.header_len, 6);
        assert!(!d.start_of_partition);
        assert!(!d.is_keyframe_start());
    }

    #[test]
    fn t_without_k_and_k_without_t() {
        let d = Vp8Descriptor::parse(&[0x80, 0x20, 0x40, 0x00]).unwrap();
        assert_eq!((d.tid, d.layer_sync, d.keyidx), (Some(1), false, None));
        let d = Vp8Descriptor::parse(&[0x80, 0x10, 0x1f, 0x00]).unwrap();
        assert_eq!((d.tid, d.keyidx), (None, Some(31)));
        assert_eq!(d.header_len, 3);
    }

    #[test]
    fn minimal_descriptor_without_extensions() {
        let d = Vp8Descriptor::parse(&[0x10, 0x10, 0x02, 0x00]).unwrap();
        assert_eq!(d.header_len, 1);
        assert_eq!(d.picture_id, None);
        assert!(d.is_keyframe_start());
        // X set but no extension bits: two bytes of descriptor.
        let d = Vp8Descriptor::parse(&[0x90, 0x00, 0x10]).unwrap();
        assert_eq!(d.header_len, 2);
        assert!(d.is_keyframe_start());
    }

    #[test]
    fn non_reference_bit() {
        let d = Vp8Descriptor::parse(&[0x20, 0x01]).unwrap();
        assert!(d.non_reference);
    }

    #[test]
    fn keyframe_bit_only_counts_on_the_first_partition_start() {
        // S = 0: continuation packet of a keyframe; its first payload byte is frame data.
        assert!(!is_keyframe_start(&[0x80, 0x80, 0x80, 0x01, 0x10]));
        // S = 1 but PID = 1: start of the second partition.
        let d = Vp8Descriptor::parse(&[0x91, 0x80, 0x80, 0x01, 0x10]).unwrap();
        assert!(!d.is_keyframe);
        assert_eq!(d.partition_index, 1);
    }

    #[test]
    fn keyframe_size_from_the_frame_header() {
        let mut p = KEY_15BIT.to_vec();
        // Width 1280 and height 720, with scaling bits set that must be masked off.
        p.extend_from_slice(&[0x00, 0x45, 0xd0, 0x42]);
        let d = Vp8Descriptor::parse(&p).unwrap();
        assert_eq!(keyframe_size(&p, &d), Some((1280, 720)));
        assert_eq!(keyframe_size(&KEY_15BIT, &d), None, "truncated");
        let mut delta = p.clone();
        delta[4] |= 0x01;
        let dd = Vp8Descriptor::parse(&delta).unwrap();
        assert_eq!(keyframe_size(&delta, &dd), None);
    }

    #[test]
    fn delta_frame_is_not_a_keyframe() {
        assert!(!is_keyframe_start(&[
            0x90, 0x80, 0x80, 0x02, 0x11, 0x02, 0x00
        ]));
    }

    #[test]
    fn truncated_inputs_are_errors() {
        assert_eq!(Vp8Descriptor::parse(&[]), Err(ParseError::Empty));
        for cut in 0..KEY_15BIT.len() {
            let r = Vp8Descriptor::parse(&KEY_15BIT[..cut]);
            assert_eq!(r.is_ok(), cut >= 5, "cut {cut}");
            assert!(!is_keyframe_start(&KEY_15BIT[..cut]) || cut >= 5);
        }
        assert_eq!(
            Vp8Descriptor::parse(&[0x90, 0x80, 0x80]),
            Err(ParseError::Truncated { needed: 4, len: 3 })
        );
        // Descriptor complete but no VP8 payload after it.
        assert_eq!(
            Vp8Descriptor::parse(&[0x90, 0x80, 0x80, 0x01]),
            Err(ParseError::Truncated { needed: 5, len: 4 })
        );
    }

    #[test]
    fn rewrite_15bit_picture_id_and_tl0() {
        let p = [0x90, 0xe0, 0x80, 0x01, 0x05, 0x20, 0x10, 0x02, 0x00];
        let d = Vp8Descriptor::parse(&p).unwrap();
        let mut copy = p;
        write_picture_id_and_tl0(&mut copy, &d, 0xfedc, 0x42).unwrap();
        let r = Vp8Descriptor::parse(&copy).unwrap();
        assert_eq!(r.picture_id, Some(0x7edc), "masked to 15 bits");
        assert!(r.picture_id_15bit);
        assert_eq!(r.tl0picidx, Some(0x42));
        // Everything else is untouched.
        assert_eq!(copy[0..2], p[0..2]);
        assert_eq!(copy[5..], p[5..]);
        assert_eq!(r.tid, d.tid);
        assert!(r.is_keyframe_start());
    }

    #[test]
    fn rewrite_7bit_picture_id_keeps_width() {
        let p = [0x90, 0xc0, 0x05, 0x07, 0x10];
        let d = Vp8Descriptor::parse(&p).unwrap();
        let mut copy = p;
        write_picture_id_and_tl0(&mut copy, &d, 0x1ff, 0x08).unwrap();
        assert_eq!(copy, [0x90, 0xc0, 0x7f, 0x08, 0x10]);
        let r = Vp8Descriptor::parse(&copy).unwrap();
        assert_eq!((r.picture_id, r.picture_id_15bit), (Some(0x7f), false));
        assert_eq!(r.header_len, d.header_len);
    }

    #[test]
    fn rewrite_tl0_only_and_nothing() {
        let p = [0x80, 0x40, 0x07, 0x10];
        let d = Vp8Descriptor::parse(&p).unwrap();
        let mut copy = p;
        write_picture_id_and_tl0(&mut copy, &d, 99, 0x09).unwrap();
        assert_eq!(copy, [0x80, 0x40, 0x09, 0x10]);

        let p = [0x10, 0x10];
        let d = Vp8Descriptor::parse(&p).unwrap();
        let mut copy = p;
        write_picture_id_and_tl0(&mut copy, &d, 99, 0x09).unwrap();
        assert_eq!(copy, p);
    }

    #[test]
    fn rewrite_into_short_buffer_is_an_error() {
        let d = Vp8Descriptor::parse(&KEY_15BIT).unwrap();
        let mut short = [0x90, 0x80, 0x80];
        assert_eq!(
            write_picture_id_and_tl0(&mut short, &d, 1, 1),
            Err(ParseError::Truncated { needed: 4, len: 3 })
        );
        assert_eq!(short, [0x90, 0x80, 0x80]);
    }
}
