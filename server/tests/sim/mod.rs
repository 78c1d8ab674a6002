//! Deterministic simulations in virtual time: the server's real media worker
//! ([`prism_server::sim::SimWorker`]) and real `rtc` client peers over a simulated network, no
//! sockets and no sleeps. Shared by the `sim_*.rs` tests; each uses part of it.
//!
//! - [`net`]: links per direction (delay, jitter, loss, rate cap with a bounded queue).
//! - [`peer`]: the clients: a VP8 publisher (plain or simulcast) that answers PLI with a
//!   keyframe, and subscribers that record every packet and sender report.
//! - [`tap`]: interceptors that show the clients' RTCP to the test.
//! - [`world`]: the event loop tying them together; [`report`]: completeness and timing.
//!
//! A test builds a world, connects its clients, impairs links, runs and reads the records:
//!
//! ```ignore
//! let mut world = World::new(seed, LinkConfig::delay_ms(30), SimPolicy::default());
//! world.add_publisher(Vp8Config::default());
//! let s = world.add_subscriber(); // subscribes to every track, now and later
//! world.connect_all(Duration::from_secs(5));
//! world.configure_path(world.subscriber_addr(s), up, LinkConfig::delay_ms(30).loss(0.05));
//! world.run_for(Duration::from_secs(30));
//! let c = Completeness::of(&world.publishers[0].sent, &world.subscribers[s].received, cutoff);
//! ```
//!
//! The same seed gives the same run: the network's randomness is a function of the seed and
//! virtual time. (What the engine draws from the OS, such as keys and SSRCs, does not change
//! timing; the NTP values of sender reports carry the real wall clock.)
#![allow(dead_code)]

pub mod net;
pub mod peer;
pub mod report;
pub mod tap;
pub mod world;
