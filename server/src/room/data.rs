//! Data messages: a participant's (or the control plane's) `DataPacket` relayed to the other
//! participants of the room, on their reliable or lossy data channel.

use bytes::Bytes;
use prism_proto::signal::DataPacket;
use prism_proto::signal::data_packet::Kind;
use prost::Message as _;

use super::RoomError;
use super::state::Room;
use crate::transport::ConnId;

/// Largest encoded packet relayed. Browsers and webrtc-rs read messages of up to 16 KiB
/// without fragmentation support; this leaves room for the sender identity and framing.
pub const MAX_DATA_PACKET: usize = 15 * 1024;

impl Room {
    /// Relays `packet` from the participant `from` (a sid; `None` = the server itself) to
    /// everyone else in the room, or to the participants named in its
    /// `destination_identities`. Returns how many participants it was sent to. The sender's
    /// identity is set here, never taken from the packet.
    pub fn send_data(
        &self,
        from: Option<&str>,
        mut packet: DataPacket,
    ) -> Result<usize, RoomError> {
        let s = self.lock();
        packet.sender_identity = match from {
            Some(sid) => {
                let m = s.members.get(sid).ok_or(RoomError::ParticipantNotFound)?;
                if !m.permission().can_publish_data {
                    return Err(RoomError::NotAllowed(
                        "this participant may not publish data".into(),
                    ));
                }
                m.info.identity.clone()
            }
            None => String::new(),
        };
        let destinations = std::mem::take(&mut packet.destination_identities);
        let conns: Vec<ConnId> = s
            .members
            .iter()
            .filter(|(sid, _)| Some(sid.as_str()) != from)
            .filter(|(_, m)| destinations.is_empty() || destinations.contains(&m.info.identity))
            .map(|(_, m)| m.conn)
            .collect();
        let reliable = packet.kind() != Kind::Lossy;
        let encoded = Bytes::from(packet.encode_to_vec());
        if encoded.len() > MAX_DATA_PACKET {
            return Err(RoomError::InvalidArgument(format!(
                "data packet is {} bytes; at most {MAX_DATA_PACKET} are relayed",
                encoded.len()
            )));
        }
        if conns.is_empty() {
            return Ok(0);
        }
        let n = conns.len();
        // Posted with the lock held, so one room's packets reach the worker in order.
        self.worker
            .send_data(conns, reliable, encoded)
            .map_err(|e| RoomError::Transport(e.to_string()))?;
        Ok(n)
    }
}
