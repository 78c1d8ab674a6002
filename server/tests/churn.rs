//! 50 concurrent clients creating, joining, leaving and deleting rooms (signaling, a real
//! offer, and control-plane calls) leave no room, participant, connection or task behind and
//! never deadlock: every step has a deadline.
//!
//! Runs for `PRISM_CHURN_SECS` seconds (default 5, to keep the suite fast on two cores; the
//! acceptance run uses `PRISM_CHURN_SECS=30`).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use prism_client::control::CreateRoomRequest;
use prism_proto::signal::{
    LeaveRequest, SessionDescription, SignalRequest, signal_request::Message as Req,
    signal_response::Message as Resp,
};

const CLIENTS: usize = 50;
const ROOMS: usize = 6;
/// No single step (a join, an RPC) may take longer: past it, something is stuck.
const STEP_DEADLINE: Duration = Duration::from_secs(15);

/// Joins, offers, stays a little, leaves. The room may be deleted under it at any point.
async fn visit(
    server: &prism_server::Server,
    room: &str,
    identity: &str,
    sdp: &str,
    stay: Duration,
) {
    let Ok(mut c) = RawClient::connect(server, &token(room, identity)).await else {
        return;
    };
    let mut joined = false;
    while let Some(m) = c.recv().await {
        match m.message {
            Some(Resp::Join(_)) => {
                joined = true;
                break;
            }
            Some(Resp::Leave(_)) | Some(Resp::Error(_)) => break,
            _ => {}
        }
    }
    if !joined {
        return;
    }
    c.send(&SignalRequest {
        message: Some(Req::Offer(SessionDescription {
            r#type: "offer".into(),
            sdp: sdp.to_owned(),
            id: 1,
        })),
    })
    .await;
    let deadline = tokio::time::sleep(stay);
    tokio::pin!(deadline);
    let mut kicked = false;
    loop {
        tokio::select! {
            m = c.recv() => match m.and_then(|m| m.message) {
                None | Some(Resp::Leave(_)) => { kicked = true; break; }
                _ => {}
            },
            _ = &mut deadline => break,
        }
    }
    if !kicked {
        c.send(&SignalRequest {
            message: Some(Req::Leave(LeaveRequest {})),
        })
        .await;
    }
    while c.recv().await.is_some() {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_clients_churning_rooms_leave_nothing_behind() {
    let seconds: u64 = std::env::var("PRISM_CHURN_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let server = Arc::new(start().await);
    let control = control(&server).await;
    let metrics = tokio::runtime::Handle::current().metrics();
    let sdp = client_offer();
    // Warm up what starts once per process (connection pools, the control channel).
    visit(&server, "warm-up", "warm-up", &sdp, Duration::ZERO).await;
    control.list_rooms(&[]).await.unwrap();
    eventually(Duration::from_secs(5), || async {
        server.rooms().room_count() == 0
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let tasks_before = metrics.num_alive_tasks();

    let until = Instant::now() + Duration::from_secs(seconds);
    let mut clients = Vec::new();
    for n in 0..CLIENTS {
        let (server, control, sdp) = (server.clone(), control.clone(), sdp.clone());
        clients.push(tokio::spawn(async move {
            let mut ops = 0u64;
            let mut i = n as u64;
            while Instant::now() < until {
                // A cheap deterministic mix per client.
                i = i
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let room = format!("churn-{}", (i >> 33) as usize % ROOMS);
                let step = async {
                    match (i >> 40) % 10 {
                        0 => {
                            let _ = control
                                .create_room(CreateRoomRequest {
                                    name: room,
                                    empty_timeout: 1,
                                    ..Default::default()
                                })
                                .await;
                        }
                        1 => {
                            let _ = control.delete_room(&room).await;
                        }
                        2 => {
                            let _ = control.list_participants(&room).await;
                            let _ = control.list_rooms(&[]).await;
                        }
                        _ => {
                            let stay = Duration::from_millis((i >> 20) % 300);
                            visit(&server, &room, &format!("c{n}-{ops}"), &sdp, stay).await;
                        }
                    }
                };
                if tokio::time::timeout(STEP_DEADLINE, step).await.is_err() {
                    panic!("client {n}: a step took over {STEP_DEADLINE:?}: deadlock suspected");
                }
                ops += 1;
            }
            ops
        }));
    }
    let mut total = 0;
    for c in clients {
        total += c.await.expect("client task");
    }
    assert!(
        total >= CLIENTS as u64,
        "every client did something ({total} steps)"
    );
    println!("{total} steps by {CLIENTS} clients in {seconds} s");

    // Rooms created by the control plane close 1 s after they empty.
    assert_nothing_left_behind(
        &server,
        Duration::from_secs(15),
        tasks_before,
        &format!("after {total} steps"),
    )
    .await;
    drop(control);
    if let Ok(server) = Arc::try_unwrap(server) {
        server.shutdown().await;
    }
}
