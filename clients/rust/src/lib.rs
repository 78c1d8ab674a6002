//! Rust SDK for Prism: signaling over a WebSocket plus one WebRTC peer connection per
//! participant, carrying everything it publishes and everything it subscribes to.
//!
//! ```no_run
//! use std::time::Duration;
//! use prism_client::{Codec, ConnectOptions, Room, RoomEvent, TrackOptions};
//! use prism_client::synthetic::{Vp8Config, Vp8Source};
//!
//! # async fn run() -> Result<(), prism_client::ClientError> {
//! let (room, mut events) =
//!     Room::connect("http://127.0.0.1:7880", "<jwt>", ConnectOptions::default()).await?;
//! println!("joined as {}", room.local_participant().identity);
//!
//! // Publish synthetic VP8 and answer the server's keyframe requests.
//! let video = room.publish_track(TrackOptions::video("cam", Codec::Vp8, 640, 360)).await?;
//! let mut source = Vp8Source::new(Vp8Config::default());
//! let mut keyframes = video.keyframe_requests();
//! let publisher = tokio::spawn(async move {
//!     let mut tick = tokio::time::interval(source.frame_interval());
//!     loop {
//!         tick.tick().await;
//!         if keyframes.try_recv().is_some() {
//!             source.request_keyframe();
//!         }
//!         for packet in source.next_frame() {
//!             if video.write_rtp(&packet).await.is_err() {
//!                 return;
//!             }
//!         }
//!     }
//! });
//!
//! // Read whatever we get subscribed to.
//! while let Some(event) = events.recv().await {
//!     match event {
//!         RoomEvent::TrackSubscribed { remote, .. } => {
//!             tokio::spawn(async move {
//!                 while let Ok(packet) = remote.read_rtp().await {
//!                     let _ = packet.payload.len();
//!                 }
//!             });
//!         }
//!         RoomEvent::Disconnected { .. } => break,
//!         _ => {}
//!     }
//! #   break;
//! }
//! room.leave().await?;
//! publisher.abort();
//! # Ok(())
//! # }
//! ```
//!
//! Data messages: [`Room::publish_data`] sends, [`RoomEvent::DataReceived`] receives. The
//! control plane (create/list/delete rooms, manage participants) is [`control::ControlClient`];
//! tokens are made with [`AccessToken`]:
//!
//! ```
//! use prism_client::{AccessToken, Grants};
//! let token = AccessToken::new("devkey", "secret")
//!     .identity("alice")
//!     .room("demo")
//!     .grants(Grants { can_publish: false, ..Grants::default() })
//!     .to_jwt()
//!     .unwrap();
//! assert_eq!(token.split('.').count(), 3);
//! ```
//!
//! Keyframe requests (RTCP PLI/FIR) the server sends toward a published track are surfaced by
//! [`LocalTrack::keyframe_requests`]; see the `rtcp` module notes in the source for how they
//! get past webrtc-rs' interceptor chain.
//!
//! Simulcast: [`TrackOptions::simulcast_video`] publishes one video track as RID layers (each
//! its own SSRC, declared to the server with its size), written per layer with
//! [`LocalTrack::write_layer_rtp`]; [`synthetic::SimulcastVp8`] and
//! [`synthetic::publish_simulcast_vp8`] do it for you. [`LocalTrack::set_layer_active`] stops a
//! layer; the server's dynacast updates stop and resume layers nobody needs by themselves
//! ([`RoomEvent::SubscribedLayersChanged`]). A subscriber picks a layer with
//! [`RemoteTrack::set_quality`], [`RemoteTrack::set_dimensions`] or pauses with
//! [`RemoteTrack::set_paused`], and sees what the server forwards in
//! [`RemoteTrack::stream_state`] ([`RoomEvent::StreamStateChanged`]), with the
//! [`PauseReason`] when nothing is forwarded; [`synthetic::check_continuity`] verifies that
//! what arrived is one continuous stream.
//!
//! Downlink: the server estimates what its link to us carries and shares it over our
//! subscriptions (audio first, then video by priority). [`RemoteTrack::set_pinned`] puts a
//! track first; [`RoomEvent::ConnectionQuality`] and [`Room::connection_quality`] report the
//! grade, the estimate and what was allocated within it.

#![warn(missing_docs)]

pub mod control;
mod data;
mod error;
mod events;
mod layers;
mod negotiation;
mod remote;
mod room;
mod rtcp;
mod signaling;
mod state;
mod subscriber;
pub mod synthetic;
mod track;

pub use data::{DataOptions, MAX_DATA_PAYLOAD};
pub use error::{ClientError, Result};
pub use events::{ConnectionState, RoomEvent, RoomEvents};
pub use layers::{LayerState, PauseReason, SimulcastLayer, StreamState, TrackSettings};
/// Access tokens: build one for a participant (or an admin) with [`AccessToken`]. The same
/// implementation the server verifies them with.
pub use prism_proto::auth::{AccessToken, AuthError, Grants};
/// Simulcast quality a subscriber asks for (re-exported from `prism-proto`).
pub use prism_proto::signal::VideoQuality;
pub use remote::{RemoteTrack, SenderReportTime};
pub use room::{ConnectOptions, FeedbackSent, Room};
pub use track::{Codec, KeyframeRequest, KeyframeRequests, LocalTrack, TrackKind, TrackOptions};

/// The signaling message types the SDK speaks (re-exported from `prism-proto`).
pub use prism_proto::signal as proto;
/// RTP packet types (re-exported from `rtc`, which `webrtc` does not re-export).
pub use rtc::rtp;
