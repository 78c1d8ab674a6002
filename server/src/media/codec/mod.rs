//! RTP payload parsing for the codecs Prism forwards: keyframe detection and the payload
//! descriptor fields the down-track rewriters need. Everything here is a pure function over a
//! byte slice, parsed once per incoming packet; malformed or short input yields `false` or a
//! [`ParseError`], never a panic (the bytes come straight from the network).

pub mod av1;
pub mod h264;
pub mod vp8;
pub mod vp9;

/// The codecs whose payloads the hot path understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    Opus,
    Vp8,
    Vp9,
    H264,
    Av1,
    /// Anything else (PCMU, G722, RED, rtx, unknown video...). Not parsed: treated as a
    /// stream that never needs a keyframe, so forwarding never waits on a detector we lack.
    Other,
}

impl Codec {
    /// Maps an SDP/WebRTC mime type ("video/VP8", "audio/opus", ...) case-insensitively.
    /// The kind must match too: "audio/VP8" is [`Codec::Other`].
    pub fn from_mime(mime: &str) -> Codec {
        let Some((kind, name)) = mime.trim().split_once('/') else {
            return Codec::Other;
        };
        let is = |s: &str| name.eq_ignore_ascii_case(s);
        if kind.eq_ignore_ascii_case("audio") {
            if is("opus") {
                Codec::Opus
            } else {
                Codec::Other
            }
        } else if kind.eq_ignore_ascii_case("video") {
            if is("vp8") {
                Codec::Vp8
            } else if is("vp9") {
                Codec::Vp9
            } else if is("h264") {
                Codec::H264
            } else if is("av1") || is("av1x") {
                // Chrome advertised AV1 as "AV1X" before the payload format was final.
                Codec::Av1
            } else {
                Codec::Other
            }
        } else {
            Codec::Other
        }
    }

    /// Video codecs we parse; these need a keyframe before a subscriber can start decoding.
    pub fn is_video(self) -> bool {
        matches!(self, Codec::Vp8 | Codec::Vp9 | Codec::H264 | Codec::Av1)
    }
}

/// True when `payload` (the RTP payload, after header, extensions and padding are stripped)
/// is the first packet of a keyframe a decoder can start from. Audio and [`Codec::Other`]
/// are always true: every packet is a valid starting point.
pub fn is_keyframe_start(codec: Codec, payload: &[u8]) -> bool {
    match codec {
        Codec::Opus | Codec::Other => true,
        Codec::Vp8 => vp8::is_keyframe_start(payload),
        Codec::Vp9 => vp9::is_keyframe_start(payload),
        Codec::H264 => h264::is_keyframe_start(payload),
        Codec::Av1 => av1::is_keyframe_start(payload),
    }
}

/// Why a payload descriptor could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("empty payload")]
    Empty,
    #[error("payload truncated: need at least {needed} bytes, have {len}")]
    Truncated { needed: usize, len: usize },
    #[error("malformed payload: {0}")]
    Malformed(&'static str),
}

/// Bounds-checked byte read shared by the descriptor parsers.
pub(crate) fn byte_at(buf: &[u8], i: usize) -> Result<u8, ParseError> {
    buf.get(i).copied().ok_or(ParseError::Truncated {
        needed: i + 1,
        len: buf.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ALL: [Codec; 6] = [
        Codec::Opus,
        Codec::Vp8,
        Codec::Vp9,
        Codec::H264,
        Codec::Av1,
        Codec::Other,
    ];

    #[test]
    fn from_mime_is_case_insensitive_and_checks_kind() {
        assert_eq!(Codec::from_mime("video/VP8"), Codec::Vp8);
        assert_eq!(Codec::from_mime("video/vp8"), Codec::Vp8);
        assert_eq!(Codec::from_mime("VIDEO/Vp9"), Codec::Vp9);
        assert_eq!(Codec::from_mime("video/H264"), Codec::H264);
        assert_eq!(Codec::from_mime("video/AV1"), Codec::Av1);
        assert_eq!(Codec::from_mime("video/AV1X"), Codec::Av1);
        assert_eq!(Codec::from_mime("audio/opus"), Codec::Opus);
        assert_eq!(Codec::from_mime("audio/OPUS"), Codec::Opus);
        assert_eq!(Codec::from_mime(" audio/opus "), Codec::Opus);
        assert_eq!(Codec::from_mime("audio/PCMU"), Codec::Other);
        assert_eq!(Codec::from_mime("video/rtx"), Codec::Other);
        assert_eq!(Codec::from_mime("audio/VP8"), Codec::Other);
        assert_eq!(Codec::from_mime("video/opus"), Codec::Other);
        assert_eq!(Codec::from_mime("vp8"), Codec::Other);
        assert_eq!(Codec::from_mime(""), Codec::Other);
    }

    #[test]
    fn is_video() {
        assert!(Codec::Vp8.is_video());
        assert!(Codec::Vp9.is_video());
        assert!(Codec::H264.is_video());
        assert!(Codec::Av1.is_video());
        assert!(!Codec::Opus.is_video());
        assert!(!Codec::Other.is_video());
    }

    #[test]
    fn audio_and_other_always_start() {
        assert!(is_keyframe_start(Codec::Opus, &[]));
        assert!(is_keyframe_start(Codec::Opus, &[0x78, 0x01]));
        assert!(is_keyframe_start(Codec::Other, &[0xff]));
    }

    #[test]
    fn dispatches_to_each_codec() {
        // One keyframe start and one non-start per codec, checked through the public entry.
        let vp8_key = [0x90, 0x80, 0x80, 0x01, 0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a];
        let vp8_delta = [0x90, 0x80, 0x80, 0x02, 0x11, 0x02, 0x00];
        let vp9_key = [0x08, 0x00];
        let vp9_delta = [0xc8, 0x00, 0x00];
        let h264_idr = [0x65, 0x88, 0x84];
        let h264_p = [0x41, 0x9a, 0x00];
        let av1_key = [0x18, 0x0a, 0x0b, 0x00];
        let av1_delta = [0x10, 0x32, 0x00];
        for (codec, key, delta) in [
            (Codec::Vp8, &vp8_key[..], &vp8_delta[..]),
            (Codec::Vp9, &vp9_key[..], &vp9_delta[..]),
            (Codec::H264, &h264_idr[..], &h264_p[..]),
            (Codec::Av1, &av1_key[..], &av1_delta[..]),
        ] {
            assert!(is_keyframe_start(codec, key), "{codec:?} key");
            assert!(!is_keyframe_start(codec, delta), "{codec:?} delta");
            assert!(!is_keyframe_start(codec, &[]), "{codec:?} empty");
        }
    }

    #[test]
    fn parse_error_display() {
        assert_eq!(ParseError::Empty.to_string(), "empty payload");
        assert_eq!(
            ParseError::Truncated { needed: 4, len: 2 }.to_string(),
            "payload truncated: need at least 4 bytes, have 2"
        );
    }

    proptest! {
        /// Network bytes of any length and content: no codec parser may panic.
        #[test]
        fn no_input_panics(payload in proptest::collection::vec(any::<u8>(), 0..96)) {
            for codec in ALL {
                let _ = is_keyframe_start(codec, &payload);
            }
            if let Ok(d) = vp8::Vp8Descriptor::parse(&payload) {
                prop_assert!(d.header_len < payload.len());
                let mut copy = payload.clone();
                prop_assert!(vp8::write_picture_id_and_tl0(&mut copy, &d, 0x7fff, 0xff).is_ok());
                // Rewriting keeps the descriptor's shape: same length, same fields present.
                let again = vp8::Vp8Descriptor::parse(&copy).unwrap();
                prop_assert_eq!(again.header_len, d.header_len);
                prop_assert_eq!(again.picture_id.is_some(), d.picture_id.is_some());
                prop_assert_eq!(again.picture_id_15bit, d.picture_id_15bit);
                prop_assert_eq!(again.tl0picidx.map(|_| 0xff), d.tl0picidx.map(|_| 0xff));
                prop_assert_eq!(again.is_keyframe, d.is_keyframe);
            }
            if let Ok(d) = vp9::Vp9Descriptor::parse(&payload) {
                prop_assert!(d.header_len < payload.len());
            }
            if let Ok(h) = av1::Av1AggregationHeader::parse(&payload) {
                prop_assert!(h.obu_count <= 3);
            }
        }

        /// Every prefix of a real keyframe start must be handled (truncation at any byte).
        #[test]
        fn truncated_prefixes_do_not_panic(cut in 0usize..12) {
            let vp8_key = [0x90u8, 0xe0, 0x80, 0x01, 0x05, 0x20, 0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a];
            let p = &vp8_key[..cut.min(vp8_key.len())];
            // The descriptor is 6 bytes; the keyframe bit lives in byte 7.
            prop_assert_eq!(is_keyframe_start(Codec::Vp8, p), cut >= 7);
        }
    }
}
