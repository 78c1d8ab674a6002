//! The worker's simulcast decisions, each housekeeping tick: which layer every video down track
//! forwards (`media::layers` decides, the munger switches on the next keyframe), what each
//! subscriber is told it receives, and which layers each publisher is asked to send
//! (dynacast).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{ConnEvent, ConnId, Worker};
use crate::bwe::allocator::Decision;
use crate::media::down_track::{DownTrack, PauseReason, StreamReport};
use crate::media::layers::{self, LayerRequest};
use crate::media::receiver::Receiver;

/// A publisher is asked to stop layers only after they have been unneeded this long, so a
/// subscriber flipping between sizes does not make its encoder restart layers each time.
const DYNACAST_DEBOUNCE: Duration = Duration::from_secs(1);

/// Points `dt` at the layer it should forward now and returns that layer's SSRC if it changed
/// (the caller asks for a keyframe). Pauses and resumes the munger as the request says.
pub(super) fn select_layer(r: &Receiver, dt: &mut DownTrack, now: Instant) -> Option<u32> {
    if !r.is_video() {
        // Audio has one stream; follow whatever the publisher sends last.
        let ssrc = r.layer_at(0)?.ssrc;
        return (dt.source != Some(ssrc)).then(|| {
            dt.set_source(ssrc);
            ssrc
        });
    }
    let requested = layers::wanted_rank(dt.request, r.sizes());
    let wanted = match (requested, dt.allocation) {
        (None, _) | (_, Some(Decision::Paused)) => {
            if !dt.munger.is_paused() {
                dt.munger.pause();
            }
            return None;
        }
        // The downlink allocator caps what the subscriber asked for.
        (Some(wanted), Some(Decision::Layer(cap))) => wanted.min(cap),
        (Some(wanted), _) => wanted,
    };
    if dt.munger.is_paused() {
        dt.munger.resume();
    }
    // Moving down, or off a layer that stopped, is immediate; moving up waits until the
    // better layer has settled, so a layer the publisher toggles does not drag subscribers
    // through a keyframe wait each time.
    let current = dt
        .munger
        .current_source()
        .and_then(|ssrc| r.rank_of(ssrc))
        .filter(|&rank| r.arriving(rank, now));
    let usable = |rank: usize| {
        r.arriving(rank, now) && (current.is_none_or(|c| rank <= c) || r.settled(rank, now))
    };
    let rank = layers::available_rank(wanted, usable, r.rank_count())
        // Nothing arriving: wait on the wanted layer (asking it for a keyframe).
        .or_else(|| dt.source.is_none().then_some(wanted))?;
    let ssrc = r.layer_at(rank).or_else(|| r.layer_at(0))?.ssrc;
    // Down because the link cannot carry the current layer (the allocation, not the request,
    // is below it): it stops at once. Its packets would only overflow the link (a freeze
    // anyway) and hold the lower layer's keyframe back.
    let link_cut = matches!(dt.allocation, Some(Decision::Layer(cap))
        if current.is_some_and(|c| cap < c && rank < c && requested.is_some_and(|w| cap < w)));
    (dt.source != Some(ssrc)).then(|| {
        if link_cut {
            dt.cut_to_source(ssrc);
        } else {
            dt.set_source(ssrc);
        }
        ssrc
    })
}

impl Worker {
    /// Applies a subscriber's layer request (kept for a down track not created yet).
    pub(super) fn request_layer(
        &mut self,
        subscriber: ConnId,
        track_sid: String,
        request: LayerRequest,
        pinned: bool,
    ) {
        let Some(c) = self.conns.get_mut(&subscriber) else {
            return;
        };
        if pinned {
            c.pinned.insert(track_sid.clone());
        } else {
            c.pinned.remove(&track_sid);
        }
        if let Some(dt) = c
            .down_track_by_sid
            .get(&track_sid)
            .and_then(|id| c.down_tracks.get_mut(id))
        {
            dt.request = request;
        }
        c.layer_requests.insert(track_sid, request);
    }

    /// Re-decides every negotiated video down track's layer.
    pub(super) fn select_layers(&mut self, now: Instant) {
        for r in self.receivers.values() {
            if !r.is_video() {
                continue;
            }
            for s in &r.subscribers {
                let Some(dt) = self
                    .conns
                    .get_mut(&s.conn)
                    .and_then(|c| c.down_tracks.get_mut(&s.down_track))
                else {
                    continue;
                };
                if dt.negotiated.is_none() {
                    continue;
                }
                let from = dt.munger.current_source();
                if let Some(to) = select_layer(r, dt, now) {
                    if from.is_some() {
                        self.stats.layer_switches.fetch_add(1, Ordering::Relaxed);
                    }
                    tracing::debug!(conn = s.conn.0, track = %dt.track_sid, ?from, to, "switching layer");
                }
            }
        }
    }

    /// Tells subscribers what they now receive, when it changed: after a switch completed
    /// (the new layer's keyframe went out) and when a track paused or resumed.
    pub(super) fn report_stream_states(&mut self) {
        for r in self.receivers.values() {
            if !r.is_video() {
                continue;
            }
            for s in &r.subscribers {
                let Some(c) = self.conns.get_mut(&s.conn) else {
                    continue;
                };
                let Some(dt) = c.down_tracks.get_mut(&s.down_track) else {
                    continue;
                };
                if dt.negotiated.is_none() {
                    continue;
                }
                let source = dt.munger.current_source();
                // Cut to a lower layer and waiting for its keyframe: not a pause to report,
                // the new layer's report follows once it flows.
                if source.is_none()
                    && !dt.munger.is_paused()
                    && dt.munger.target_source().is_some()
                    && dt.reported.is_some()
                {
                    continue;
                }
                let paused = dt.munger.is_paused() || source.is_none();
                let reason = if !paused {
                    PauseReason::None
                } else if dt.request == LayerRequest::Paused {
                    PauseReason::Requested
                } else if dt.allocation == Some(Decision::Paused) {
                    PauseReason::Bandwidth
                } else {
                    PauseReason::NoLayer
                };
                let report = StreamReport {
                    source,
                    paused,
                    reason,
                };
                // Nothing to say before the first packet went out, unless paused on purpose.
                if dt.reported == Some(report)
                    || (dt.reported.is_none() && source.is_none() && !dt.munger.is_paused())
                {
                    continue;
                }
                dt.reported = Some(report);
                let track_sid = dt.track_sid.clone();
                let rank = source.and_then(|ssrc| r.rank_of(ssrc)).unwrap_or(0);
                let size = r.sizes().get(rank).copied().unwrap_or_default();
                c.emit(ConnEvent::StreamState {
                    track_sid,
                    paused: report.paused,
                    rid: r.rids().get(rank).cloned().unwrap_or_default(),
                    rank,
                    layers: r.rank_count(),
                    width: size.width,
                    height: size.height,
                    reason,
                });
            }
        }
    }

    /// Dynacast: asks each simulcast publisher to send only the layers up to the best one a
    /// subscriber wants (at once when more are needed, after [`DYNACAST_DEBOUNCE`] when fewer).
    pub(super) fn update_dynacast(&mut self, now: Instant) {
        for r in self.receivers.values_mut() {
            if !r.is_video() || !r.is_simulcast() {
                continue;
            }
            let conns = &self.conns;
            let needed = layers::highest_needed(r.subscribers.iter().map(|s| {
                conns
                    .get(&s.conn)
                    .and_then(|c| c.down_tracks.get(&s.down_track))
                    .and_then(|dt| layers::wanted_rank(dt.request, r.sizes()))
            }));
            let told = r.dynacast.told.unwrap_or(r.rank_count() - 1);
            if needed >= told {
                r.dynacast.lower_since = None;
                if needed == told {
                    continue;
                }
            } else {
                let since = *r.dynacast.lower_since.get_or_insert(now);
                if now.saturating_duration_since(since) < DYNACAST_DEBOUNCE {
                    continue;
                }
                r.dynacast.lower_since = None;
            }
            r.dynacast.told = Some(needed);
            let layers = r
                .rids()
                .iter()
                .enumerate()
                .map(|(rank, rid)| (rid.clone(), rank <= needed))
                .collect();
            tracing::debug!(conn = r.publisher.0, track = %r.track_id, needed, "dynacast");
            if let Some(c) = self.conns.get(&r.publisher) {
                c.emit(ConnEvent::SubscribedLayers {
                    track_id: r.track_id.clone(),
                    layers,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::down_track::Negotiated;
    use crate::media::extensions::ExtensionMap;
    use crate::media::munger::{IncomingPacket, RtpMunger};
    use crate::media::{DownTrackId, ReceiverId};
    use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RtpCodecKind};

    const Q: u32 = 1;
    const H: u32 = 2;
    const F: u32 = 3;

    fn receiver() -> Receiver {
        let mut r = Receiver::new(
            ReceiverId(1),
            ConnId(1),
            "t".into(),
            Default::default(),
            RtpCodecKind::Video,
            RTCRtpCodec {
                mime_type: "video/VP8".into(),
                clock_rate: 90_000,
                ..Default::default()
            },
            vec![],
            Duration::from_millis(500),
        );
        r.set_sdp_rids(vec!["q".into(), "h".into(), "f".into()]);
        for (ssrc, rid) in [(Q, "q"), (H, "h"), (F, "f")] {
            r.add_layer(ssrc, Some(rid.into()));
        }
        r
    }

    fn down_track() -> DownTrack {
        let mut dt = DownTrack::new(
            DownTrackId(1),
            "TR_x".into(),
            ReceiverId(1),
            Default::default(),
            99,
            RtpMunger::new(100, 90_000, true),
        );
        dt.negotiated = Some(Negotiated {
            payload_type: 96,
            extensions: ExtensionMap::drop_all(),
        });
        dt
    }

    /// Media of `ssrcs` arriving every 33 ms over `[from, to]`.
    fn feed(r: &mut Receiver, ssrcs: &[u32], from: Instant, to: Instant) {
        let mut t = from;
        while t <= to {
            for &ssrc in ssrcs {
                r.layer_mut(ssrc).unwrap().saw_media(t);
            }
            t += Duration::from_millis(33);
        }
    }

    /// The switch completes: a keyframe start of `ssrc` goes through the munger.
    fn keyframe(dt: &mut DownTrack, ssrc: u32, now: Instant) {
        dt.munger.process(&IncomingPacket {
            source: ssrc,
            seq: 1,
            timestamp: 1,
            marker: true,
            payload_len: 100,
            keyframe_start: true,
            arrival: now,
        });
    }

    #[test]
    fn requests_pick_layers_and_lost_layers_fall_back() {
        let ms = Duration::from_millis;
        let t0 = Instant::now();
        let mut r = receiver();
        let mut dt = down_track();
        feed(&mut r, &[Q, H, F], t0, t0 + ms(1500));
        let now = t0 + ms(1500);
        // No request: the best layer.
        assert_eq!(select_layer(&r, &mut dt, now), Some(F));
        keyframe(&mut dt, F, now);
        dt.request = LayerRequest::Low;
        assert_eq!(select_layer(&r, &mut dt, now), Some(Q));
        keyframe(&mut dt, Q, now);
        dt.request = LayerRequest::Size {
            width: 600,
            height: 300,
        };
        // Sizes unknown (none declared) and three layers: 600 wide needs the best.
        assert_eq!(select_layer(&r, &mut dt, now), Some(F));
        keyframe(&mut dt, F, now);
        assert_eq!(select_layer(&r, &mut dt, now), None, "no change");
        // The publisher stops f: down to h once f is stale.
        feed(&mut r, &[Q, H], now, now + ms(600));
        let later = now + ms(600);
        assert_eq!(select_layer(&r, &mut dt, later), Some(H));
        keyframe(&mut dt, H, later);
        // f comes back: followed only after it settled.
        feed(&mut r, &[Q, H, F], later, later + ms(500));
        assert_eq!(select_layer(&r, &mut dt, later + ms(500)), None);
        feed(&mut r, &[Q, H, F], later + ms(533), later + ms(1100));
        assert_eq!(select_layer(&r, &mut dt, later + ms(1100)), Some(F));
    }

    #[test]
    fn a_link_cut_stops_the_old_layer_at_once_a_request_does_not() {
        let t0 = Instant::now();
        let mut r = receiver();
        let mut dt = down_track();
        feed(&mut r, &[Q, H, F], t0, t0 + Duration::from_millis(100));
        let now = t0 + Duration::from_millis(100);
        select_layer(&r, &mut dt, now);
        keyframe(&mut dt, F, now);
        // The subscriber asks for less (and the allocation follows the request): f flows
        // until h's keyframe (no freeze).
        dt.request = LayerRequest::Medium;
        dt.allocation = Some(Decision::Layer(1));
        assert_eq!(select_layer(&r, &mut dt, now), Some(H));
        assert_eq!(dt.munger.current_source(), Some(F));
        keyframe(&mut dt, H, now);
        // The allocation follows the request (h): no cut.
        dt.allocation = Some(Decision::Layer(1));
        assert_eq!(select_layer(&r, &mut dt, now), None);
        // The allocator caps it below what it forwards and what is asked: h stops now.
        dt.allocation = Some(Decision::Layer(0));
        assert_eq!(select_layer(&r, &mut dt, now), Some(Q));
        assert_eq!(dt.munger.current_source(), None);
        assert_eq!(dt.munger.target_source(), Some(Q));
    }

    #[test]
    fn paused_requests_pause_the_munger() {
        let t0 = Instant::now();
        let mut r = receiver();
        let mut dt = down_track();
        feed(&mut r, &[Q, H, F], t0, t0 + Duration::from_millis(100));
        let now = t0 + Duration::from_millis(100);
        select_layer(&r, &mut dt, now);
        keyframe(&mut dt, F, now);
        dt.request = LayerRequest::Paused;
        assert_eq!(select_layer(&r, &mut dt, now), None);
        assert!(dt.munger.is_paused());
        dt.request = LayerRequest::Medium;
        assert_eq!(select_layer(&r, &mut dt, now), Some(H));
        assert!(!dt.munger.is_paused());
        assert!(dt.waiting_for_keyframe());
    }

    #[test]
    fn nothing_arriving_waits_on_the_wanted_layer() {
        let r = receiver();
        let mut dt = down_track();
        dt.request = LayerRequest::Medium;
        assert_eq!(select_layer(&r, &mut dt, Instant::now()), Some(H));
    }
}
