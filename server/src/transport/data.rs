//! The server side of a participant's data channels. The client opens `_reliable` (ordered,
//! retransmitted) and `_lossy` (unordered, no retransmissions); the worker learns their ids
//! when they open, hands every message that arrives to the participant's session
//! ([`ConnEvent::Data`]), and writes the packets the room relays. The worker never decodes a
//! packet: the room layer does (`prism_proto::signal::DataPacket`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use rtc::data_channel::{RTCDataChannelId, RTCDataChannelMessage};
use rtc::peer_connection::event::RTCDataChannelEvent;

use super::ConnEvent;
use super::connection::Connection;

pub const RELIABLE_LABEL: &str = "_reliable";
pub const LOSSY_LABEL: &str = "_lossy";

/// Inbound messages larger than this are dropped (browsers send at most 16 KiB unfragmented).
const MAX_INBOUND: usize = 64 * 1024;
/// A channel with this much unsent data gets no more until it drains: a slow receiver loses
/// messages instead of growing the server's memory.
const MAX_OUTSTANDING: usize = 1024 * 1024;

/// The ids of a connection's two data channels, once open.
#[derive(Debug, Default)]
pub(crate) struct DataChannels {
    reliable: Option<RTCDataChannelId>,
    lossy: Option<RTCDataChannelId>,
}

/// Data channel counters of a worker.
#[derive(Debug, Default)]
pub struct DataStats {
    pub messages_out: AtomicU64,
    /// Relayed messages not written: the channel was not open, too far behind, or refused it.
    pub messages_dropped: AtomicU64,
}

pub(crate) fn on_channel_event(c: &mut Connection, event: RTCDataChannelEvent) {
    tracing::trace!(conn = c.id.0, ?event, "data channel event");
    match event {
        RTCDataChannelEvent::OnOpen(id) => {
            let label = c.pc.data_channel(id).map(|dc| dc.label().to_owned());
            tracing::debug!(conn = c.id.0, id, ?label, "data channel open");
            match label.as_deref() {
                Some(RELIABLE_LABEL) => c.data_channels.reliable = Some(id),
                Some(LOSSY_LABEL) => c.data_channels.lossy = Some(id),
                other => {
                    tracing::debug!(conn = c.id.0, label = ?other, "unknown data channel ignored")
                }
            }
        }
        RTCDataChannelEvent::OnClose(id) => {
            let channels = &mut c.data_channels;
            if channels.reliable == Some(id) {
                channels.reliable = None;
            }
            if channels.lossy == Some(id) {
                channels.lossy = None;
            }
        }
        _ => {}
    }
}

pub(crate) fn on_message(c: &mut Connection, channel: RTCDataChannelId, m: RTCDataChannelMessage) {
    tracing::trace!(
        conn = c.id.0,
        channel,
        len = m.data.len(),
        "data channel message"
    );
    let channels = &c.data_channels;
    let reliable = if channels.reliable == Some(channel) {
        true
    } else if channels.lossy == Some(channel) {
        false
    } else {
        tracing::debug!(
            conn = c.id.0,
            channel,
            "message on an unknown data channel ignored"
        );
        return;
    };
    if m.data.len() > MAX_INBOUND {
        tracing::debug!(
            conn = c.id.0,
            len = m.data.len(),
            "oversized data message dropped"
        );
        return;
    }
    c.emit(ConnEvent::Data {
        reliable,
        payload: m.data.freeze(),
    });
}

/// Writes one relayed packet on the connection's channel of that kind (lossy falls back to
/// reliable when the client has no lossy channel).
pub(crate) fn send(
    c: &mut Connection,
    reliable: bool,
    payload: &Bytes,
    now: Instant,
    stats: &DataStats,
) {
    let channels = &c.data_channels;
    let id = if reliable {
        channels.reliable
    } else {
        channels.lossy.or(channels.reliable)
    };
    let written = match id.and_then(|id| c.pc.data_channel(id)) {
        None => {
            tracing::debug!(conn = c.id.0, reliable, ?id, channels = ?c.data_channels, "no open data channel; message dropped");
            false
        }
        Some(dc) if dc.outstanding_bytes() >= MAX_OUTSTANDING => {
            tracing::debug!(
                conn = c.id.0,
                reliable,
                "data channel backlog full; message dropped"
            );
            false
        }
        Some(mut dc) => match dc.send(now, BytesMut::from(&payload[..])) {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!(conn = c.id.0, reliable, error = %e, "data channel refused a message");
                false
            }
        },
    };
    let counter = if written {
        &stats.messages_out
    } else {
        &stats.messages_dropped
    };
    counter.fetch_add(1, Ordering::Relaxed);
}
