//! Synthetic VP8 (RFC 7741 payload format).

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use rtc::rtp::{Header, Packet};

use super::{STAMP_LEN, Stamp, StampFields, micros_since_epoch, read_stamp, write_stamped};

/// VP8 RTP clock rate.
const CLOCK_RATE: u32 = 90_000;
/// Keyframes are this many times larger than delta frames.
const KEYFRAME_FACTOR: u64 = 5;
/// Smallest MTU the packetizer accepts (payload bytes per packet).
const MIN_MTU: usize = 64;

/// Settings of a [`Vp8Source`].
#[derive(Debug, Clone)]
pub struct Vp8Config {
    /// SSRC written into packets ([`crate::LocalTrack::write_rtp`] replaces it anyway).
    pub ssrc: u32,
    /// Payload type written into packets (replaced by `write_rtp` as well).
    pub payload_type: u8,
    /// Width announced in keyframe headers (14 bits).
    pub width: u16,
    /// Height announced in keyframe headers (14 bits).
    pub height: u16,
    /// Frames per second.
    pub fps: u32,
    /// Target bitrate of the VP8 bitstream, bits per second.
    pub bitrate_bps: u32,
    /// Time between scheduled keyframes.
    pub keyframe_interval: Duration,
    /// Maximum RTP payload per packet, bytes (descriptor included).
    pub mtu: usize,
    /// Whether descriptors carry TL0PICIDX (and a TID byte, T=1, TID=0, Y=1).
    pub tl0picidx: bool,
    /// First RTP sequence number.
    pub initial_sequence: u16,
    /// First RTP timestamp.
    pub initial_timestamp: u32,
    /// First picture id (15 bits).
    pub initial_picture_id: u16,
    /// First TL0PICIDX.
    pub initial_tl0picidx: u8,
    /// Marker written into every packet's stamp ([`super::Stamp::layer`]), so a receiver can
    /// tell which simulcast layer a packet came from.
    pub layer: u8,
}

impl Default for Vp8Config {
    fn default() -> Self {
        Self {
            ssrc: 0x5052_4953,
            payload_type: 96,
            width: 640,
            height: 360,
            fps: 30,
            bitrate_bps: 500_000,
            keyframe_interval: Duration::from_secs(2),
            mtu: 1200,
            tl0picidx: true,
            initial_sequence: 0,
            initial_timestamp: 0,
            initial_picture_id: 0,
            initial_tl0picidx: 0,
            layer: 0,
        }
    }
}

/// Generates VP8 frames as RTP packets, deterministically (apart from the embedded wall clock).
#[derive(Debug, Clone)]
pub struct Vp8Source {
    config: Vp8Config,
    sequence: u16,
    timestamp: u32,
    picture_id: u16,
    tl0picidx: u8,
    frames: u64,
    frames_since_keyframe: u32,
    keyframe_requested: bool,
    counter: u64,
}

impl Vp8Source {
    /// A source with these settings (fps, bitrate and MTU are clamped to sane minimums).
    pub fn new(mut config: Vp8Config) -> Self {
        config.fps = config.fps.max(1);
        config.mtu = config.mtu.max(MIN_MTU);
        config.width &= 0x3fff;
        config.height &= 0x3fff;
        Self {
            sequence: config.initial_sequence,
            timestamp: config.initial_timestamp,
            picture_id: config.initial_picture_id & 0x7fff,
            tl0picidx: config.initial_tl0picidx,
            frames: 0,
            frames_since_keyframe: 0,
            keyframe_requested: true,
            counter: 0,
            config,
        }
    }

    /// The settings in use.
    pub fn config(&self) -> &Vp8Config {
        &self.config
    }

    /// Time between frames.
    pub fn frame_interval(&self) -> Duration {
        Duration::from_secs(1) / self.config.fps
    }

    /// Frames between scheduled keyframes (at least 1).
    pub fn keyframe_interval_frames(&self) -> u32 {
        let frames = (self.config.keyframe_interval.as_secs_f64() * self.config.fps as f64).round();
        (frames as u32).max(1)
    }

    /// Bitstream sizes (keyframe, delta frame) in bytes: keyframes are five times larger and
    /// the average over one keyframe interval matches the target bitrate.
    pub fn frame_sizes(&self) -> (usize, usize) {
        let n = self.keyframe_interval_frames() as u64;
        let average = self.config.bitrate_bps as u64 / 8 / self.config.fps as u64;
        let delta = (n * average / (n + KEYFRAME_FACTOR - 1)).max((10 + STAMP_LEN) as u64);
        ((delta * KEYFRAME_FACTOR) as usize, delta as usize)
    }

    /// Makes the next frame a keyframe (what a publisher does on PLI/FIR).
    pub fn request_keyframe(&mut self) {
        self.keyframe_requested = true;
    }

    /// Frames generated so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Lets one frame interval pass without encoding (a paused layer): the RTP clock moves on,
    /// sequence number and picture id do not, and the next frame is a keyframe (as a real
    /// encoder resumes).
    pub fn skip_frame(&mut self) {
        self.timestamp = self.timestamp.wrapping_add(CLOCK_RATE / self.config.fps);
        self.keyframe_requested = true;
    }

    /// The next frame's packets, stamped with the current wall clock.
    pub fn next_frame(&mut self) -> Vec<Packet> {
        self.next_frame_at(SystemTime::now())
    }

    /// The next frame's packets, stamped with `now`.
    pub fn next_frame_at(&mut self, now: SystemTime) -> Vec<Packet> {
        let keyframe = self.keyframe_requested
            || self.frames_since_keyframe >= self.keyframe_interval_frames();
        if keyframe {
            self.keyframe_requested = false;
            self.frames_since_keyframe = 0;
        }
        let (key_size, delta_size) = self.frame_sizes();
        let frame_size = if keyframe { key_size } else { delta_size };
        let header = self.payload_header(keyframe, frame_size);
        let micros = micros_since_epoch(now);

        let mut packets = vec![];
        let mut remaining = frame_size;
        while remaining > 0 || packets.is_empty() {
            let first = packets.is_empty();
            let mut payload = self.descriptor(first);
            let budget = self.config.mtu - payload.len();
            let content = budget.min(remaining);
            remaining -= content;
            let stamped = if first {
                payload.extend_from_slice(&header);
                content.saturating_sub(header.len())
            } else {
                content
            };
            let stamp = StampFields {
                sent_at_micros: micros,
                counter: self.counter,
                layer: self.config.layer,
            };
            write_stamped(&mut payload, stamp, stamped.max(STAMP_LEN));
            self.counter += 1;
            packets.push(Packet {
                header: Header {
                    version: 2,
                    marker: remaining == 0,
                    payload_type: self.config.payload_type,
                    sequence_number: self.sequence,
                    timestamp: self.timestamp,
                    ssrc: self.config.ssrc,
                    ..Default::default()
                },
                payload: Bytes::from(payload),
            });
            self.sequence = self.sequence.wrapping_add(1);
        }

        self.timestamp = self.timestamp.wrapping_add(CLOCK_RATE / self.config.fps);
        self.picture_id = (self.picture_id + 1) & 0x7fff;
        self.tl0picidx = self.tl0picidx.wrapping_add(1);
        self.frames += 1;
        self.frames_since_keyframe += 1;
        packets
    }

    /// RFC 7741 payload descriptor: X=1, N=0, S on a frame's first packet, PID=0, I=1 with a
    /// 15-bit picture id (M=1), optionally L=1/T=1 with TL0PICIDX and TID=0, Y=1.
    fn descriptor(&self, start: bool) -> Vec<u8> {
        let mut d = Vec::with_capacity(6);
        d.push(0x80 | if start { 0x10 } else { 0 });
        d.push(0x80 | if self.config.tl0picidx { 0x60 } else { 0 });
        d.push(0x80 | (self.picture_id >> 8) as u8);
        d.push(self.picture_id as u8);
        if self.config.tl0picidx {
            d.push(self.tl0picidx);
            d.push(0x20);
        }
        d
    }

    /// VP8 payload header (RFC 7741 §4.3): 3 bytes, plus for keyframes the start code and
    /// dimensions (10 bytes in all). P=0 on keyframes; show_frame=1; version 0.
    fn payload_header(&self, keyframe: bool, frame_size: usize) -> Vec<u8> {
        let first_partition = (frame_size / 4).min(0x7ffff) as u32;
        let mut h = Vec::with_capacity(10);
        h.push(((first_partition & 0x7) << 5) as u8 | 0x10 | u8::from(!keyframe));
        h.push((first_partition >> 3) as u8);
        h.push((first_partition >> 11) as u8);
        if keyframe {
            h.extend_from_slice(&[0x9d, 0x01, 0x2a]);
            h.extend_from_slice(&self.config.width.to_le_bytes());
            h.extend_from_slice(&self.config.height.to_le_bytes());
        }
        h
    }
}

/// A parsed VP8 payload descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Vp8Descriptor {
    /// Descriptor length in bytes.
    pub len: usize,
    /// N bit.
    pub non_reference: bool,
    /// S bit.
    pub start_of_partition: bool,
    /// PID.
    pub partition_index: u8,
    /// Picture id, if present.
    pub picture_id: Option<u16>,
    /// Whether the picture id is the 15-bit form (M=1).
    pub picture_id_15bit: bool,
    /// TL0PICIDX, if present.
    pub tl0picidx: Option<u8>,
    /// TID, if present.
    pub tid: Option<u8>,
    /// Y bit (only meaningful with TID).
    pub layer_sync: bool,
    /// KEYIDX, if present.
    pub keyidx: Option<u8>,
}

impl Vp8Descriptor {
    /// Whether the payload starting with this descriptor begins a keyframe.
    pub fn starts_keyframe(&self, payload: &[u8]) -> bool {
        self.start_of_partition
            && self.partition_index == 0
            && payload.get(self.len).is_some_and(|b| b & 0x01 == 0)
    }
}

/// The stamp of a synthetic VP8 payload whose descriptor is `d`.
pub(crate) fn stamp_after(d: &Vp8Descriptor, payload: &[u8]) -> Option<Stamp> {
    let mut offset = d.len;
    if d.start_of_partition && d.partition_index == 0 {
        let first = *payload.get(offset)?;
        offset += if first & 0x01 == 0 { 10 } else { 3 };
    }
    read_stamp(payload.get(offset..)?)
}

/// What a receiver checks about one VP8 packet, read without copying it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vp8PacketInfo {
    /// RTP sequence number.
    pub sequence_number: u16,
    /// RTP timestamp.
    pub timestamp: u32,
    /// RTP marker (last packet of a frame).
    pub marker: bool,
    /// First packet of a frame (S=1, PID=0).
    pub frame_start: bool,
    /// First packet of a keyframe.
    pub keyframe_start: bool,
    /// Width and height a keyframe's header announces (first packet of a keyframe only).
    pub keyframe_size: Option<(u16, u16)>,
    /// Picture id, if the descriptor carries one.
    pub picture_id: Option<u16>,
    /// TL0PICIDX, if present.
    pub tl0picidx: Option<u8>,
    /// The synthetic stamp (layer marker, counter), for payloads made by [`Vp8Source`].
    pub stamp: Option<Stamp>,
}

impl Vp8PacketInfo {
    /// Reads a VP8 RTP packet; `None` if its payload descriptor is truncated.
    pub fn parse(packet: &Packet) -> Option<Self> {
        let payload = &packet.payload[..];
        let d = parse_vp8_descriptor(payload)?;
        let frame_start = d.start_of_partition && d.partition_index == 0;
        let keyframe_start = d.starts_keyframe(payload);
        let keyframe_size = keyframe_start.then(|| frame_size(&d, payload)).flatten();
        Some(Self {
            sequence_number: packet.header.sequence_number,
            timestamp: packet.header.timestamp,
            marker: packet.header.marker,
            frame_start,
            keyframe_start,
            keyframe_size,
            picture_id: d.picture_id,
            tl0picidx: d.tl0picidx,
            stamp: stamp_after(&d, payload),
        })
    }
}

/// Width and height a VP8 payload that starts a keyframe announces (RFC 6386 9.1: frame tag,
/// start code 9d 01 2a, 14-bit sizes); `None` for any other payload.
pub fn keyframe_size(payload: &[u8]) -> Option<(u16, u16)> {
    let d = parse_vp8_descriptor(payload)?;
    d.starts_keyframe(payload)
        .then(|| frame_size(&d, payload))
        .flatten()
}

fn frame_size(d: &Vp8Descriptor, payload: &[u8]) -> Option<(u16, u16)> {
    let h = payload.get(d.len..d.len + 10)?;
    if h[3..6] != [0x9d, 0x01, 0x2a] {
        return None;
    }
    let width = u16::from_le_bytes([h[6], h[7]]) & 0x3fff;
    let height = u16::from_le_bytes([h[8], h[9]]) & 0x3fff;
    Some((width, height))
}

/// Parses an RFC 7741 payload descriptor; `None` if truncated.
pub fn parse_vp8_descriptor(payload: &[u8]) -> Option<Vp8Descriptor> {
    let b0 = *payload.first()?;
    let mut d = Vp8Descriptor {
        non_reference: b0 & 0x20 != 0,
        start_of_partition: b0 & 0x10 != 0,
        partition_index: b0 & 0x07,
        ..Default::default()
    };
    let mut i = 1;
    if b0 & 0x80 != 0 {
        let x = *payload.get(i)?;
        i += 1;
        if x & 0x80 != 0 {
            let p = *payload.get(i)?;
            if p & 0x80 != 0 {
                let lo = *payload.get(i + 1)?;
                d.picture_id = Some(u16::from(p & 0x7f) << 8 | u16::from(lo));
                d.picture_id_15bit = true;
                i += 2;
            } else {
                d.picture_id = Some(u16::from(p & 0x7f));
                i += 1;
            }
        }
        if x & 0x40 != 0 {
            d.tl0picidx = Some(*payload.get(i)?);
            i += 1;
        }
        if x & 0x30 != 0 {
            let b = *payload.get(i)?;
            if x & 0x20 != 0 {
                d.tid = Some(b >> 6);
                d.layer_sync = b & 0x20 != 0;
            }
            if x & 0x10 != 0 {
                d.keyidx = Some(b & 0x1f);
            }
            i += 1;
        }
    }
    d.len = i;
    Some(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::parse_vp8;

    fn source(config: Vp8Config) -> Vp8Source {
        Vp8Source::new(config)
    }

    #[test]
    fn descriptor_bits_follow_rfc7741() {
        let mut s = source(Vp8Config {
            initial_picture_id: 0x7ffe,
            ..Default::default()
        });
        let frame = s.next_frame();
        assert!(frame.len() > 1, "keyframe spans several packets");
        let first = &frame[0].payload;
        assert_eq!(first[0], 0x90, "X=1, S=1, PID=0");
        assert_eq!(first[1], 0xe0, "I=1, L=1, T=1");
        assert_eq!(first[2] & 0x80, 0x80, "M=1: 15-bit picture id");
        let d = parse_vp8_descriptor(first).unwrap();
        assert_eq!(d.len, 6);
        assert_eq!(d.picture_id, Some(0x7ffe));
        assert!(d.picture_id_15bit);
        assert_eq!(d.tl0picidx, Some(0));
        assert_eq!(d.tid, Some(0));
        assert!(d.layer_sync);
        assert!(d.starts_keyframe(first));
        for p in &frame[1..] {
            assert_eq!(p.payload[0], 0x80, "S=0 on continuation packets");
            let d = parse_vp8_descriptor(&p.payload).unwrap();
            assert_eq!(d.picture_id, Some(0x7ffe));
            assert!(!d.starts_keyframe(&p.payload));
        }
        // Picture id increments and wraps in 15 bits; TL0PICIDX increments.
        let next = s.next_frame();
        let d = parse_vp8_descriptor(&next[0].payload).unwrap();
        assert_eq!(d.picture_id, Some(0x7fff));
        assert_eq!(d.tl0picidx, Some(1));
        let d = parse_vp8_descriptor(&s.next_frame()[0].payload).unwrap();
        assert_eq!(d.picture_id, Some(0));
    }

    #[test]
    fn descriptor_without_tl0picidx() {
        let mut s = source(Vp8Config {
            tl0picidx: false,
            ..Default::default()
        });
        let p = &s.next_frame()[0].payload;
        assert_eq!(p[1], 0x80);
        let d = parse_vp8_descriptor(p).unwrap();
        assert_eq!(d.len, 4);
        assert_eq!(d.tl0picidx, None);
        assert_eq!(d.tid, None);
    }

    #[test]
    fn keyframe_header_has_start_code_and_size() {
        let mut s = source(Vp8Config {
            width: 1280,
            height: 720,
            ..Default::default()
        });
        let frame = s.next_frame();
        let d = parse_vp8_descriptor(&frame[0].payload).unwrap();
        let h = &frame[0].payload[d.len..];
        assert_eq!(h[0] & 0x01, 0, "P=0 on keyframes");
        assert_eq!(h[0] & 0x10, 0x10, "show_frame");
        assert_eq!(&h[3..6], &[0x9d, 0x01, 0x2a]);
        assert_eq!(u16::from_le_bytes([h[6], h[7]]) & 0x3fff, 1280);
        assert_eq!(u16::from_le_bytes([h[8], h[9]]) & 0x3fff, 720);
        let delta = s.next_frame();
        let d = parse_vp8_descriptor(&delta[0].payload).unwrap();
        assert_eq!(delta[0].payload[d.len] & 0x01, 1, "P=1 on delta frames");
    }

    #[test]
    fn packetization_marker_sizes_and_timing() {
        let config = Vp8Config {
            bitrate_bps: 2_000_000,
            mtu: 1200,
            initial_sequence: 65_534,
            initial_timestamp: u32::MAX - 1000,
            ..Default::default()
        };
        let mut s = source(config);
        let (key, delta) = s.frame_sizes();
        let mut expected_seq = 65_534u16;
        let mut expected_ts = u32::MAX - 1000;
        for i in 0..10 {
            let frame = s.next_frame();
            let size = if i == 0 { key } else { delta };
            let mut bitstream = 0;
            for (n, p) in frame.iter().enumerate() {
                assert!(p.payload.len() <= 1200);
                assert_eq!(p.header.marker, n == frame.len() - 1, "marker on last only");
                assert_eq!(p.payload[0] & 0x10 != 0, n == 0, "S on first only");
                assert_eq!(p.header.sequence_number, expected_seq);
                assert_eq!(p.header.timestamp, expected_ts);
                expected_seq = expected_seq.wrapping_add(1);
                bitstream += p.payload.len() - parse_vp8_descriptor(&p.payload).unwrap().len;
            }
            assert!(
                bitstream >= size && bitstream < size + STAMP_LEN,
                "{bitstream} vs {size}"
            );
            assert_eq!(frame.len(), size.div_ceil(1200 - 6));
            expected_ts = expected_ts.wrapping_add(3000);
        }
    }

    #[test]
    fn bitrate_is_met_over_a_keyframe_interval() {
        let mut s = source(Vp8Config {
            bitrate_bps: 1_000_000,
            fps: 25,
            keyframe_interval: Duration::from_secs(2),
            ..Default::default()
        });
        let bytes: usize = (0..50)
            .flat_map(|_| s.next_frame())
            .map(|p| p.payload.len())
            .sum();
        let bits_per_second = bytes * 8 / 2;
        assert!(
            (950_000..1_100_000).contains(&bits_per_second),
            "{bits_per_second}"
        );
    }

    #[test]
    fn keyframe_cadence_and_requests() {
        let mut s = source(Vp8Config {
            fps: 10,
            keyframe_interval: Duration::from_secs(1),
            ..Default::default()
        });
        let is_key = |frame: &[Packet]| {
            let d = parse_vp8_descriptor(&frame[0].payload).unwrap();
            d.starts_keyframe(&frame[0].payload)
        };
        let keys: Vec<u64> = (0..25u64).filter(|_| is_key(&s.next_frame())).collect();
        assert_eq!(keys, vec![0, 10, 20]);
        // A request makes the very next frame a keyframe and restarts the cadence.
        s.request_keyframe();
        assert!(is_key(&s.next_frame())); // frame 25
        let keys: Vec<u64> = (26..40u64).filter(|_| is_key(&s.next_frame())).collect();
        assert_eq!(keys, vec![35]);
    }

    #[test]
    fn every_packet_is_stamped_and_counted() {
        let mut s = source(Vp8Config::default());
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let packets: Vec<Packet> = (0..3).flat_map(|_| s.next_frame_at(t)).collect();
        for (i, p) in packets.iter().enumerate() {
            let stamp = parse_vp8(&p.payload).unwrap();
            assert_eq!(stamp.counter, i as u64);
            assert_eq!(stamp.sent_at(), t);
            assert!(stamp.intact);
        }
    }

    #[test]
    fn layer_marker_start_values_and_packet_info() {
        let mut s = source(Vp8Config {
            width: 320,
            height: 180,
            layer: 3,
            initial_sequence: 500,
            initial_timestamp: 9_000,
            initial_picture_id: 1234,
            initial_tl0picidx: 77,
            ..Default::default()
        });
        let frame = s.next_frame();
        let first = Vp8PacketInfo::parse(&frame[0]).unwrap();
        assert_eq!(first.sequence_number, 500);
        assert_eq!(first.timestamp, 9_000);
        assert!(first.frame_start && first.keyframe_start);
        assert_eq!(first.keyframe_size, Some((320, 180)));
        assert_eq!(first.picture_id, Some(1234));
        assert_eq!(first.tl0picidx, Some(77));
        assert_eq!(first.stamp.unwrap().layer, 3);
        assert!(first.stamp.unwrap().intact);
        let last = Vp8PacketInfo::parse(frame.last().unwrap()).unwrap();
        assert!(last.marker && !last.frame_start && !last.keyframe_start);
        assert_eq!(last.keyframe_size, None);
        assert_eq!(last.stamp.unwrap().layer, 3);
        let delta = Vp8PacketInfo::parse(&s.next_frame()[0]).unwrap();
        assert!(delta.frame_start && !delta.keyframe_start);
        assert_eq!((delta.picture_id, delta.tl0picidx), (Some(1235), Some(78)));
    }

    #[test]
    fn a_skipped_frame_moves_only_the_clock_and_resumes_on_a_keyframe() {
        let mut s = source(Vp8Config::default());
        let _ = s.next_frame();
        let delta = s.next_frame();
        let before = Vp8PacketInfo::parse(&delta[0]).unwrap();
        assert!(!before.keyframe_start);
        let last_seq = delta.last().unwrap().header.sequence_number;
        s.skip_frame();
        s.skip_frame();
        let frame = s.next_frame();
        let after = Vp8PacketInfo::parse(&frame[0]).unwrap();
        assert!(after.keyframe_start, "resumes with a keyframe");
        assert_eq!(after.timestamp, before.timestamp + 3 * 3000);
        // Sequence numbers and picture ids continue where they stopped.
        assert_eq!(after.sequence_number, last_seq + 1);
        assert_eq!(after.picture_id, Some(before.picture_id.unwrap() + 1));
    }

    #[test]
    fn parser_rejects_truncated_descriptors() {
        assert!(parse_vp8_descriptor(&[]).is_none());
        assert!(parse_vp8_descriptor(&[0x80]).is_none());
        assert!(parse_vp8_descriptor(&[0x80, 0x80, 0x80]).is_none());
        assert!(parse_vp8(&[0x90, 0x80, 0x80, 0x01]).is_none());
        let d = parse_vp8_descriptor(&[0x10]).unwrap();
        assert_eq!(d.len, 1);
    }
}
