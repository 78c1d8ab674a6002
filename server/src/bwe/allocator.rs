//! The stream allocator: how one subscriber's estimate is shared among the tracks it receives.
//!
//! [`allocate`] is a pure function of (budget, audio, video tracks with their priorities,
//! requests and measured layer bitrates):
//! 1. audio first: its measured rate comes off the top and is never cut;
//! 2. every wanted video track gets its lowest layer, in priority order, while it fits;
//!    a track that does not fit is paused (and its subscriber told), never audio;
//! 3. upgrades in priority order, each track to the best layer (up to the wanted one) that the
//!    rest of the budget pays for; going above the layer a track has now must also leave
//!    [`UPGRADE_RESERVE`] of the budget free, so an estimate that wobbles does not flip it;
//! 4. a pinned track (or screen share) still below its wanted layer may take the budget of
//!    lower-priority tracks, which are then paused.
//!
//! [`Hysteresis`] wraps it per subscriber: downgrades apply at once (the link is full now), but
//! upgrades wait a minimum time on the current layer and a hold after a downgrade that doubles
//! when the link keeps pushing back, so a stable cap does not make the layers flap.

use std::time::{Duration, Instant};

/// Priority classes, highest first.
pub const PRIORITY_PINNED: u8 = 2;
pub const PRIORITY_SPEAKER: u8 = 1;
pub const PRIORITY_NORMAL: u8 = 0;

/// How far a track's lowest layer may exceed what is left of the budget before it is paused.
pub const LOWEST_LAYER_SLACK: f64 = 0.2;

/// Fraction of the budget an upgrade must leave free.
pub const UPGRADE_RESERVE: f64 = 0.2;

/// One video track as the allocator sees it.
#[derive(Debug, Clone)]
pub struct VideoDemand {
    pub priority: u8,
    /// Highest rank the subscriber wants; None when it paused the track itself.
    pub wanted: Option<usize>,
    /// Bitrate per rank, lowest first; None for a layer not arriving now.
    pub layers: Vec<Option<u64>>,
    /// The rank forwarded now, if any.
    pub current: Option<usize>,
}

impl VideoDemand {
    /// The best arriving rank up to the wanted one; None when paused by request or nothing
    /// arrives there.
    pub fn best_wanted(&self) -> Option<usize> {
        let wanted = self.wanted?;
        (0..=wanted.min(self.layers.len().saturating_sub(1)))
            .rev()
            .find(|&r| self.layers[r].is_some())
    }
}

/// What a video track gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Forward up to this rank.
    Layer(usize),
    /// Paused: the link cannot carry it next to the tracks before it.
    Paused,
    /// The subscriber does not want it (paused by request) or no layer arrives.
    Off,
}

/// Shares `budget` (bits per second) among `tracks` after `audio_bps`. Writes one decision
/// per track into `out` (cleared first) and returns the bits per second allocated, audio
/// included.
pub fn allocate(
    budget: u64,
    audio_bps: u64,
    tracks: &[VideoDemand],
    out: &mut Vec<Decision>,
) -> u64 {
    allocate_with_reserve(budget, audio_bps, tracks, out, 0.0)
}

/// [`allocate`], keeping `settling_reserve` of the budget free for any layer above a track's
/// lowest, the current one included (while the link settles after a decrease), on top of
/// [`UPGRADE_RESERVE`] for layers above the current one.
pub fn allocate_with_reserve(
    budget: u64,
    audio_bps: u64,
    tracks: &[VideoDemand],
    out: &mut Vec<Decision>,
    settling_reserve: f64,
) -> u64 {
    out.clear();
    out.resize(tracks.len(), Decision::Off);
    let mut remaining = budget.saturating_sub(audio_bps) as i64;
    let keep = (budget as f64 * settling_reserve) as i64;
    let reserve = (budget as f64 * UPGRADE_RESERVE) as i64 + keep;
    // Priority order, stable by position (the caller lists tracks in a stable order).
    let mut order: Vec<usize> = (0..tracks.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(tracks[i].priority));
    let cost = |i: usize, rank: usize| tracks[i].layers[rank].unwrap_or(0) as i64;

    // 2. The lowest arriving layer of every wanted track.
    for &i in &order {
        let t = &tracks[i];
        if t.wanted.is_none() {
            continue;
        }
        let Some(lowest) = t.layers.iter().position(Option::is_some) else {
            continue; // nothing arriving: Off, the forwarder waits for a layer
        };
        // A track's lowest layer stays on while it is at most LOWEST_LAYER_SLACK short: the
        // pacer absorbs a small excess (audio first), while a pause is certain loss of the
        // picture, and an estimate a few per cent low is common after a loss decrease.
        if cost(i, lowest) as f64 * (1.0 - LOWEST_LAYER_SLACK) <= remaining as f64 {
            remaining -= cost(i, lowest);
            out[i] = Decision::Layer(lowest);
        } else {
            out[i] = Decision::Paused;
        }
    }

    // 3. Upgrades by priority.
    for &i in &order {
        upgrade(tracks, i, out, &mut remaining, (reserve, keep), &cost);
    }

    // 4. Pinned tracks below their wanted layer take from lower priorities.
    for (pos, &i) in order.iter().enumerate() {
        let t = &tracks[i];
        if t.priority < PRIORITY_PINNED || at_best(t, out[i]) {
            continue;
        }
        let victims: Vec<usize> = order[pos + 1..]
            .iter()
            .rev()
            .copied()
            .filter(|&v| tracks[v].priority < t.priority && matches!(out[v], Decision::Layer(_)))
            .collect();
        let before = out[i];
        let saved = out.clone();
        let saved_remaining = remaining;
        for v in victims {
            if let Decision::Layer(r) = out[v] {
                remaining += cost(v, r);
                out[v] = Decision::Paused;
            }
            if out[i] == Decision::Paused
                && let Some(lowest) = t.layers.iter().position(Option::is_some)
                && cost(i, lowest) <= remaining
            {
                remaining -= cost(i, lowest);
                out[i] = Decision::Layer(lowest);
            }
            upgrade(tracks, i, out, &mut remaining, (reserve, keep), &cost);
            if at_best(t, out[i]) {
                break;
            }
        }
        if out[i] == before {
            out.copy_from_slice(&saved);
            remaining = saved_remaining;
        } else {
            // What the victims freed beyond the pinned track's need goes back to them.
            for &v in &order[pos + 1..] {
                if out[v] == Decision::Paused
                    && saved[v] != Decision::Paused
                    && let Decision::Layer(r) = saved[v]
                    && cost(v, r) <= remaining
                {
                    remaining -= cost(v, r);
                    out[v] = saved[v];
                }
            }
        }
    }
    budget
        .saturating_sub(audio_bps)
        .saturating_sub(remaining.max(0) as u64)
        + audio_bps
}

/// Whether `d` already gives `t` the best layer it wants that arrives.
fn at_best(t: &VideoDemand, d: Decision) -> bool {
    match (d, t.best_wanted()) {
        (_, None) => true,
        (Decision::Layer(r), Some(b)) => r >= b,
        _ => false,
    }
}

fn upgrade(
    tracks: &[VideoDemand],
    i: usize,
    out: &mut [Decision],
    remaining: &mut i64,
    (reserve, keep): (i64, i64),
    cost: &impl Fn(usize, usize) -> i64,
) {
    let t = &tracks[i];
    let (Decision::Layer(now), Some(wanted)) = (out[i], t.wanted) else {
        return;
    };
    let top = wanted.min(t.layers.len().saturating_sub(1));
    for r in (now + 1..=top).rev() {
        if t.layers[r].is_none() {
            continue;
        }
        let extra = cost(i, r) - cost(i, now);
        let above_current = t.current.is_none_or(|c| r > c);
        let limit = if above_current {
            *remaining - reserve
        } else {
            *remaining - keep
        };
        if extra <= limit {
            *remaining -= extra;
            out[i] = Decision::Layer(r);
            return;
        }
    }
}

/// A track is paused only after the allocator has wanted that for this long: a pause is the
/// most visible decision, and a single-layer track has nothing between full and nothing.
const PAUSE_DELAY: Duration = Duration::from_secs(1);
/// Minimum time on a layer before moving up from it.
const MIN_TIME_ON_LAYER: Duration = Duration::from_secs(1);
/// No upgrade for this long after a downgrade; doubled (up to the max) when a downgrade
/// follows an upgrade within [`FLAP_WINDOW`].
const UPGRADE_HOLD: Duration = Duration::from_secs(3);
const MAX_UPGRADE_HOLD: Duration = Duration::from_secs(16);
const FLAP_WINDOW: Duration = Duration::from_secs(15);

/// Per-subscriber memory that keeps the allocation from flapping.
#[derive(Debug, Default)]
pub struct Hysteresis {
    last_downgrade: Option<Instant>,
    last_upgrade: Option<Instant>,
    hold: Option<Duration>,
    /// When each track (by the caller's index) last changed decision.
    changed_at: Vec<Option<Instant>>,
    /// Since when the allocator has wanted each track paused.
    pause_wanted_since: Vec<Option<Instant>>,
}

impl Hysteresis {
    /// Turns the allocator's `target` into what applies now, given `applied` (the previous
    /// decisions, same order). Returns true when anything changed.
    pub fn apply(
        &mut self,
        now: Instant,
        target: &[Decision],
        applied: &mut Vec<Decision>,
    ) -> bool {
        if applied.len() != target.len() {
            // The set of tracks changed: start from the target (new tracks have no history).
            applied.clear();
            applied.extend_from_slice(target);
            self.changed_at.clear();
            self.changed_at.resize(target.len(), Some(now));
            self.pause_wanted_since.clear();
            self.pause_wanted_since.resize(target.len(), None);
            return true;
        }
        self.changed_at.resize(target.len(), None);
        self.pause_wanted_since.resize(target.len(), None);
        let hold = self.hold.unwrap_or(UPGRADE_HOLD);
        let upgrades_allowed = self
            .last_downgrade
            .is_none_or(|at| now.saturating_duration_since(at) >= hold);
        let mut changed = false;
        let mut downgraded = false;
        let mut upgraded = false;
        for (i, (&want, have)) in target.iter().zip(applied.iter_mut()).enumerate() {
            if want != Decision::Paused {
                self.pause_wanted_since[i] = None;
            }
            if want == *have {
                continue;
            }
            if want == Decision::Paused && *have != Decision::Off {
                let since = *self.pause_wanted_since[i].get_or_insert(now);
                if now.saturating_duration_since(since) < PAUSE_DELAY {
                    continue;
                }
            }
            let up = rank_of(want) > rank_of(*have);
            if up {
                let settled = self.changed_at[i]
                    .is_none_or(|at| now.saturating_duration_since(at) >= MIN_TIME_ON_LAYER);
                // A track the subscriber just asked for (Off before) starts at once.
                if *have != Decision::Off && !(upgrades_allowed && settled) {
                    continue;
                }
                upgraded |= *have != Decision::Off;
            } else {
                downgraded |= want != Decision::Off;
            }
            *have = want;
            self.changed_at[i] = Some(now);
            changed = true;
        }
        if downgraded {
            let flapping = self
                .last_upgrade
                .is_some_and(|at| now.saturating_duration_since(at) < FLAP_WINDOW);
            self.hold = Some(match (self.hold, flapping) {
                (Some(h), true) => (h * 2).min(MAX_UPGRADE_HOLD),
                _ => UPGRADE_HOLD,
            });
            self.last_downgrade = Some(now);
        }
        if upgraded {
            self.last_upgrade = Some(now);
        }
        changed
    }
}

/// Orders decisions: paused below every layer.
fn rank_of(d: Decision) -> i64 {
    match d {
        Decision::Off => -2,
        Decision::Paused => -1,
        Decision::Layer(r) => r as i64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAYERS: [u64; 3] = [150_000, 500_000, 1_500_000];

    fn video(priority: u8) -> VideoDemand {
        VideoDemand {
            priority,
            wanted: Some(2),
            layers: LAYERS.iter().map(|&b| Some(b)).collect(),
            current: None,
        }
    }

    fn run(budget: u64, audio: u64, tracks: &[VideoDemand]) -> (Vec<Decision>, u64) {
        let mut out = Vec::new();
        let total = allocate(budget, audio, tracks, &mut out);
        (out, total)
    }

    #[test]
    fn while_the_link_settles_a_cut_lands_on_a_layer_with_room_to_spare() {
        // On the top layer when the estimate falls to 600 kbit/s: h (500k) fits the estimate
        // itself, but not with a quarter of it kept free for the backlog.
        let mut t = video(0);
        t.current = Some(2);
        let mut out = Vec::new();
        allocate(600_000, 20_000, std::slice::from_ref(&t), &mut out);
        assert_eq!(out, [Decision::Layer(1)]);
        allocate_with_reserve(600_000, 20_000, std::slice::from_ref(&t), &mut out, 0.25);
        assert_eq!(
            out,
            [Decision::Layer(0)],
            "the lowest layer is never held back"
        );
        // Nor does the reserve pause a lowest layer that fits.
        allocate_with_reserve(170_000, 20_000, std::slice::from_ref(&t), &mut out, 0.25);
        assert_eq!(out, [Decision::Layer(0)]);
    }

    #[test]
    fn everything_fits() {
        let (d, total) = run(5_000_000, 64_000, &[video(0), video(0)]);
        assert_eq!(d, [Decision::Layer(2), Decision::Layer(2)]);
        assert_eq!(total, 3_064_000);
    }

    #[test]
    fn audio_first_then_lowest_layers_then_upgrades_by_priority() {
        // 1 Mbit/s: audio 64k, both lowest (300k), then the speaker goes up first.
        let (d, total) = run(1_000_000, 64_000, &[video(0), video(PRIORITY_SPEAKER)]);
        assert_eq!(d, [Decision::Layer(0), Decision::Layer(1)]);
        assert!(total <= 1_000_000);
    }

    #[test]
    fn video_is_paused_before_audio_suffers() {
        let (d, total) = run(250_000, 64_000, &[video(0), video(0)]);
        assert_eq!(d, [Decision::Layer(0), Decision::Paused]);
        assert_eq!(total, 214_000);
        let (d, _) = run(100_000, 64_000, &[video(0)]);
        assert_eq!(d, [Decision::Paused]);
    }

    #[test]
    fn requests_cap_the_layer_and_paused_requests_cost_nothing() {
        let mut low = video(0);
        low.wanted = Some(0);
        let mut off = video(0);
        off.wanted = None;
        let (d, total) = run(5_000_000, 0, &[low, off]);
        assert_eq!(d, [Decision::Layer(0), Decision::Off]);
        assert_eq!(total, 150_000);
    }

    #[test]
    fn layers_not_arriving_are_skipped() {
        let mut t = video(0);
        t.layers[2] = None;
        let (d, _) = run(5_000_000, 0, &[t.clone()]);
        assert_eq!(d, [Decision::Layer(1)]);
        t.layers = vec![None, None, None];
        let (d, _) = run(5_000_000, 0, &[t]);
        assert_eq!(d, [Decision::Off]);
    }

    #[test]
    fn upgrades_above_the_current_layer_keep_a_reserve() {
        let mut t = video(0);
        t.current = Some(1);
        // 1.55M fits the top layer exactly but leaves no reserve: stay on 1.
        let (d, _) = run(1_550_000, 0, &[t.clone()]);
        assert_eq!(d, [Decision::Layer(1)]);
        // Already on top: it keeps it as long as it fits.
        t.current = Some(2);
        let (d, _) = run(1_550_000, 0, &[t]);
        assert_eq!(d, [Decision::Layer(2)]);
    }

    #[test]
    fn a_pinned_track_gets_a_high_layer_among_five_under_1_5_mbps() {
        let mut tracks = vec![
            video(0),
            video(0),
            video(PRIORITY_PINNED),
            video(0),
            video(0),
        ];
        for t in &mut tracks {
            t.current = Some(0);
        }
        let (d, total) = run(1_500_000, 64_000, &tracks);
        assert!(total <= 1_500_000, "{total}");
        assert!(matches!(d[2], Decision::Layer(r) if r >= 1), "{d:?}");
        for (i, x) in d.iter().enumerate() {
            if i != 2 {
                assert!(matches!(x, Decision::Layer(0) | Decision::Paused), "{d:?}");
            }
        }
        // With more room the pinned track reaches the top, others stay low or paused.
        let (d, total) = run(2_200_000, 64_000, &tracks);
        assert!(total <= 2_200_000);
        assert_eq!(d[2], Decision::Layer(2), "{d:?}");
    }

    #[test]
    fn downgrades_apply_at_once_upgrades_wait() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut h = Hysteresis::default();
        let mut applied = Vec::new();
        assert!(h.apply(t0, &[Decision::Layer(2)], &mut applied));
        assert!(h.apply(t0 + s(5), &[Decision::Layer(0)], &mut applied));
        assert_eq!(applied, [Decision::Layer(0)]);
        // Held for 3 s after the downgrade.
        assert!(!h.apply(t0 + s(7), &[Decision::Layer(2)], &mut applied));
        assert!(h.apply(t0 + s(8), &[Decision::Layer(2)], &mut applied));
        // Down again soon after the upgrade: the hold doubles.
        assert!(h.apply(t0 + s(10), &[Decision::Layer(1)], &mut applied));
        assert!(!h.apply(t0 + s(15), &[Decision::Layer(2)], &mut applied));
        assert!(h.apply(t0 + s(16), &[Decision::Layer(2)], &mut applied));
    }

    #[test]
    fn minimum_time_on_a_layer_before_moving_up() {
        let t0 = Instant::now();
        let mut h = Hysteresis::default();
        let mut applied = vec![Decision::Off];
        h.apply(t0, &[Decision::Off], &mut applied);
        // Subscribed: starts at once.
        assert!(h.apply(t0, &[Decision::Layer(0)], &mut applied));
        assert!(!h.apply(
            t0 + Duration::from_millis(900),
            &[Decision::Layer(1)],
            &mut applied
        ));
        assert!(h.apply(
            t0 + Duration::from_secs(1),
            &[Decision::Layer(1)],
            &mut applied
        ));
    }

    #[test]
    fn a_pause_waits_a_second_of_shortage() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut h = Hysteresis::default();
        let mut applied = Vec::new();
        h.apply(t0, &[Decision::Layer(0)], &mut applied);
        assert!(!h.apply(t0 + ms(100), &[Decision::Paused], &mut applied));
        assert!(!h.apply(t0 + ms(900), &[Decision::Paused], &mut applied));
        // The shortage went away and came back: the second starts over.
        h.apply(t0 + ms(1000), &[Decision::Layer(0)], &mut applied);
        assert!(!h.apply(t0 + ms(1100), &[Decision::Paused], &mut applied));
        assert!(h.apply(t0 + ms(2100), &[Decision::Paused], &mut applied));
        assert_eq!(applied, [Decision::Paused]);
    }
}
