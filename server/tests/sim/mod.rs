//! Deterministic simulations in virtual time: the server's real media worker
//! ([`prism_server::sim::SimWorker`]) and real `rtc` client peers over a simulated network.
//! Shared by the `sim_*.rs` tests; each uses part of it.
#![allow(dead_code)]

pub mod net;
pub mod peer;
pub mod report;
pub mod tap;
pub mod world;
