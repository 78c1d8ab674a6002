//! Runs a scenario: joins participants at the join rate, lets them settle, measures a window,
//! and hands the counters to the report. Prints a progress line once a second.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use prism_client::Room;
use tokio::sync::{mpsc, watch};

use crate::participant::{JoinError, Participant, RunShared, lock};
use crate::procstat::Sampler;
use crate::report::{Report, RunRecord, ServerRecord};
use crate::scenario::{Scenario, ScenarioError};

/// Why a run could not produce a report.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The scenario is invalid.
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
}

/// How a run ended.
#[derive(Debug)]
pub struct Outcome {
    /// The report (partial if interrupted or stopped by a fatal error).
    pub report: Report,
    /// An error that stopped the run (unreachable server, bad credentials, refused join).
    pub fatal: Option<JoinError>,
    /// Whether the run was interrupted (Ctrl-C).
    pub interrupted: bool,
}

/// Options that are not part of the scenario.
#[derive(Debug, Default)]
pub struct RunOptions {
    /// Measure this process as the server.
    pub server_pid: Option<u32>,
    /// Print a progress line to stderr once a second.
    pub progress: bool,
}

/// Runs `scenario` until it completes, `interrupt` flips to true, or a fatal join error.
pub async fn run(
    scenario: Scenario,
    options: RunOptions,
    mut interrupt: watch::Receiver<bool>,
) -> Result<Outcome, RunError> {
    scenario.validate()?;
    let scenario = Arc::new(scenario);
    let started = Instant::now();
    let (stop_tx, stop_rx) = watch::channel(false);
    let shared = Arc::new(RunShared {
        rx_packets: AtomicU64::new(0),
        rx_bytes: AtomicU64::new(0),
        tx_packets: AtomicU64::new(0),
        stop: stop_rx,
        started,
    });
    // Publishers of every room join before the subscribers of any room.
    let mut participants = vec![];
    for i in 0..scenario.participants_per_room() {
        for r in 0..scenario.rooms {
            participants.push(Arc::new(Participant::new(&scenario, r, i)));
        }
    }
    let mut run = Runner {
        shared: shared.clone(),
        participants,
        rooms: vec![],
        started,
        sampler: options.server_pid.map(|pid| Sampler::new(pid, started)),
        progress: options.progress,
        tty: std::io::stderr().is_terminal(),
        last_progress: (started, 0, 0),
        joins_done: 0,
        fatal: None,
        phase: "joining",
    };
    if let Some(s) = run.sampler.as_mut() {
        s.sample();
    }

    let (join_tx, mut join_rx) = mpsc::unbounded_channel();
    let interval = Duration::from_secs_f64(1.0 / scenario.join_rate);
    let mut second = tokio::time::interval(Duration::from_secs(1));
    second.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let total = run.participants.len();
    let mut interrupted = false;

    // Join phase. The first participant joins alone: if the server is unreachable or refuses
    // us, nobody else tries.
    let probe = run.participants[0].clone();
    let probe = probe.join(&scenario, shared.clone());
    tokio::pin!(probe);
    loop {
        tokio::select! {
            result = &mut probe => { run.joined(result); break; }
            _ = second.tick() => run.tick(),
            _ = interrupt.changed() => { interrupted = true; break; }
        }
    }
    let mut next_join = 1usize;
    let mut next_join_at = tokio::time::Instant::now();
    while !interrupted && run.joins_done < total && run.fatal.is_none() {
        tokio::select! {
            _ = tokio::time::sleep_until(next_join_at), if next_join < total => {
                let p = run.participants[next_join].clone();
                let (scenario, shared, tx) = (scenario.clone(), shared.clone(), join_tx.clone());
                tokio::spawn(async move {
                    let result = p.join(&scenario, shared).await;
                    let _ = tx.send(result);
                });
                next_join += 1;
                next_join_at += interval;
            }
            Some(result) = join_rx.recv() => run.joined(result),
            _ = second.tick() => run.tick(),
            _ = interrupt.changed() => interrupted = true,
        }
    }
    let join_phase = (run.joins_done == total).then(|| started.elapsed());

    // Settle, then the measured window.
    let mut window: Option<(Instant, u64, u64, u64, Option<f64>)> = None;
    let mut tester_start = None;
    if !interrupted && run.fatal.is_none() {
        run.phase = "settling";
        interrupted = run
            .wait(
                Duration::from_secs_f64(scenario.settle_secs),
                &mut interrupt,
                &mut join_rx,
                &mut second,
            )
            .await;
        if !interrupted {
            let now = Instant::now();
            for p in &run.participants {
                lock(&p.downlink).start_window(now, started);
                for s in lock(&p.subscriptions).iter() {
                    lock(&s.stats).start_window(now);
                    lock(&s.layers).start_window(now);
                }
                for publication in lock(&p.publications).iter() {
                    let mut s = lock(&publication.stats);
                    s.frames_at_window_start = Some(s.frames);
                }
            }
            let cpu = run
                .sampler
                .as_mut()
                .and_then(|s| s.sample())
                .map(|u| u.cpu_secs);
            tester_start = Some((
                crate::procstat::usage(std::process::id()).ok(),
                crate::procstat::system_ticks(),
            ));
            window = Some((
                now,
                shared.rx_packets.load(Ordering::Relaxed),
                shared.rx_bytes.load(Ordering::Relaxed),
                shared.tx_packets.load(Ordering::Relaxed),
                cpu,
            ));
            run.read_feedback(true).await;
            run.phase = "measuring";
            interrupted = run
                .wait(
                    scenario.duration(),
                    &mut interrupt,
                    &mut join_rx,
                    &mut second,
                )
                .await;
        }
    }

    // Snapshot the window before anyone leaves.
    let measured_until = Instant::now();
    if window.is_some() {
        run.read_feedback(false).await;
    }
    let end_cpu = run
        .sampler
        .as_mut()
        .and_then(|s| s.sample())
        .map(|u| u.cpu_secs);
    let (tester_window_cpu_secs, machine_busy) = match tester_start {
        Some((usage0, ticks0)) => {
            let usage1 = crate::procstat::usage(std::process::id()).ok();
            let ticks1 = crate::procstat::system_ticks();
            (
                usage0.zip(usage1).map(|(a, b)| b.cpu_secs - a.cpu_secs),
                ticks0.zip(ticks1).and_then(|((b0, t0), (b1, t1))| {
                    (t1 > t0).then(|| (b1 - b0) as f64 / (t1 - t0) as f64)
                }),
            )
        }
        None => (None, None),
    };
    let (window_len, rx, rx_bytes, tx, window_cpu) = match window {
        Some((at, rx0, bytes0, tx0, cpu0)) => (
            Some(at.elapsed()),
            shared.rx_packets.load(Ordering::Relaxed) - rx0,
            shared.rx_bytes.load(Ordering::Relaxed) - bytes0,
            shared.tx_packets.load(Ordering::Relaxed) - tx0,
            cpu0.zip(end_cpu).map(|(a, b)| b - a),
        ),
        None => (None, 0, 0, 0, None),
    };
    let partial = if interrupted {
        Some(format!("interrupted during the {} phase", run.phase))
    } else {
        run.fatal
            .as_ref()
            .map(|e| format!("stopped during the {} phase: {e}", run.phase))
    };
    let server = run.sampler.as_ref().map(|s| ServerRecord {
        pid: s.pid(),
        samples: s.samples.clone(),
        window_cpu_secs: window_cpu,
        rss_start: s.first.map(|u| u.rss_bytes),
        rss_peak: s.peak_rss,
        rss_end: s.last_rss(),
        error: s.error.clone(),
    });
    let _ = stop_tx.send(true);
    let record = RunRecord {
        scenario: (*scenario).clone(),
        started,
        window_start: window.map(|(at, ..)| at),
        measured_until,
        participants: run.participants.clone(),
        elapsed: started.elapsed(),
        join_phase,
        window: window_len,
        window_rx_packets: rx,
        window_rx_bytes: rx_bytes,
        window_tx_packets: tx,
        server,
        tester_window_cpu_secs,
        machine_busy,
        partial,
    };
    let report = Report::build(&record);
    if run.progress && run.tty {
        eprintln!();
    }
    run.leave_all().await;
    Ok(Outcome {
        report,
        fatal: run.fatal,
        interrupted,
    })
}

struct Runner {
    shared: Arc<RunShared>,
    participants: Vec<Arc<Participant>>,
    rooms: Vec<Room>,
    started: Instant,
    sampler: Option<Sampler>,
    progress: bool,
    tty: bool,
    /// (when, rx packets, rx bytes) at the last progress line.
    last_progress: (Instant, u64, u64),
    joins_done: usize,
    fatal: Option<JoinError>,
    phase: &'static str,
}

impl Runner {
    fn joined(&mut self, result: Result<Room, JoinError>) {
        self.joins_done += 1;
        match result {
            Ok(room) => self.rooms.push(room),
            Err(e) if e.is_fatal() && self.fatal.is_none() => self.fatal = Some(e),
            Err(e) => tracing::debug!(error = %e, "join failed"),
        }
    }

    /// Waits `d` while joins complete, progress prints; true if interrupted.
    async fn wait(
        &mut self,
        d: Duration,
        interrupt: &mut watch::Receiver<bool>,
        join_rx: &mut mpsc::UnboundedReceiver<Result<Room, JoinError>>,
        second: &mut tokio::time::Interval,
    ) -> bool {
        let until = tokio::time::Instant::now() + d;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => return false,
                Some(result) = join_rx.recv() => self.joined(result),
                _ = second.tick() => self.tick(),
                _ = interrupt.changed() => return true,
            }
        }
    }

    fn tick(&mut self) {
        let server = self.sampler.as_mut().and_then(|s| {
            s.sample()?;
            Some((s.last_cpu_pct()?, s.last_rss()?))
        });
        if !self.progress {
            return;
        }
        let now = Instant::now();
        let rx = self.shared.rx_packets.load(Ordering::Relaxed);
        let bytes = self.shared.rx_bytes.load(Ordering::Relaxed);
        let (then, rx0, bytes0) = self.last_progress;
        let dt = (now - then).as_secs_f64().max(1e-3);
        self.last_progress = (now, rx, bytes);
        let (mut joined, mut failed, mut expected, mut lost, mut tracks) = (0, 0, 0u64, 0u64, 0);
        for p in &self.participants {
            if p.is_joined() {
                joined += 1;
            } else if matches!(
                *lock(&p.status),
                crate::participant::Status::Failed(_) | crate::participant::Status::Disconnected(_)
            ) {
                failed += 1;
            }
            for s in lock(&p.subscriptions).iter() {
                let s = lock(&s.stats);
                expected += s.sequence.expected();
                lost += s.sequence.lost();
                tracks += u32::from(s.first_packet_at.is_some());
            }
        }
        let loss = if expected > 0 {
            lost as f64 / expected as f64 * 100.0
        } else {
            0.0
        };
        let server = server.map_or(String::new(), |(cpu, rss)| {
            format!(
                " | server cpu {cpu:.0}% rss {:.0} MiB",
                rss as f64 / 1_048_576.0
            )
        });
        let line = format!(
            "[{:>4.0}s {}] joined {joined}/{} failed {failed} | tracks {tracks} | rx {:.0} pkt/s \
             {:.1} Mbit/s | loss {loss:.2}%{server}",
            (now - self.started).as_secs_f64(),
            self.phase,
            self.participants.len(),
            (rx - rx0) as f64 / dt,
            (bytes - bytes0) as f64 * 8.0 / dt / 1e6,
        );
        if self.tty {
            eprint!("\r\x1b[2K{line}");
        } else {
            eprintln!("{line}");
        }
    }

    /// Reads every subscriber's NACK and PLI counters from its peer connection (in parallel)
    /// into its tracks' stats, as the window's start or end.
    async fn read_feedback(&self, start: bool) {
        let reads = self.rooms.iter().map(|room| async move {
            let identity = room.local_participant().identity;
            (identity, room.feedback_sent().await)
        });
        let results = futures::future::join_all(reads).await;
        for (identity, result) in results {
            let Ok(by_track) = result else { continue };
            let Some(p) = self.participants.iter().find(|p| p.identity == identity) else {
                continue;
            };
            for sub in lock(&p.subscriptions).iter() {
                let f = by_track.get(&sub.track_sid).copied().unwrap_or_default();
                let counts = (u64::from(f.nacks), u64::from(f.plis + f.firs));
                let mut stats = lock(&sub.stats);
                if start {
                    stats.feedback_at_start = Some(counts);
                } else {
                    stats.feedback_at_end = Some(counts);
                }
            }
        }
    }

    /// Everyone leaves, in parallel, for at most 15 s.
    async fn leave_all(&mut self) {
        let leaves = self.rooms.drain(..).map(|room| async move {
            let _ = room.leave().await;
        });
        let _ =
            tokio::time::timeout(Duration::from_secs(15), futures::future::join_all(leaves)).await;
    }
}
