//! Data messages: the two data channels every connection opens (`_reliable`: ordered and
//! retransmitted; `_lossy`: unordered, no retransmissions), carrying
//! `prism_proto::signal::DataPacket`s as protobuf binary. Packets that arrive become
//! [`RoomEvent::DataReceived`].

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use prism_proto::signal::DataPacket;
use prism_proto::signal::data_packet::Kind;
use prost::Message as _;
use tokio::sync::{mpsc, watch};
use webrtc::data_channel::{DataChannel, DataChannelEvent, RTCDataChannelInit};
use webrtc::peer_connection::PeerConnection;

use crate::error::{ClientError, Result};
use crate::events::RoomEvent;

pub(crate) const RELIABLE_LABEL: &str = "_reliable";
pub(crate) const LOSSY_LABEL: &str = "_lossy";

/// Largest payload [`Room::publish_data`](crate::Room::publish_data) sends: the server relays
/// packets of up to 15 KiB (what every WebRTC stack reads unfragmented), identities included.
pub const MAX_DATA_PAYLOAD: usize = 14 * 1024;

/// How a data message is sent.
#[derive(Debug, Clone, Default)]
pub struct DataOptions {
    /// Lossy (unordered, never retransmitted) rather than reliable.
    pub lossy: bool,
    /// Only these participants receive it; empty = everyone else in the room.
    pub destination_identities: Vec<String>,
    /// Application-defined topic, passed along as is.
    pub topic: String,
}

struct Channel {
    dc: Arc<dyn DataChannel>,
    open: watch::Receiver<bool>,
}

/// The connection's two data channels.
pub(crate) struct DataChannels {
    reliable: Channel,
    lossy: Channel,
}

impl DataChannels {
    /// Creates both channels on `pc` and starts reading them into `events`.
    pub(crate) async fn create(
        pc: &Arc<dyn PeerConnection>,
        events: &mpsc::Sender<RoomEvent>,
    ) -> Result<Self> {
        let reliable = pc.create_data_channel(RELIABLE_LABEL, None).await?;
        let lossy = pc
            .create_data_channel(
                LOSSY_LABEL,
                Some(RTCDataChannelInit {
                    ordered: false,
                    max_retransmits: Some(0),
                    ..Default::default()
                }),
            )
            .await?;
        Ok(Self {
            reliable: Channel::start(reliable, true, events),
            lossy: Channel::start(lossy, false, events),
        })
    }

    /// Sends one packet, waiting up to `timeout` for the channel to open.
    pub(crate) async fn publish(
        &self,
        payload: Bytes,
        options: DataOptions,
        timeout: Duration,
    ) -> Result<()> {
        if payload.len() > MAX_DATA_PAYLOAD {
            return Err(ClientError::InvalidArgument(format!(
                "data payload is {} bytes; at most {MAX_DATA_PAYLOAD} can be sent",
                payload.len()
            )));
        }
        let channel = if options.lossy {
            &self.lossy
        } else {
            &self.reliable
        };
        let mut open = channel.open.clone();
        match tokio::time::timeout(timeout, open.wait_for(|o| *o)).await {
            Err(_) => return Err(ClientError::Timeout("data channel open")),
            Ok(Err(_)) => return Err(ClientError::Closed),
            Ok(Ok(_)) => {}
        }
        let packet = DataPacket {
            sender_identity: String::new(),
            payload: payload.to_vec(),
            topic: options.topic,
            kind: if options.lossy {
                Kind::Lossy
            } else {
                Kind::Reliable
            } as i32,
            destination_identities: options.destination_identities,
        };
        let encoded = BytesMut::from(&packet.encode_to_vec()[..]);
        channel.dc.send(encoded).await?;
        Ok(())
    }
}

impl Channel {
    fn start(dc: Arc<dyn DataChannel>, reliable: bool, events: &mpsc::Sender<RoomEvent>) -> Self {
        let (open_tx, open) = watch::channel(false);
        // Weak: reading data never keeps the room's event stream open.
        let events = events.downgrade();
        let reader = dc.clone();
        tokio::spawn(async move {
            while let Some(event) = reader.poll().await {
                match event {
                    DataChannelEvent::OnOpen => {
                        open_tx.send_replace(true);
                    }
                    DataChannelEvent::OnMessage(message) => {
                        let Some(events) = events.upgrade() else {
                            break;
                        };
                        let event = match DataPacket::decode(message.data.freeze()) {
                            Ok(p) => RoomEvent::DataReceived {
                                participant_identity: p.sender_identity,
                                payload: Bytes::from(p.payload),
                                topic: p.topic,
                                reliable,
                            },
                            Err(e) => RoomEvent::Error(ClientError::Protocol(format!(
                                "undecodable data packet: {e}"
                            ))),
                        };
                        if events.try_send(event).is_err() {
                            tracing::warn!("room event queue full; data message dropped");
                        }
                    }
                    DataChannelEvent::OnClose => break,
                    _ => {}
                }
            }
            open_tx.send_replace(false);
        });
        Self { dc, open }
    }
}
