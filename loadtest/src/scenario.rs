//! What to simulate: rooms, publishers, subscribers, media, timing, and where the server is.
//!
//! A scenario comes from a TOML file ([`Scenario::from_toml`]) and/or command-line flags (the
//! binary applies flags over the file). Every field has a default, so an empty file is a valid
//! scenario: one room, one video publisher, one subscriber, 10 s, against the dev server.
//!
//! Participants of a room are numbered 0..n. Participant `i` publishes video when
//! `i < video_publishers` and audio when `i < audio_publishers`; the `subscribers` more after
//! them only subscribe. Publishers subscribe to the other participants' tracks too unless
//! `publishers_subscribe = false`.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A scenario could not be read or does not make sense.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("cannot read scenario file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML does not parse or has unknown fields.
    #[error("invalid scenario: {0}")]
    Parse(#[from] toml::de::Error),
    /// A value is out of range or inconsistent.
    #[error("invalid scenario: {0}")]
    Invalid(String),
}

/// Video codec of the synthetic publishers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum VideoCodec {
    /// VP8 (the only codec the SDK's synthetic module generates).
    #[default]
    Vp8,
    /// VP9: parsed, refused by [`Scenario::validate`] (no synthetic source yet).
    Vp9,
    /// H.264: parsed, refused (no synthetic source yet).
    H264,
    /// AV1: parsed, refused (no synthetic source yet).
    Av1,
}

/// One video encoding: a simulcast layer, or the only stream when simulcast is off.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Layer {
    /// RID-style name: `q`, `h`, `f`, or anything.
    pub name: String,
    /// Width in pixels (written into keyframe headers).
    pub width: u16,
    /// Height in pixels.
    pub height: u16,
    /// Target bitrate, bits per second (frame sizes follow it).
    pub bitrate_bps: u32,
    /// Frames per second.
    #[serde(default = "default_fps")]
    pub fps: u32,
}

fn default_fps() -> u32 {
    30
}

impl Layer {
    /// `1280x720`.
    pub fn resolution(&self) -> String {
        format!("{}x{}", self.width, self.height)
    }
}

/// What the video publishers send.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VideoSpec {
    /// Codec.
    pub codec: VideoCodec,
    /// Publish every layer as RID simulcast (q/h/f or the names given), or only the top one.
    pub simulcast: bool,
    /// Layers, lowest first; without simulcast the last one is published.
    pub layers: Vec<Layer>,
    /// Seconds between scheduled keyframes (more on PLI).
    pub keyframe_interval_secs: f64,
    /// RTP payload bytes per packet at most.
    pub mtu: usize,
}

impl Default for VideoSpec {
    fn default() -> Self {
        Self {
            codec: VideoCodec::Vp8,
            simulcast: false,
            layers: vec![Layer {
                name: "f".into(),
                width: 640,
                height: 360,
                bitrate_bps: 600_000,
                fps: 30,
            }],
            keyframe_interval_secs: 3.0,
            mtu: 1200,
        }
    }
}

impl VideoSpec {
    /// Three layers q/h/f up to 1280x720 (what a browser sends for 720p simulcast), with the
    /// top layer at `top_bps`.
    pub fn simulcast_720p(top_bps: u32) -> Self {
        Self {
            simulcast: true,
            layers: vec![
                Layer {
                    name: "q".into(),
                    width: 320,
                    height: 180,
                    bitrate_bps: 150_000,
                    fps: 30,
                },
                Layer {
                    name: "h".into(),
                    width: 640,
                    height: 360,
                    bitrate_bps: 500_000,
                    fps: 30,
                },
                Layer {
                    name: "f".into(),
                    width: 1280,
                    height: 720,
                    bitrate_bps: top_bps,
                    fps: 30,
                },
            ],
            ..Self::default()
        }
    }

    /// The top layer: the one published without simulcast.
    pub fn published_layer(&self) -> &Layer {
        self.layers.last().expect("validated: at least one layer")
    }

    /// The layer with this resolution, if the scenario has one.
    pub fn layer_for(&self, width: u16, height: u16) -> Option<&Layer> {
        self.layers
            .iter()
            .find(|l| l.width == width && l.height == height)
    }
}

/// What the audio publishers send.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AudioSpec {
    /// Opus bitrate, bits per second (20 ms packets).
    pub bitrate_bps: u32,
}

impl Default for AudioSpec {
    fn default() -> Self {
        Self {
            bitrate_bps: 32_000,
        }
    }
}

/// Requested quality of a subscribed video track.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Quality {
    /// Lowest layer.
    Low,
    /// Middle layer.
    Medium,
    /// Best layer.
    #[default]
    High,
}

/// What each subscriber subscribes to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Layout {
    /// Video tracks shown at most (`None` = every track). Audio is always subscribed.
    pub max_video_tracks: Option<u32>,
    /// Quality wanted per shown video track, in order; the last applies to the rest. Sent to
    /// the server as each subscriber's layer request (simulcast publishers).
    pub qualities: Vec<Quality>,
}

impl Default for Layout {
    fn default() -> Self {
        Self {
            max_video_tracks: None,
            qualities: vec![Quality::High],
        }
    }
}

/// A load test.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Scenario {
    /// Name shown in the report.
    pub name: String,
    /// Server base URL (http(s):// or ws(s)://).
    pub url: String,
    /// API key the tokens are issued by.
    pub api_key: String,
    /// API secret the tokens are signed with.
    pub api_secret: String,
    /// Number of rooms, each with the participants below.
    pub rooms: u32,
    /// Rooms are named `<room_prefix>-<index>`.
    pub room_prefix: String,
    /// Participants publishing video, per room.
    pub video_publishers: u32,
    /// Participants publishing audio, per room (the first ones, overlapping the video ones).
    pub audio_publishers: u32,
    /// Participants that only subscribe, per room.
    pub subscribers: u32,
    /// Whether publishers also subscribe to the other participants' tracks.
    pub publishers_subscribe: bool,
    /// Seconds of measurement after every participant has joined.
    pub duration_secs: f64,
    /// Joins started per second, over all rooms.
    pub join_rate: f64,
    /// Seconds a join may take (signaling join + first negotiation) before it counts as failed.
    pub join_timeout_secs: f64,
    /// Seconds between the end of the join phase and the start of the measured window.
    pub settle_secs: f64,
    /// Video publishers' media.
    pub video: VideoSpec,
    /// Audio publishers' media.
    pub audio: AudioSpec,
    /// Subscribers' layout.
    pub layout: Layout,
}

impl Default for Scenario {
    fn default() -> Self {
        Self {
            name: "default".into(),
            url: "http://127.0.0.1:7880".into(),
            api_key: prism_server::config::DEV_API_KEY.into(),
            api_secret: prism_server::config::DEV_API_SECRET.into(),
            rooms: 1,
            room_prefix: "loadtest".into(),
            video_publishers: 1,
            audio_publishers: 0,
            subscribers: 1,
            publishers_subscribe: true,
            duration_secs: 10.0,
            join_rate: 20.0,
            join_timeout_secs: 20.0,
            settle_secs: 2.0,
            video: VideoSpec::default(),
            audio: AudioSpec::default(),
            layout: Layout::default(),
        }
    }
}

impl Scenario {
    /// Parses a scenario from TOML text (unknown fields are errors).
    pub fn from_toml(text: &str) -> Result<Self, ScenarioError> {
        Ok(toml::from_str(text)?)
    }

    /// Reads a scenario file.
    pub fn from_file(path: &Path) -> Result<Self, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml(&text)
    }

    /// Checks ranges and what this build can actually generate.
    pub fn validate(&self) -> Result<(), ScenarioError> {
        let bad = |m: &str| Err(ScenarioError::Invalid(m.to_owned()));
        if self.rooms == 0 {
            return bad("rooms must be at least 1");
        }
        if self.participants_per_room() == 0 {
            return bad("a room needs at least one publisher or subscriber");
        }
        if !positive(self.duration_secs) {
            return bad("duration_secs must be positive");
        }
        if !positive(self.join_rate) {
            return bad("join_rate must be positive");
        }
        if !positive(self.join_timeout_secs)
            || !(self.settle_secs == 0.0 || positive(self.settle_secs))
        {
            return bad("join_timeout_secs must be positive and settle_secs not negative");
        }
        if self.video.codec != VideoCodec::Vp8 {
            return bad(
                "only video codec \"vp8\" can be generated (the SDK's synthetic module has no \
                 VP9/H.264/AV1 source yet)",
            );
        }
        if self.video.layers.is_empty() {
            return bad("video.layers needs at least one layer");
        }
        for layer in &self.video.layers {
            if layer.width == 0
                || layer.height == 0
                || layer.width > 0x3fff
                || layer.height > 0x3fff
            {
                return bad("layer width and height must be 1..=16383");
            }
            if layer.bitrate_bps == 0 || layer.fps == 0 {
                return bad("layer bitrate_bps and fps must be positive");
            }
        }
        if !positive(self.video.keyframe_interval_secs) || self.video.mtu < 100 {
            return bad("video.keyframe_interval_secs must be positive and video.mtu >= 100");
        }
        if self.audio.bitrate_bps < 8_000 {
            return bad("audio.bitrate_bps must be at least 8000");
        }
        if self.layout.qualities.is_empty() {
            return bad("layout.qualities needs at least one entry");
        }
        Ok(())
    }

    /// Publishers (of anything) per room.
    pub fn publishers_per_room(&self) -> u32 {
        self.video_publishers.max(self.audio_publishers)
    }

    /// Everyone per room.
    pub fn participants_per_room(&self) -> u32 {
        self.publishers_per_room() + self.subscribers
    }

    /// Everyone in the run.
    pub fn total_participants(&self) -> u64 {
        u64::from(self.rooms) * u64::from(self.participants_per_room())
    }

    /// Name of room `index`.
    pub fn room_name(&self, index: u32) -> String {
        format!("{}-{index}", self.room_prefix)
    }

    /// Role of participant `index` of a room.
    pub fn role(&self, index: u32) -> Role {
        let publishes_video = index < self.video_publishers;
        let publishes_audio = index < self.audio_publishers;
        let publisher = publishes_video || publishes_audio;
        Role {
            publishes_video,
            publishes_audio,
            subscribes: !publisher || self.publishers_subscribe,
        }
    }

    /// Identity of participant `index` (unique within its room).
    pub fn identity(&self, index: u32) -> String {
        let role = self.role(index);
        if role.publishes_video || role.publishes_audio {
            format!("pub-{index}")
        } else {
            format!("sub-{index}")
        }
    }

    /// Tracks participant `index` should end up receiving, given the layout.
    pub fn expected_tracks(&self, index: u32) -> u32 {
        if !self.role(index).subscribes {
            return 0;
        }
        let own = self.role(index);
        let video = self.video_publishers - u32::from(own.publishes_video);
        let audio = self.audio_publishers - u32::from(own.publishes_audio);
        let video = self.layout.max_video_tracks.map_or(video, |m| video.min(m));
        video + audio
    }

    /// Run length after the join phase.
    pub fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.duration_secs)
    }

    /// Things this scenario asks for that the current server or SDK cannot do, for the report.
    pub fn limitations(&self) -> Vec<String> {
        let mut notes = vec![];
        if self.layout.qualities.iter().any(|q| *q != Quality::High) && !self.video.simulcast {
            notes.push(
                "layout qualities other than \"high\" have no effect without simulcast: each \
                 publisher sends one layer"
                    .into(),
            );
        }
        notes
    }
}

/// Finite and above zero (durations built from it must not panic).
fn positive(x: f64) -> bool {
    x.is_finite() && x > 0.0
}

/// What one participant does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Role {
    /// Publishes a video track.
    pub publishes_video: bool,
    /// Publishes an audio track.
    pub publishes_audio: bool,
    /// Subscribes to the others' tracks.
    pub subscribes: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_toml_is_the_default_scenario() {
        let s = Scenario::from_toml("").unwrap();
        assert_eq!(s, Scenario::default());
        s.validate().unwrap();
    }

    #[test]
    fn full_toml_parses() {
        let s = Scenario::from_toml(
            r#"
            name = "conf"
            rooms = 25
            video_publishers = 4
            audio_publishers = 4
            subscribers = 0
            duration_secs = 60
            join_rate = 10
            [video]
            simulcast = true
            layers = [
              { name = "q", width = 320, height = 180, bitrate_bps = 150000 },
              { name = "f", width = 1280, height = 720, bitrate_bps = 1700000, fps = 30 },
            ]
            [layout]
            max_video_tracks = 2
            qualities = ["high", "low"]
            "#,
        )
        .unwrap();
        s.validate().unwrap();
        assert_eq!(s.total_participants(), 100);
        assert_eq!(s.video.published_layer().width, 1280);
        assert_eq!(s.expected_tracks(0), 2 + 3);
        assert!(
            s.limitations().is_empty(),
            "simulcast applies the qualities"
        );
        let plain = Scenario {
            video: VideoSpec::default(),
            ..s
        };
        assert_eq!(
            plain.limitations().len(),
            1,
            "qualities without simulcast do nothing"
        );
    }

    #[test]
    fn unknown_fields_and_bad_values_are_refused() {
        assert!(Scenario::from_toml("romos = 3").is_err());
        let s = Scenario {
            rooms: 0,
            ..Scenario::default()
        };
        assert!(s.validate().is_err());
        let s = Scenario::from_toml("[video]\ncodec = \"h264\"").unwrap();
        assert!(s.validate().unwrap_err().to_string().contains("vp8"));
    }

    #[test]
    fn roles_and_expected_tracks() {
        let s = Scenario {
            video_publishers: 1,
            audio_publishers: 2,
            subscribers: 3,
            ..Scenario::default()
        };
        assert_eq!(s.participants_per_room(), 5);
        assert!(s.role(0).publishes_video && s.role(0).publishes_audio);
        assert!(!s.role(1).publishes_video && s.role(1).publishes_audio);
        assert!(!s.role(2).publishes_audio && s.role(2).subscribes);
        assert_eq!(s.expected_tracks(0), 1); // the other audio
        assert_eq!(s.expected_tracks(1), 2);
        assert_eq!(s.expected_tracks(4), 3);
        assert_eq!(s.identity(0), "pub-0");
        assert_eq!(s.identity(4), "sub-4");
    }
}
