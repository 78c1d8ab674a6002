//! Active speaker detection from the audio-level header extension (RFC 6464): each audio packet
//! carries the publisher's measured level of that frame as 0..=127 -dBov (0 is the loudest,
//! 127 silence). A [`SpeakerDetector`] per published audio track turns that stream into a
//! smoothed level and a speaking flag with hysteresis, and says when the room should be told.
//!
//! Per packet this is a few float operations and no allocation: the worker calls
//! [`AudioLevelTap::observe`] on the hot path and only acts on the rare report it returns.

use std::time::{Duration, Instant};

use rtc::rtp::header::Header;
use rtc::rtp_transceiver::rtp_sender::RTCRtpHeaderExtensionParameters;

pub const AUDIO_LEVEL_URI: &str = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";

/// Levels are judged over windows of this length; a report goes out at most once per window.
pub const WINDOW: Duration = Duration::from_millis(500);
/// A packet at or above this loudness (-dBov at or below it) counts as voice. Speech is
/// typically 20-40 dBov below full scale; background noise 60 and more.
const VOICE_DBOV: u8 = 45;
/// A window is voiced when at least this share of its packets are: a click or a single
/// syllable of noise does not make a speaker.
const MIN_VOICED_SHARE: f32 = 0.3;
/// Weight of the newest window in the smoothed level.
const SMOOTHING: f32 = 0.5;
/// Speaking starts when the smoothed linear level reaches this (~45 dBov; with the smoothing
/// above, one window of voice at ~39 dBov or louder, or a little longer at softer levels)...
const START: f32 = 0.0056;
/// ...and ends after this many windows in a row without voice (1 s), whatever the level was:
/// the pause between sentences keeps the turn, a finished turn ends promptly.
const QUIET_WINDOWS_TO_STOP: u32 = 2;

/// Linear amplitude (0..=1) of a level in -dBov.
fn linear(dbov: u8) -> f32 {
    10f32.powf(-f32::from(dbov.min(127)) / 20.0)
}

/// What to tell the room about one track.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SpeakerReport {
    /// Smoothed linear amplitude, 0 (silence) to 1 (full scale).
    pub level: f32,
    pub active: bool,
}

/// Level and speaking state of one audio track.
#[derive(Debug, Default)]
pub struct SpeakerDetector {
    window_start: Option<Instant>,
    packets: u32,
    voiced: u32,
    voiced_sum: f32,
    smoothed: f32,
    quiet_windows: u32,
    active: bool,
}

impl SpeakerDetector {
    /// One packet's level (-dBov). Returns a report when a window closed and the room should
    /// hear about it: speaking started or stopped, or a speaker's level (once per window).
    pub fn observe(&mut self, dbov: u8, now: Instant) -> Option<SpeakerReport> {
        let start = *self.window_start.get_or_insert(now);
        self.packets += 1;
        if dbov <= VOICE_DBOV {
            self.voiced += 1;
            self.voiced_sum += linear(dbov);
        }
        if now.saturating_duration_since(start) < WINDOW {
            return None;
        }
        let report = self.close_window();
        self.window_start = Some(now);
        report
    }

    fn close_window(&mut self) -> Option<SpeakerReport> {
        let voiced = self.voiced as f32 >= MIN_VOICED_SHARE * self.packets.max(1) as f32;
        let window_level = if voiced {
            self.voiced_sum / self.voiced as f32
        } else {
            0.0
        };
        self.smoothed = self.smoothed * (1.0 - SMOOTHING) + window_level * SMOOTHING;
        self.quiet_windows = if voiced { 0 } else { self.quiet_windows + 1 };
        (self.packets, self.voiced, self.voiced_sum) = (0, 0, 0.0);

        let was_active = self.active;
        if !self.active && self.smoothed >= START {
            self.active = true;
        } else if self.active && self.quiet_windows >= QUIET_WINDOWS_TO_STOP {
            self.active = false;
        }
        (self.active || was_active).then_some(SpeakerReport {
            level: if self.active { self.smoothed } else { 0.0 },
            active: self.active,
        })
    }

    pub fn is_active(&self) -> bool {
        self.active
    }
}

/// A detector bound to the audio-level extension id negotiated on the publisher's leg, looked
/// up once when the track opens so packets are matched by id, never by URI.
#[derive(Debug)]
pub struct AudioLevelTap {
    extension_id: u8,
    detector: SpeakerDetector,
}

impl AudioLevelTap {
    /// A tap when the publisher negotiated the audio-level extension.
    pub fn for_extensions(extensions: &[RTCRtpHeaderExtensionParameters]) -> Option<Self> {
        let id = extensions.iter().find(|e| e.uri == AUDIO_LEVEL_URI)?.id;
        Some(Self {
            extension_id: u8::try_from(id).ok().filter(|id| *id > 0)?,
            detector: SpeakerDetector::default(),
        })
    }

    /// Feeds one packet's header; see [`SpeakerDetector::observe`].
    pub fn observe(&mut self, header: &Header, now: Instant) -> Option<SpeakerReport> {
        if !header.extension {
            return None;
        }
        let level = header
            .extensions
            .iter()
            .find(|e| e.id == self.extension_id)?
            .payload
            .first()?;
        // The top bit is the voice-activity flag, which encoders set inconsistently; the level
        // alone decides.
        self.detector.observe(level & 0x7f, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use rtc::rtp::header::Extension;

    const FRAME: Duration = Duration::from_millis(20);

    /// Feeds `frames` packets 20 ms apart at `dbov`; returns the reports.
    fn feed(d: &mut SpeakerDetector, t: &mut Instant, frames: u32, dbov: u8) -> Vec<SpeakerReport> {
        let mut out = Vec::new();
        for _ in 0..frames {
            out.extend(d.observe(dbov, *t));
            *t += FRAME;
        }
        out
    }

    #[test]
    fn silence_is_never_reported() {
        let mut d = SpeakerDetector::default();
        let mut t = Instant::now();
        assert!(feed(&mut d, &mut t, 500, 127).is_empty());
        assert!(feed(&mut d, &mut t, 500, 70).is_empty(), "background noise");
        assert!(!d.is_active());
    }

    #[test]
    fn speech_starts_within_a_window_and_reports_its_level_each_window() {
        let mut d = SpeakerDetector::default();
        let mut t = Instant::now();
        let reports = feed(&mut d, &mut t, 26, 30);
        assert_eq!(reports.len(), 1, "one report per 500 ms window");
        assert!(reports[0].active);
        assert!((reports[0].level - linear(30) * SMOOTHING).abs() < 1e-6);
        let reports = feed(&mut d, &mut t, 100, 30);
        assert_eq!(reports.len(), 4);
        assert!(reports.iter().all(|r| r.active));
        // Converges on the speech level.
        assert!((reports[3].level - linear(30)).abs() < linear(30) * 0.1);
    }

    #[test]
    fn a_short_pause_keeps_the_turn_and_a_long_one_ends_it() {
        let mut d = SpeakerDetector::default();
        let mut t = Instant::now();
        feed(&mut d, &mut t, 100, 30);
        assert!(d.is_active());
        // Half a second of silence: still speaking, level falling.
        let pause = feed(&mut d, &mut t, 25, 127);
        assert!(pause.iter().all(|r| r.active));
        assert!(d.is_active());
        // The second quiet window in a row ends the turn: one "stopped" report, then nothing.
        let reports = feed(&mut d, &mut t, 150, 127);
        let stops: Vec<_> = reports.iter().filter(|r| !r.active).collect();
        assert_eq!(stops.len(), 1, "{reports:?}");
        assert_eq!(stops[0].level, 0.0);
        assert!(!reports.last().unwrap().active);
        assert!(!d.is_active());
        assert!(feed(&mut d, &mut t, 100, 127).is_empty());
    }

    #[test]
    fn isolated_loud_packets_are_not_speech() {
        // One loud packet in 25 (Chrome's fake microphone beeps like this): no speaker.
        let mut d = SpeakerDetector::default();
        let mut t = Instant::now();
        for _ in 0..40 {
            feed(&mut d, &mut t, 1, 10);
            assert!(feed(&mut d, &mut t, 24, 127).is_empty());
        }
        assert!(!d.is_active());
    }

    #[test]
    fn soft_speech_takes_longer_to_start_a_turn() {
        let mut d = SpeakerDetector::default();
        let mut t = Instant::now();
        // 42 dBov: voiced, but one window's smoothed level stays under START.
        assert!(feed(&mut d, &mut t, 26, 42).is_empty());
        let reports = feed(&mut d, &mut t, 25, 42);
        assert_eq!(reports.len(), 1);
        assert!(reports[0].active);
    }

    fn header(extensions: Vec<Extension>) -> Header {
        Header {
            extension: !extensions.is_empty(),
            extension_profile: 0xBEDE,
            extensions,
            ..Default::default()
        }
    }

    #[test]
    fn the_tap_reads_the_negotiated_id_and_ignores_the_vad_bit() {
        let params = |uri: &str, id| RTCRtpHeaderExtensionParameters {
            uri: uri.into(),
            id,
            ..Default::default()
        };
        assert!(AudioLevelTap::for_extensions(&[params("urn:other", 1)]).is_none());
        let mut tap = AudioLevelTap::for_extensions(&[
            params("urn:ietf:params:rtp-hdrext:sdes:mid", 4),
            params(AUDIO_LEVEL_URI, 1),
        ])
        .unwrap();
        let mut t = Instant::now();
        let mut reports = Vec::new();
        for _ in 0..30 {
            let packet = header(vec![
                Extension {
                    id: 4,
                    payload: Bytes::from_static(b"0"),
                },
                Extension {
                    id: 1,
                    payload: Bytes::from_static(&[0x80 | 25]),
                },
            ]);
            reports.extend(tap.observe(&packet, t));
            assert!(tap.observe(&header(vec![]), t).is_none());
            t += FRAME;
        }
        assert_eq!(reports.len(), 1);
        assert!(reports[0].active);
    }
}
