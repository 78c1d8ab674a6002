//! A participant as its room knows it: its public info, its signaling outbox, its connection
//! and its subscriptions.

use std::collections::{HashMap, HashSet};

use prism_proto::signal::{
    ParticipantInfo, ParticipantPermission, SignalResponse, UpdateTrackSettings,
    participant_info::State,
};
use tokio::sync::mpsc;

use crate::transport::ConnId;

/// Who is joining, from their access token and connection options.
#[derive(Debug, Clone)]
pub struct JoinSpec {
    pub identity: String,
    pub name: String,
    pub metadata: String,
    pub permission: ParticipantPermission,
    pub auto_subscribe: bool,
}

pub(super) struct Member {
    pub info: ParticipantInfo,
    pub conn: ConnId,
    pub outbox: mpsc::Sender<SignalResponse>,
    pub auto_subscribe: bool,
    pub subscriptions: HashSet<String>,
    /// How the participant shows its subscribed video tracks, by track sid (latest wins).
    pub track_settings: HashMap<String, UpdateTrackSettings>,
}

impl Member {
    pub fn new(
        sid: String,
        spec: &JoinSpec,
        conn: ConnId,
        outbox: mpsc::Sender<SignalResponse>,
    ) -> Self {
        Self {
            info: ParticipantInfo {
                sid,
                identity: spec.identity.clone(),
                name: spec.name.clone(),
                metadata: spec.metadata.clone(),
                state: State::Joined as i32,
                tracks: vec![],
                permission: Some(spec.permission),
                joined_at: super::unix_now(),
            },
            conn,
            outbox,
            auto_subscribe: spec.auto_subscribe,
            subscriptions: HashSet::new(),
            track_settings: HashMap::new(),
        }
    }

    pub fn permission(&self) -> ParticipantPermission {
        self.info.permission.unwrap_or_default()
    }

    /// Queues a message for the participant. Signaling must never stall the room: a
    /// participant whose outbox is full misses the message (and is far behind anyway).
    pub fn send(&self, message: SignalResponse) {
        if let Err(e) = self.outbox.try_send(message) {
            tracing::warn!(participant = %self.info.sid, error = %e, "signaling message dropped");
        }
    }
}
