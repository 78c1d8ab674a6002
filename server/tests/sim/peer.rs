//! Simulated clients: `rtc` sans-I/O peer connections with the interceptors the Rust SDK uses
//! (NACK generator and responder, receiver and sender reports, TWCC receiver), driven by the
//! simulation's clock and network instead of a socket.

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use prism_client::synthetic::{
    OpusConfig, OpusSource, Vp8Config, Vp8Source, parse_opus, parse_vp8,
};
use rtc::interceptor::Registry;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::{
    MIME_TYPE_OPUS, MIME_TYPE_VP8, MediaEngine,
};
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::event::{RTCPeerConnectionEvent, RTCTrackEvent};
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::transport::{CandidateConfig, CandidateHostConfig, RTCIceCandidate};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::sender_report::SenderReport;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpReceiverId, RTCRtpSenderId};
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};

use super::net::Network;
use super::tap::{SharedWireLog, ToApplication, WireTap, app_slot, wire_slot};

pub type PeerResult<T> = Result<T, rtc::shared::error::Error>;

/// One client's peer connection and its place on the simulated network.
pub struct SimPeer {
    pub pc: RTCPeerConnection,
    pub addr: SocketAddr,
    pub wire: SharedWireLog,
    pub connected_at: Option<Instant>,
    deadline: Option<Instant>,
    /// Timer ticks the engine failed (a failing stage skips the later ones: ENGINE-NOTES #9),
    /// and the last error.
    pub timeout_errors: u64,
    pub last_timeout_error: Option<String>,
}

impl SimPeer {
    pub fn new(addr: SocketAddr, now: Instant) -> PeerResult<Self> {
        let mut media_engine = MediaEngine::default();
        media_engine.register_default_codecs()?;
        let wire = SharedWireLog::default();
        let registry = register_default_interceptors(Registry::new(), &mut media_engine)?
            .with(app_slot(), ToApplication::default())
            .with(wire_slot(), WireTap::new(wire.clone()));
        let setting_engine = SettingEngineBuilder::new()
            .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled)
            .build();
        let mut pc = RTCPeerConnectionBuilder::new()
            .with_configuration(RTCConfigurationBuilder::new().build())
            .with_setting_engine(setting_engine)
            .with_media_engine(media_engine)
            .with_interceptor_registry(registry)
            .build(now)?;
        let candidate = CandidateHostConfig {
            base_config: CandidateConfig {
                network: "udp".to_owned(),
                address: addr.ip().to_string(),
                port: addr.port(),
                component: 1,
                ..Default::default()
            },
            ..Default::default()
        }
        .new_candidate_host()?;
        pc.add_local_candidate(RTCIceCandidate::from(&candidate).to_json()?)?;
        Ok(Self {
            pc,
            addr,
            wire,
            connected_at: None,
            deadline: Some(now),
            timeout_errors: 0,
            last_timeout_error: None,
        })
    }

    /// Creates and applies an offer; returns its SDP.
    pub fn offer(&mut self, now: Instant) -> PeerResult<String> {
        let offer = self.pc.create_offer(None)?;
        self.pc.set_local_description(now, offer.clone())?;
        Ok(self.pc.local_description().map_or(offer.sdp, |d| d.sdp))
    }

    pub fn apply_answer(&mut self, sdp: String, now: Instant) -> PeerResult<()> {
        self.pc
            .set_remote_description(now, RTCSessionDescription::answer(sdp)?)
    }

    /// Answers a server offer; returns the answer's SDP.
    pub fn answer(&mut self, offer: String, now: Instant) -> PeerResult<String> {
        self.pc
            .set_remote_description(now, RTCSessionDescription::offer(offer)?)?;
        let answer = self.pc.create_answer(None)?;
        self.pc.set_local_description(now, answer.clone())?;
        Ok(self.pc.local_description().map_or(answer.sdp, |d| d.sdp))
    }

    pub fn receive(&mut self, from: SocketAddr, data: BytesMut, now: Instant) {
        let message = TaggedBytesMut {
            now,
            transport: TransportContext {
                local_addr: self.addr,
                peer_addr: from,
                ecn: None,
                transport_protocol: TransportProtocol::UDP,
            },
            message: data,
        };
        // A datagram the engine refuses is the network's business (loss, duplicates), not a
        // failure of the simulation.
        let _ = self.pc.handle_read(message);
    }

    /// Fires the engine's timers when due.
    pub fn fire_timeout(&mut self, now: Instant) -> bool {
        if self.deadline.is_some_and(|d| d <= now) {
            self.deadline = None;
            if let Err(e) = self.pc.handle_timeout(now) {
                self.timeout_errors += 1;
                self.last_timeout_error = Some(e.to_string());
            }
            return true;
        }
        false
    }

    /// Hands what the engine wrote to the network and notes its next timer.
    pub fn flush(&mut self, net: &mut Network, now: Instant) {
        while let Some(out) = self.pc.poll_write() {
            net.send(self.addr, out.transport.peer_addr, out.message, now);
        }
        self.deadline = self.pc.poll_timeout();
    }

    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    fn on_state(&mut self, state: RTCPeerConnectionState, now: Instant) {
        if state == RTCPeerConnectionState::Connected && self.connected_at.is_none() {
            self.connected_at = Some(now);
        }
    }
}

/// Virtual wall clock for payload stamps: the epoch plus the time since the run started.
fn stamp_clock(start: Instant, now: Instant) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000) + now.duration_since(start)
}

fn stamp_instant(start: Instant, micros: u64) -> Instant {
    start + Duration::from_micros(micros).saturating_sub(Duration::from_secs(1_000_000))
}

/// A packet as the publisher sent it.
#[derive(Debug, Clone, Copy)]
pub struct SentPacket {
    pub ssrc: u32,
    pub counter: u64,
    pub timestamp: u32,
    pub at: Instant,
}

/// A keyframe request (PLI or FIR) as it reached the publisher.
#[derive(Debug, Clone, Copy)]
pub struct KeyframeRequest {
    pub at: Instant,
    pub ssrc: u32,
}

/// One encoding the publisher sends: the whole track, or one simulcast layer.
struct Encoding {
    rid: Option<String>,
    ssrc: u32,
    source: Vp8Source,
}

const MID_URI: &str = "urn:ietf:params:rtp-hdrext:sdes:mid";
const RID_URI: &str = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id";

/// Publishes one synthetic VP8 track, plain or simulcast, and answers keyframe requests with a
/// keyframe on the encoding asked for.
pub struct Publisher {
    pub peer: SimPeer,
    sender: RTCRtpSenderId,
    encodings: Vec<Encoding>,
    next_frame: Option<Instant>,
    start: Instant,
    /// Every packet sent, the layer's SSRC with it (the stamp counter counts per encoding).
    pub sent: Vec<SentPacket>,
    pub keyframe_requests: Vec<KeyframeRequest>,
    audio: Option<AudioTrack>,
    /// Every audio packet sent.
    pub sent_audio: Vec<SentPacket>,
}

/// An Opus track beside the video, one packet every 20 ms.
struct AudioTrack {
    sender: RTCRtpSenderId,
    source: OpusSource,
    next: Option<Instant>,
}

impl Publisher {
    /// A publisher of one plain VP8 stream.
    pub fn new(addr: SocketAddr, config: Vp8Config, start: Instant) -> PeerResult<Self> {
        Self::with_encodings(addr, vec![(None, config)], start)
    }

    /// A simulcast publisher: one encoding per `(rid, config)`, lowest first. All layers must
    /// share one frame rate.
    pub fn simulcast(
        addr: SocketAddr,
        layers: Vec<(String, Vp8Config)>,
        start: Instant,
    ) -> PeerResult<Self> {
        let layers = layers.into_iter().map(|(rid, c)| (Some(rid), c)).collect();
        Self::with_encodings(addr, layers, start)
    }

    fn with_encodings(
        addr: SocketAddr,
        layers: Vec<(Option<String>, Vp8Config)>,
        start: Instant,
    ) -> PeerResult<Self> {
        let mut peer = SimPeer::new(addr, start)?;
        let codec = RTCRtpCodec {
            mime_type: MIME_TYPE_VP8.to_owned(),
            clock_rate: 90_000,
            ..Default::default()
        };
        let codings = layers
            .iter()
            .map(|(rid, config)| RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    rid: rid.clone().unwrap_or_default(),
                    ssrc: Some(config.ssrc),
                    ..Default::default()
                },
                codec: codec.clone(),
                ..Default::default()
            })
            .collect();
        let track = MediaStreamTrack::new(
            format!("stream-{addr}"),
            format!("video-{addr}"),
            format!("video-{addr}"),
            RtpCodecKind::Video,
            codings,
        );
        let sender = peer.pc.add_track(track)?;
        let encodings = layers
            .into_iter()
            .map(|(rid, config)| Encoding {
                rid,
                ssrc: config.ssrc,
                source: Vp8Source::new(config),
            })
            .collect();
        Ok(Self {
            peer,
            sender,
            encodings,
            next_frame: None,
            start,
            sent: Vec::new(),
            keyframe_requests: Vec::new(),
            audio: None,
            sent_audio: Vec::new(),
        })
    }

    /// Adds an Opus track (before the publisher connects).
    pub fn add_audio(&mut self, config: OpusConfig) -> PeerResult<()> {
        let addr = self.peer.addr;
        let track = MediaStreamTrack::new(
            format!("stream-{addr}"),
            format!("audio-{addr}"),
            format!("audio-{addr}"),
            RtpCodecKind::Audio,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(config.ssrc),
                    ..Default::default()
                },
                codec: RTCRtpCodec {
                    mime_type: MIME_TYPE_OPUS.to_owned(),
                    clock_rate: 48_000,
                    channels: 2,
                    ..Default::default()
                },
                ..Default::default()
            }],
        );
        let sender = self.peer.pc.add_track(track)?;
        self.audio = Some(AudioTrack {
            sender,
            source: OpusSource::new(config),
            next: None,
        });
        Ok(())
    }

    /// The SSRC of each encoding, lowest layer first.
    pub fn ssrcs(&self) -> Vec<u32> {
        self.encodings.iter().map(|e| e.ssrc).collect()
    }

    /// The RTP timestamp encoding `ssrc` gave the frame generated at `at` (frames are
    /// generated on a fixed clock, so this holds for frames not sent yet too).
    pub fn timestamp_at(&self, ssrc: u32, at: Instant) -> Option<u32> {
        let first = self.sent.iter().find(|p| p.ssrc == ssrc)?;
        let e = self.encodings.iter().find(|e| e.ssrc == ssrc)?;
        let frames = (at.duration_since(first.at).as_secs_f64()
            / e.source.frame_interval().as_secs_f64())
        .round() as u32;
        Some(
            first
                .timestamp
                .wrapping_add(frames * (90_000 / e.source.config().fps)),
        )
    }

    /// Starts sending frames at `at`.
    pub fn start_media(&mut self, at: Instant) {
        self.next_frame.get_or_insert(at);
        if let Some(audio) = &mut self.audio {
            audio.next.get_or_insert(at);
        }
    }

    /// When the next video frame or audio packet is due.
    pub fn next_frame(&self) -> Option<Instant> {
        let audio = self.audio.as_ref().and_then(|a| a.next);
        match (self.next_frame, audio) {
            (Some(v), Some(a)) => Some(v.min(a)),
            (v, a) => v.or(a),
        }
    }

    /// Sends the audio packet that is due, if one is.
    fn send_due_audio(&mut self, now: Instant) -> bool {
        let Some(audio) = &mut self.audio else {
            return false;
        };
        let Some(due) = audio.next.filter(|d| *d <= now) else {
            return false;
        };
        audio.next = Some(due + audio.source.packet_interval());
        let Some(mut sender) = self.peer.pc.rtp_sender(audio.sender) else {
            return false;
        };
        let payload_type = sender
            .get_parameters()
            .rtp_parameters
            .codecs
            .iter()
            .find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(MIME_TYPE_OPUS))
            .map(|c| c.payload_type);
        let Some(payload_type) = payload_type else {
            return false;
        };
        let mut packet = audio.source.next_packet_at(stamp_clock(self.start, now));
        packet.header.payload_type = payload_type;
        if let Some(stamp) = parse_opus(&packet.payload) {
            self.sent_audio.push(SentPacket {
                ssrc: packet.header.ssrc,
                counter: stamp.counter,
                timestamp: packet.header.timestamp,
                at: now,
            });
        }
        let _ = sender.write_rtp(now, packet);
        true
    }

    /// Sends the video frame (every encoding) and the audio packet that are due, if any.
    pub fn send_due_frame(&mut self, now: Instant) -> bool {
        let audio = self.send_due_audio(now);
        self.send_due_video(now) || audio
    }

    fn send_due_video(&mut self, now: Instant) -> bool {
        let Some(due) = self.next_frame.filter(|d| *d <= now) else {
            return false;
        };
        let Some(interval) = self.encodings.first().map(|e| e.source.frame_interval()) else {
            return false;
        };
        self.next_frame = Some(due + interval);
        let Some(mut sender) = self.peer.pc.rtp_sender(self.sender) else {
            return false;
        };
        let params = &sender.get_parameters().rtp_parameters;
        let payload_type = params
            .codecs
            .iter()
            .find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(MIME_TYPE_VP8))
            .map(|c| c.payload_type);
        let extension = |uri: &str| {
            params
                .header_extensions
                .iter()
                .find(|e| e.uri == uri)
                .map(|e| e.id as u8)
        };
        let (mid_id, rid_id) = (extension(MID_URI), extension(RID_URI));
        let Some(payload_type) = payload_type else {
            return false;
        };
        let stamp_time = stamp_clock(self.start, now);
        for e in &mut self.encodings {
            for mut packet in e.source.next_frame_at(stamp_time) {
                packet.header.ssrc = e.ssrc;
                packet.header.payload_type = payload_type;
                if let (Some(rid), Some(mid_id), Some(rid_id)) = (&e.rid, mid_id, rid_id) {
                    // Simulcast layers name themselves; the one transceiver has mid "0".
                    let _ = packet
                        .header
                        .set_extension(mid_id, Bytes::from_static(b"0"));
                    let _ = packet
                        .header
                        .set_extension(rid_id, Bytes::copy_from_slice(rid.as_bytes()));
                }
                if let Some(stamp) = parse_vp8(&packet.payload) {
                    self.sent.push(SentPacket {
                        ssrc: e.ssrc,
                        counter: stamp.counter,
                        timestamp: packet.header.timestamp,
                        at: now,
                    });
                }
                let _ = sender.write_rtp(now, packet);
            }
        }
        true
    }

    /// The packets sent on one encoding.
    pub fn sent_on(&self, ssrc: u32) -> Vec<SentPacket> {
        self.sent
            .iter()
            .filter(|p| p.ssrc == ssrc)
            .copied()
            .collect()
    }

    /// Reads what the engine delivered: state changes and keyframe requests.
    pub fn drain(&mut self, now: Instant) {
        while let Some(event) = self.peer.pc.poll_event() {
            if let RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) = event {
                self.peer.on_state(state, now);
            }
        }
        while let Some(message) = self.peer.pc.poll_read() {
            let RTCMessage::RtcpPacket(_, packets) = message.message else {
                continue;
            };
            for p in packets {
                let any = p.as_any();
                let ssrcs: Vec<u32> = if let Some(pli) = any.downcast_ref::<PictureLossIndication>()
                {
                    vec![pli.media_ssrc]
                } else if let Some(fir) = any.downcast_ref::<FullIntraRequest>() {
                    fir.fir.iter().map(|e| e.ssrc).collect()
                } else {
                    continue;
                };
                for ssrc in ssrcs {
                    self.keyframe_requests
                        .push(KeyframeRequest { at: now, ssrc });
                    if let Some(e) = self.encodings.iter_mut().find(|e| e.ssrc == ssrc) {
                        e.source.request_keyframe();
                    }
                }
            }
        }
    }
}

/// A packet as a subscriber received it.
#[derive(Debug, Clone, Copy)]
pub struct ReceivedPacket {
    pub counter: u64,
    pub seq: u16,
    pub timestamp: u32,
    pub ssrc: u32,
    pub at: Instant,
    /// When the publisher generated it.
    pub sent_at: Instant,
}

/// A sender report as a subscriber received it.
#[derive(Debug, Clone, Copy)]
pub struct ReceivedReport {
    pub ssrc: u32,
    pub ntp: u64,
    pub rtp: u32,
    pub at: Instant,
}

/// What the server told a subscriber it now receives of a video track (`ConnEvent::StreamState`).
#[derive(Debug, Clone, PartialEq)]
pub struct StreamStateChange {
    pub at: Instant,
    pub track_sid: String,
    pub paused: bool,
    pub rid: String,
    pub rank: usize,
}

/// Receives whatever the server forwards and records it; optionally asks for a keyframe on a
/// fixed period (a misbehaving or struggling client).
pub struct Subscriber {
    pub peer: SimPeer,
    start: Instant,
    /// Video packets, and audio packets.
    pub received: Vec<ReceivedPacket>,
    pub received_audio: Vec<ReceivedPacket>,
    pub sender_reports: Vec<ReceivedReport>,
    receivers: Vec<RTCRtpReceiverId>,
    /// Ids of the remote tracks that carry audio.
    audio_tracks: Vec<String>,
    pli_every: Option<Duration>,
    next_pli: Option<Instant>,
    pub plis_sent: u64,
    /// Layer changes and pauses, as the server announced them.
    pub stream_states: Vec<StreamStateChange>,
    /// Connection-quality reports (downlink estimate and allocation), as the server sent them.
    pub quality: Vec<(Instant, prism_server::bwe::quality::QualityReport)>,
}

impl Subscriber {
    pub fn new(addr: SocketAddr, start: Instant) -> PeerResult<Self> {
        let mut peer = SimPeer::new(addr, start)?;
        // Something to offer before any track exists, as the SDK does.
        peer.pc.create_data_channel("sim", None)?;
        Ok(Self {
            peer,
            start,
            received: Vec::new(),
            received_audio: Vec::new(),
            sender_reports: Vec::new(),
            receivers: Vec::new(),
            audio_tracks: Vec::new(),
            pli_every: None,
            next_pli: None,
            plis_sent: 0,
            stream_states: Vec::new(),
            quality: Vec::new(),
        })
    }

    /// Sends a PLI for every received stream this often, from the first packet on.
    pub fn send_pli_every(&mut self, period: Duration) {
        self.pli_every = Some(period);
    }

    pub fn next_pli(&self) -> Option<Instant> {
        self.next_pli
    }

    pub fn send_due_pli(&mut self, now: Instant) -> bool {
        let (Some(due), Some(period)) = (self.next_pli, self.pli_every) else {
            return false;
        };
        if due > now {
            return false;
        }
        self.next_pli = Some(due + period);
        let Some(ssrc) = self.received.last().map(|p| p.ssrc) else {
            return false;
        };
        for &id in &self.receivers {
            if let Some(mut receiver) = self.peer.pc.rtp_receiver(id) {
                let pli = PictureLossIndication {
                    sender_ssrc: 0,
                    media_ssrc: ssrc,
                };
                if receiver.write_rtcp(now, vec![Box::new(pli)]).is_ok() {
                    self.plis_sent += 1;
                }
            }
        }
        true
    }

    pub fn drain(&mut self, now: Instant) {
        while let Some(event) = self.peer.pc.poll_event() {
            match event {
                RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) => {
                    self.peer.on_state(state, now)
                }
                RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnOpen(init)) => {
                    let kind = self
                        .peer
                        .pc
                        .rtp_receiver(init.receiver_id)
                        .map(|r| r.track().kind());
                    if kind == Some(RtpCodecKind::Audio) {
                        self.audio_tracks.push(init.track_id.clone());
                    } else {
                        self.receivers.push(init.receiver_id);
                    }
                }
                _ => {}
            }
        }
        while let Some(message) = self.peer.pc.poll_read() {
            match message.message {
                RTCMessage::RtpPacket(track_id, packet)
                    if self.audio_tracks.contains(&track_id) =>
                {
                    if let Some(stamp) = parse_opus(&packet.payload) {
                        self.received_audio.push(ReceivedPacket {
                            counter: stamp.counter,
                            seq: packet.header.sequence_number,
                            timestamp: packet.header.timestamp,
                            ssrc: packet.header.ssrc,
                            at: now,
                            sent_at: stamp_instant(self.start, stamp.sent_at_micros),
                        });
                    }
                }
                RTCMessage::RtpPacket(_, packet) => {
                    let Some(stamp) = parse_vp8(&packet.payload) else {
                        continue;
                    };
                    if self.next_pli.is_none()
                        && let Some(period) = self.pli_every
                    {
                        self.next_pli = Some(now + period);
                    }
                    self.received.push(ReceivedPacket {
                        counter: stamp.counter,
                        seq: packet.header.sequence_number,
                        timestamp: packet.header.timestamp,
                        ssrc: packet.header.ssrc,
                        at: now,
                        sent_at: stamp_instant(self.start, stamp.sent_at_micros),
                    });
                }
                RTCMessage::RtcpPacket(_, packets) => {
                    for p in packets {
                        if let Some(sr) = p.as_any().downcast_ref::<SenderReport>() {
                            self.sender_reports.push(ReceivedReport {
                                ssrc: sr.ssrc,
                                ntp: sr.ntp_time,
                                rtp: sr.rtp_time,
                                at: now,
                            });
                        }
                    }
                }
                _ => {}
            }
        }
    }
}
