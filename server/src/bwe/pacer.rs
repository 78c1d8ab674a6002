//! The pacer of one connection: RTP leaves no faster than the pacing rate the worker sets
//! (a multiple of the estimate), so a keyframe forwarded to many subscribers at once, or a
//! probe, does not arrive at a subscriber's bottleneck as one burst.
//!
//! Unlike the engine's pacer (one FIFO at the estimator's target, with no way for the
//! application to change the rate between feedback packets): audio goes first, then
//! retransmissions (half the rate while video waits), then video, then probe padding; the
//! rate is read from [`LinkState`] at each release, and at rate 0 (no feedback to pace by)
//! packets pass straight through. Queues are bounded: when full, the oldest packet is dropped, and video
//! and retransmissions that waited too long are dropped (they would arrive too late).

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::Instant;

use rtc::interceptor::{Attribute, Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::sansio::Protocol;
use rtc::shared::error::Error;
use rtc::shared::marshal::MarshalSize;

use super::link::SharedLink;

/// Size on the wire of one probe padding packet: four 255-byte extensions, headers, SRTP.
pub const PADDING_PACKET_SIZE: usize = 1070;
const PADDING_EXTENSIONS: usize = 4;
/// Two-byte header extensions (RFC 8285) allow ids up to 255; negotiated ones are small, and
/// receivers skip ids they do not know.
const PADDING_EXTENSION_ID: u8 = 200;
const TWO_BYTE_PROFILE: u16 = 0x1000;
static FILLER: [u8; 255] = [0; 255];

/// Gives an empty padding packet (a probe the worker wrote) its size. RTP padding proper
/// holds at most 255 bytes and the engine's packet writer only pads to a 4-byte boundary, so
/// the bulk goes into header extensions of an id no one negotiated. Done here, past the
/// engine's sender (which refuses extension ids that are not negotiated) and before the
/// transport-wide sequence number is added.
fn inflate_padding(packet: &mut rtc::rtp::Packet) -> bool {
    let h = &mut packet.header;
    if !h.padding || !packet.payload.is_empty() || h.extension {
        return false;
    }
    h.extension = true;
    h.extension_profile = TWO_BYTE_PROFILE;
    h.extensions.clear();
    for _ in 0..PADDING_EXTENSIONS {
        h.extensions.push(rtc::rtp::header::Extension {
            id: PADDING_EXTENSION_ID,
            payload: bytes::Bytes::from_static(&FILLER),
        });
    }
    true
}

/// Packets queued at most (per class); about 1.5 s of a 1 Mbit/s stream.
const QUEUE_LIMIT: usize = 1024;
/// Video and probes wait at most this long in the queue.
const MAX_VIDEO_WAIT: std::time::Duration = std::time::Duration::from_millis(400);
/// A retransmission that waited this long comes too late to help (the receiver has asked
/// again, or given up on the frame); sending it would only delay what follows.
const MAX_REPAIR_WAIT: std::time::Duration = std::time::Duration::from_millis(250);
/// The budget may build up to this much sending time, so a released burst stays short.
const BURST: std::time::Duration = std::time::Duration::from_millis(10);
/// And never below two full packets, or large packets would wait for budget forever.
const MIN_BURST_BITS: f64 = 2.0 * 1500.0 * 8.0;

#[derive(Clone, Copy)]
enum Class {
    Audio,
    Repair,
    Normal,
    Padding,
}

pub struct PacedSender {
    link: SharedLink,
    audio_ssrcs: Vec<u32>,
    /// Every stream bound here (RTX rides on other SSRCs).
    primary_ssrcs: Vec<u32>,
    /// Audio, then retransmissions, then video and probes: each class waits for the ones
    /// before it (a burst of retransmitted video must not hold audio back).
    audio: VecDeque<TaggedPacket>,
    repair: VecDeque<TaggedPacket>,
    normal: VecDeque<TaggedPacket>,
    /// Probe padding, last: it fills what the probe rate leaves, and never holds a frame
    /// back (queued ahead of video, a probe delayed frames by 200 ms: a freeze).
    padding: VecDeque<TaggedPacket>,
    out: VecDeque<TaggedPacket>,
    read_queue: VecDeque<TaggedPacket>,
    budget_bits: f64,
    last_refill: Option<Instant>,
    /// Bits released from the repair and the normal queues while both had packets waiting:
    /// they share the rate half and half then, so a storm of retransmissions (every packet
    /// of a layer the link just stopped carrying) cannot starve the stream that replaces it.
    repair_share: (f64, f64),
}

impl PacedSender {
    pub fn new(link: SharedLink) -> Self {
        Self {
            link,
            audio_ssrcs: Vec::new(),
            primary_ssrcs: Vec::new(),
            audio: VecDeque::new(),
            repair: VecDeque::new(),
            normal: VecDeque::new(),
            padding: VecDeque::new(),
            out: VecDeque::new(),
            read_queue: VecDeque::new(),
            budget_bits: MIN_BURST_BITS,
            last_refill: None,
            repair_share: (0.0, 0.0),
        }
    }

    fn bits(p: &TaggedPacket) -> f64 {
        match &p.message.packet {
            Packet::Rtp(rtp) => (rtp.marshal_size() * 8) as f64,
            _ => 0.0,
        }
    }

    fn refill(&mut self, now: Instant, rate: f64) {
        let cap = (rate * BURST.as_secs_f64()).max(MIN_BURST_BITS);
        if let Some(last) = self.last_refill {
            let elapsed = now.saturating_duration_since(last).as_secs_f64();
            self.budget_bits = (self.budget_bits + elapsed * rate).min(cap);
        }
        self.last_refill = Some(now);
    }

    /// Moves what the budget allows (everything when not pacing) to the output.
    fn release(&mut self, now: Instant) {
        let rate = self.link.pacing_bps() as f64;
        self.refill(now, rate);
        // Video that waited this long is stale: behind it may wait the keyframe of the lower
        // layer the allocator just chose, and the old layer's backlog would hold it back for
        // seconds (the receiver asks again for what it still needs).
        for (queue, max_wait) in [
            (&mut self.normal, MAX_VIDEO_WAIT),
            (&mut self.repair, MAX_REPAIR_WAIT),
            (&mut self.padding, MAX_VIDEO_WAIT),
        ] {
            while queue
                .front()
                .is_some_and(|p| now.saturating_duration_since(p.now) > max_wait)
            {
                queue.pop_front();
                self.link.pacer_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        loop {
            let contended = !self.repair.is_empty() && !self.normal.is_empty();
            if !contended {
                self.repair_share = (0.0, 0.0);
            }
            let class = if !self.audio.is_empty() {
                Class::Audio
            } else if !self.repair.is_empty()
                && (!contended || self.repair_share.0 <= self.repair_share.1)
            {
                Class::Repair
            } else if !self.normal.is_empty() {
                Class::Normal
            } else if !self.padding.is_empty() {
                Class::Padding
            } else {
                break;
            };
            let queue = match class {
                Class::Audio => &mut self.audio,
                Class::Repair => &mut self.repair,
                Class::Normal => &mut self.normal,
                Class::Padding => &mut self.padding,
            };
            let bits = queue.front().map(Self::bits).unwrap_or_default();
            // Negative budget is allowed for one packet, so a large one cannot stall.
            if rate > 0.0 && self.budget_bits <= 0.0 {
                break;
            }
            let mut packet = queue.pop_front().expect("front checked");
            if rate > 0.0 {
                self.budget_bits -= bits;
            }
            match class {
                Class::Repair => {
                    // RTX only: a retransmission on its own stream is numbered like any other.
                    let rtx = match &packet.message.packet {
                        Packet::Rtp(rtp) => !self.primary_ssrcs.contains(&rtp.header.ssrc),
                        _ => false,
                    };
                    if rtx {
                        self.link
                            .repair_bytes
                            .fetch_add((bits / 8.0) as u64, Ordering::Relaxed);
                    }
                    if contended {
                        self.repair_share.0 += bits;
                    }
                }
                Class::Normal if contended => self.repair_share.1 += bits,
                _ => {}
            }
            // The release instant is the departure the estimator must see.
            packet.now = now;
            self.out.push_back(packet);
        }
    }

    fn queued(&self) -> usize {
        self.audio.len() + self.repair.len() + self.normal.len() + self.padding.len()
    }

    fn next_release(&self) -> Option<Instant> {
        if self.queued() == 0 {
            return None;
        }
        let rate = self.link.pacing_bps() as f64;
        let last = self.last_refill?;
        if rate <= 0.0 || self.budget_bits > 0.0 {
            return Some(last);
        }
        let wait = (-self.budget_bits + 1.0) / rate;
        Some(last + std::time::Duration::from_secs_f64(wait))
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for PacedSender {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.read_queue.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.read_queue.pop_front()
    }

    fn handle_write(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        let now = msg.now;
        let Packet::Rtp(rtp) = &mut msg.message.packet else {
            self.out.push_back(msg);
            return Ok(());
        };
        let probe = inflate_padding(rtp);
        let queue = if self.audio_ssrcs.contains(&rtp.header.ssrc) {
            &mut self.audio
        } else if msg.message.has(&Attribute::Retransmission) {
            &mut self.repair
        } else if probe {
            &mut self.padding
        } else {
            &mut self.normal
        };
        if queue.len() >= QUEUE_LIMIT {
            queue.pop_front();
            self.link.pacer_dropped.fetch_add(1, Ordering::Relaxed);
        }
        queue.push_back(msg);
        self.release(now);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.out.pop_front()
    }

    fn handle_timeout(&mut self, now: Instant) -> Result<(), Self::Error> {
        self.release(now);
        Ok(())
    }

    fn poll_timeout(&mut self) -> Option<Self::Time> {
        self.next_release()
    }
}

impl Interceptor for PacedSender {
    fn bind_local_stream(&mut self, info: &StreamInfo) {
        if info.mime_type.to_ascii_lowercase().starts_with("audio/") {
            self.audio_ssrcs.push(info.ssrc);
        }
        self.primary_ssrcs.push(info.ssrc);
    }

    fn unbind_local_stream(&mut self, info: &StreamInfo) {
        self.audio_ssrcs.retain(|s| *s != info.ssrc);
        self.primary_ssrcs.retain(|s| *s != info.ssrc);
    }

    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bwe::link::LinkState;
    use rtc::interceptor::AttributedPacket;
    use rtc::shared::TransportContext;
    use std::time::Duration;

    fn rtp(ssrc: u32, payload: usize, now: Instant) -> TaggedPacket {
        TaggedPacket {
            now,
            transport: TransportContext::default(),
            message: AttributedPacket::new(Packet::Rtp(rtc::rtp::Packet {
                header: rtc::rtp::header::Header {
                    version: 2,
                    ssrc,
                    ..Default::default()
                },
                payload: vec![0u8; payload].into(),
            })),
        }
    }

    #[test]
    fn unpaced_passes_everything_at_once() {
        let link = LinkState::new(Default::default());
        let mut p = PacedSender::new(link);
        let t0 = Instant::now();
        for _ in 0..50 {
            p.handle_write(rtp(1, 1000, t0)).unwrap();
        }
        let mut n = 0;
        while p.poll_write().is_some() {
            n += 1;
        }
        assert_eq!(n, 50);
        assert_eq!(p.poll_timeout(), None);
    }

    #[test]
    fn a_burst_leaves_at_the_pacing_rate_audio_first() {
        let link = LinkState::new(Default::default());
        link.set_pacing_bps(1_000_000);
        let mut p = PacedSender::new(link);
        p.bind_local_stream(&StreamInfo {
            ssrc: 9,
            mime_type: "audio/opus".into(),
            ..Default::default()
        });
        let t0 = Instant::now();
        // A 30 kB keyframe: 30 packets of 1000 bytes, then one audio packet.
        for _ in 0..30 {
            p.handle_write(rtp(1, 988, t0)).unwrap();
        }
        p.handle_write(rtp(9, 100, t0)).unwrap();
        let mut first_audio_at = None;
        let mut sent = 0usize;
        let mut now = t0;
        while sent < 31 {
            while let Some(pkt) = p.poll_write() {
                if let Packet::Rtp(r) = &pkt.message.packet
                    && r.header.ssrc == 9
                {
                    first_audio_at.get_or_insert(sent);
                }
                sent += 1;
            }
            if sent >= 31 {
                break;
            }
            now = p.poll_timeout().expect("queued packets need a wake-up");
            p.handle_timeout(now).unwrap();
        }
        // 240 kbit at 1 Mbit/s: about 0.24 s.
        let took = now.duration_since(t0);
        assert!(
            took > Duration::from_millis(180) && took < Duration::from_millis(300),
            "{took:?}"
        );
        assert!(first_audio_at.unwrap() < 5, "audio waited behind video");
    }

    #[test]
    fn stale_video_is_dropped_audio_never() {
        let link = LinkState::new(Default::default());
        link.set_pacing_bps(100_000);
        let mut p = PacedSender::new(link.clone());
        let t0 = Instant::now();
        // 100 kB at 100 kbit/s would take 8 s: what waited 400 ms goes.
        for _ in 0..100 {
            p.handle_write(rtp(1, 988, t0)).unwrap();
        }
        while p.poll_write().is_some() {}
        let later = t0 + Duration::from_millis(500);
        p.handle_timeout(later).unwrap();
        let mut released = 0;
        while p.poll_write().is_some() {
            released += 1;
        }
        assert!(released <= 2, "{released} stale packets released");
        assert!(link.pacer_dropped.load(Ordering::Relaxed) >= 90);
    }

    fn retransmission(ssrc: u32, now: Instant) -> TaggedPacket {
        let mut p = rtp(ssrc, 988, now);
        p.message.add(Attribute::Retransmission);
        p
    }

    /// Runs the pacer from `t0` until `until`, returning the SSRCs released in order.
    fn drain(p: &mut PacedSender, t0: Instant, until: Instant) -> Vec<u32> {
        let mut out = Vec::new();
        let mut now = t0;
        loop {
            while let Some(pkt) = p.poll_write() {
                if let Packet::Rtp(r) = &pkt.message.packet {
                    out.push(r.header.ssrc);
                }
            }
            match p.poll_timeout() {
                Some(at) if at <= until => {
                    now = at.max(now);
                    p.handle_timeout(now).unwrap();
                }
                _ => return out,
            }
        }
    }

    #[test]
    fn retransmissions_share_the_rate_with_the_stream_they_would_starve() {
        let link = LinkState::new(Default::default());
        link.set_pacing_bps(400_000);
        let mut p = PacedSender::new(link.clone());
        p.bind_local_stream(&StreamInfo {
            ssrc: 1,
            mime_type: "video/VP8".into(),
            ..Default::default()
        });
        let t0 = Instant::now();
        // A storm of 40 retransmissions (RTX, ssrc 2) ahead of 20 packets of video.
        for _ in 0..40 {
            p.handle_write(retransmission(2, t0)).unwrap();
        }
        for _ in 0..20 {
            p.handle_write(rtp(1, 988, t0)).unwrap();
        }
        let sent = drain(&mut p, t0, t0 + Duration::from_millis(200));
        let video = sent.iter().filter(|&&s| s == 1).count();
        let repair = sent.iter().filter(|&&s| s == 2).count();
        assert!(video >= 4 && repair >= 4, "{video} video, {repair} repair");
        // The burst the budget allows went before the video was queued; then half and half.
        assert!(
            video.abs_diff(repair) <= 3,
            "{video} video, {repair} repair"
        );
        assert!(link.repair_bytes.load(Ordering::Relaxed) >= 4 * 1000);
    }

    #[test]
    fn a_late_retransmission_is_dropped() {
        let link = LinkState::new(Default::default());
        link.set_pacing_bps(100_000);
        let mut p = PacedSender::new(link.clone());
        let t0 = Instant::now();
        for _ in 0..30 {
            p.handle_write(retransmission(2, t0)).unwrap();
        }
        let sent = drain(&mut p, t0, t0 + Duration::from_secs(2));
        // 100 kbit/s sends about three 1 kB packets in 250 ms (plus the initial burst).
        assert!(sent.len() <= 8, "{} late retransmissions sent", sent.len());
        assert!(link.pacer_dropped.load(Ordering::Relaxed) >= 22);
    }
}
