//! What each connection of a worker publishes and receives, for the live dashboard: built on
//! request (`WorkerCommand::Details`, about once a second per viewer), never on the media path.
//! Rates are left to the reader, who divides byte counts over its own polling interval.

use std::time::Instant;

use serde::Serialize;

use super::Worker;

/// One peer connection: its published tracks, its down tracks, and its downlink.
#[derive(Debug, Clone, Serialize)]
pub struct ConnDetail {
    pub conn: u64,
    pub connected: bool,
    pub rtt_ms: Option<u64>,
    /// The subscriber's downlink estimate and what the allocator gave its tracks (None while
    /// no estimate runs: `bwe.enabled = false`, or nothing subscribed yet).
    pub estimate_bps: Option<u64>,
    pub allocated_bps: Option<u64>,
    pub published: Vec<PublishedDetail>,
    pub subscribed: Vec<DownTrackDetail>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PublishedDetail {
    /// The publisher's id for the track (its `cid`).
    pub track_id: String,
    pub kind: &'static str,
    pub mime_type: String,
    pub subscribers: usize,
    /// Lowest first.
    pub layers: Vec<LayerDetail>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LayerDetail {
    pub rid: String,
    pub ssrc: u32,
    pub packets: u64,
    pub bytes: u64,
    /// Media arrived within the last 500 ms.
    pub arriving: bool,
    pub width: u32,
    pub height: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct DownTrackDetail {
    pub track_sid: String,
    /// The layer forwarded (its RID, "" without simulcast); None before the first packet.
    pub layer: Option<String>,
    pub paused: bool,
    pub packets: u64,
    pub bytes: u64,
    pub dropped: u64,
    /// From the subscriber's latest receiver report, 0..1.
    pub loss: Option<f64>,
    pub rtt_ms: Option<u64>,
}

impl Worker {
    pub(super) fn details(&self, now: Instant) -> Vec<ConnDetail> {
        let ms = |d: std::time::Duration| d.as_millis() as u64;
        self.conns
            .iter()
            .map(|(id, c)| {
                let published = c
                    .published
                    .iter()
                    .filter_map(|(track_id, r)| self.receivers.get(r).map(|r| (track_id, r)))
                    .map(|(track_id, r)| {
                        let mut layers: Vec<(usize, LayerDetail)> = r
                            .layers
                            .iter()
                            .map(|l| {
                                let rank = r.rank_of(l.ssrc).unwrap_or(0);
                                let size = r.sizes().get(rank).copied().unwrap_or_default();
                                let rid = l.rid.clone().unwrap_or_default();
                                let detail = LayerDetail {
                                    rid,
                                    ssrc: l.ssrc,
                                    packets: l.packets,
                                    bytes: l.bytes,
                                    arriving: l.arriving(now),
                                    width: size.width,
                                    height: size.height,
                                };
                                (rank, detail)
                            })
                            .collect();
                        layers.sort_by_key(|(rank, _)| *rank);
                        PublishedDetail {
                            track_id: track_id.clone(),
                            kind: if r.is_video() { "video" } else { "audio" },
                            mime_type: r.rtp_codec.mime_type.clone(),
                            subscribers: r.subscribers.len(),
                            layers: layers.into_iter().map(|(_, l)| l).collect(),
                        }
                    })
                    .collect();
                let subscribed = c
                    .down_tracks
                    .values()
                    .map(|dt| {
                        let receiver = self.receivers.get(&dt.receiver);
                        let source = dt.munger.current_source();
                        let layer = source.map(|ssrc| {
                            receiver
                                .and_then(|r| r.layer(ssrc))
                                .and_then(|l| l.rid.clone())
                                .unwrap_or_default()
                        });
                        DownTrackDetail {
                            track_sid: dt.track_sid.clone(),
                            layer,
                            paused: dt.munger.is_paused(),
                            packets: dt.packets_sent,
                            bytes: dt.bytes_sent,
                            dropped: dt.dropped,
                            loss: dt.fraction_lost.map(|f| f64::from(f) / 256.0),
                            rtt_ms: dt.rtt.map(ms),
                        }
                    })
                    .collect();
                // The downlink allocator's last tick, once it has run for this subscriber.
                let downlink =
                    (c.link.is_some() && c.downlink.estimate_bps > 0).then_some(&c.downlink);
                ConnDetail {
                    conn: id.0,
                    connected: c.connected,
                    rtt_ms: c.rtt.map(ms),
                    estimate_bps: downlink.map(|d| d.estimate_bps),
                    allocated_bps: downlink.map(|d| d.allocated_bps),
                    published,
                    subscribed,
                }
            })
            .collect()
    }
}
