//! Simulcast publishing against a stand-in peer (plain webrtc-rs, no Prism): the layers are
//! negotiated by RID and arrive as separate streams a receiver can name, keyframe requests
//! name their layer, and layers stop and resume from the API and from the server's dynacast
//! updates.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prism_client::synthetic::{SimulcastVp8, Vp8PacketInfo, publish_simulcast_vp8};
use prism_client::{
    Codec, ConnectOptions, KeyframeRequest, Room, RoomEvent, SimulcastLayer, TrackOptions,
};
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};

/// What the peer received of one layer.
#[derive(Debug, Default, Clone)]
struct Received {
    ssrc: u32,
    packets: u64,
    markers: Vec<u8>,
    /// Whether each frame start since the layer (re)started was a keyframe, in order.
    frame_starts: Vec<bool>,
}

type Layers = Arc<Mutex<HashMap<String, Received>>>;

/// Reads the one remote track, filing packets under the RID each SSRC opened with.
fn record(track: Arc<dyn TrackRemote>, layers: Layers) {
    tokio::spawn(async move {
        let mut rids: HashMap<u32, String> = HashMap::new();
        while let Some(event) = track.poll().await {
            match event {
                TrackRemoteEvent::OnOpen(init) => {
                    rids.insert(init.ssrc, init.rid.unwrap_or_default());
                }
                TrackRemoteEvent::OnRtpPacket(p) => {
                    let Some(rid) = rids.get(&p.header.ssrc) else {
                        continue;
                    };
                    let info = Vp8PacketInfo::parse(&p).expect("vp8");
                    let mut layers = layers.lock().unwrap();
                    let r = layers.entry(rid.clone()).or_default();
                    r.ssrc = p.header.ssrc;
                    r.packets += 1;
                    let marker = info.stamp.expect("stamped").layer;
                    if !r.markers.contains(&marker) {
                        r.markers.push(marker);
                    }
                    if info.frame_start {
                        r.frame_starts.push(info.keyframe_start);
                    }
                }
                _ => {}
            }
        }
    });
}

fn snapshot(layers: &Layers) -> HashMap<String, Received> {
    layers.lock().unwrap().clone()
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Packets of `rid` received so far.
fn received(layers: &Layers, rid: &str) -> u64 {
    layers.lock().unwrap().get(rid).map_or(0, |r| r.packets)
}

/// Waits until `running` has delivered `n` more packets, then checks `stopped` delivered none
/// meanwhile (beyond what was in flight when it stopped).
async fn assert_stopped(layers: &Layers, stopped: &str, running: &str, n: u64) {
    let before = received(layers, stopped);
    let base = received(layers, running);
    eventually(&format!("{n} more packets of {running}"), || {
        received(layers, running) >= base + n
    })
    .await;
    let after = received(layers, stopped);
    assert!(
        after <= before + 10,
        "{stopped} kept arriving: {before} -> {after}"
    );
}

#[tokio::test]
async fn layers_arrive_by_rid_and_stop_and_resume() {
    let mut stand_in = common::StandIn::start().await;
    let (room, mut events) = Room::connect(&stand_in.url, "tok", ConnectOptions::default())
        .await
        .unwrap();
    let layers = SimulcastLayer::defaults();
    let video = room
        .publish_track(TrackOptions::simulcast_video(
            "cam",
            Codec::Vp8,
            layers.clone(),
        ))
        .await
        .unwrap();
    assert!(video.is_simulcast());

    // The layers are declared to the server, lowest first, with their sizes.
    let add = stand_in.add_tracks.recv().await.unwrap();
    let declared: Vec<(String, u64)> = add["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["rid"].as_str().unwrap().to_owned(),
                l["width"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        declared,
        vec![("q".into(), 320), ("h".into(), 640), ("f".into(), 1280)]
    );
    assert_eq!(add["width"], 1280);

    let source = SimulcastVp8::new(&layers, 30, Duration::from_secs(60));
    let publisher = tokio::spawn(publish_simulcast_vp8(video.clone(), source));
    let track = stand_in.next_track().await;
    let received_layers: Layers = Arc::default();
    record(track.clone(), received_layers.clone());

    // Each RID arrives on its own SSRC carrying its own layer marker, starting on a keyframe.
    eventually("all three layers", || {
        let l = snapshot(&received_layers);
        ["q", "h", "f"]
            .iter()
            .all(|rid| l.get(*rid).is_some_and(|r| r.packets > 10))
    })
    .await;
    let l = snapshot(&received_layers);
    for (i, rid) in ["q", "h", "f"].iter().enumerate() {
        let r = &l[*rid];
        assert_eq!(r.markers, vec![i as u8], "{rid} carries only its marker");
        assert_eq!(r.ssrc, video.layers()[i].ssrc, "{rid} on its SSRC");
        assert_eq!(
            r.frame_starts.first(),
            Some(&true),
            "{rid} starts on a keyframe"
        );
    }

    // A PLI for h comes back naming h.
    let mut requests = video.keyframe_requests();
    let h_ssrc = l["h"].ssrc;
    track
        .write_rtcp(vec![Box::new(PictureLossIndication {
            sender_ssrc: 0,
            media_ssrc: h_ssrc,
        })])
        .await
        .unwrap();
    let request = tokio::time::timeout(Duration::from_secs(5), requests.recv())
        .await
        .expect("keyframe request within 5 s")
        .unwrap();
    assert_eq!(request, KeyframeRequest::Pli { media_ssrc: h_ssrc });
    assert_eq!(video.rid_of_ssrc(request.media_ssrc()), Some("h"));

    // Dynacast: the server needs only q. The update is applied and announced.
    stand_in
        .push
        .send(
            serde_json::json!({"subscribedLayers": {"trackSid": "TR_v", "layers": [
            {"rid": "q", "active": true},
            {"rid": "h", "active": false},
            {"rid": "f", "active": false}]}}),
        )
        .unwrap();
    let changed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Some(RoomEvent::SubscribedLayersChanged { track_sid, layers }) =
                events.recv().await
            {
                return (track_sid, layers);
            }
        }
    })
    .await
    .expect("SubscribedLayersChanged within 5 s");
    assert_eq!(changed.0, "TR_v");
    assert_eq!(changed.1.len(), 3);
    assert!(video.layer_active("q"));
    assert!(!video.layer_active("h") && !video.layer_active("f"));
    let states = video.layers();
    assert!(states[2].enabled && !states[2].wanted);
    let sent_f = video.packets_sent("f");
    assert_stopped(&received_layers, "f", "q", 60).await;
    assert_stopped(&received_layers, "h", "q", 60).await;
    assert_eq!(video.packets_sent("f"), sent_f, "f no longer written");

    // The application stops q too; then the server wants f back: f resumes on a keyframe.
    video.set_layer_active("q", false).unwrap();
    assert!(video.set_layer_active("x", false).is_err());
    let f_frames = snapshot(&received_layers)["f"].frame_starts.len();
    stand_in
        .push
        .send(
            serde_json::json!({"subscribedLayers": {"trackSid": "TR_v", "layers": [
            {"rid": "q", "active": true},
            {"rid": "h", "active": false},
            {"rid": "f", "active": true}]}}),
        )
        .unwrap();
    assert_stopped(&received_layers, "q", "f", 60).await;
    let l = snapshot(&received_layers);
    assert_eq!(
        l["f"].frame_starts.get(f_frames),
        Some(&true),
        "f resumed on a keyframe"
    );
    assert!(
        !video.layer_active("q"),
        "q stays off: the application's choice"
    );

    room.leave().await.unwrap();
    let ended = publisher.await.unwrap();
    assert!(ended.is_err(), "the publishing loop ends with the room");
    stand_in.finish().await;
}
