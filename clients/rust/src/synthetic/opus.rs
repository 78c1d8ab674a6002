//! Synthetic Opus: one 20 ms CELT frame per packet.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use rtc::rtp::{Header, Packet};

use super::{STAMP_LEN, StampFields, micros_since_epoch, write_stamped};

/// RTP timestamp increment of one 20 ms packet at 48 kHz.
pub const SAMPLES_PER_PACKET: u32 = 960;
/// TOC byte: config 31 (CELT-only, fullband, 20 ms), mono, one frame.
const TOC: u8 = 31 << 3;

/// Settings of an [`OpusSource`].
#[derive(Debug, Clone)]
pub struct OpusConfig {
    /// SSRC written into packets (replaced by [`crate::LocalTrack::write_rtp`]).
    pub ssrc: u32,
    /// Payload type written into packets (replaced as well).
    pub payload_type: u8,
    /// Bitrate, bits per second; sets the payload size.
    pub bitrate_bps: u32,
    /// First RTP sequence number.
    pub initial_sequence: u16,
    /// First RTP timestamp.
    pub initial_timestamp: u32,
}

impl Default for OpusConfig {
    fn default() -> Self {
        Self {
            ssrc: 0x4f50_5553,
            payload_type: 111,
            bitrate_bps: 32_000,
            initial_sequence: 0,
            initial_timestamp: 0,
        }
    }
}

/// Generates 20 ms Opus packets, deterministically (apart from the embedded wall clock).
#[derive(Debug, Clone)]
pub struct OpusSource {
    config: OpusConfig,
    sequence: u16,
    timestamp: u32,
    counter: u64,
}

impl OpusSource {
    /// A source with these settings.
    pub fn new(config: OpusConfig) -> Self {
        Self {
            sequence: config.initial_sequence,
            timestamp: config.initial_timestamp,
            counter: 0,
            config,
        }
    }

    /// Time between packets: 20 ms.
    pub fn packet_interval(&self) -> Duration {
        Duration::from_millis(20)
    }

    /// Payload size in bytes (TOC included).
    pub fn payload_size(&self) -> usize {
        ((self.config.bitrate_bps / 8 / 50) as usize).max(1 + STAMP_LEN)
    }

    /// The next packet, stamped with the current wall clock.
    pub fn next_packet(&mut self) -> Packet {
        self.next_packet_at(SystemTime::now())
    }

    /// The next packet, stamped with `now`.
    pub fn next_packet_at(&mut self, now: SystemTime) -> Packet {
        let mut payload = Vec::with_capacity(self.payload_size());
        payload.push(TOC);
        let stamp = StampFields {
            sent_at_micros: micros_since_epoch(now),
            counter: self.counter,
            layer: 0,
        };
        write_stamped(&mut payload, stamp, self.payload_size() - 1);
        let packet = Packet {
            header: Header {
                version: 2,
                marker: self.counter == 0,
                payload_type: self.config.payload_type,
                sequence_number: self.sequence,
                timestamp: self.timestamp,
                ssrc: self.config.ssrc,
                ..Default::default()
            },
            payload: Bytes::from(payload),
        };
        self.counter += 1;
        self.sequence = self.sequence.wrapping_add(1);
        self.timestamp = self.timestamp.wrapping_add(SAMPLES_PER_PACKET);
        packet
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::parse_opus;

    #[test]
    fn packets_advance_by_20ms_and_are_stamped() {
        let mut s = OpusSource::new(OpusConfig {
            initial_sequence: u16::MAX,
            initial_timestamp: u32::MAX - 100,
            ..Default::default()
        });
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(5);
        let a = s.next_packet_at(t);
        let b = s.next_packet_at(t);
        assert_eq!(a.header.sequence_number, u16::MAX);
        assert_eq!(b.header.sequence_number, 0);
        assert_eq!(
            b.header.timestamp,
            a.header.timestamp.wrapping_add(SAMPLES_PER_PACKET)
        );
        assert!(a.header.marker && !b.header.marker);
        assert_eq!(a.payload.len(), 80, "32 kbit/s over 20 ms");
        assert_eq!(a.payload[0], 0xf8);
        let stamp = parse_opus(&b.payload).unwrap();
        assert_eq!(stamp.counter, 1);
        assert_eq!(stamp.sent_at(), t);
        assert!(stamp.intact);
    }
}
