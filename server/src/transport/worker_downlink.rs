//! The worker's side of downlink congestion control, each housekeeping tick and per
//! connection: read the estimate, run the allocator over the connection's down tracks (its
//! decisions cap `select_layer`), start probes when the subscriber wants more than the
//! estimate allows, set the pacing rate, and tell the subscriber its connection quality.

use std::time::{Duration, Instant};

use super::{ConnEvent, Worker};
use crate::bwe::allocator::{
    self, Decision, Hysteresis, PRIORITY_NORMAL, PRIORITY_PINNED, PRIORITY_SPEAKER, VideoDemand,
};
use crate::bwe::estimator::Cause;
use crate::bwe::pacer::PADDING_PACKET_SIZE;
use crate::bwe::probe::{self, PROBE_DURATION, ProbeCluster, ProbeController};
use crate::bwe::quality::{self, Quality, QualityReport};
use crate::media::DownTrackId;
use crate::media::layers;
use std::sync::atomic::Ordering;

/// Without feedback this long the estimate is not trusted: no limit is applied (a client that
/// never sends transport-wide feedback or REMB gets what it asks for).
const FEEDBACK_FRESH: Duration = Duration::from_secs(5);
/// Feedback silent this long while media flows: the quality grade is "lost".
const FEEDBACK_LOST: Duration = Duration::from_secs(3);
/// The pacer runs this much faster than the estimate, so a keyframe drains in a fraction of a
/// second without arriving as one burst. Not more: an access link with a shallow buffer
/// (100 ms) overflows when a 40 kB keyframe arrives at 1.5 times its rate, and the keyframe
/// lost is the one every later frame needs (the 600 kbit/s browser test saw exactly that).
const PACING_FACTOR: f64 = 1.25;
const MIN_PACING_BPS: f64 = 300_000.0;
const QUALITY_INTERVAL: Duration = Duration::from_secs(2);
/// How long pacing stays at the estimate after the link pushed back (and layers above the
/// lowest keep SETTLING_RESERVE more of it free).
const CONGESTED_PACING: Duration = Duration::from_secs(2);
const SETTLING_RESERVE: f64 = 0.25;
/// Fewest padding packets in a probe, unless they would take longer than
/// MAX_PROBE_DURATION at the probe's padding rate.
const MIN_PROBE_PACKETS: f64 = 20.0;
const MAX_PROBE_DURATION: Duration = Duration::from_millis(400);

/// Per connection: the allocator's memory and what the last tick decided.
#[derive(Debug, Default)]
pub(crate) struct Downlink {
    probes: ProbeController,
    hysteresis: Hysteresis,
    /// Video down tracks in allocation order (by id, so stable), with the inputs and outputs.
    order: Vec<DownTrackId>,
    demands: Vec<VideoDemand>,
    target: Vec<Decision>,
    applied: Vec<Decision>,
    probe_target: Option<(f64, Instant)>,
    last_decrease: Option<Instant>,
    /// Reused for the probe's padding packets.
    padding_buf: Vec<rtc::rtp::Packet>,
    last_estimate: f64,
    pub estimate_bps: u64,
    pub allocated_bps: u64,
    pub wanted_bps: u64,
    pub paused_tracks: u32,
    last_quality: Option<Quality>,
    next_quality_at: Option<Instant>,
}

impl Worker {
    /// The last allocation of `conn`: (estimate, allocated, wanted, paused video tracks).
    pub(in crate::transport) fn downlink(
        &self,
        conn: super::ConnId,
    ) -> Option<(u64, u64, u64, u32)> {
        let dl = &self.conns.get(&conn)?.downlink;
        Some((
            dl.estimate_bps,
            dl.allocated_bps,
            dl.wanted_bps,
            dl.paused_tracks,
        ))
    }

    pub(super) fn allocate_downlinks(&mut self, now: Instant) {
        for r in self.receivers.values_mut() {
            r.sample_rates(now);
        }
        let speaking: Vec<super::ConnId> = self
            .conns
            .values()
            .filter(|c| c.speaking)
            .map(|c| c.id)
            .collect();
        let mut dirty = Vec::new();
        for c in self.conns.values_mut() {
            let Some(link) = c.link.clone() else {
                continue;
            };
            if !c.connected || c.down_tracks.is_empty() {
                continue;
            }
            let (estimate, last_signal, probe_result, cause, loss, limit_seen) = {
                let mut est = link.estimator();
                if let Some(rtt) = c.rtt {
                    est.set_rtt(rtt);
                }
                (
                    est.estimate(),
                    est.last_signal(),
                    est.take_probe_result(),
                    est.cause(),
                    est.loss().unwrap_or(0.0) as f32,
                    est.limit_seen(),
                )
            };
            let dl = &mut c.downlink;
            let fresh =
                last_signal.is_some_and(|at| now.saturating_duration_since(at) < FEEDBACK_FRESH);
            if !fresh {
                for dt in c.down_tracks.values_mut() {
                    dt.allocation = None;
                }
                link.set_pacing_bps(0);
                dl.estimate_bps = 0;
                continue;
            }

            // The allocator's inputs, video down tracks in id order.
            let mut ids: Vec<DownTrackId> = c
                .down_tracks
                .iter()
                .filter(|(_, dt)| dt.negotiated.is_some())
                .map(|(id, _)| *id)
                .collect();
            ids.sort_unstable_by_key(|id| id.0);
            let mut audio_bps = 0;
            let mut order = Vec::with_capacity(ids.len());
            dl.demands.clear();
            let mut wanted_bps = 0;
            for id in ids {
                let dt = &c.down_tracks[&id];
                let Some(r) = self.receivers.get(&dt.receiver) else {
                    continue;
                };
                if !r.is_video() {
                    if r.arriving(0, now) {
                        audio_bps += r.bitrate(0);
                    }
                    continue;
                }
                let wanted = layers::wanted_rank(dt.request, r.sizes());
                let layer_rates: Vec<Option<u64>> = (0..r.rank_count())
                    .map(|k| r.arriving(k, now).then(|| r.bitrate(k)))
                    .collect();
                let priority = if dt.screen_share || c.pinned.contains(&dt.track_sid) {
                    PRIORITY_PINNED
                } else if speaking.contains(&r.publisher) {
                    PRIORITY_SPEAKER
                } else {
                    PRIORITY_NORMAL
                };
                let demand = VideoDemand {
                    priority,
                    wanted,
                    layers: layer_rates,
                    current: dt.munger.current_source().and_then(|s| r.rank_of(s)),
                };
                wanted_bps += demand
                    .best_wanted()
                    .and_then(|k| demand.layers[k])
                    .unwrap_or(0);
                dl.demands.push(demand);
                order.push(id);
            }
            wanted_bps += audio_bps;
            // Until the link has pushed back once, the estimate is only a starting guess:
            // nothing is capped for it, nothing waits on hysteresis, nothing is probed.
            let decreased =
                estimate < dl.last_estimate * 0.95 && matches!(cause, Cause::Overuse | Cause::Loss);
            if decreased {
                dl.last_decrease = Some(now);
            }
            // Right after the link pushed back, part of it still carries the backlog and the
            // retransmissions of what was lost: layers above the lowest keep more of the
            // estimate free, so a cut lands on a layer that fits at once rather than on one
            // more step down a second later (each step waits for a keyframe).
            let settling = dl
                .last_decrease
                .is_some_and(|at| now.saturating_duration_since(at) < CONGESTED_PACING);
            let budget = if limit_seen {
                estimate as u64
            } else {
                u64::MAX / 4
            };
            let allocated = allocator::allocate_with_reserve(
                budget,
                audio_bps,
                &dl.demands,
                &mut dl.target,
                if settling { SETTLING_RESERVE } else { 0.0 },
            );
            if order != dl.order {
                dl.applied.clear();
                dl.order = order;
            }
            let changed = if limit_seen {
                dl.hysteresis.apply(now, &dl.target, &mut dl.applied)
            } else {
                let changed = dl.applied != dl.target;
                dl.applied.clone_from(&dl.target);
                changed
            };
            let mut paused = 0;
            let mut below_wanted = false;
            let mut allocated_bps = audio_bps;
            // The cheapest upgrade the allocation could make next: what a probe must show.
            let mut next_increment: Option<u64> = None;
            for (i, id) in dl.order.iter().enumerate() {
                let Some(dt) = c.down_tracks.get_mut(id) else {
                    continue;
                };
                let decision = dl.applied[i];
                if decision == Decision::Paused {
                    paused += 1;
                    if dt.allocation != Some(Decision::Paused) {
                        self.stats.bwe_pauses.fetch_add(1, Ordering::Relaxed);
                    }
                }
                let demand = &dl.demands[i];
                if let Decision::Layer(rank) = decision {
                    allocated_bps += demand.layers[rank].unwrap_or(0);
                }
                if let Some(best) = demand.best_wanted() {
                    below_wanted |= !matches!(decision, Decision::Layer(r) if r >= best);
                    let (from_rank, from_bps) = match decision {
                        Decision::Layer(r) => (r + 1, demand.layers[r].unwrap_or(0)),
                        _ => (0, 0),
                    };
                    let up = (from_rank..=best).find_map(|k| demand.layers[k]);
                    if let Some(up) = up {
                        let inc = up.saturating_sub(from_bps);
                        next_increment = Some(next_increment.map_or(inc, |n| n.min(inc)));
                    }
                }
                dt.allocation = Some(decision);
            }
            if changed {
                self.stats
                    .bwe_allocation_changes
                    .fetch_add(1, Ordering::Relaxed);
                tracing::debug!(
                    conn = c.id.0,
                    estimate,
                    allocated_bps,
                    wanted_bps,
                    target_bps = allocated,
                    decisions = ?dl.applied,
                    "downlink allocation"
                );
            }

            // Probing: the estimate must be shown before the allocator may use more.
            if let Some(result) = probe_result {
                dl.probes.on_result(&result);
                dl.probe_target = None;
                tracing::debug!(
                    conn = c.id.0,
                    bps = result.bps,
                    target = result.target_bps,
                    "probe result"
                );
            }
            if decreased {
                dl.probes.on_decrease(now);
                tracing::debug!(
                    conn = c.id.0,
                    from = dl.last_estimate,
                    to = estimate,
                    ?cause,
                    "estimate decreased"
                );
            }
            dl.last_estimate = estimate;
            if below_wanted
                && limit_seen
                && dl.probe_target.is_none()
                && let Some(target) = dl.probes.poll_step(
                    now,
                    estimate,
                    // An upgrade must leave the reserve free: that is what a probe must show.
                    wanted_bps as f64 / (1.0 - allocator::UPGRADE_RESERVE),
                    (allocated_bps + next_increment.unwrap_or(0)) as f64
                        / (1.0 - allocator::UPGRADE_RESERVE),
                )
            {
                // Padding at (target - media) for the probe's duration, on the first video
                // track between frames; the pacer spreads it at the probe rate.
                let padding_bps = (target - allocated_bps as f64).max(target * 0.3);
                let bytes = padding_bps * PROBE_DURATION.as_secs_f64() / 8.0;
                // At least MIN_PROBE_PACKETS: a small probe is mostly spent inside a token
                // bucket's burst (a 6 kB bucket took half of a 12-packet probe and read a
                // 600 kbit/s link as 700). Those leave at the same rate, for longer.
                // Not longer than MAX_PROBE_DURATION, though.
                let fits = (padding_bps * MAX_PROBE_DURATION.as_secs_f64()
                    / 8.0
                    / PADDING_PACKET_SIZE as f64)
                    .floor();
                // Never fewer than a cluster needs to measure anything, whatever the rate:
                // at a low estimate (every video track paused) a 6-packet probe always
                // failed, and the track stayed paused.
                let n = (bytes / PADDING_PACKET_SIZE as f64)
                    .ceil()
                    .max(MIN_PROBE_PACKETS.min(fits))
                    .max(f64::from(probe::MIN_PACKETS + 2))
                    .clamp(1.0, 500.0) as u16;
                let probe_duration = Duration::from_secs_f64(
                    f64::from(n) * PADDING_PACKET_SIZE as f64 * 8.0 / padding_bps,
                )
                .max(PROBE_DURATION);
                let mut packets = std::mem::take(&mut dl.padding_buf);
                let track = dl.order.iter().find_map(|id| {
                    let dt = c.down_tracks.get_mut(id)?;
                    dt.padding(n, &mut packets)?;
                    Some((dt.sender, dt.ssrc))
                });
                if let Some((sender, ssrc)) = track {
                    let first_seq = packets.first().map_or(0, |p| p.header.sequence_number);
                    link.estimator().start_probe(
                        ProbeCluster::new(now, target).with_padding(ssrc, first_seq, n),
                    );
                    if let Some(mut s) = c.pc.rtp_sender(sender) {
                        for p in packets.drain(..) {
                            let _ = s.write_rtp(now, p);
                        }
                    }
                    dl.probe_target = Some((target, now + probe_duration));
                    self.stats.bwe_probes.fetch_add(1, Ordering::Relaxed);
                    self.stats
                        .probe_packets
                        .fetch_add(u64::from(n), Ordering::Relaxed);
                    dirty.push(c.id);
                    tracing::debug!(conn = c.id.0, estimate, target, wanted_bps, n, "probing");
                } else {
                    // Mid-frame everywhere: the controller lets the next tick try again.
                    dl.probes.retry_now();
                }
                packets.clear();
                dl.padding_buf = packets;
            }
            let probing = dl.probe_target.filter(|(_, until)| now < *until);
            // Right after the link pushed back, pace at the estimate itself: what the allocator
            // cut still flows until the lower layer's keyframe, and it should queue here
            // (audio first) rather than overflow the bottleneck (audio lost with it).
            let congested = dl
                .last_decrease
                .is_some_and(|at| now.saturating_duration_since(at) < CONGESTED_PACING);
            let factor = if congested { 1.0 } else { PACING_FACTOR };
            let pacing = (estimate * factor)
                .max(allocated_bps as f64 * 1.2)
                .max(probing.map_or(0.0, |(target, _)| target * 1.1))
                .max(MIN_PACING_BPS);
            link.set_pacing_bps(pacing as u64);
            self.stats.pacer_dropped.fetch_add(
                link.pacer_dropped.swap(0, Ordering::Relaxed),
                Ordering::Relaxed,
            );

            dl.estimate_bps = estimate as u64;
            dl.allocated_bps = allocated_bps;
            dl.wanted_bps = wanted_bps;
            dl.paused_tracks = paused;
            let lost =
                last_signal.is_none_or(|at| now.saturating_duration_since(at) > FEEDBACK_LOST);
            let grade = quality::grade(lost, paused, below_wanted, loss);
            let due =
                dl.last_quality != Some(grade) || dl.next_quality_at.is_none_or(|at| now >= at);
            if due {
                dl.last_quality = Some(grade);
                dl.next_quality_at = Some(now + QUALITY_INTERVAL);
                let report = QualityReport {
                    quality: grade,
                    estimate_bps: dl.estimate_bps,
                    allocated_bps,
                    wanted_bps,
                    loss,
                    rtt_ms: c.rtt.map_or(0, |r| r.as_millis() as u32),
                    paused_tracks: paused,
                };
                c.emit(ConnEvent::ConnectionQuality(report));
                // Sampled with the report (every 2 s per subscriber) for the histograms.
                self.stats.histograms.record_estimate(report.estimate_bps);
                self.stats
                    .histograms
                    .record_allocation(report.allocated_bps);
            }
        }
        for id in dirty {
            self.mark_dirty(id);
        }
    }
}
