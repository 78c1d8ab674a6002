//! Connection setup when one DTLS handshake flight is lost, in virtual time.
//!
//! In rtc-dtls 0.21.1's `Conn::wait()` (handshaker.rs), any handshake record that arrives
//! while a side waits for the peer's next flight clears its retransmission timer before the
//! flight is parsed; when that record is the peer's retransmission of its previous flight (it
//! lost ours), the parse finds nothing new (`Err((None, None))`) and the side stays in Waiting
//! with no timer: it never resends, and the handshake stalls until ICE gives up. The peer's
//! retransmission and our own timer are both due one retransmission interval after our
//! flight, so which comes first is a race on any real path; here, with no jitter, the
//! retransmission always wins.
//!
//! The Prism server is the DTLS server: a lost flight 4 (ServerHello..Done) would stall it for
//! any client, browsers included. The worker holds the client's repeated ClientHello back
//! (`transport/dtls_replay.rs`), so the engine's own timer resends flight 4: that test passes.
//! A lost flight 5 (the client's Certificate..Finished) still stalls an rtc client such as the
//! Rust SDK, on the client's side, out of the server's reach; that test stays ignored until the
//! engine is fixed (`cargo test -p prism-server --test sim_handshake -- --ignored`).

mod sim;

use std::time::Duration;

use prism_client::synthetic::Vp8Config;
use prism_server::sim::SimPolicy;
use sim::net::{DropRule, LinkConfig};
use sim::world::{World, server_addr};

/// DTLS flight 4 from the server (certificate, ~730 bytes) and flight 5 from the client
/// (certificate, key exchange, Finished, ~660 bytes); STUN and the other flights are far
/// smaller.
const SERVER_FLIGHT_4: std::ops::RangeInclusive<usize> = 700..=800;
const CLIENT_FLIGHT_5: std::ops::RangeInclusive<usize> = 600..=699;

/// Whether a publisher connects within 10 s when `drop` loses one flight.
fn connects_despite(lose: impl FnOnce(&mut World)) -> bool {
    let mut world = World::new(1, LinkConfig::delay_ms(30), SimPolicy::default());
    lose(&mut world);
    world.add_publisher(Vp8Config::default());
    world.run_until_true(Duration::from_secs(10), World::all_connected)
}

#[test]
fn the_handshake_completes_on_a_clean_path() {
    assert!(connects_despite(|_| {}));
}

#[test]
fn the_handshake_survives_a_lost_server_flight() {
    let connected = connects_despite(|w| {
        let client = w.publisher_addr(0);
        let rule = DropRule {
            lengths: SERVER_FLIGHT_4,
            count: 1,
        };
        w.net.drop_when(server_addr(), client, rule);
    });
    assert!(
        connected,
        "connected after the server's flight 4 was lost once"
    );
}

#[test]
#[ignore = "rtc-dtls 0.21.1: the client stops retransmitting flight 5 (see the module docs)"]
fn the_handshake_survives_a_lost_client_flight() {
    let connected = connects_despite(|w| {
        let client = w.publisher_addr(0);
        let rule = DropRule {
            lengths: CLIENT_FLIGHT_5,
            count: 1,
        };
        w.net.drop_when(client, server_addr(), rule);
    });
    assert!(
        connected,
        "connected after the client's flight 5 was lost once"
    );
}
