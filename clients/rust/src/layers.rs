//! Simulcast as the SDK's user sees it: the layers a local video track is published with and
//! which of them are sent, and, on the subscribing side, what the subscriber asks for
//! ([`TrackSettings`]) and what the server forwards ([`StreamState`]).

use prism_proto::signal::{
    StreamStateUpdate, UpdateTrackSettings, VideoLayer, VideoQuality, stream_state_update,
};

/// One simulcast encoding of a published video track (RID-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimulcastLayer {
    /// RTP stream id, e.g. `q`, `h`, `f`.
    pub rid: String,
    /// Width in pixels, as declared to the server (it orders layers by it).
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Target bitrate, bits per second.
    pub bitrate_bps: u32,
}

impl SimulcastLayer {
    /// A layer.
    pub fn new(rid: impl Into<String>, width: u32, height: u32, bitrate_bps: u32) -> Self {
        Self {
            rid: rid.into(),
            width,
            height,
            bitrate_bps,
        }
    }

    /// The usual three layers, lowest first: q 320x180, h 640x360, f 1280x720 (the browser
    /// SDK's bitrates).
    pub fn defaults() -> Vec<Self> {
        vec![
            Self::new("q", 320, 180, 150_000),
            Self::new("h", 640, 360, 500_000),
            Self::new("f", 1280, 720, 1_700_000),
        ]
    }

    pub(crate) fn to_proto(&self) -> VideoLayer {
        VideoLayer {
            rid: self.rid.clone(),
            width: self.width,
            height: self.height,
            bitrate: self.bitrate_bps,
        }
    }
}

/// Whether one layer of a local track is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerState {
    /// RTP stream id ("" for a track without simulcast).
    pub rid: String,
    /// The SSRC the layer is sent with.
    pub ssrc: u32,
    /// Set by the application ([`crate::LocalTrack::set_layer_active`]); initially true.
    pub enabled: bool,
    /// Set by the server (dynacast): some subscriber needs this layer. Initially true.
    pub wanted: bool,
}

impl LayerState {
    /// Sent: enabled by the application and wanted by the server.
    pub fn active(&self) -> bool {
        self.enabled && self.wanted
    }
}

/// How this subscriber shows a subscribed video track; the server picks the simulcast layer
/// from it. Precedence: `paused`, then `quality`, then the size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TrackSettings {
    /// A fixed layer; `QualityUnspecified` to let the size decide.
    pub quality: VideoQuality,
    /// Rendered width in pixels; 0 when unknown.
    pub width: u32,
    /// Rendered height in pixels; 0 when unknown.
    pub height: u32,
    /// Not shown at all: the server forwards nothing.
    pub paused: bool,
    /// Shown large: when the downlink is short, the server allocates this track first.
    pub pinned: bool,
}

impl TrackSettings {
    pub(crate) fn to_proto(self, track_sid: &str) -> UpdateTrackSettings {
        UpdateTrackSettings {
            track_sid: track_sid.to_owned(),
            quality: self.quality as i32,
            width: self.width,
            height: self.height,
            paused: self.paused,
            pinned: self.pinned,
        }
    }
}

/// One change to a track's settings; the others stay as they were.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SettingsChange {
    Quality(VideoQuality),
    Dimensions(u32, u32),
    Paused(bool),
    Pinned(bool),
    Replace(TrackSettings),
}

impl SettingsChange {
    pub(crate) fn apply(self, mut settings: TrackSettings) -> TrackSettings {
        match self {
            SettingsChange::Quality(q) => settings.quality = q,
            SettingsChange::Dimensions(w, h) => (settings.width, settings.height) = (w, h),
            SettingsChange::Paused(p) => settings.paused = p,
            SettingsChange::Pinned(p) => settings.pinned = p,
            SettingsChange::Replace(s) => settings = s,
        }
        settings
    }
}

/// Why the server forwards nothing of a subscribed video track.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum PauseReason {
    /// Not paused, or paused for a reason the server did not say (an older server).
    #[default]
    None,
    /// We paused it ([`crate::RemoteTrack::set_paused`]).
    Requested,
    /// The publisher sends no layer at the moment (muted, or its layers stopped).
    NoLayer,
    /// Our downlink cannot carry it: the server keeps audio and higher-priority video (pinned,
    /// screen share, active speaker) going instead. It resumes when the estimate allows.
    Bandwidth,
}

impl PauseReason {
    /// The reason as the server sent it.
    pub fn from_proto(reason: stream_state_update::Reason) -> Self {
        use stream_state_update::Reason as R;
        match reason {
            R::None => Self::None,
            R::Requested => Self::Requested,
            R::NoLayer => Self::NoLayer,
            R::Bandwidth => Self::Bandwidth,
        }
    }

    /// A short lowercase name (`none`, `requested`, `no_layer`, `bandwidth`), for logs and
    /// reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Requested => "requested",
            Self::NoLayer => "no_layer",
            Self::Bandwidth => "bandwidth",
        }
    }
}

/// What the server forwards of a subscribed video track, from its latest `StreamStateUpdate`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamState {
    /// Nothing is forwarded: paused in the settings, no layer arriving, or no room for it on
    /// the downlink ([`StreamState::reason`] says which).
    pub paused: bool,
    /// Why it is paused ([`PauseReason::None`] while active).
    pub reason: PauseReason,
    /// The layer forwarded ("" for a track without simulcast).
    pub rid: String,
    /// That layer's rank.
    pub quality: VideoQuality,
    /// Its size as the publisher declared it (0 when unknown).
    pub width: u32,
    /// Its height.
    pub height: u32,
}

impl From<&StreamStateUpdate> for StreamState {
    fn from(u: &StreamStateUpdate) -> Self {
        Self {
            paused: u.state() == stream_state_update::State::Paused,
            reason: PauseReason::from_proto(u.reason()),
            rid: u.rid.clone(),
            quality: u.quality(),
            width: u.width,
            height: u.height,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_merge_into_the_settings() {
        let s = SettingsChange::Quality(VideoQuality::Low).apply(TrackSettings::default());
        let s = SettingsChange::Dimensions(640, 360).apply(s);
        let s = SettingsChange::Paused(true).apply(s);
        let s = SettingsChange::Pinned(true).apply(s);
        assert_eq!(
            s,
            TrackSettings {
                quality: VideoQuality::Low,
                width: 640,
                height: 360,
                paused: true,
                pinned: true,
            }
        );
        let proto = s.to_proto("TR_1");
        assert_eq!(proto.track_sid, "TR_1");
        assert_eq!(proto.quality(), VideoQuality::Low);
        assert!(proto.paused);
        assert!(proto.pinned);
        let reset = SettingsChange::Replace(TrackSettings::default()).apply(s);
        assert_eq!(reset, TrackSettings::default());
    }

    #[test]
    fn stream_state_from_the_update() {
        let update = StreamStateUpdate {
            track_sid: "TR_1".into(),
            reason: stream_state_update::Reason::Bandwidth as i32,
            state: stream_state_update::State::Paused as i32,
            rid: "h".into(),
            quality: VideoQuality::Medium as i32,
            width: 640,
            height: 360,
        };
        let state = StreamState::from(&update);
        assert!(state.paused);
        assert_eq!(state.reason, PauseReason::Bandwidth);
        assert_eq!(state.rid, "h");
        assert_eq!(state.quality, VideoQuality::Medium);
        assert_eq!((state.width, state.height), (640, 360));
        // A reason this SDK does not know yet reads as none.
        let newer = StreamStateUpdate {
            reason: 99,
            ..update
        };
        assert_eq!(StreamState::from(&newer).reason, PauseReason::None);
    }

    #[test]
    fn a_layer_is_sent_only_when_enabled_and_wanted() {
        let mut l = LayerState {
            rid: "f".into(),
            ssrc: 1,
            enabled: true,
            wanted: true,
        };
        assert!(l.active());
        l.wanted = false;
        assert!(!l.active());
        l.wanted = true;
        l.enabled = false;
        assert!(!l.active());
    }
}
