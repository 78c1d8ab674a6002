//! Deterministic synthetic media that an SFU treats as real: VP8 frames with correct RTP
//! payload descriptors and keyframe headers, and 20 ms Opus packets.
//!
//! Every packet's payload carries a [`Stamp`] after the codec headers: the sender's wall clock
//! (microseconds since the UNIX epoch), a per-source packet counter and a layer byte (which
//! simulcast layer sent it), followed by filler bytes derived from the counter. A receiver reads it back with [`parse_vp8`] or
//! [`parse_opus`] to measure end-to-end latency, count losses independently of the RTP
//! sequence numbers the SFU rewrites, and check that the payload arrived intact.

mod continuity;
mod opus;
mod simulcast;
mod vp8;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use continuity::{ContinuityReport, LayerSwitch, check_continuity};
pub use opus::{OpusConfig, OpusSource};
pub use simulcast::{SimulcastVp8, publish_simulcast_vp8};
pub use vp8::{
    Vp8Config, Vp8Descriptor, Vp8PacketInfo, Vp8Source, keyframe_size, parse_vp8_descriptor,
};

/// Length of the stamp embedded in every payload.
pub const STAMP_LEN: usize = 17;

/// What a synthetic payload carries after its codec headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Sender wall clock when the packet was generated, µs since the UNIX epoch.
    pub sent_at_micros: u64,
    /// Per-source packet counter, starting at 0.
    pub counter: u64,
    /// The sender's layer marker ([`Vp8Config::layer`]; 0 for audio).
    pub layer: u8,
    /// Whether the filler after the stamp is exactly what the sender wrote.
    pub intact: bool,
}

impl Stamp {
    /// When the packet was generated.
    pub fn sent_at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_micros(self.sent_at_micros)
    }

    /// Time from generation to `now` (zero if the clocks disagree).
    pub fn latency(&self, now: SystemTime) -> Duration {
        now.duration_since(self.sent_at()).unwrap_or_default()
    }
}

pub(crate) fn micros_since_epoch(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// The filler byte at `index` (counted from the end of the stamp) for packet `counter`.
fn filler(counter: u64, index: usize) -> u8 {
    (counter as u8).wrapping_mul(31).wrapping_add(index as u8)
}

/// What a payload's stamp says (see [`Stamp`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct StampFields {
    pub sent_at_micros: u64,
    pub counter: u64,
    pub layer: u8,
}

/// Appends stamp + filler so that `body` reaches `len` bytes in total (at least the stamp).
pub(crate) fn write_stamped(body: &mut Vec<u8>, stamp: StampFields, len: usize) {
    let StampFields {
        sent_at_micros,
        counter,
        layer,
    } = stamp;
    body.extend_from_slice(&sent_at_micros.to_be_bytes());
    body.extend_from_slice(&counter.to_be_bytes());
    body.push(layer);
    let fill = len.saturating_sub(STAMP_LEN);
    body.extend((0..fill).map(|i| filler(counter, i)));
}

/// Reads a stamp (and checks the filler) from the bytes following the codec headers.
pub fn read_stamp(bytes: &[u8]) -> Option<Stamp> {
    if bytes.len() < STAMP_LEN {
        return None;
    }
    let sent_at_micros = u64::from_be_bytes(bytes[0..8].try_into().ok()?);
    let counter = u64::from_be_bytes(bytes[8..16].try_into().ok()?);
    let layer = bytes[16];
    let intact = bytes[STAMP_LEN..]
        .iter()
        .enumerate()
        .all(|(i, b)| *b == filler(counter, i));
    Some(Stamp {
        sent_at_micros,
        counter,
        layer,
        intact,
    })
}

/// Extracts the stamp from a synthetic VP8 RTP payload.
pub fn parse_vp8(payload: &[u8]) -> Option<Stamp> {
    let descriptor = parse_vp8_descriptor(payload)?;
    vp8::stamp_after(&descriptor, payload)
}

/// Extracts the stamp from a synthetic Opus RTP payload (after its one TOC byte).
pub fn parse_opus(payload: &[u8]) -> Option<Stamp> {
    read_stamp(payload.get(1..)?)
}

/// Extracts the stamp from a synthetic payload of the given MIME type (`video/VP8`,
/// `audio/opus`; case-insensitive).
pub fn parse_payload(mime_type: &str, payload: &[u8]) -> Option<Stamp> {
    if mime_type.eq_ignore_ascii_case("video/vp8") {
        parse_vp8(payload)
    } else if mime_type.eq_ignore_ascii_case("audio/opus") {
        parse_opus(payload)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamp_round_trips_and_detects_corruption() {
        let mut body = vec![];
        let fields = StampFields {
            sent_at_micros: 1_700_000_000_000_000,
            counter: 42,
            layer: 2,
        };
        write_stamped(&mut body, fields, 100);
        assert_eq!(body.len(), 100);
        let stamp = read_stamp(&body).unwrap();
        assert_eq!(stamp.counter, 42);
        assert_eq!(stamp.layer, 2);
        assert_eq!(stamp.sent_at_micros, 1_700_000_000_000_000);
        assert!(stamp.intact);
        body[50] ^= 0xff;
        assert!(!read_stamp(&body).unwrap().intact);
        assert!(read_stamp(&body[..10]).is_none());
    }
}
