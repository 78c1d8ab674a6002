//! Who is in a room and on which connection, for views that join room state with the worker's
//! media state (the dashboard).

use prism_proto::signal::ParticipantInfo;

use super::Room;
use crate::transport::ConnId;

impl Room {
    /// Every participant with its peer connection.
    pub fn roster(&self) -> Vec<(ParticipantInfo, ConnId)> {
        self.lock()
            .members
            .values()
            .map(|m| (m.info.clone(), m.conn))
            .collect()
    }
}
