//! H.264 RTP payload (RFC 6184): finds the first packet of an IDR access unit.
//!
//! The payload starts with a NAL unit header `|F|NRI|Type|`; types 1..=23 are a single NAL
//! unit, 24/25 aggregate several (STAP-A, STAP-B with a 16-bit DON first), 28/29 fragment one
//! (FU-A, FU-B), whose second byte is `|S|E|R|Type|`. Senders put SPS (and PPS) in front of an
//! IDR, in one STAP-A or as separate packets, so SPS counts as a start as well as IDR.

/// NAL unit types the detector looks at.
pub const NAL_IDR: u8 = 5;
pub const NAL_SPS: u8 = 7;
pub const NAL_PPS: u8 = 8;
pub const NAL_STAP_A: u8 = 24;
pub const NAL_STAP_B: u8 = 25;
pub const NAL_FU_A: u8 = 28;
pub const NAL_FU_B: u8 = 29;

const TYPE_MASK: u8 = 0x1f;
const FU_START: u8 = 0x80;

fn starts_keyframe(nal_type: u8) -> bool {
    nal_type == NAL_IDR || nal_type == NAL_SPS
}

/// True when `payload` is the first packet of a keyframe: a single IDR or SPS NAL unit, an
/// aggregation containing one, or the first fragment of one. Malformed payloads (including an
/// aggregation whose sizes overrun the packet) are false.
pub fn is_keyframe_start(payload: &[u8]) -> bool {
    let Some(&header) = payload.first() else {
        return false;
    };
    match header & TYPE_MASK {
        t @ 1..=23 => starts_keyframe(t),
        NAL_STAP_A => aggregate_has_start(&payload[1..]),
        NAL_STAP_B => payload.len() > 3 && aggregate_has_start(&payload[3..]),
        NAL_FU_A | NAL_FU_B => payload
            .get(1)
            .is_some_and(|&fu| fu & FU_START != 0 && starts_keyframe(fu & TYPE_MASK)),
        // 0, 30, 31 are reserved; MTAP16/MTAP24 (26, 27) are not used by WebRTC senders.
        _ => false,
    }
}

/// Walks `|size (16)|NAL unit|...` and reports an IDR or SPS; the whole aggregate must be
/// well formed, so a corrupt packet is never taken as a starting point.
fn aggregate_has_start(mut rest: &[u8]) -> bool {
    if rest.is_empty() {
        return false;
    }
    let mut found = false;
    while !rest.is_empty() {
        let [hi, lo, tail @ ..] = rest else {
            return false;
        };
        let size = usize::from(u16::from_be_bytes([*hi, *lo]));
        if size == 0 || size > tail.len() {
            return false;
        }
        found |= starts_keyframe(tail[0] & TYPE_MASK);
        rest = &tail[size..];
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_nal_units() {
        // IDR slice (NRI 3, type 5), SPS (type 7): starts.
        assert!(is_keyframe_start(&[0x65, 0x88, 0x84, 0x00]));
        assert!(is_keyframe_start(&[0x67, 0x42, 0xc0, 0x1f]));
        // PPS alone, non-IDR slice, SEI: not starts.
        assert!(!is_keyframe_start(&[0x68, 0xce, 0x3c, 0x80]));
        assert!(!is_keyframe_start(&[0x41, 0x9a, 0x02]));
        assert!(!is_keyframe_start(&[0x06, 0x05]));
        // A one-byte NAL unit is still a NAL unit header.
        assert!(is_keyframe_start(&[0x65]));
    }

    #[test]
    fn stap_a_with_sps_pps_idr() {
        let p = [
            0x78, // STAP-A, NRI 3
            0x00, 0x04, 0x67, 0x42, 0xc0, 0x1f, // SPS
            0x00, 0x02, 0x68, 0xce, // PPS
            0x00, 0x03, 0x65, 0x88, 0x84, // IDR
        ];
        assert!(is_keyframe_start(&p));
        // SPS + PPS only (IDR in the next packet) is still the start of the keyframe.
        assert!(is_keyframe_start(&p[..11]));
    }

    #[test]
    fn stap_a_without_keyframe_nal() {
        // SEI + non-IDR slice.
        let p = [0x78, 0x00, 0x02, 0x06, 0x05, 0x00, 0x02, 0x41, 0x9a];
        assert!(!is_keyframe_start(&p));
    }

    #[test]
    fn malformed_stap_a() {
        // Size overruns the packet.
        assert!(!is_keyframe_start(&[0x78, 0x00, 0x09, 0x67, 0x42]));
        // Zero-size unit.
        assert!(!is_keyframe_start(&[
            0x78, 0x00, 0x00, 0x00, 0x02, 0x67, 0x42
        ]));
        // Dangling single length byte after a valid SPS.
        assert!(!is_keyframe_start(&[0x78, 0x00, 0x02, 0x67, 0x42, 0x00]));
        // Header only.
        assert!(!is_keyframe_start(&[0x78]));
    }

    #[test]
    fn stap_b_skips_don() {
        let p = [0x79, 0x12, 0x34, 0x00, 0x02, 0x65, 0x88];
        assert!(is_keyframe_start(&p));
        assert!(!is_keyframe_start(&p[..3]));
    }

    #[test]
    fn fu_a_fragments() {
        // FU indicator (NRI 3, type 28); FU header S=1 type 5: start of an IDR.
        assert!(is_keyframe_start(&[0x7c, 0x85, 0xb8, 0x00]));
        // Middle and end fragments of the IDR.
        assert!(!is_keyframe_start(&[0x7c, 0x05, 0x00]));
        assert!(!is_keyframe_start(&[0x7c, 0x45, 0x00]));
        // Start of a non-IDR slice.
        assert!(!is_keyframe_start(&[0x7c, 0x81, 0x9a]));
        // FU-B start of an IDR.
        assert!(is_keyframe_start(&[0x7d, 0x85, 0x00, 0x01, 0xb8]));
        // FU indicator without FU header.
        assert!(!is_keyframe_start(&[0x7c]));
    }

    #[test]
    fn empty_and_reserved() {
        assert!(!is_keyframe_start(&[]));
        assert!(!is_keyframe_start(&[0x00, 0x65]));
        assert!(!is_keyframe_start(&[0x1e, 0x65]));
        assert!(!is_keyframe_start(&[
            0x7a, 0x00, 0x00, 0x00, 0x02, 0x65, 0x88
        ]));
    }
}
