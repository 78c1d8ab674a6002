//! A worker thread: one UDP socket, the connections placed on it and their media. It reads a
//! burst of datagrams, routes each to its connection (STUN by ufrag, the rest by source
//! address), forwards the RTP that comes out to the subscribers' connections, runs timers, and
//! sends everything the connections produced in `sendmmsg` batches.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::event::{RTCPeerConnectionEvent, RTCTrackEvent, RTCTrackEventInit};
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::{RTCIceConnectionState, RTCPeerConnectionState};
use rtc::peer_connection::transport::RTCIceCandidateInit;
use rtc::rtcp;
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::reception_report::ReceptionReport;
use rtc::rtcp::sender_report::SenderReport;
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpSenderId, RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use super::connection::{Connection, Retired};
use super::peer::{self, PeerSettings};
use super::sdp_fixes;
use super::udp::{self, SendQueue};
use super::{
    ConnEvent, ConnId, MediaKind, PeerState, SubscribeSpec, TransportError, WorkerCommand,
    WorkerHandle,
};
use crate::media::codec::{self, vp8::Vp8Descriptor, vp9::Vp9Descriptor};
use crate::media::down_track::{DownTrack, Negotiated};
use crate::media::extensions::ExtensionMap;
use crate::media::layers::LayerSize;
use crate::media::munger::RtpMunger;
use crate::media::picture_id::PictureDescriptor;
use crate::media::receiver::{Receiver, SubscriberRef};
use crate::media::reports::SenderClock;
use crate::media::{DownTrackId, ReceiverId};

/// Counters a worker keeps for the rest of the process; relaxed atomics, no locks.
#[derive(Debug, Default)]
pub struct WorkerStats {
    pub stop: AtomicBool,
    pub connections: AtomicUsize,
    pub datagrams_in: AtomicU64,
    pub bytes_in: AtomicU64,
    pub datagrams_out: AtomicU64,
    pub bytes_out: AtomicU64,
    pub send_syscalls: AtomicU64,
    pub send_errors: AtomicU64,
    /// Datagrams no connection claimed (unknown source, not a STUN request we know).
    pub unroutable_datagrams: AtomicU64,
    /// Datagrams a connection refused (malformed, failed authentication or decryption).
    pub rejected_datagrams: AtomicU64,
    pub rtp_received: AtomicU64,
    pub rtp_forwarded: AtomicU64,
    pub rtp_forward_errors: AtomicU64,
    /// Keyframe requests sent to publishers (PLI).
    pub keyframe_requests: AtomicU64,
    /// Keyframe requests not sent because one for that layer went out less than the throttle
    /// interval ago.
    pub keyframe_requests_throttled: AtomicU64,
    /// PLI and FIR received from subscribers.
    pub pli_received: AtomicU64,
    pub fir_received: AtomicU64,
    /// Sequence numbers subscribers NACKed, and how many of them were resent or already gone.
    pub nacks_received: AtomicU64,
    pub nack_retransmitted: AtomicU64,
    pub nack_missed: AtomicU64,
    /// NACKed sequence numbers not resent because that packet was resent too recently or too
    /// often already.
    pub nack_suppressed: AtomicU64,
    /// Sender reports sent to subscribers, translated from their publisher's.
    pub sender_reports_sent: AtomicU64,
    pub data: super::data::DataStats,
    /// Simulcast layer switches started on down tracks already forwarding a layer.
    pub layer_switches: AtomicU64,
    /// Join and first-packet times, loop time, downlink estimates and allocations.
    pub histograms: crate::metrics::WorkerHistograms,
    /// Downlink congestion control (see `crate::bwe`): probes started, probe packets sent,
    /// allocation changes, video tracks paused for bandwidth (each pause counted once), and
    /// packets the pacers dropped because their queue was full.
    pub bwe_probes: AtomicU64,
    pub probe_packets: AtomicU64,
    pub bwe_allocation_changes: AtomicU64,
    pub bwe_pauses: AtomicU64,
    pub pacer_dropped: AtomicU64,
}

/// What a worker holds, for leak checks and diagnostics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkerSnapshot {
    pub connections: usize,
    pub receivers: usize,
    pub down_tracks: usize,
    pub pending_subscriptions: usize,
    pub ufrag_routes: usize,
    pub address_routes: usize,
}

const COMMAND_QUEUE: usize = 8192;
const MAX_DATAGRAMS_PER_WAKE: usize = 256;
pub(super) const HOUSEKEEPING: Duration = Duration::from_millis(100);
const COUNTERS_LOG_INTERVAL: Duration = Duration::from_secs(10);

#[path = "worker_simulcast.rs"]
mod simulcast;

#[path = "worker_viewer.rs"]
pub(super) mod viewer;

#[path = "worker_downlink.rs"]
pub(super) mod downlink;
#[path = "snapshot.rs"]
pub(super) mod snapshot;

/// How a worker treats media, from the configuration.
#[derive(Debug, Clone, Copy)]
pub(super) struct MediaPolicy {
    /// At most one keyframe request per layer this often.
    pub keyframe_interval: Duration,
    /// Pause simulcast layers no subscriber needs at the publisher.
    pub dynacast: bool,
}

pub(super) fn spawn(
    index: usize,
    bind: SocketAddr,
    mut settings: PeerSettings,
    recv_buffer: usize,
    send_buffer: usize,
    policy: MediaPolicy,
) -> Result<(WorkerHandle, std::thread::JoinHandle<()>), TransportError> {
    let socket = udp::bind(bind, recv_buffer, send_buffer)
        .map_err(|source| TransportError::Bind { addr: bind, source })?;
    let bound = socket
        .local_addr()
        .map_err(|source| TransportError::Bind { addr: bind, source })?;
    for a in &mut settings.advertised {
        a.set_port(bound.port());
    }
    let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
    let stats = Arc::new(WorkerStats::default());
    let handle = WorkerHandle {
        index,
        bound,
        tx,
        stats: stats.clone(),
    };
    let local_addr = settings.advertised.first().copied().unwrap_or(bound);
    let thread = std::thread::Builder::new()
        .name(format!("prism-worker-{index}"))
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(worker = index, error = %e, "cannot start worker runtime");
                    return;
                }
            };
            runtime.block_on(async move {
                let socket = match UdpSocket::from_std(socket) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::error!(worker = index, error = %e, "cannot register socket");
                        return;
                    }
                };
                tracing::info!(worker = index, %bound, advertised = ?settings.advertised, "media worker started");
                Worker::new(index, local_addr, settings, policy, stats)
                    .run(socket, rx)
                    .await;
            });
        })
        .map_err(|source| TransportError::Bind { addr: bind, source })?;
    Ok((handle, thread))
}

/// The sans-I/O core of a worker: it never touches the socket or the clock. The run loop (or
/// a simulation, see `transport::sim`) hands it datagrams, commands and the time.
pub(super) struct Worker {
    index: usize,
    /// The address connections see as theirs (an advertised candidate address).
    local_addr: SocketAddr,
    settings: PeerSettings,
    policy: MediaPolicy,
    stats: Arc<WorkerStats>,
    conns: HashMap<ConnId, Connection>,
    by_ufrag: HashMap<String, ConnId>,
    by_addr: HashMap<SocketAddr, ConnId>,
    receivers: HashMap<ReceiverId, Receiver>,
    /// Subscriptions to tracks announced but not yet receiving media, by (publisher, track id).
    pending_subscriptions: HashMap<(ConnId, String), Vec<SubscribeSpec>>,
    next_id: u64,
    dirty: Vec<ConnId>,
    send_queue: SendQueue,
    // Scratch buffers reused for every connection drain, so draining does not allocate.
    event_buf: Vec<RTCPeerConnectionEvent>,
    rtp_buf: Vec<(String, rtp::Packet)>,
    rtcp_buf: Vec<Box<dyn rtcp::Packet>>,
    out_buf: Vec<(SocketAddr, BytesMut)>,
    keyframe_buf: Vec<(ReceiverId, u32)>,
}

impl Worker {
    pub(super) fn new(
        index: usize,
        local_addr: SocketAddr,
        settings: PeerSettings,
        policy: MediaPolicy,
        stats: Arc<WorkerStats>,
    ) -> Self {
        Self {
            index,
            local_addr,
            settings,
            policy,
            stats,
            conns: HashMap::new(),
            by_ufrag: HashMap::new(),
            by_addr: HashMap::new(),
            receivers: HashMap::new(),
            pending_subscriptions: HashMap::new(),
            next_id: 1,
            dirty: Vec::new(),
            send_queue: SendQueue::default(),
            event_buf: Vec::new(),
            rtp_buf: Vec::new(),
            rtcp_buf: Vec::new(),
            out_buf: Vec::new(),
            keyframe_buf: Vec::new(),
        }
    }

    async fn run(mut self, socket: UdpSocket, mut commands: mpsc::Receiver<WorkerCommand>) {
        let mut recv_buf = vec![0; 2048];
        let mut housekeeping = tokio::time::interval(HOUSEKEEPING);
        let mut next_counters_log = Instant::now() + COUNTERS_LOG_INTERVAL;
        housekeeping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            if self.stats.stop.load(Ordering::Relaxed) {
                break;
            }
            let wake = self
                .next_deadline()
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            // Each arm notes when it woke, so the loop-time histogram measures work, not waiting.
            let woke: Instant;
            tokio::select! {
                biased;
                command = commands.recv() => match command {
                    Some(command) => {
                        woke = Instant::now();
                        self.handle_command(command, woke);
                        // Take what else is queued, bounded so media keeps flowing.
                        for _ in 0..64 {
                            match commands.try_recv() {
                                Ok(command) => self.handle_command(command, Instant::now()),
                                Err(_) => break,
                            }
                        }
                    }
                    None => break,
                },
                ready = socket.readable() => {
                    woke = Instant::now();
                    if ready.is_ok() {
                        self.read_datagrams(&socket, &mut recv_buf);
                    }
                }
                _ = tokio::time::sleep_until(wake.into()) => woke = Instant::now(),
                _ = housekeeping.tick() => {
                    let now = Instant::now();
                    woke = now;
                    self.housekeeping(now);
                    if now >= next_counters_log {
                        next_counters_log = now + COUNTERS_LOG_INTERVAL;
                        self.log_counters(now);
                    }
                }
            }
            let now = Instant::now();
            self.fire_timeouts(now);
            self.process_dirty(now);
            if !self.send_queue.is_empty() {
                let flushed = self.send_queue.flush(&socket).await;
                let s = &self.stats;
                s.datagrams_out
                    .fetch_add(flushed.datagrams as u64, Ordering::Relaxed);
                s.bytes_out
                    .fetch_add(flushed.bytes as u64, Ordering::Relaxed);
                s.send_syscalls
                    .fetch_add(flushed.syscalls as u64, Ordering::Relaxed);
                s.send_errors
                    .fetch_add(flushed.errors as u64, Ordering::Relaxed);
            }
            if self.stats.histograms.enabled() {
                self.stats.histograms.record_loop(woke.elapsed());
            }
        }
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        for id in ids {
            self.close(id, Instant::now());
        }
        let _ = self.send_queue.flush(&socket).await;
        tracing::info!(worker = self.index, "media worker stopped");
    }

    /// The periodic decisions ([`HOUSEKEEPING`]): layers, pending keyframes, stream states,
    /// dynacast and sender reports.
    pub(super) fn housekeeping(&mut self, now: Instant) {
        self.allocate_downlinks(now);
        self.select_layers(now);
        self.request_pending_keyframes(now);
        self.report_stream_states();
        if self.policy.dynacast {
            self.update_dynacast(now);
        }
        self.send_sender_reports(now);
    }

    /// Moves the datagrams the connections produced into `out` (a simulation's network; the
    /// run loop flushes them to the socket instead).
    pub(super) fn take_datagrams(&mut self, out: &mut Vec<(SocketAddr, BytesMut)>) {
        self.send_queue.take_into(out);
    }

    /// The feedback counters at debug level (totals since start; the metrics endpoint will
    /// export the same atomics), then each published layer and each down track: what arrives
    /// and what is forwarded, which is what a frozen video needs explained.
    fn log_counters(&self, now: Instant) {
        if self.conns.is_empty() {
            return;
        }
        let s = &self.stats;
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let rtt_ms: Vec<u64> = self
            .conns
            .values()
            .filter_map(|c| c.rtt.map(|r| r.as_millis() as u64))
            .collect();
        tracing::debug!(
            worker = self.index,
            connections = self.conns.len(),
            rtp_forwarded = load(&s.rtp_forwarded),
            nacks_received = load(&s.nacks_received),
            nack_retransmitted = load(&s.nack_retransmitted),
            nack_missed = load(&s.nack_missed),
            nack_suppressed = load(&s.nack_suppressed),
            pli_received = load(&s.pli_received),
            fir_received = load(&s.fir_received),
            keyframe_requests = load(&s.keyframe_requests),
            keyframe_requests_throttled = load(&s.keyframe_requests_throttled),
            sender_reports_sent = load(&s.sender_reports_sent),
            rtt_ms = ?rtt_ms.iter().max(),
            rtp_forward_errors = load(&s.rtp_forward_errors),
            "feedback counters"
        );
        for r in self.receivers.values() {
            for l in &r.layers {
                tracing::debug!(
                    conn = r.publisher.0,
                    track = %r.track_id,
                    ssrc = l.ssrc,
                    rid = ?l.rid,
                    packets = l.packets,
                    idle_ms = ?l.last_packet.map(|at| now.saturating_duration_since(at).as_millis() as u64),
                    "layer"
                );
            }
        }
        for (id, c) in &self.conns {
            for dt in c.down_tracks.values() {
                tracing::debug!(
                    conn = id.0,
                    track = %dt.track_sid,
                    source = ?dt.source,
                    forwarding = ?dt.munger.current_source(),
                    target = ?dt.munger.target_source(),
                    negotiated = dt.negotiated.is_some(),
                    sent = dt.packets_sent,
                    dropped = dt.dropped,
                    "down track"
                );
            }
        }
    }

    fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn mark_dirty(&mut self, id: ConnId) {
        if let Some(c) = self.conns.get_mut(&id)
            && !c.dirty
        {
            c.dirty = true;
            self.dirty.push(id);
        }
    }

    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.conns.values().filter_map(|c| c.deadline).min()
    }

    pub(super) fn fire_timeouts(&mut self, now: Instant) {
        for (id, c) in self.conns.iter_mut() {
            if c.deadline.is_some_and(|d| d <= now) {
                c.deadline = None;
                // A failing stage stops the rest of that tick (ENGINE-NOTES #9): log and go on.
                if let Err(e) = c.pc.handle_timeout(now) {
                    tracing::trace!(conn = id.0, error = %e, "timeout handling");
                }
                if !c.dirty {
                    c.dirty = true;
                    self.dirty.push(*id);
                }
            }
        }
    }

    // ------------------------------------------------------------------ datagrams in

    fn read_datagrams(&mut self, socket: &UdpSocket, buf: &mut [u8]) {
        for _ in 0..MAX_DATAGRAMS_PER_WAKE {
            match socket.try_recv_from(buf) {
                Ok((n, from)) => self.handle_datagram(from, &buf[..n], Instant::now()),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    // ICMP errors surface here on Linux; they concern one peer, not the socket.
                    tracing::trace!(worker = self.index, error = %e, "udp receive error");
                }
            }
        }
    }

    /// Routes one received datagram to its connection.
    pub(super) fn handle_datagram(&mut self, from: SocketAddr, data: &[u8], now: Instant) {
        self.stats.datagrams_in.fetch_add(1, Ordering::Relaxed);
        self.stats
            .bytes_in
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        // STUN names its connection; everything else is known by the address its checks came from.
        let target = match super::stun::local_ufrag(data) {
            Some(ufrag) => self.by_ufrag.get(ufrag).copied(),
            None => self.by_addr.get(&from).copied(),
        };
        let Some(id) = target else {
            self.stats
                .unroutable_datagrams
                .fetch_add(1, Ordering::Relaxed);
            return;
        };
        let Some(c) = self.conns.get_mut(&id) else {
            self.stats
                .unroutable_datagrams
                .fetch_add(1, Ordering::Relaxed);
            return;
        };
        if c.hello_guard.is_repeat(data) {
            tracing::debug!(conn = id.0, "repeated DTLS ClientHello held back");
            return;
        }
        let message = TaggedBytesMut {
            now,
            transport: TransportContext {
                local_addr: self.local_addr,
                peer_addr: from,
                ecn: None,
                transport_protocol: TransportProtocol::UDP,
            },
            message: BytesMut::from(data),
        };
        match c.pc.handle_read(message) {
            Ok(()) => c.hello_guard.passed(data),
            Err(e) => {
                self.stats
                    .rejected_datagrams
                    .fetch_add(1, Ordering::Relaxed);
                tracing::trace!(conn = id.0, error = %e, "datagram rejected");
            }
        }
        self.mark_dirty(id);
    }

    // ------------------------------------------------------------------ connection output

    pub(super) fn process_dirty(&mut self, now: Instant) {
        // Draining one connection can dirty others (forwarded RTP), so the list may grow.
        let mut i = 0;
        while i < self.dirty.len() {
            let id = self.dirty[i];
            i += 1;
            self.drain(id, now);
        }
        let mut dirty = std::mem::take(&mut self.dirty);
        let mut out = std::mem::take(&mut self.out_buf);
        for id in dirty.drain(..) {
            let Some(c) = self.conns.get_mut(&id) else {
                continue;
            };
            c.dirty = false;
            while let Some(datagram) = c.pc.poll_write() {
                c.hello_guard.sent(&datagram.message);
                out.push((datagram.transport.peer_addr, datagram.message));
            }
            c.deadline = c.pc.poll_timeout();
            for (to, datagram) in out.drain(..) {
                self.learn_address(id, to);
                self.send_queue.push(to, datagram);
            }
        }
        self.dirty = dirty;
        self.out_buf = out;
    }

    /// The engine only sends to addresses whose STUN checks it authenticated, so an address a
    /// connection sends to is that connection's (ENGINE-NOTES #10); datagrams from it route there.
    fn learn_address(&mut self, id: ConnId, addr: SocketAddr) {
        if self.by_addr.get(&addr) == Some(&id) {
            return;
        }
        if let Some(previous) = self.by_addr.insert(addr, id)
            && let Some(p) = self.conns.get_mut(&previous)
        {
            p.addrs.retain(|a| *a != addr);
            if let Some(r) = p.retired.as_mut() {
                r.addrs.retain(|a| *a != addr);
            }
        }
        if let Some(c) = self.conns.get_mut(&id) {
            c.addrs.push(addr);
        }
    }

    /// Makes the ufrag of the connection's local description the one that routes STUN to it.
    /// Called after every local description the worker applies: the first names the
    /// connection's ufrag; an answer to an ICE restart names a new one. On a restart the
    /// previous ufrag and the addresses learned under it keep routing here until the new
    /// generation connects (`finish_ice_restart`), so nothing in flight from the client is
    /// lost while it switches over. The worker is single-threaded: the new route exists before
    /// the answer naming it leaves the worker.
    pub(super) fn sync_ice_route(&mut self, id: ConnId) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        let Some(ufrag) =
            c.pc.local_description()
                .and_then(|d| local_ufrag(&d.sdp).map(str::to_owned))
        else {
            return;
        };
        if ufrag == c.ufrag {
            return;
        }
        let previous = std::mem::replace(&mut c.ufrag, ufrag.clone());
        let mut forget = Retired::default();
        if !previous.is_empty() {
            // A restart while another was still completing drops the older generation.
            if let Some(older) = c.retired.take() {
                forget = older;
            }
            c.retired = Some(Retired {
                ufrag: previous,
                addrs: std::mem::take(&mut c.addrs),
            });
            tracing::debug!(
                worker = self.index,
                conn = id.0,
                "ICE restart: new local ufrag"
            );
        }
        if let Some(other) = self.by_ufrag.insert(ufrag, id)
            && other != id
        {
            tracing::warn!(
                conn = id.0,
                other = other.0,
                "ICE ufrag collision; STUN now routes to the newer connection"
            );
        }
        self.forget_routes(id, forget);
    }

    /// The new ICE generation is connected: the previous one's routes go. An address the new
    /// generation uses too (a client that kept its socket) is learned again at once: the
    /// check that connected it is answered in the same pass (`process_dirty` drains events
    /// before it collects the datagrams to send).
    fn finish_ice_restart(&mut self, id: ConnId) {
        let Some(retired) = self.conns.get_mut(&id).and_then(|c| c.retired.take()) else {
            return;
        };
        tracing::debug!(
            worker = self.index,
            conn = id.0,
            old_addrs = retired.addrs.len(),
            "ICE restart complete"
        );
        self.forget_routes(id, retired);
    }

    fn forget_routes(&mut self, id: ConnId, routes: Retired) {
        if self.by_ufrag.get(&routes.ufrag) == Some(&id) {
            self.by_ufrag.remove(&routes.ufrag);
        }
        for addr in &routes.addrs {
            if self.by_addr.get(addr) == Some(&id) {
                self.by_addr.remove(addr);
            }
        }
    }

    fn drain(&mut self, id: ConnId, now: Instant) {
        let mut events = std::mem::take(&mut self.event_buf);
        let mut packets = std::mem::take(&mut self.rtp_buf);
        let mut feedback = std::mem::take(&mut self.rtcp_buf);
        if let Some(c) = self.conns.get_mut(&id) {
            while let Some(event) = c.pc.poll_event() {
                events.push(event);
            }
            while let Some(message) = c.pc.poll_read() {
                match message.message {
                    RTCMessage::RtpPacket(track_id, packet) => packets.push((track_id, packet)),
                    RTCMessage::RtcpPacket(_, rtcp) => feedback.extend(rtcp),
                    RTCMessage::DataChannelMessage(channel, m) => {
                        super::data::on_message(c, channel, m)
                    }
                    _ => {}
                }
            }
        }
        for event in events.drain(..) {
            self.on_event(id, event, now);
        }
        for (track_id, packet) in packets.drain(..) {
            self.forward(id, &track_id, packet, now);
        }
        for packet in feedback.drain(..) {
            self.on_rtcp(id, packet.as_ref(), now);
        }
        self.event_buf = events;
        self.rtp_buf = packets;
        self.rtcp_buf = feedback;
        self.maybe_offer(id, now);
    }

    fn on_event(&mut self, id: ConnId, event: RTCPeerConnectionEvent, now: Instant) {
        match event {
            RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) => {
                let Some(c) = self.conns.get_mut(&id) else {
                    return;
                };
                let state = match state {
                    RTCPeerConnectionState::Connected => {
                        c.connected = true;
                        PeerState::Connected
                    }
                    RTCPeerConnectionState::Disconnected => PeerState::Disconnected,
                    RTCPeerConnectionState::Failed => PeerState::Failed,
                    RTCPeerConnectionState::Closed => PeerState::Closed,
                    _ => PeerState::Connecting,
                };
                tracing::debug!(conn = id.0, ?state, "peer connection state");
                c.emit(ConnEvent::StateChanged(state));
            }
            RTCPeerConnectionEvent::OnIceConnectionStateChangeEvent(
                RTCIceConnectionState::Connected | RTCIceConnectionState::Completed,
            ) => self.finish_ice_restart(id),
            RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnOpen(init)) => {
                self.on_track_open(id, init, now);
            }
            RTCPeerConnectionEvent::OnDataChannel(event) => {
                if let Some(c) = self.conns.get_mut(&id) {
                    super::data::on_channel_event(c, event);
                }
            }
            _ => {}
        }
    }

    fn on_track_open(&mut self, id: ConnId, init: RTCTrackEventInit, now: Instant) {
        let receiver_id = {
            let Some(c) = self.conns.get_mut(&id) else {
                return;
            };
            c.published.get(&init.track_id).copied()
        };
        let (receiver_id, first_layer) = match receiver_id {
            Some(r) => (r, false),
            None => {
                let rid = ReceiverId(self.next_id());
                let Some(c) = self.conns.get_mut(&id) else {
                    return;
                };
                let Some(mut rtp_receiver) = c.pc.rtp_receiver(init.receiver_id) else {
                    return;
                };
                let kind = rtp_receiver.track().kind();
                let codec = rtp_receiver.track().codec(init.ssrc).cloned();
                let sdp_rids: Vec<String> = rtp_receiver
                    .track()
                    .codings()
                    .iter()
                    .map(|c| c.rtp_coding_parameters.rid.clone())
                    .filter(|rid| !rid.is_empty())
                    .collect();
                let params = rtp_receiver.get_parameters().rtp_parameters.clone();
                let Some(codec) =
                    codec.or_else(|| params.codecs.first().map(|c| c.rtp_codec.clone()))
                else {
                    tracing::warn!(conn = id.0, track = %init.track_id, "track opened without a codec");
                    return;
                };
                let mut receiver = Receiver::new(
                    rid,
                    id,
                    init.track_id.clone(),
                    init.receiver_id,
                    kind,
                    codec,
                    params.header_extensions,
                    self.policy.keyframe_interval,
                );
                receiver.set_sdp_rids(sdp_rids);
                c.published.insert(init.track_id.clone(), rid);
                self.receivers.insert(rid, receiver);
                (rid, true)
            }
        };
        let Some(receiver) = self.receivers.get_mut(&receiver_id) else {
            return;
        };
        receiver.add_layer(init.ssrc, init.rid.clone());
        let event = ConnEvent::TrackOpened {
            track_id: init.track_id.clone(),
            kind: if receiver.is_video() {
                MediaKind::Video
            } else {
                MediaKind::Audio
            },
            mime_type: receiver.rtp_codec.mime_type.clone(),
            ssrc: init.ssrc,
            rid: init.rid.clone(),
            first_layer,
        };
        tracing::debug!(conn = id.0, track = %init.track_id, ssrc = init.ssrc, rid = ?init.rid, "track layer opened");
        // Layers are picked per subscriber by `select_layers` (this event also repeats on
        // every renegotiation).
        if let Some(c) = self.conns.get(&id) {
            c.emit(event);
        }
        if first_layer
            && let Some(waiting) = self.pending_subscriptions.remove(&(id, init.track_id))
        {
            for spec in waiting {
                self.subscribe(spec, now);
            }
        }
    }

    /// The hot path: one publisher packet to every subscriber of its track.
    fn forward(&mut self, publisher: ConnId, track_id: &str, packet: rtp::Packet, now: Instant) {
        let Some(receiver_id) = self
            .conns
            .get(&publisher)
            .and_then(|c| c.published.get(track_id))
            .copied()
        else {
            return; // unpublished while packets were still arriving
        };
        let Some(receiver) = self.receivers.get_mut(&receiver_id) else {
            return;
        };
        self.stats.rtp_received.fetch_add(1, Ordering::Relaxed);
        if let Some(layer) = receiver.layer_mut(packet.header.ssrc) {
            layer.packets += 1;
            // Padding-only packets (bandwidth probes, sent on a paused layer too) keep no
            // layer alive.
            if !packet.payload.is_empty() {
                layer.saw_media(now);
            }
            layer.bytes += packet.payload.len() as u64;
        }
        if let Some(report) = receiver
            .audio_level
            .as_mut()
            .and_then(|tap| tap.observe(&packet.header, now))
            && let Some(c) = self.conns.get_mut(&publisher)
        {
            c.speaking = report.active;
            // At most once per detection window (500 ms) per track.
            c.emit(ConnEvent::SpeakerLevel {
                track_id: receiver.track_id.clone(),
                level: report.level,
                active: report.active,
            });
        }
        // Parsed once per packet: keyframe detection, and the picture numbering each down
        // track keeps continuous across its layer switches.
        let picture = match receiver.codec {
            codec::Codec::Vp8 => Vp8Descriptor::parse(&packet.payload)
                .ok()
                .map(PictureDescriptor::Vp8),
            codec::Codec::Vp9 => Vp9Descriptor::parse(&packet.payload)
                .ok()
                .map(PictureDescriptor::Vp9),
            _ => None,
        };
        let keyframe = match &picture {
            Some(PictureDescriptor::Vp8(d)) if d.is_keyframe_start() => {
                // Layer sizes for subscribers that ask by size, when the publisher did not
                // declare them (WHIP, plain WebRTC).
                if let Some((width, height)) = codec::vp8::keyframe_size(&packet.payload, d) {
                    receiver.observe_size(
                        packet.header.ssrc,
                        LayerSize {
                            width: width.into(),
                            height: height.into(),
                        },
                    );
                }
                true
            }
            Some(PictureDescriptor::Vp8(_)) => false,
            Some(PictureDescriptor::Vp9(d)) => d.is_keyframe_start(),
            None => {
                !receiver.is_video() || codec::is_keyframe_start(receiver.codec, &packet.payload)
            }
        };
        for s in &receiver.subscribers {
            let Some(c) = self.conns.get_mut(&s.conn) else {
                continue;
            };
            // Until DTLS is up there are no SRTP keys; the subscriber starts on a keyframe
            // once connected anyway.
            if !c.connected {
                continue;
            }
            let Some(dt) = c.down_tracks.get_mut(&s.down_track) else {
                continue;
            };
            let Some(out) = dt.rewrite(&packet, keyframe, picture.as_ref(), now) else {
                continue;
            };
            if let Some(since) = dt.awaiting_first_packet.take() {
                self.stats
                    .histograms
                    .record_first_packet(now.saturating_duration_since(since));
            }
            let sender = dt.sender;
            let written =
                c.pc.rtp_sender(sender)
                    .map(|mut s| s.write_rtp(now, out).is_ok())
                    .unwrap_or(false);
            let counter = if written {
                &self.stats.rtp_forwarded
            } else {
                &self.stats.rtp_forward_errors
            };
            counter.fetch_add(1, Ordering::Relaxed);
            if !c.dirty {
                c.dirty = true;
                self.dirty.push(s.conn);
            }
        }
    }

    // ------------------------------------------------------------------ RTCP from peers

    fn on_rtcp(&mut self, id: ConnId, packet: &dyn rtcp::Packet, now: Instant) {
        let any = packet.as_any();
        if let Some(pli) = any.downcast_ref::<PictureLossIndication>() {
            self.stats.pli_received.fetch_add(1, Ordering::Relaxed);
            self.keyframe_for_subscriber(id, pli.media_ssrc, now);
        } else if let Some(fir) = any.downcast_ref::<FullIntraRequest>() {
            self.stats.fir_received.fetch_add(1, Ordering::Relaxed);
            for entry in &fir.fir {
                self.keyframe_for_subscriber(id, entry.ssrc, now);
            }
        } else if let Some(sr) = any.downcast_ref::<SenderReport>() {
            self.on_sender_report(id, sr, now);
            self.on_report_blocks(id, &sr.reports, now);
        } else if let Some(rr) = any.downcast_ref::<ReceiverReport>() {
            self.on_report_blocks(id, &rr.reports, now);
        } else if let Some(remb) = any.downcast_ref::<ReceiverEstimatedMaximumBitrate>()
            && let Some(link) = self.conns.get(&id).and_then(|c| c.link.as_ref())
        {
            link.estimator().on_remb(now, f64::from(remb.bitrate));
        }
    }

    /// A subscriber asked for a keyframe of the down track it receives as `ssrc`: ask the
    /// publisher for one on the layer that subscriber gets (throttled per layer).
    fn keyframe_for_subscriber(&mut self, id: ConnId, ssrc: u32, now: Instant) {
        let target = self.conns.get(&id).and_then(|c| {
            c.down_tracks
                .values()
                .find(|dt| dt.ssrc == ssrc)
                .and_then(|dt| Some((dt.receiver, dt.source?)))
        });
        if let Some((receiver, source)) = target {
            tracing::trace!(conn = id.0, ssrc, "keyframe requested by subscriber");
            self.request_keyframe(receiver, source, now);
        }
    }

    /// A publisher's sender report: remember its clock for the reports we send subscribers.
    fn on_sender_report(&mut self, id: ConnId, sr: &SenderReport, now: Instant) {
        let Some(c) = self.conns.get(&id) else {
            return;
        };
        for receiver_id in c.published.values() {
            if let Some(layer) = self
                .receivers
                .get_mut(receiver_id)
                .and_then(|r| r.layer_mut(sr.ssrc))
            {
                layer.sender_clock = Some(SenderClock {
                    ntp: sr.ntp_time,
                    rtp: sr.rtp_time,
                    received_at: now,
                });
                return;
            }
        }
    }

    /// Report blocks about what we send this connection: round-trip times.
    fn on_report_blocks(&mut self, id: ConnId, blocks: &[ReceptionReport], now: Instant) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        for block in blocks {
            let Some(dt) = c.down_tracks.values_mut().find(|dt| dt.ssrc == block.ssrc) else {
                continue;
            };
            // Loss as the subscriber sees it, for the dashboard.
            dt.fraction_lost = Some(block.fraction_lost);
            if let Some(rtt) = dt.on_report_block(block.last_sender_report, block.delay, now) {
                c.rtt = Some(rtt);
                tracing::trace!(conn = id.0, rtt_ms = rtt.as_millis() as u64, "round trip");
            }
        }
    }

    /// Sends the sender reports that are due, with each publisher's clock translated through
    /// the subscriber's timestamp rewriting.
    fn send_sender_reports(&mut self, now: Instant) {
        for receiver in self.receivers.values() {
            let clock_rate = receiver.rtp_codec.clock_rate;
            for s in &receiver.subscribers {
                let Some(c) = self.conns.get_mut(&s.conn) else {
                    continue;
                };
                let Some(dt) = c.down_tracks.get_mut(&s.down_track) else {
                    continue;
                };
                let clock = dt
                    .source
                    .and_then(|ssrc| receiver.layer(ssrc))
                    .and_then(|l| l.sender_clock.as_ref());
                let Some(report) = dt.sender_report(clock, clock_rate, now) else {
                    continue;
                };
                let sender = dt.sender;
                if let Some(mut sender) = c.pc.rtp_sender(sender)
                    && sender.write_rtcp(now, vec![Box::new(report)]).is_ok()
                {
                    self.stats
                        .sender_reports_sent
                        .fetch_add(1, Ordering::Relaxed);
                }
                if !c.dirty {
                    c.dirty = true;
                    self.dirty.push(s.conn);
                }
            }
        }
    }

    // ------------------------------------------------------------------ keyframes

    fn request_keyframe(&mut self, receiver_id: ReceiverId, ssrc: u32, now: Instant) {
        let Some(receiver) = self.receivers.get_mut(&receiver_id) else {
            return;
        };
        if !receiver.is_video() {
            return;
        }
        if !receiver.allow_keyframe_request(ssrc, now) {
            self.stats
                .keyframe_requests_throttled
                .fetch_add(1, Ordering::Relaxed);
            return;
        }
        let (publisher, rtc_receiver) = (receiver.publisher, receiver.rtc_receiver);
        let Some(c) = self.conns.get_mut(&publisher) else {
            return;
        };
        let pli = PictureLossIndication {
            sender_ssrc: 0,
            media_ssrc: ssrc,
        };
        if let Some(mut r) = c.pc.rtp_receiver(rtc_receiver) {
            match r.write_rtcp(now, vec![Box::new(pli)]) {
                Ok(()) => {
                    self.stats.keyframe_requests.fetch_add(1, Ordering::Relaxed);
                    tracing::trace!(conn = publisher.0, ssrc, "keyframe requested");
                }
                Err(e) => {
                    tracing::debug!(conn = publisher.0, error = %e, "keyframe request failed")
                }
            }
        }
        self.mark_dirty(publisher);
    }

    /// Subscribers waiting to start need a keyframe; ask again (throttled) until one comes.
    fn request_pending_keyframes(&mut self, now: Instant) {
        let mut wanted = std::mem::take(&mut self.keyframe_buf);
        for receiver in self.receivers.values() {
            if !receiver.is_video() {
                continue;
            }
            for s in &receiver.subscribers {
                if let Some(dt) = self
                    .conns
                    .get(&s.conn)
                    .and_then(|c| c.down_tracks.get(&s.down_track))
                    && dt.waiting_for_keyframe()
                    && let Some(source) = dt.source
                    && !wanted.contains(&(receiver.id, source))
                {
                    wanted.push((receiver.id, source));
                }
            }
        }
        for (receiver, ssrc) in wanted.drain(..) {
            self.request_keyframe(receiver, ssrc, now);
        }
        self.keyframe_buf = wanted;
    }

    // ------------------------------------------------------------------ negotiation

    fn maybe_offer(&mut self, id: ConnId, now: Instant) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        if !c.negotiation.may_offer() {
            return;
        }
        c.negotiation.needed = false;
        let offer = match c.pc.create_offer(None) {
            Ok(offer) => offer,
            Err(e) => {
                tracing::warn!(conn = id.0, error = %e, "cannot create offer");
                return;
            }
        };
        if let Err(e) = c.pc.set_local_description(now, offer.clone()) {
            tracing::warn!(conn = id.0, error = %e, "cannot apply own offer");
            return;
        }
        c.negotiation.next_id += 1;
        let offer_id = c.negotiation.next_id;
        c.negotiation.outstanding = Some(offer_id);
        for dt in c.down_tracks.values_mut() {
            if dt.negotiated.is_none() {
                dt.offered_in = Some(offer_id);
            }
        }
        let sdp = c.pc.local_description().map(|d| d.sdp).unwrap_or(offer.sdp);
        let sdp = sdp_fixes::add_start_bitrate(
            &sdp_fixes::drop_simulcast_rtx(&sdp),
            sdp_fixes::START_BITRATE_KBPS,
        );
        tracing::trace!(conn = id.0, offer = offer_id, %sdp, "server offer");
        c.emit(ConnEvent::Offer { sdp, id: offer_id });
        self.sync_ice_route(id);
    }

    fn on_client_offer(
        &mut self,
        id: ConnId,
        sdp: String,
        now: Instant,
    ) -> Result<Option<String>, TransportError> {
        let c = self
            .conns
            .get_mut(&id)
            .ok_or(TransportError::UnknownConnection)?;
        if c.negotiation.outstanding.is_some() {
            // Glare: the server is the impolite peer and keeps its own offer.
            return Ok(None);
        }
        let sdp = sdp_fixes::keep_simulcast_bindings(&sdp, |t| c.published.contains_key(t));
        let offer = RTCSessionDescription::offer(sdp)
            .map_err(|e| TransportError::InvalidSdp(e.to_string()))?;
        c.pc.set_remote_description(now, offer)
            .map_err(|e| TransportError::InvalidSdp(e.to_string()))?;
        let answer =
            c.pc.create_answer(None)
                .map_err(|e| TransportError::Negotiation(e.to_string()))?;
        c.pc.set_local_description(now, answer.clone())
            .map_err(|e| TransportError::Negotiation(e.to_string()))?;
        c.negotiation.started = true;
        let sdp =
            c.pc.local_description()
                .map(|d| d.sdp)
                .unwrap_or(answer.sdp);
        let sdp = sdp_fixes::add_start_bitrate(
            &sdp_fixes::drop_simulcast_rtx(&sdp),
            sdp_fixes::START_BITRATE_KBPS,
        );
        self.sync_ice_route(id);
        self.mark_dirty(id);
        Ok(Some(sdp))
    }

    fn on_client_answer(
        &mut self,
        id: ConnId,
        sdp: String,
        answer_id: u32,
        now: Instant,
    ) -> Result<(), TransportError> {
        let c = self
            .conns
            .get_mut(&id)
            .ok_or(TransportError::UnknownConnection)?;
        if c.negotiation.outstanding != Some(answer_id) {
            return Err(TransportError::UnexpectedAnswer {
                got: answer_id,
                expected: c.negotiation.outstanding,
            });
        }
        let sdp = sdp_fixes::keep_simulcast_bindings(&sdp, |t| c.published.contains_key(t));
        let answer = RTCSessionDescription::answer(sdp)
            .map_err(|e| TransportError::InvalidSdp(e.to_string()))?;
        c.pc.set_remote_description(now, answer)
            .map_err(|e| TransportError::InvalidSdp(e.to_string()))?;
        c.negotiation.outstanding = None;
        let ready: Vec<DownTrackId> = c
            .down_tracks
            .values()
            .filter(|dt| dt.negotiated.is_none() && dt.offered_in == Some(answer_id))
            .map(|dt| dt.id)
            .collect();
        for dt_id in ready {
            self.activate(id, dt_id, now);
        }
        self.mark_dirty(id);
        Ok(())
    }

    /// The subscriber's leg of a down track is negotiated: learn its payload type and
    /// extension ids, then start (video waits for a keyframe, which we ask for).
    fn activate(&mut self, id: ConnId, dt_id: DownTrackId, now: Instant) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        let Some(dt) = c.down_tracks.get(&dt_id) else {
            return;
        };
        let (sender, receiver_id, track_sid) = (dt.sender, dt.receiver, dt.track_sid.clone());
        let Some(receiver) = self.receivers.get(&receiver_id) else {
            return;
        };
        let negotiated = c.pc.rtp_sender(sender).and_then(|mut s| {
            let params = s.get_parameters();
            let codecs = &params.rtp_parameters.codecs;
            let wanted = &receiver.rtp_codec;
            let same_mime = |m: &str| m.eq_ignore_ascii_case(&wanted.mime_type);
            let payload_type = codecs
                .iter()
                .find(|p| {
                    same_mime(&p.rtp_codec.mime_type)
                        && p.rtp_codec.sdp_fmtp_line == wanted.sdp_fmtp_line
                })
                .or_else(|| codecs.iter().find(|p| same_mime(&p.rtp_codec.mime_type)))
                .map(|p| p.payload_type)?;
            Some(Negotiated {
                payload_type,
                extensions: ExtensionMap::between(
                    &receiver.extensions,
                    &params.rtp_parameters.header_extensions,
                ),
            })
        });
        let Some(dt) = c.down_tracks.get_mut(&dt_id) else {
            return;
        };
        match negotiated {
            Some(n) => {
                dt.negotiated = Some(n);
                let source = simulcast::select_layer(receiver, dt, now);
                c.emit(ConnEvent::Subscribed { track_sid });
                if let Some(source) = source {
                    self.request_keyframe(receiver_id, source, now);
                }
            }
            None => {
                let reason = format!(
                    "the subscriber did not accept codec {}",
                    receiver.rtp_codec.mime_type
                );
                c.emit(ConnEvent::SubscriptionFailed {
                    track_sid: track_sid.clone(),
                    reason,
                });
                self.remove_down_track(id, &track_sid, false, now);
            }
        }
    }

    // ------------------------------------------------------------------ commands

    pub(super) fn handle_command(&mut self, command: WorkerCommand, now: Instant) {
        match command {
            WorkerCommand::Open {
                conn,
                events,
                reply,
            } => {
                let _ = reply.send(self.open(conn, events, now));
            }
            WorkerCommand::Offer { conn, sdp, reply } => {
                let result = self.on_client_offer(conn, sdp, now);
                let _ = reply.send(result);
            }
            WorkerCommand::ViewerOffer { conn, sdp, reply } => {
                let result = self.on_viewer_offer(conn, sdp, now);
                let _ = reply.send(result);
            }
            WorkerCommand::Answer {
                conn,
                sdp,
                id,
                reply,
            } => {
                let result = self.on_client_answer(conn, sdp, id, now);
                let _ = reply.send(result);
            }
            WorkerCommand::Candidate {
                conn,
                candidate,
                sdp_mid,
                sdp_mline_index,
            } => {
                if let Some(c) = self.conns.get_mut(&conn) {
                    let init = RTCIceCandidateInit {
                        candidate,
                        sdp_mid,
                        sdp_mline_index,
                        ..Default::default()
                    };
                    if let Err(e) = c.pc.add_remote_candidate(init) {
                        tracing::debug!(conn = conn.0, error = %e, "remote candidate refused");
                    }
                    self.mark_dirty(conn);
                }
            }
            WorkerCommand::Subscribe(spec) => self.subscribe(spec, now),
            WorkerCommand::LayerRequest {
                subscriber,
                track_sid,
                request,
                pinned,
            } => self.request_layer(subscriber, track_sid, request, pinned),
            WorkerCommand::Unsubscribe {
                subscriber,
                track_sid,
            } => {
                self.forget_pending(|spec| {
                    spec.subscriber == subscriber && spec.track_sid == track_sid
                });
                if let Some(slots) = self
                    .conns
                    .get_mut(&subscriber)
                    .and_then(|c| c.slots.as_mut())
                {
                    slots.forget(&track_sid);
                }
                self.remove_down_track(subscriber, &track_sid, true, now)
            }
            WorkerCommand::Unpublish {
                publisher,
                track_id,
            } => self.unpublish(publisher, &track_id, now),
            WorkerCommand::Close { conn } => self.close(conn, now),
            WorkerCommand::SendData {
                conns,
                reliable,
                payload,
            } => {
                for id in conns {
                    if let Some(c) = self.conns.get_mut(&id) {
                        super::data::send(c, reliable, &payload, now, &self.stats.data);
                        self.mark_dirty(id);
                    }
                }
            }
            WorkerCommand::Details { reply } => {
                let _ = reply.send(self.details(now));
            }
            WorkerCommand::Snapshot { reply } => {
                let _ = reply.send(WorkerSnapshot {
                    connections: self.conns.len(),
                    receivers: self.receivers.len(),
                    down_tracks: self.conns.values().map(|c| c.down_tracks.len()).sum(),
                    pending_subscriptions: self.pending_subscriptions.values().map(Vec::len).sum(),
                    ufrag_routes: self.by_ufrag.len(),
                    address_routes: self.by_addr.len(),
                });
            }
        }
    }

    fn open(
        &mut self,
        conn: ConnId,
        events: mpsc::Sender<ConnEvent>,
        now: Instant,
    ) -> Result<(), TransportError> {
        let (pc, link) = peer::build(&self.settings, &self.stats, now)
            .map_err(|e| TransportError::Engine(e.to_string()))?;
        // Routed by ufrag once its first local description (the answer) names one.
        self.conns
            .insert(conn, Connection::new(conn, pc, link, events));
        self.dirty.push(conn);
        self.stats
            .connections
            .store(self.conns.len(), Ordering::Relaxed);
        Ok(())
    }

    fn subscribe(&mut self, spec: SubscribeSpec, now: Instant) {
        let receiver_id = self
            .conns
            .get(&spec.publisher)
            .and_then(|c| c.published.get(&spec.track_id))
            .copied();
        let Some(c) = self.conns.get(&spec.subscriber) else {
            return;
        };
        if c.down_track_by_sid.contains_key(&spec.track_sid) {
            return;
        }
        if let Some(r) = receiver_id.and_then(|r| self.receivers.get_mut(&r))
            && !spec.layers.is_empty()
        {
            r.declare(spec.layers.clone());
        }
        let Some(receiver) = receiver_id.and_then(|r| self.receivers.get(&r)) else {
            if self.conns.contains_key(&spec.publisher) {
                // Announced, media not here yet: subscribe when it opens.
                let waiting = self
                    .pending_subscriptions
                    .entry((spec.publisher, spec.track_id.clone()))
                    .or_default();
                if !waiting
                    .iter()
                    .any(|w| w.subscriber == spec.subscriber && w.track_sid == spec.track_sid)
                {
                    waiting.push(spec);
                }
            } else {
                c.emit(ConnEvent::SubscriptionFailed {
                    track_sid: spec.track_sid,
                    reason: "the publisher is gone".into(),
                });
            }
            return;
        };
        if c.slots.is_some() {
            // A viewer that cannot renegotiate: bind one of its fixed senders.
            let receiver_id = receiver.id;
            self.subscribe_slot(spec, receiver_id, now);
            return;
        }
        let ssrc = rand::random::<u32>();
        let track = MediaStreamTrack::new(
            spec.publisher_sid.clone(),
            spec.track_sid.clone(),
            spec.track_sid.clone(),
            receiver.kind,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(ssrc),
                    ..Default::default()
                },
                active: true,
                // The codec binds the stream to the interceptors (NACK responder, RTX).
                codec: receiver.rtp_codec.clone(),
                ..Default::default()
            }],
        );
        let init = RTCRtpTransceiverInit {
            direction: RTCRtpTransceiverDirection::Sendonly,
            streams: vec![],
            send_encodings: vec![],
        };
        let needs_keyframe = receiver.kind == RtpCodecKind::Video;
        let clock_rate = receiver.rtp_codec.clock_rate;
        let receiver_id = receiver.id;
        let dt_id = DownTrackId(self.next_id());
        let Some(c) = self.conns.get_mut(&spec.subscriber) else {
            return;
        };
        let transceiver = match c.pc.add_transceiver_from_track(track, Some(init)) {
            Ok(t) => t,
            Err(e) => {
                c.emit(ConnEvent::SubscriptionFailed {
                    track_sid: spec.track_sid,
                    reason: format!("cannot add the track: {e}"),
                });
                return;
            }
        };
        // No codec preference, so the offer lists every codec we support and the subscriber's
        // answer negotiates them all: webrtc-rs fixes a connection's codec set at its first
        // negotiated video (or audio) section and offers no way to widen it later, so with a
        // preference a subscriber first given VP8 could never receive H.264. The payload type
        // is looked up by MIME type when the answer arrives.
        if let Some(mut t) = c.pc.rtp_transceiver(transceiver)
            && let Err(e) = t.set_codec_preferences(Vec::new())
        {
            tracing::debug!(conn = spec.subscriber.0, error = %e, "clearing codec preferences");
        }
        let munger = RtpMunger::new(rand::random::<u16>() & 0x7fff, clock_rate, needs_keyframe);
        let mut dt = DownTrack::new(
            dt_id,
            spec.track_sid.clone(),
            receiver_id,
            RTCRtpSenderId::from(transceiver),
            ssrc,
            munger,
        );
        if let Some(request) = c.layer_requests.get(&spec.track_sid) {
            dt.request = *request;
        }
        dt.awaiting_first_packet = Some(now);
        dt.screen_share = spec.screen_share;
        c.down_tracks.insert(dt_id, dt);
        c.down_track_by_sid.insert(spec.track_sid, dt_id);
        c.negotiation.needed = true;
        if let Some(r) = self.receivers.get_mut(&receiver_id) {
            r.subscribers.push(SubscriberRef {
                conn: spec.subscriber,
                down_track: dt_id,
            });
        }
        self.mark_dirty(spec.subscriber);
    }

    /// Stops forwarding `track_sid` to `subscriber` and removes its sender (renegotiated).
    fn remove_down_track(
        &mut self,
        subscriber: ConnId,
        track_sid: &str,
        notify: bool,
        now: Instant,
    ) {
        let Some(c) = self.conns.get_mut(&subscriber) else {
            return;
        };
        c.layer_requests.remove(track_sid);
        let Some(dt_id) = c.down_track_by_sid.remove(track_sid) else {
            return;
        };
        let Some(dt) = c.down_tracks.remove(&dt_id) else {
            return;
        };
        let slotted = c.slots.is_some();
        if !slotted {
            if let Err(e) = c.pc.remove_track(dt.sender) {
                tracing::debug!(conn = subscriber.0, error = %e, "remove_track");
            }
            c.negotiation.needed = true;
        }
        if notify {
            c.emit(ConnEvent::Unsubscribed {
                track_sid: track_sid.to_owned(),
            });
        }
        if let Some(r) = self.receivers.get_mut(&dt.receiver) {
            r.remove_subscriber(subscriber, dt_id);
        }
        if slotted && self.release_slot(subscriber, &dt) {
            self.fill_slots(subscriber, now);
        }
        self.mark_dirty(subscriber);
    }

    fn forget_pending(&mut self, mut drop_if: impl FnMut(&SubscribeSpec) -> bool) {
        self.pending_subscriptions.retain(|_, waiting| {
            waiting.retain(|spec| !drop_if(spec));
            !waiting.is_empty()
        });
    }

    fn unpublish(&mut self, publisher: ConnId, track_id: &str, now: Instant) {
        self.pending_subscriptions
            .remove(&(publisher, track_id.to_owned()));
        let Some(receiver_id) = self
            .conns
            .get_mut(&publisher)
            .and_then(|c| c.published.remove(track_id))
        else {
            return;
        };
        self.drop_receiver(receiver_id, now);
    }

    fn drop_receiver(&mut self, receiver_id: ReceiverId, now: Instant) {
        let Some(receiver) = self.receivers.remove(&receiver_id) else {
            return;
        };
        for s in receiver.subscribers {
            let sid = self
                .conns
                .get(&s.conn)
                .and_then(|c| c.down_tracks.get(&s.down_track))
                .map(|dt| dt.track_sid.clone());
            if let Some(sid) = sid {
                self.remove_down_track(s.conn, &sid, true, now);
            }
        }
    }

    fn close(&mut self, id: ConnId, now: Instant) {
        let Some(mut c) = self.conns.remove(&id) else {
            return;
        };
        self.forget_pending(|spec| spec.subscriber == id || spec.publisher == id);
        for receiver_id in c.published.values() {
            self.drop_receiver(*receiver_id, now);
        }
        for dt in c.down_tracks.values() {
            if let Some(r) = self.receivers.get_mut(&dt.receiver) {
                r.remove_subscriber(id, dt.id);
            }
        }
        let retired = c.retired.take().unwrap_or_default();
        for ufrag in [&c.ufrag, &retired.ufrag] {
            if self.by_ufrag.get(ufrag) == Some(&id) {
                self.by_ufrag.remove(ufrag);
            }
        }
        for addr in c.addrs.iter().chain(&retired.addrs) {
            if self.by_addr.get(addr) == Some(&id) {
                self.by_addr.remove(addr);
            }
        }
        if let Err(e) = c.pc.close() {
            tracing::trace!(conn = id.0, error = %e, "close");
        }
        // Let the goodbye (DTLS close_notify, SCTP abort) go out.
        while let Some(out) = c.pc.poll_write() {
            self.send_queue.push(out.transport.peer_addr, out.message);
        }
        self.stats
            .connections
            .store(self.conns.len(), Ordering::Relaxed);
        tracing::debug!(worker = self.index, conn = id.0, "connection closed");
    }
}

/// The first `a=ice-ufrag` of a description (the engine writes the same one in every section).
fn local_ufrag(sdp: &str) -> Option<&str> {
    sdp.lines()
        .find_map(|l| l.trim().strip_prefix("a=ice-ufrag:"))
        .filter(|u| !u.is_empty())
}
