//! What a [`Room`](crate::Room) tells its application.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures::Stream;
use prism_proto::signal::{
    DisconnectReason, LayerActivity, ParticipantInfo, SubscriptionUpdate, TrackInfo,
};
use tokio::sync::mpsc;
use webrtc::peer_connection::RTCPeerConnectionState;

use crate::error::ClientError;
use crate::layers::StreamState;
use crate::remote::RemoteTrack;

/// State of the participant's one peer connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionState {
    /// Created, nothing negotiated yet.
    New,
    /// ICE/DTLS in progress.
    Connecting,
    /// Media can flow.
    Connected,
    /// Connectivity lost, may come back.
    Disconnected,
    /// Connectivity lost for good.
    Failed,
    /// Closed by us.
    Closed,
}

impl From<RTCPeerConnectionState> for ConnectionState {
    fn from(state: RTCPeerConnectionState) -> Self {
        match state {
            RTCPeerConnectionState::Connecting => ConnectionState::Connecting,
            RTCPeerConnectionState::Connected => ConnectionState::Connected,
            RTCPeerConnectionState::Disconnected => ConnectionState::Disconnected,
            RTCPeerConnectionState::Failed => ConnectionState::Failed,
            RTCPeerConnectionState::Closed => ConnectionState::Closed,
            _ => ConnectionState::New,
        }
    }
}

/// Something happened in the room.
#[derive(Debug)]
#[non_exhaustive]
pub enum RoomEvent {
    /// Another participant joined.
    ParticipantJoined(ParticipantInfo),
    /// Another participant's info changed (state, metadata, ...).
    ParticipantUpdated(ParticipantInfo),
    /// Another participant left.
    ParticipantLeft {
        /// Its sid.
        participant_sid: String,
        /// Its identity.
        identity: String,
        /// Why it left.
        reason: DisconnectReason,
    },
    /// Another participant published a track.
    TrackPublished {
        /// The publisher.
        participant_sid: String,
        /// The track.
        track: TrackInfo,
    },
    /// The server confirmed one of our own publications (also returned by
    /// [`Room::publish_track`](crate::Room::publish_track)).
    LocalTrackPublished {
        /// The track as the server knows it, with its sid.
        track: TrackInfo,
    },
    /// A track was unpublished (ours or another participant's).
    TrackUnpublished {
        /// The publisher.
        participant_sid: String,
        /// The track.
        track_sid: String,
    },
    /// A published track was muted or unmuted.
    TrackMuted {
        /// The publisher.
        participant_sid: String,
        /// The track.
        track_sid: String,
        /// New mute state.
        muted: bool,
    },
    /// Media of a subscribed track started arriving; read it from `remote`.
    TrackSubscribed {
        /// The publisher.
        participant_sid: String,
        /// The track (a minimal one if the server never described it).
        track: TrackInfo,
        /// The media.
        remote: RemoteTrack,
    },
    /// A subscribed track went away (unsubscribed, unpublished, or its publisher left).
    TrackUnsubscribed {
        /// The publisher.
        participant_sid: String,
        /// The track.
        track_sid: String,
    },
    /// The server's view of one subscription changed.
    SubscriptionUpdate(SubscriptionUpdate),
    /// What the server forwards of a subscribed video track changed: another simulcast layer
    /// (once the switch is complete), or paused/resumed. Also in
    /// [`RemoteTrack::stream_state`].
    StreamStateChanged {
        /// The track.
        track_sid: String,
        /// Its new state.
        state: StreamState,
    },
    /// Dynacast: the server told us which simulcast layers of one of our tracks subscribers
    /// need. Already applied: inactive layers are no longer sent (see
    /// [`LocalTrack::layers`](crate::LocalTrack::layers)).
    SubscribedLayersChanged {
        /// Our track.
        track_sid: String,
        /// Each layer and whether it is needed, as the server sent them.
        layers: Vec<LayerActivity>,
    },
    /// How well the server's link to us carries what we subscribed to (sent every 2 s and
    /// when the grade changes): the grade, the server's downlink estimate and what it
    /// allocated within it. Also in [`crate::Room::connection_quality`].
    ConnectionQuality(prism_proto::signal::ConnectionQualityUpdate),
    /// The server changed this participant's info (name, metadata, permissions, state), e.g.
    /// through the control plane. Revoked publish permission also unpublishes our tracks
    /// (`TrackUnpublished`); revoked subscribe permission ends our subscriptions.
    LocalParticipantUpdated(ParticipantInfo),
    /// A data message from another participant (or from the server, with an empty identity).
    DataReceived {
        /// The sender's identity; empty when the server sent it (control plane `SendData`).
        participant_identity: String,
        /// The application's bytes.
        payload: bytes::Bytes,
        /// The sender's topic, if any.
        topic: String,
        /// Whether it came on the reliable channel.
        reliable: bool,
    },
    /// The peer connection changed state.
    ConnectionStateChanged(ConnectionState),
    /// The room is over for us: the server disconnected us, signaling closed, or we left.
    /// No event follows this one.
    Disconnected {
        /// Why.
        reason: DisconnectReason,
        /// Server-provided detail, if any.
        message: String,
    },
    /// Something went wrong that does not end the session (a malformed server message, a server
    /// error response, a failed negotiation step).
    Error(ClientError),
}

/// The stream of [`RoomEvent`]s of one room, bounded.
///
/// Drain it: when it is full, new events are dropped (with a warning in the log) rather than
/// stalling signaling. Subscribed tracks stay reachable through
/// [`Room::remote_tracks`](crate::Room::remote_tracks) even if their event was dropped.
#[derive(Debug)]
pub struct RoomEvents {
    rx: mpsc::Receiver<RoomEvent>,
}

impl RoomEvents {
    pub(crate) fn new(rx: mpsc::Receiver<RoomEvent>) -> Self {
        Self { rx }
    }

    /// The next event, or `None` once the room is closed and every event was read.
    pub async fn recv(&mut self) -> Option<RoomEvent> {
        self.rx.recv().await
    }

    /// The next event if one is ready.
    pub fn try_recv(&mut self) -> Option<RoomEvent> {
        self.rx.try_recv().ok()
    }
}

impl Stream for RoomEvents {
    type Item = RoomEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<RoomEvent>> {
        self.rx.poll_recv(cx)
    }
}
