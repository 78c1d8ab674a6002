//! Simulcast end to end over loopback with real peers (the Rust SDK): a publisher sends three
//! synthetic VP8 layers (q 320x180, h 640x360, f 1280x720; keyframes only when asked, so every
//! switch depends on the server's keyframe request for the target layer), subscribers ask for
//! layers by quality, by size, or pause, and each subscriber's stream is checked to be one
//! continuous stream (prism_client::synthetic::check_continuity). Stopping the top layer at
//! the publisher and dynacast are checked with the timings issue 4 asks for. The downlink's
//! side of signaling is here too: why a track is paused, connection-quality reports with the
//! server's estimate, and pinning.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use prism_client::proto::connection_quality_update::Quality as Grade;
use prism_client::proto::{ConnectionQualityUpdate, LayerActivity};
use prism_client::synthetic::{
    ContinuityReport, SimulcastVp8, Vp8PacketInfo, check_continuity, publish_simulcast_vp8,
};
use prism_client::{
    Codec, LocalTrack, PauseReason, RemoteTrack, Room, RoomEvent, SimulcastLayer, StreamState,
    TrackKind, TrackOptions, VideoQuality,
};

/// Layer markers (the synthetic source stamps layer i with i).
const Q: u8 = 0;
const H: u8 = 1;
const F: u8 = 2;

fn layers() -> Vec<SimulcastLayer> {
    // Lower bitrates than a browser's, to keep a 2-core machine unhurried.
    vec![
        SimulcastLayer::new("q", 320, 180, 100_000),
        SimulcastLayer::new("h", 640, 360, 250_000),
        SimulcastLayer::new("f", 1280, 720, 600_000),
    ]
}

type Log<T> = Arc<Mutex<Vec<(Instant, T)>>>;

struct Publisher {
    room: Room,
    video: LocalTrack,
    /// Dynacast updates as the SDK announced them.
    updates: Log<Vec<LayerActivity>>,
}

async fn publisher(server: &prism_server::Server, room: &str) -> Publisher {
    let (room, mut events) = join(server, room, "publisher").await;
    let video = room
        .publish_track(TrackOptions::simulcast_video(
            "camera",
            Codec::Vp8,
            layers(),
        ))
        .await
        .expect("publish simulcast");
    let source = SimulcastVp8::new(&layers(), 30, Duration::from_secs(600));
    tokio::spawn(publish_simulcast_vp8(video.clone(), source));
    let updates: Log<Vec<LayerActivity>> = Arc::default();
    let log = updates.clone();
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            if let RoomEvent::SubscribedLayersChanged { layers, .. } = event {
                log.lock().unwrap().push((Instant::now(), layers));
            }
        }
    });
    Publisher {
        room,
        video,
        updates,
    }
}

struct Subscriber {
    name: &'static str,
    room: Room,
    remote: RemoteTrack,
    packets: Log<Vp8PacketInfo>,
    states: Log<StreamState>,
    /// The server's connection-quality reports on our downlink.
    qualities: Log<ConnectionQualityUpdate>,
}

async fn subscriber(server: &prism_server::Server, room: &str, name: &'static str) -> Subscriber {
    let (room, mut events) = join(server, room, name).await;
    let remote = wait_event(&mut events, "the video track", |e| match e {
        RoomEvent::TrackSubscribed { remote, .. } if remote.kind() == TrackKind::Video => {
            Some(remote)
        }
        _ => None,
    })
    .await;
    let packets: Log<Vp8PacketInfo> = Arc::default();
    let (log, reader) = (packets.clone(), remote.clone());
    tokio::spawn(async move {
        while let Ok(packet) = reader.read_rtp().await {
            let info = Vp8PacketInfo::parse(&packet).expect("a VP8 packet");
            log.lock().unwrap().push((Instant::now(), info));
        }
    });
    let states: Log<StreamState> = Arc::default();
    let qualities: Log<ConnectionQualityUpdate> = Arc::default();
    let (log, quality_log) = (states.clone(), qualities.clone());
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            match event {
                RoomEvent::StreamStateChanged { state, .. } => {
                    log.lock().unwrap().push((Instant::now(), state));
                }
                RoomEvent::ConnectionQuality(report) => {
                    quality_log.lock().unwrap().push((Instant::now(), report));
                }
                _ => {}
            }
        }
    });
    Subscriber {
        name,
        room,
        remote,
        packets,
        states,
        qualities,
    }
}

impl Subscriber {
    fn count(&self) -> usize {
        self.packets.lock().unwrap().len()
    }

    fn current_layer(&self) -> Option<u8> {
        let packets = self.packets.lock().unwrap();
        packets.last().and_then(|(_, p)| p.stamp).map(|s| s.layer)
    }

    /// How long after `since` the first packet of `layer` arrived, waiting up to `timeout`.
    async fn switched_to(&self, layer: u8, since: Instant, timeout: Duration) -> Option<Duration> {
        let first = || {
            let packets = self.packets.lock().unwrap();
            packets
                .iter()
                .find(|(at, p)| *at >= since && p.stamp.is_some_and(|s| s.layer == layer))
                .map(|(at, _)| at.duration_since(since))
        };
        let arrived = eventually(timeout, || async { first().is_some() }).await;
        arrived.then(first).flatten()
    }

    /// Waits until the subscriber receives `layer` (10 s at most).
    async fn receives(&self, layer: u8) {
        let on = eventually(Duration::from_secs(10), || async {
            self.current_layer() == Some(layer)
        })
        .await;
        assert!(
            on,
            "{} never received layer {layer} (on {:?})",
            self.name,
            self.current_layer()
        );
    }

    /// Waits (up to `timeout`) for the server's stream state to satisfy `check`.
    async fn state(&self, what: &str, timeout: Duration, check: impl Fn(&StreamState) -> bool) {
        let mut watch = self.remote.watch_stream_state();
        let reached =
            tokio::time::timeout(timeout, watch.wait_for(|s| s.as_ref().is_some_and(&check))).await;
        assert!(
            matches!(reached, Ok(Ok(_))),
            "{}: stream state never {what}: {:?}",
            self.name,
            self.remote.stream_state()
        );
    }

    fn report(&self) -> ContinuityReport {
        let packets = self.packets.lock().unwrap();
        let infos: Vec<Vp8PacketInfo> = packets.iter().map(|(_, p)| *p).collect();
        check_continuity(&infos)
    }

    /// Asserts the whole stream so far is continuous; returns the layers it went through.
    fn assert_continuous(&self) -> Vec<u8> {
        let report = self.report();
        assert!(
            report.is_continuous(),
            "{}'s stream is not continuous: {:#?}",
            self.name,
            report.problems
        );
        let first = self
            .packets
            .lock()
            .unwrap()
            .first()
            .and_then(|(_, p)| p.stamp);
        let layers = report.layers(first.map(|s| s.layer));
        eprintln!(
            "# {}: {} packets, {} frames, {} lost, {} resumes, layers {layers:?}",
            self.name, report.packets, report.frames, report.lost, report.resumes
        );
        layers
    }
}

/// Switches `sub` with `change` and returns how long the first packet of `layer` took.
async fn switch(
    sub: &Subscriber,
    what: &str,
    layer: u8,
    change: impl std::future::Future<Output = prism_client::Result<()>>,
) -> Duration {
    let since = Instant::now();
    change.await.expect("settings sent");
    let took = sub
        .switched_to(layer, since, Duration::from_secs(3))
        .await
        .unwrap_or_else(|| {
            panic!(
                "{}: {what} did not bring layer {layer} within 3 s (on {:?})",
                sub.name,
                sub.current_layer()
            )
        });
    eprintln!("# {}: {what} -> layer {layer} in {took:?}", sub.name);
    took
}

/// Waits until `sub` has received `n` more packets than it had.
async fn flowing(sub: &Subscriber, n: usize) {
    let base = sub.count();
    let more = eventually(Duration::from_secs(10), || async {
        sub.count() >= base + n
    })
    .await;
    assert!(more, "{} stopped receiving", sub.name);
}

async fn leave_all(publisher: Publisher, subscribers: Vec<Subscriber>) {
    for s in subscribers {
        s.room.leave().await.expect("leave");
    }
    publisher.room.leave().await.expect("leave");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_switch_by_quality_and_size_with_continuous_streams() {
    let _exclusive = exclusive().await;
    let server = start().await;
    let room = "simulcast-switch";
    let publisher = publisher(&server, room).await;
    let by_quality = subscriber(&server, room, "by-quality").await;
    let by_size = subscriber(&server, room, "by-size").await;
    let default = subscriber(&server, room, "default").await;
    for s in [&by_quality, &by_size, &default] {
        s.receives(F).await;
    }
    default
        .state("on f", Duration::from_secs(5), |s| {
            !s.paused && s.rid == "f"
        })
        .await;

    let q = &by_quality;
    switch(q, "LOW", Q, q.remote.set_quality(VideoQuality::Low)).await;
    q.state("q LOW 320x180", Duration::from_secs(2), |s| {
        s.rid == "q" && s.quality == VideoQuality::Low && (s.width, s.height) == (320, 180)
    })
    .await;
    switch(q, "HIGH", F, q.remote.set_quality(VideoQuality::High)).await;
    q.state("f HIGH", Duration::from_secs(2), |s| {
        s.rid == "f" && s.quality == VideoQuality::High
    })
    .await;
    switch(q, "MEDIUM", H, q.remote.set_quality(VideoQuality::Medium)).await;
    q.state("h MEDIUM 640x360", Duration::from_secs(2), |s| {
        s.rid == "h" && s.quality == VideoQuality::Medium && s.width == 640
    })
    .await;

    let s = &by_size;
    switch(s, "320x180", Q, s.remote.set_dimensions(320, 180)).await;
    switch(s, "1280x720", F, s.remote.set_dimensions(1280, 720)).await;
    switch(s, "640x360", H, s.remote.set_dimensions(640, 360)).await;
    // Taller than h: the smallest layer at least that large is f.
    switch(s, "600x400", F, s.remote.set_dimensions(600, 400)).await;
    s.state("f after 600x400", Duration::from_secs(2), |st| {
        st.rid == "f"
    })
    .await;

    for sub in [&by_quality, &by_size, &default] {
        flowing(sub, 50).await;
    }
    let went = by_quality.assert_continuous();
    assert!(went.ends_with(&[Q, F, H]), "by-quality went {went:?}");
    let went = by_size.assert_continuous();
    assert!(went.ends_with(&[Q, F, H, F]), "by-size went {went:?}");
    let went = default.assert_continuous();
    assert_eq!(went.last(), Some(&F), "default stays on f: {went:?}");
    assert!(
        !went[..went.len() - 1].contains(&F),
        "default left f: {went:?}"
    );
    leave_all(publisher, vec![by_quality, by_size, default]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_layer_stopped_at_the_publisher_moves_its_subscriber_down_and_back() {
    let _exclusive = exclusive().await;
    let server = start().await;
    let room = "simulcast-stop";
    let publisher = publisher(&server, room).await;
    let sub = subscriber(&server, room, "viewer").await;
    sub.receives(F).await;

    let stopped = Instant::now();
    publisher.video.set_layer_active("f", false).unwrap();
    let down = sub
        .switched_to(H, stopped, Duration::from_secs(1))
        .await
        .expect("on h within 1 s of f stopping");
    sub.state("h after f stopped", Duration::from_secs(2), |s| {
        s.rid == "h"
    })
    .await;

    let resumed = Instant::now();
    publisher.video.set_layer_active("f", true).unwrap();
    let up = sub
        .switched_to(F, resumed, Duration::from_secs(5))
        .await
        .expect("back on f within 5 s of f resuming");
    eprintln!("# f stopped: on h after {down:?}; f resumed: on f after {up:?}");
    flowing(&sub, 50).await;
    let went = sub.assert_continuous();
    assert!(went.ends_with(&[F, H, F]), "viewer went {went:?}");
    leave_all(publisher, vec![sub]).await;
}

/// The latest dynacast update announced after `since` that has every rid in `active` active
/// and every other one inactive.
fn announced(publisher: &Publisher, since: Instant, active: &[&str]) -> Option<Duration> {
    let updates = publisher.updates.lock().unwrap();
    updates
        .iter()
        .filter(|(at, _)| *at >= since)
        .find(|(_, layers)| {
            layers.len() == 3
                && layers
                    .iter()
                    .all(|l| l.active == active.contains(&l.rid.as_str()))
        })
        .map(|(at, _)| at.duration_since(since))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynacast_stops_the_layers_no_subscriber_needs() {
    let _exclusive = exclusive().await;
    let server = start().await;
    let room = "simulcast-dynacast";
    let published = Instant::now();
    let publisher = publisher(&server, room).await;
    let video = &publisher.video;
    // Nobody watches yet: only the lowest layer stays on.
    let alone = eventually(Duration::from_secs(3), || async {
        announced(&publisher, published, &["q"]).is_some()
    })
    .await;
    assert!(alone, "a publisher without subscribers keeps h and f on");
    assert!(!video.layer_active("f"));
    let joining = Instant::now();
    let a = subscriber(&server, room, "a").await;
    let b = subscriber(&server, room, "b").await;
    a.receives(F).await;
    b.receives(F).await;
    let on = announced(&publisher, joining, &["q", "h", "f"]).expect("f turned on for a");
    eprintln!("# alone: only q; first subscriber: every layer on after {on:?} (join included)");
    assert!(["q", "h", "f"].iter().all(|rid| video.layer_active(rid)));

    let low = Instant::now();
    a.remote.set_quality(VideoQuality::Low).await.unwrap();
    b.remote.set_quality(VideoQuality::Low).await.unwrap();
    let told = eventually(Duration::from_secs(2), || async {
        announced(&publisher, low, &["q"]).is_some()
    })
    .await;
    assert!(
        told,
        "no deactivation of h and f within 2 s; updates: {:?}",
        publisher.updates.lock().unwrap()
    );
    let took = announced(&publisher, low, &["q"]).unwrap();
    eprintln!("# all subscribers on q: publisher told to stop h and f after {took:?}");
    assert!(video.layer_active("q"));
    assert!(!video.layer_active("h") && !video.layer_active("f"));
    // The publisher stops sending them while q goes on.
    let (h, f, q) = (
        video.packets_sent("h"),
        video.packets_sent("f"),
        video.packets_sent("q"),
    );
    let q_more = eventually(Duration::from_secs(5), || async {
        video.packets_sent("q") >= q + 60
    })
    .await;
    assert!(q_more, "q keeps being sent");
    assert_eq!(
        (video.packets_sent("h"), video.packets_sent("f")),
        (h, f),
        "h and f no longer sent"
    );
    a.receives(Q).await;
    b.receives(Q).await;

    // A subscriber wants f again: it is activated at once and the subscriber gets it.
    let high = Instant::now();
    a.remote.set_quality(VideoQuality::High).await.unwrap();
    let told = eventually(Duration::from_secs(1), || async {
        announced(&publisher, high, &["q", "h", "f"]).is_some()
    })
    .await;
    assert!(told, "f not reactivated within 1 s");
    let up = a
        .switched_to(F, high, Duration::from_secs(5))
        .await
        .expect("a back on f within 5 s");
    eprintln!(
        "# a asked for HIGH: layers reactivated after {:?}, on f after {up:?}",
        announced(&publisher, high, &["q", "h", "f"]).unwrap()
    );
    flowing(&b, 30).await;
    a.assert_continuous();
    let went = b.assert_continuous();
    assert_eq!(went.last(), Some(&Q), "b stays on q: {went:?}");
    leave_all(publisher, vec![a, b]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_subscription_gets_nothing_until_resumed() {
    let _exclusive = exclusive().await;
    let server = start().await;
    let room = "simulcast-pause";
    let publisher = publisher(&server, room).await;
    let paused = subscriber(&server, room, "paused").await;
    let watching = subscriber(&server, room, "watching").await;
    paused.receives(F).await;
    watching.receives(F).await;

    paused.remote.set_paused(true).await.unwrap();
    paused
        .state("PAUSED (requested)", Duration::from_secs(2), |s| {
            s.paused && s.reason == PauseReason::Requested
        })
        .await;
    let announced = eventually(Duration::from_secs(2), || async {
        let states = paused.states.lock().unwrap();
        states.iter().any(|(_, s)| s.paused)
    })
    .await;
    assert!(announced, "no StreamStateChanged event for the pause");
    // Whatever was in flight has arrived once the other subscriber got 100 more packets;
    // from then on nothing more may come.
    flowing(&watching, 100).await;
    let frozen = paused.count();
    flowing(&watching, 100).await;
    assert_eq!(paused.count(), frozen, "a paused subscription got media");

    paused.remote.set_paused(false).await.unwrap();
    paused
        .state("ACTIVE again", Duration::from_secs(2), |s| {
            !s.paused && s.reason == PauseReason::None
        })
        .await;
    flowing(&paused, 50).await;
    let report = paused.report();
    paused.assert_continuous();
    assert!(
        report.resumes + report.switches.len() >= 1,
        "the stream resumed on a keyframe: {report:?}"
    );
    watching.assert_continuous();
    leave_all(publisher, vec![paused, watching]).await;
}

/// Once media flows, the server reports how the subscriber's downlink does (from the
/// subscriber's transport-wide feedback, every 2 s): reports carry a nonzero estimate and what
/// was allocated within it. Pinning is one more track setting: the server keeps it together
/// with the quality asked for before, and media keeps flowing on that layer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_gets_connection_quality_reports_and_pins_a_track() {
    let _exclusive = exclusive().await;
    let server = start().await;
    let room = "simulcast-quality";
    let publisher = publisher(&server, room).await;
    let viewer = subscriber(&server, room, "viewer").await;
    viewer.receives(F).await;
    let media_at = Instant::now();

    let with_estimate = || {
        let reports = viewer.qualities.lock().unwrap();
        reports
            .iter()
            .filter(|(at, q)| *at >= media_at && q.estimate_bps > 0)
            .map(|(at, q)| (at.duration_since(media_at), *q))
            .collect::<Vec<_>>()
    };
    let first = eventually(Duration::from_secs(5), || async {
        !with_estimate().is_empty()
    })
    .await;
    assert!(
        first,
        "no connection-quality report with an estimate within 5 s of media flowing: {:?}",
        viewer.qualities.lock().unwrap()
    );
    // They repeat (every 2 s, sooner when the grade changes).
    let repeated = eventually(Duration::from_secs(4), || async {
        with_estimate().len() >= 2
    })
    .await;
    assert!(repeated, "reports did not repeat: {:?}", with_estimate());
    for (after, q) in with_estimate() {
        eprintln!(
            "# report {after:?} after media: {:?}, estimate {} bps, allocated {}, wanted {}, \
             loss {:.3}, rtt {} ms, paused {}",
            q.quality(),
            q.estimate_bps,
            q.allocated_bps,
            q.wanted_bps,
            q.loss,
            q.rtt_ms,
            q.paused_tracks
        );
    }
    let (_, last) = with_estimate().pop().expect("a report");
    // Loopback carries the three layers (~1 Mbit/s): nothing is paused, the top layer flows.
    assert!(last.allocated_bps > 0 && last.wanted_bps > 0, "{last:?}");
    assert_eq!(last.paused_tracks, 0, "{last:?}");
    assert!(
        matches!(last.quality(), Grade::Excellent | Grade::Good),
        "{last:?}"
    );
    let latest = viewer
        .room
        .connection_quality()
        .expect("Room keeps the latest report");
    assert!(latest.estimate_bps > 0, "{latest:?}");

    // Pin after asking for h: the server holds both settings and h keeps flowing.
    let quality = viewer.remote.set_quality(VideoQuality::Medium);
    switch(&viewer, "quality medium", H, quality).await;
    viewer.remote.set_pinned(true).await.expect("pin sent");
    let state = server.rooms().get(room).expect("the room");
    let sid = viewer.room.local_participant().sid;
    let settings = || state.track_settings(&sid, viewer.remote.sid());
    let pinned = eventually(Duration::from_secs(2), || async {
        settings().is_some_and(|s| s.pinned)
    })
    .await;
    assert!(
        pinned,
        "the server did not record the pin: {:?}",
        settings()
    );
    assert_eq!(settings().unwrap().quality(), VideoQuality::Medium);
    flowing(&viewer, 60).await;
    assert_eq!(viewer.current_layer(), Some(H), "pinning moved the layer");

    viewer.remote.set_pinned(false).await.expect("unpin sent");
    let unpinned = eventually(Duration::from_secs(2), || async {
        settings().is_some_and(|s| !s.pinned && s.quality() == VideoQuality::Medium)
    })
    .await;
    assert!(
        unpinned,
        "the server did not record the unpin: {:?}",
        settings()
    );
    flowing(&viewer, 30).await;
    viewer.assert_continuous();
    leave_all(publisher, vec![viewer]).await;
}
