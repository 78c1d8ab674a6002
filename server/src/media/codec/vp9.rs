//! VP9 RTP payload descriptor (RFC 9628 section 4.2), flexible and non-flexible modes.
//!
//! ```text
//!       0 1 2 3 4 5 6 7
//!      +-+-+-+-+-+-+-+-+
//!      |I|P|L|F|B|E|V|Z| (REQUIRED)
//!      +-+-+-+-+-+-+-+-+
//! I:   |M| PICTURE ID  | (7 bits, or 15 bits when M = 1)
//! M:   | EXTENDED PID  |
//! L:   | TID |U| SID |D|
//!      |   TL0PICIDX   | (non-flexible mode only)
//! P,F: | P_DIFF      |N| (flexible mode only, up to 3 times)
//! V:   | SS ...        | (scalability structure)
//! ```
//! The spatial id here is the one inside the packet: with simulcast each stream usually has
//! SID 0 and the layer is the SSRC, which callers must not confuse with it (LiveKit #4594).

use super::{ParseError, byte_at};

const I_BIT: u8 = 0x80;
const P_BIT: u8 = 0x40;
const L_BIT: u8 = 0x20;
const F_BIT: u8 = 0x10;
const B_BIT: u8 = 0x08;
const E_BIT: u8 = 0x04;
const V_BIT: u8 = 0x02;
const Z_BIT: u8 = 0x01;
const MAX_P_DIFF: usize = 3;

/// The parsed VP9 payload descriptor of one RTP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Vp9Descriptor {
    pub picture_id: Option<u16>,
    pub picture_id_15bit: bool,
    /// P: inter-picture predicted (not decodable without earlier pictures of this layer).
    pub inter_picture_predicted: bool,
    /// F: flexible mode (reference P_DIFFs in the packet) versus non-flexible (TL0PICIDX).
    pub flexible: bool,
    /// B: first packet of a layer frame.
    pub start_of_frame: bool,
    /// E: last packet of a layer frame.
    pub end_of_frame: bool,
    /// Z: not used as a reference by the next higher spatial layer.
    pub not_upper_reference: bool,
    pub tid: Option<u8>,
    /// U: switching-up point.
    pub switching_up: bool,
    pub sid: Option<u8>,
    /// D: depends on the next lower spatial layer.
    pub inter_layer_dependency: bool,
    pub tl0picidx: Option<u8>,
    /// Whether a scalability structure (V) is present; it is skipped, not decoded.
    pub has_scalability_structure: bool,
    /// Length of the descriptor in bytes (including the SS); VP9 data starts here.
    pub header_len: usize,
}

impl Vp9Descriptor {
    /// Parses the descriptor at the start of an RTP payload. A descriptor with no VP9 data
    /// behind it is [`ParseError::Truncated`].
    pub fn parse(payload: &[u8]) -> Result<Self, ParseError> {
        let b0 = *payload.first().ok_or(ParseError::Empty)?;
        let mut d = Vp9Descriptor {
            inter_picture_predicted: b0 & P_BIT != 0,
            flexible: b0 & F_BIT != 0,
            start_of_frame: b0 & B_BIT != 0,
            end_of_frame: b0 & E_BIT != 0,
            has_scalability_structure: b0 & V_BIT != 0,
            not_upper_reference: b0 & Z_BIT != 0,
            ..Default::default()
        };
        let mut i = 1;
        if b0 & I_BIT != 0 {
            let b = byte_at(payload, i)?;
            i += 1;
            if b & 0x80 != 0 {
                let lo = byte_at(payload, i)?;
                i += 1;
                d.picture_id = Some(u16::from(b & 0x7f) << 8 | u16::from(lo));
                d.picture_id_15bit = true;
            } else {
                d.picture_id = Some(u16::from(b));
            }
        }
        if b0 & L_BIT != 0 {
            let b = byte_at(payload, i)?;
            i += 1;
            d.tid = Some(b >> 5);
            d.switching_up = b & 0x10 != 0;
            d.sid = Some((b >> 1) & 0x07);
            d.inter_layer_dependency = b & 0x01 != 0;
            if !d.flexible {
                d.tl0picidx = Some(byte_at(payload, i)?);
                i += 1;
            }
        }
        if d.flexible && d.inter_picture_predicted {
            // P_DIFF list: the N bit says another one follows; at most three references.
            let mut n = 0;
            loop {
                let b = byte_at(payload, i)?;
                i += 1;
                n += 1;
                if b & 0x01 == 0 {
                    break;
                }
                if n == MAX_P_DIFF {
                    return Err(ParseError::Malformed("vp9: more than 3 P_DIFF"));
                }
            }
        }
        if d.has_scalability_structure {
            i = skip_scalability_structure(payload, i)?;
        }
        byte_at(payload, i)?;
        d.header_len = i;
        Ok(d)
    }

    /// The first packet of a picture a decoder can start from: B = 1, P = 0, and the base
    /// spatial layer when layer indices are present.
    pub fn is_keyframe_start(&self) -> bool {
        self.start_of_frame && !self.inter_picture_predicted && self.sid.unwrap_or(0) == 0
    }
}

/// Rewrites picture ID and TL0PICIDX in `buf`, a copy of the bytes `desc` was parsed from.
/// Fields absent stay absent and each keeps its width, so the descriptor length never changes.
pub fn write_picture_id_and_tl0(
    buf: &mut [u8],
    desc: &Vp9Descriptor,
    picture_id: u16,
    tl0picidx: u8,
) -> Result<(), ParseError> {
    let pid_len = match (desc.picture_id, desc.picture_id_15bit) {
        (None, _) => 0,
        (Some(_), false) => 1,
        (Some(_), true) => 2,
    };
    // TL0PICIDX follows the layer-indices byte, in non-flexible mode only.
    let tl0_at = desc.tl0picidx.map(|_| 1 + pid_len + 1);
    let needed = tl0_at.map_or(1 + pid_len, |at| at + 1);
    if buf.len() < needed {
        return Err(ParseError::Truncated {
            needed,
            len: buf.len(),
        });
    }
    match pid_len {
        1 => buf[1] = (picture_id & 0x7f) as u8,
        2 => {
            buf[1] = 0x80 | ((picture_id >> 8) & 0x7f) as u8;
            buf[2] = picture_id as u8;
        }
        _ => {}
    }
    if let Some(at) = tl0_at {
        buf[at] = tl0picidx;
    }
    Ok(())
}

/// See [`Vp9Descriptor::is_keyframe_start`]; false when the payload does not parse.
pub fn is_keyframe_start(payload: &[u8]) -> bool {
    Vp9Descriptor::parse(payload).is_ok_and(|d| d.is_keyframe_start())
}

/// Returns the offset just past the scalability structure starting at `i`.
///
/// ```text
/// V:   | N_S |Y|G|-|-|-|
/// Y:   | WIDTH (16) | HEIGHT (16) |   N_S + 1 times
/// G:   |      N_G      |
///      | TID |U| R |-|-| P_DIFF x R   N_G times
/// ```
fn skip_scalability_structure(payload: &[u8], mut i: usize) -> Result<usize, ParseError> {
    let b = byte_at(payload, i)?;
    i += 1;
    let spatial_layers = usize::from(b >> 5) + 1;
    if b & 0x10 != 0 {
        i += 4 * spatial_layers;
    }
    if b & 0x08 != 0 {
        let groups = byte_at(payload, i)?;
        i += 1;
        for _ in 0..groups {
            let g = byte_at(payload, i)?;
            i += 1 + usize::from((g >> 2) & 0x03);
        }
    }
    if i > payload.len() {
        return Err(ParseError::Truncated {
            needed: i,
            len: payload.len(),
        });
    }
    Ok(i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_keyframe_start() {
        // B only: no picture ID, no layer indices.
        let d = Vp9Descriptor::parse(&[0x08, 0x82]).unwrap();
        assert!(d.is_keyframe_start());
        assert_eq!(d.header_len, 1);
    }

    #[test]
    fn non_flexible_keyframe_with_ss() {
        // I(15-bit pid 0x0123) L B E V; TID 0 U SID 0; TL0PICIDX 7;
        // SS: N_S = 0 (1 layer), Y, G; 640x360; N_G = 1: TID 0, R = 0.
        let p = [
            0xae, 0x81, 0x23, 0x10, 0x07, 0x18, 0x02, 0x80, 0x01, 0x68, 0x01, 0x00, 0x82,
        ];
        let d = Vp9Descriptor::parse(&p).unwrap();
        assert_eq!(d.picture_id, Some(0x0123));
        assert!(d.picture_id_15bit);
        assert_eq!((d.tid, d.sid, d.tl0picidx), (Some(0), Some(0), Some(7)));
        assert!(d.switching_up);
        assert!(d.has_scalability_structure);
        assert!(d.start_of_frame && d.end_of_frame);
        assert_eq!(d.header_len, 12);
        assert!(d.is_keyframe_start());
        assert!(is_keyframe_start(&p));
    }

    #[test]
    fn ss_with_reference_diffs() {
        // V only; SS: N_S = 1 (2 layers), no Y, G; N_G = 2: (R = 2: two P_DIFFs), (R = 0).
        let p = [0x0a, 0x28, 0x02, 0x08, 0x01, 0x02, 0x00, 0x99];
        let d = Vp9Descriptor::parse(&p).unwrap();
        assert_eq!(d.header_len, 7);
        assert!(d.is_keyframe_start());
        // Missing the last group byte.
        assert!(Vp9Descriptor::parse(&p[..6]).is_err());
    }

    #[test]
    fn delta_frame_is_not_a_start() {
        // P = 1.
        assert!(!is_keyframe_start(&[0xc8, 0x05, 0x00]));
        // B = 0: middle packet of a keyframe.
        assert!(!is_keyframe_start(&[0x80, 0x05, 0x00]));
    }

    #[test]
    fn upper_spatial_layer_is_not_a_start() {
        // L, B, non-flexible: SID 1 with P = 0 (inter-layer predicted) is no starting point.
        let p = [0x28, 0x02, 0x00, 0x00];
        let d = Vp9Descriptor::parse(&p).unwrap();
        assert_eq!(d.sid, Some(1));
        assert!(!d.is_keyframe_start());
        // The same picture's SID 0 packet is.
        assert!(is_keyframe_start(&[0x28, 0x00, 0x00, 0x00]));
    }

    #[test]
    fn flexible_mode_layer_byte_has_no_tl0picidx() {
        // I(7-bit 5) L F B; TID 2 SID 0 D=0; then data.
        let p = [0xb8, 0x05, 0x40, 0xaa];
        let d = Vp9Descriptor::parse(&p).unwrap();
        assert!(d.flexible);
        assert_eq!(
            (d.picture_id, d.tid, d.sid, d.tl0picidx),
            (Some(5), Some(2), Some(0), None)
        );
        assert_eq!(d.header_len, 3);
        assert!(d.is_keyframe_start());
    }

    #[test]
    fn flexible_mode_p_diffs() {
        // I P L F B; pid 9; layer byte; P_DIFF 1 (N), P_DIFF 2 (N), P_DIFF 4; data.
        let p = [0xf8, 0x09, 0x20, 0x03, 0x05, 0x08, 0xaa];
        let d = Vp9Descriptor::parse(&p).unwrap();
        assert_eq!(d.header_len, 6);
        assert!(!d.is_keyframe_start());
        // Four P_DIFFs is malformed.
        let p = [0xf8, 0x09, 0x20, 0x03, 0x05, 0x09, 0x0a, 0xaa];
        assert_eq!(
            Vp9Descriptor::parse(&p),
            Err(ParseError::Malformed("vp9: more than 3 P_DIFF"))
        );
    }

    #[test]
    fn truncated_inputs() {
        assert_eq!(Vp9Descriptor::parse(&[]), Err(ParseError::Empty));
        // Descriptor only, no VP9 data.
        assert!(Vp9Descriptor::parse(&[0x08]).is_err());
        // 15-bit picture ID cut after its first byte.
        assert_eq!(
            Vp9Descriptor::parse(&[0x88, 0x80]),
            Err(ParseError::Truncated { needed: 3, len: 2 })
        );
        // Non-flexible layer byte without TL0PICIDX.
        assert!(!is_keyframe_start(&[0x28, 0x00]));
        // SS claiming width/height for 8 layers in a short packet.
        assert!(!is_keyframe_start(&[0x0a, 0xf0, 0x00, 0x00]));
    }

    #[test]
    fn rewrite_picture_id_and_tl0_in_non_flexible_mode() {
        // I, L set (non-flexible): 15-bit picture ID 0x1234, layer byte, TL0PICIDX 7, data.
        let p = [0xa0 | 0x08, 0x80 | 0x12, 0x34, 0x00, 7, 0xaa];
        let d = Vp9Descriptor::parse(&p).unwrap();
        let mut out = p;
        write_picture_id_and_tl0(&mut out, &d, 0x0102, 200).unwrap();
        let od = Vp9Descriptor::parse(&out).unwrap();
        assert_eq!((od.picture_id, od.tl0picidx), (Some(0x0102), Some(200)));
        assert_eq!(out[3..4], p[3..4], "layer byte untouched");
        assert_eq!(out[5], 0xaa);
        assert!(write_picture_id_and_tl0(&mut out[..3], &d, 1, 1).is_err());
    }
}
