//! One participant's peer connection as its worker holds it, with the negotiation bookkeeping
//! that serialises offers: the client offers first; the server offers only when no offer of
//! either side is in flight.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

use rtc::peer_connection::RTCPeerConnection;
use tokio::sync::mpsc;

use super::{ConnEvent, ConnId};
use crate::media::down_track::DownTrack;
use crate::media::layers::LayerRequest;
use crate::media::{DownTrackId, ReceiverId};

pub(crate) struct Connection {
    pub id: ConnId,
    pub pc: RTCPeerConnection,
    /// The local ICE ufrag of the current ICE generation (empty until the first local
    /// description), which routes STUN requests on the shared socket to this connection.
    pub ufrag: String,
    /// After an ICE restart, the previous generation's ufrag and the remote addresses learned
    /// under it: still routed here until the new generation is connected, then forgotten.
    pub retired: Option<Retired>,
    /// Remote addresses learned from accepted STUN checks.
    pub addrs: Vec<SocketAddr>,
    pub events: mpsc::Sender<ConnEvent>,
    pub negotiation: Negotiation,
    /// Tracks this participant publishes: its track id → receiver.
    pub published: HashMap<String, ReceiverId>,
    /// Tracks it subscribes to.
    pub down_tracks: HashMap<DownTrackId, DownTrack>,
    pub down_track_by_sid: HashMap<String, DownTrackId>,
    /// The subscriber's layer requests by track sid, kept here too so a request made before
    /// its down track exists (media not arriving yet) applies when it is created.
    pub layer_requests: HashMap<String, LayerRequest>,
    pub deadline: Option<Instant>,
    pub dirty: bool,
    pub connected: bool,
    /// Latest round-trip time measured from the receiver reports of this connection.
    pub rtt: Option<std::time::Duration>,
    pub data_channels: super::data::DataChannels,
    /// A viewer that cannot renegotiate (WHEP) has fixed senders; None for everyone else.
    pub slots: Option<super::worker::viewer::Slots>,
    /// Downlink congestion control: the state shared with the interceptors (None when off),
    /// and the worker's side of it (allocation, probing, quality reports).
    pub link: Option<crate::bwe::link::SharedLink>,
    pub downlink: super::worker::downlink::Downlink,
    /// Track sids this participant pinned (shown large).
    pub pinned: std::collections::HashSet<String>,
    /// Its audio is active (speaker detection): its video gets priority.
    pub speaking: bool,
    /// Keeps the client's repeated ClientHello from stalling the engine's DTLS server.
    pub hello_guard: super::dtls_replay::ClientHelloReplayGuard,
}

/// What an ICE restart left of the previous generation's routes.
#[derive(Debug, Default)]
pub(crate) struct Retired {
    pub ufrag: String,
    pub addrs: Vec<SocketAddr>,
}

#[derive(Debug, Default)]
pub(crate) struct Negotiation {
    /// The client's first offer was applied (the server never offers before that).
    pub started: bool,
    /// Id of the server offer awaiting the client's answer.
    pub outstanding: Option<u32>,
    pub next_id: u32,
    /// Senders were added or removed since the last server offer.
    pub needed: bool,
}

impl Negotiation {
    pub fn may_offer(&self) -> bool {
        self.started && self.needed && self.outstanding.is_none()
    }
}

impl Connection {
    pub fn new(
        id: ConnId,
        pc: RTCPeerConnection,
        link: Option<crate::bwe::link::SharedLink>,
        events: mpsc::Sender<ConnEvent>,
    ) -> Self {
        Self {
            id,
            pc,
            ufrag: String::new(),
            retired: None,
            addrs: Vec::new(),
            events,
            negotiation: Negotiation::default(),
            published: HashMap::new(),
            down_tracks: HashMap::new(),
            down_track_by_sid: HashMap::new(),
            layer_requests: HashMap::new(),
            deadline: None,
            dirty: true,
            connected: false,
            rtt: None,
            data_channels: Default::default(),
            slots: None,
            link,
            downlink: Default::default(),
            pinned: Default::default(),
            speaking: false,
            hello_guard: Default::default(),
        }
    }

    /// Hands an event to the session. The channel is bounded; a session that stopped reading
    /// loses events rather than stalling the worker (it is being torn down anyway).
    pub fn emit(&self, event: ConnEvent) {
        if let Err(e) = self.events.try_send(event) {
            tracing::debug!(conn = self.id.0, error = %e, "connection event dropped");
        }
    }
}
