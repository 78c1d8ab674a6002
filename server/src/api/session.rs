//! One participant's signaling session: the WebSocket, its room membership and its peer
//! connection on the room's worker, from join to leave. Everything the participant says is
//! validated here; a bad message gets an error message and the session goes on.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{Message as WsMessage, WebSocket};
use prism_proto::signal::{
    self as pb, DisconnectReason, ErrorCode, SessionDescription, SignalRequest, SignalResponse,
    signal_request::Message as Req, signal_response::Message as Resp,
};
use tokio::sync::mpsc;
use tracing::Instrument;

use super::session_spans::SessionSpans;
use crate::room::{JoinSpec, Room, RoomError, RoomManager};
use crate::transport::{ConnEvent, ConnId, PeerState, TransportError};

const OUTBOX: usize = 1024;
const CONN_EVENTS: usize = 1024;
/// A client that sends nothing (not even a ping) for this long is gone.
const SILENCE_LIMIT: Duration = Duration::from_secs(20);

fn error(code: ErrorCode, request: &str, message: impl Into<String>) -> SignalResponse {
    SignalResponse {
        message: Some(Resp::Error(pb::ErrorResponse {
            code: code as i32,
            message: message.into(),
            request: request.to_owned(),
        })),
    }
}

fn room_error(request: &str, e: RoomError) -> SignalResponse {
    let code = match e {
        RoomError::TrackNotFound(_)
        | RoomError::ParticipantNotFound
        | RoomError::IdentityNotFound(_)
        | RoomError::RoomNotFound(_) => ErrorCode::NotFound,
        RoomError::NotAllowed(_) => ErrorCode::NotAllowed,
        RoomError::InvalidArgument(_) => ErrorCode::BadRequest,
        RoomError::RoomFull(..) => ErrorCode::RoomFull,
        RoomError::RoomClosed(_) | RoomError::Transport(_) => ErrorCode::Internal,
        RoomError::Draining => ErrorCode::NotAllowed,
    };
    error(code, request, e.to_string())
}

fn transport_error(request: &str, e: TransportError) -> SignalResponse {
    let code = match e {
        TransportError::InvalidSdp(_) => ErrorCode::InvalidSdp,
        TransportError::UnexpectedAnswer { .. } => ErrorCode::InvalidState,
        _ => ErrorCode::Internal,
    };
    error(code, request, e.to_string())
}

async fn send(ws: &mut WebSocket, message: &SignalResponse) -> bool {
    ws.send(WsMessage::Text(prism_proto::to_json(message).into()))
        .await
        .is_ok()
}

/// Joins the room (creating it if allowed) and serves the participant until it leaves.
pub async fn run(rooms: Arc<RoomManager>, room_name: String, spec: JoinSpec, mut ws: WebSocket) {
    let (outbox_tx, mut outbox) = mpsc::channel(OUTBOX);
    let (events_tx, mut events) = mpsc::channel(CONN_EVENTS);
    let conn = ConnId::next();
    let started = Instant::now();
    let mut spans = SessionSpans::join(&room_name, &spec.identity);
    // A room can close between lookup and join when its last participant just left; the
    // next lookup then creates a fresh one.
    let mut attempt = 0;
    let (room, joined) = loop {
        attempt += 1;
        let room = match rooms.get_or_create(&room_name) {
            Ok(room) => room,
            Err(e) => {
                spans.join_failed("refused");
                let _ = send(&mut ws, &room_error("join", e)).await;
                return;
            }
        };
        if let Err(e) = room.worker.open(conn, events_tx.clone()).await {
            spans.join_failed("transport");
            let _ = send(&mut ws, &transport_error("join", e)).await;
            // The room may have been created for us: let it close.
            rooms.release(&room);
            return;
        }
        match room.join(spec.clone(), conn, outbox_tx.clone()) {
            Ok(joined) => break (room, joined),
            Err(RoomError::RoomClosed(_)) if attempt < 3 => room.worker.close(conn),
            Err(e) => {
                spans.join_failed("refused");
                room.worker.close(conn);
                let _ = send(&mut ws, &room_error("join", e)).await;
                rooms.release(&room);
                close(ws).await;
                return;
            }
        }
    };
    drop((outbox_tx, events_tx));
    spans.joined(&joined.participant_sid);
    if spec.auto_subscribe && spec.permission.can_subscribe {
        // Auto-subscribed to everything already published.
        for track in joined
            .response
            .other_participants
            .iter()
            .flat_map(|p| &p.tracks)
        {
            spans.subscribe_started(&track.sid, &joined.participant_sid);
        }
    }
    let mut session = Session {
        room: room.clone(),
        sid: joined.participant_sid,
        conn,
        spec,
        connected: false,
        join_timeout: Duration::from_secs(rooms.config().room.join_timeout_secs),
        started,
        spans,
    };
    let join = SignalResponse {
        message: Some(Resp::Join(joined.response)),
    };
    let reason = if send(&mut ws, &join).await {
        session.serve(&mut ws, &mut outbox, &mut events).await
    } else {
        DisconnectReason::SignalingClosed
    };
    if reason == DisconnectReason::ConnectionTimeout {
        // The client did not choose this: say why before closing.
        let leave = SignalResponse {
            message: Some(Resp::Leave(pb::LeaveResponse {
                reason: reason as i32,
                message: "the peer connection did not come up in time, or was lost".into(),
            })),
        };
        let _ = send(&mut ws, &leave).await;
    }
    session.spans.finish();
    room.leave(&session.sid, reason);
    rooms.release(&room);
    close(ws).await;
}

/// How long the closing handshake may take.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Closes the WebSocket with the closing handshake: sends Close, then reads until the client
/// closes too. Dropping the socket at once would make the kernel reset the connection if the
/// client's last frames are still unread, and a reset can destroy what we sent last (a
/// `leave` telling the client why) before the client reads it.
async fn close(mut ws: WebSocket) {
    let _ = ws.send(WsMessage::Close(None)).await;
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        while let Some(Ok(_)) = ws.recv().await {}
    })
    .await;
}

struct Session {
    room: Arc<Room>,
    sid: String,
    conn: ConnId,
    spec: JoinSpec,
    connected: bool,
    join_timeout: Duration,
    /// When the join request came, for the join-time histogram.
    started: Instant,
    spans: SessionSpans,
}

impl Session {
    /// Runs until the participant leaves or is removed; returns why.
    async fn serve(
        &mut self,
        ws: &mut WebSocket,
        outbox: &mut mpsc::Receiver<SignalResponse>,
        events: &mut mpsc::Receiver<ConnEvent>,
    ) -> DisconnectReason {
        let join_deadline = tokio::time::sleep(self.join_timeout);
        tokio::pin!(join_deadline);
        let mut last_heard = tokio::time::Instant::now();
        let mut liveness = tokio::time::interval(Duration::from_secs(5));
        loop {
            tokio::select! {
                incoming = ws.recv() => {
                    let Some(Ok(frame)) = incoming else {
                        return DisconnectReason::SignalingClosed;
                    };
                    last_heard = tokio::time::Instant::now();
                    match frame {
                        WsMessage::Text(text) => {
                            if let Some(reason) = self.on_text(ws, text.as_str()).await {
                                return reason;
                            }
                        }
                        WsMessage::Binary(_) => {
                            let reply = error(ErrorCode::BadRequest, "", "binary frames are not accepted; send protobuf JSON text");
                            if !send(ws, &reply).await {
                                return DisconnectReason::SignalingClosed;
                            }
                        }
                        WsMessage::Close(_) => return DisconnectReason::SignalingClosed,
                        WsMessage::Ping(_) | WsMessage::Pong(_) => {}
                    }
                }
                Some(message) = outbox.recv() => {
                    self.on_outgoing(&message);
                    let kicked = matches!(message.message, Some(Resp::Leave(_)));
                    if !send(ws, &message).await {
                        return DisconnectReason::SignalingClosed;
                    }
                    if kicked {
                        // The room already removed us; the reason was sent.
                        return DisconnectReason::ParticipantRemoved;
                    }
                }
                Some(event) = events.recv() => {
                    if let Some(reason) = self.on_conn_event(ws, event).await {
                        return reason;
                    }
                }
                _ = &mut join_deadline, if !self.connected => {
                    let _ = send(ws, &error(ErrorCode::InvalidState, "join", "the peer connection did not connect in time")).await;
                    return DisconnectReason::ConnectionTimeout;
                }
                _ = liveness.tick() => {
                    if last_heard.elapsed() > SILENCE_LIMIT {
                        return DisconnectReason::ConnectionTimeout;
                    }
                    if ws.send(WsMessage::Ping(Vec::new().into())).await.is_err() {
                        return DisconnectReason::SignalingClosed;
                    }
                }
            }
        }
    }

    async fn on_text(&mut self, ws: &mut WebSocket, text: &str) -> Option<DisconnectReason> {
        let request: SignalRequest = match prism_proto::from_json(text) {
            Ok(r) => r,
            Err(e) => {
                let reply = error(ErrorCode::BadRequest, "", format!("malformed message: {e}"));
                return (!send(ws, &reply).await).then_some(DisconnectReason::SignalingClosed);
            }
        };
        let Some(message) = request.message else {
            let reply = error(
                ErrorCode::BadRequest,
                "",
                "empty message: set one of offer, answer, trickle, addTrack, unpublish, mute, subscription, leave, ping, trackSettings",
            );
            return (!send(ws, &reply).await).then_some(DisconnectReason::SignalingClosed);
        };
        let reply = match message {
            Req::Leave(_) => return Some(DisconnectReason::ClientInitiated),
            Req::Offer(offer) => self.on_offer(offer).await,
            Req::Answer(answer) => {
                let result = self
                    .room
                    .worker
                    .answer(self.conn, answer.sdp, answer.id)
                    .await;
                self.spans.server_offer_answered(answer.id, result.is_ok());
                result.err().map(|e| transport_error("answer", e))
            }
            Req::Trickle(c) => {
                if c.candidate.is_empty() {
                    None
                } else {
                    let mid = (!c.sdp_mid.is_empty()).then_some(c.sdp_mid);
                    let index = u16::try_from(c.sdp_mline_index).ok();
                    self.room
                        .worker
                        .candidate(self.conn, c.candidate, mid, index)
                        .err()
                        .map(|e| transport_error("trickle", e))
                }
            }
            // Success is announced to everyone, the publisher included, as trackPublished.
            Req::AddTrack(request) => {
                let cid = request.cid.clone();
                self.spans.publish_started(&cid, &self.sid);
                let refused = self.room.add_track(&self.sid, request).err();
                if refused.is_some() {
                    self.spans.published(&cid, None);
                }
                refused.map(|e| room_error("addTrack", e))
            }
            Req::Unpublish(request) => self
                .room
                .unpublish(&self.sid, &request.track_sid)
                .err()
                .map(|e| room_error("unpublish", e)),
            Req::Mute(request) => self
                .room
                .mute(&self.sid, &request.track_sid, request.muted)
                .err()
                .map(|e| room_error("mute", e)),
            Req::Subscription(request) => {
                if request.subscribe {
                    for sid in &request.track_sids {
                        self.spans.subscribe_started(sid, &self.sid);
                    }
                }
                self.room
                    .update_subscription(&self.sid, &request.track_sids, request.subscribe)
                    .err()
                    .map(|e| room_error("subscription", e))
            }
            // Stored for layer selection, which does not exist yet.
            Req::TrackSettings(settings) => self
                .room
                .update_track_settings(&self.sid, settings)
                .err()
                .map(|e| room_error("trackSettings", e)),
            Req::Ping(ping) => Some(SignalResponse {
                message: Some(Resp::Pong(pb::Pong {
                    timestamp: ping.timestamp,
                })),
            }),
        };
        match reply {
            Some(reply) if !send(ws, &reply).await => Some(DisconnectReason::SignalingClosed),
            _ => None,
        }
    }

    async fn on_offer(&mut self, offer: SessionDescription) -> Option<SignalResponse> {
        if offer.sdp.trim().is_empty() {
            return Some(error(
                ErrorCode::InvalidSdp,
                "offer",
                "the offer has no SDP",
            ));
        }
        // Permissions can change while connected (control plane): ask the room, not the token.
        let can_publish = self
            .room
            .permission(&self.sid)
            .map_or(self.spec.permission.can_publish, |p| p.can_publish);
        if !can_publish && sends_media(&offer.sdp) {
            return Some(error(
                ErrorCode::NotAllowed,
                "offer",
                "this token cannot publish: offer audio/video as recvonly or inactive",
            ));
        }
        let span = self.spans.client_offer();
        match self
            .room
            .worker
            .offer(self.conn, offer.sdp)
            .instrument(span)
            .await
        {
            Ok(Some(sdp)) => Some(SignalResponse {
                message: Some(Resp::Answer(SessionDescription {
                    r#type: "answer".into(),
                    sdp,
                    id: offer.id,
                })),
            }),
            // Glare: our offer is outstanding; the client rolls back and answers it.
            Ok(None) => None,
            Err(e) => Some(transport_error("offer", e)),
        }
    }

    async fn on_conn_event(
        &mut self,
        ws: &mut WebSocket,
        event: ConnEvent,
    ) -> Option<DisconnectReason> {
        let message = match event {
            ConnEvent::Offer { sdp, id } => {
                self.spans.server_offer(id);
                Some(Resp::Offer(SessionDescription {
                    r#type: "offer".into(),
                    sdp,
                    id,
                }))
            }
            ConnEvent::TrackOpened {
                track_id,
                kind,
                mime_type,
                rid,
                ..
            } => {
                self.room
                    .track_opened(&self.sid, &track_id, kind, &mime_type, rid.as_deref());
                if self.spans.is_publishing(&track_id) {
                    let sid = self.room.track_sid_of(&self.sid, &track_id);
                    self.spans.published(&track_id, sid.as_deref());
                }
                None
            }
            ConnEvent::StateChanged(state) => match state {
                PeerState::Connected => {
                    if !self.connected {
                        let stats = &self.room.worker.stats;
                        stats.histograms.record_join(self.started.elapsed());
                        self.spans.connected();
                    }
                    self.connected = true;
                    self.room.set_active(&self.sid);
                    None
                }
                PeerState::Failed | PeerState::Closed => {
                    return Some(DisconnectReason::ConnectionTimeout);
                }
                PeerState::Connecting | PeerState::Disconnected => None,
            },
            ConnEvent::Subscribed { track_sid } => {
                self.spans.subscribe_ended(&track_sid, "subscribed");
                Some(subscription(
                    track_sid,
                    pb::subscription_update::State::Subscribed,
                    String::new(),
                ))
            }
            ConnEvent::SubscriptionFailed { track_sid, reason } => {
                self.spans.subscribe_ended(&track_sid, "failed");
                self.room.subscription_ended(&self.sid, &track_sid);
                Some(subscription(
                    track_sid,
                    pb::subscription_update::State::Failed,
                    reason,
                ))
            }
            ConnEvent::Data { reliable, payload } => {
                return self.on_data(ws, reliable, payload).await;
            }
            ConnEvent::SpeakerLevel { level, active, .. } => {
                self.room.speaker_changed(&self.sid, level, active);
                None
            }
            ConnEvent::StreamState {
                track_sid,
                paused,
                rid,
                rank,
                layers,
                width,
                height,
                reason,
            } => Some(Resp::StreamState(pb::StreamStateUpdate {
                track_sid,
                state: if paused {
                    pb::stream_state_update::State::Paused
                } else {
                    pb::stream_state_update::State::Active
                } as i32,
                rid,
                quality: quality_of_rank(rank, layers) as i32,
                width,
                height,
                reason: reason.to_proto(),
            })),
            ConnEvent::ConnectionQuality(q) => Some(Resp::ConnectionQuality(q.to_proto())),
            ConnEvent::SubscribedLayers { track_id, layers } => {
                let track_sid = self.room.track_sid_of(&self.sid, &track_id)?;
                Some(Resp::SubscribedLayers(pb::SubscribedLayersUpdate {
                    track_sid,
                    layers: layers
                        .into_iter()
                        .map(|(rid, active)| pb::LayerActivity { rid, active })
                        .collect(),
                }))
            }
            ConnEvent::Unsubscribed { track_sid } => {
                self.spans.subscribe_ended(&track_sid, "unsubscribed");
                self.room.subscription_ended(&self.sid, &track_sid);
                Some(subscription(
                    track_sid,
                    pb::subscription_update::State::Unsubscribed,
                    String::new(),
                ))
            }
        };
        let message = message?;
        (!send(
            ws,
            &SignalResponse {
                message: Some(message),
            },
        )
        .await)
            .then_some(DisconnectReason::SignalingClosed)
    }
}

impl Session {
    /// A message the room sends this participant: a track it will be auto-subscribed to
    /// starts a `subscribe` span.
    fn on_outgoing(&mut self, message: &SignalResponse) {
        if let Some(Resp::TrackPublished(p)) = &message.message
            && p.participant_sid != self.sid
            && self.spec.auto_subscribe
            && self.spec.permission.can_subscribe
            && let Some(track) = &p.track
        {
            self.spans.subscribe_started(&track.sid, &self.sid);
        }
    }

    /// A data channel message from the participant: relay it to the room.
    async fn on_data(
        &mut self,
        ws: &mut WebSocket,
        reliable: bool,
        payload: bytes::Bytes,
    ) -> Option<DisconnectReason> {
        let mut packet = match <pb::DataPacket as prost::Message>::decode(payload) {
            Ok(p) => p,
            Err(e) => {
                let reply = error(
                    ErrorCode::BadRequest,
                    "data",
                    format!("undecodable data packet: {e}"),
                );
                return (!send(ws, &reply).await).then_some(DisconnectReason::SignalingClosed);
            }
        };
        // The channel it came on decides how it is relayed.
        packet.set_kind(if reliable {
            pb::data_packet::Kind::Reliable
        } else {
            pb::data_packet::Kind::Lossy
        });
        match self.room.send_data(Some(&self.sid), packet) {
            Ok(n) => {
                tracing::trace!(participant = %self.sid, reliable, recipients = n, "data relayed");
                None
            }
            Err(e) => {
                let reply = room_error("data", e);
                (!send(ws, &reply).await).then_some(DisconnectReason::SignalingClosed)
            }
        }
    }
}

fn subscription(track_sid: String, state: pb::subscription_update::State, error: String) -> Resp {
    Resp::Subscription(pb::SubscriptionUpdate {
        track_sid,
        participant_sid: String::new(),
        state: state as i32,
        error,
    })
}

/// Whether an offer sends audio or video (a publishing offer).
fn sends_media(sdp: &str) -> bool {
    let mut in_media = false;
    for line in sdp.lines() {
        let line = line.trim();
        if let Some(m) = line.strip_prefix("m=") {
            in_media = m.starts_with("audio") || m.starts_with("video");
        } else if in_media && (line == "a=sendrecv" || line == "a=sendonly") {
            return true;
        }
    }
    false
}

/// A layer's quality from its rank among `layers` (a track without simulcast is HIGH: its one
/// layer is the best there is).
fn quality_of_rank(rank: usize, layers: usize) -> pb::VideoQuality {
    if rank + 1 >= layers {
        pb::VideoQuality::High
    } else if rank == 0 {
        pb::VideoQuality::Low
    } else {
        pb::VideoQuality::Medium
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn detects_publishing_offers() {
        let recv = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=recvonly\r\nm=application 9 x\r\na=sendrecv\r\n";
        assert!(!super::sends_media(recv));
        assert!(super::sends_media("m=video 9 X 96\r\na=sendonly\r\n"));
    }
}
