//! `prism-loadtest`: simulated publishers and subscribers against a Prism server, and a report
//! of what they saw (join time, loss, one-way latency, bitrate, received layer, the server's
//! downlink estimate per subscriber and the layers it forwarded) plus the server's CPU and
//! memory, as tables and JSON.
//!
//! The library is what the binary runs; tests drive it directly:
//!
//! ```no_run
//! # async fn demo() -> Result<(), prism_loadtest::runner::RunError> {
//! use prism_loadtest::{runner, scenario::Scenario};
//! let scenario = Scenario { subscribers: 3, duration_secs: 5.0, ..Scenario::default() };
//! let (_stop, interrupt) = tokio::sync::watch::channel(false);
//! let outcome = runner::run(scenario, runner::RunOptions::default(), interrupt).await?;
//! println!("{}", outcome.report.render());
//! # Ok(()) }
//! ```

pub mod downlink;
pub mod participant;
pub mod procstat;
pub mod report;
pub mod runner;
pub mod scenario;
pub mod stats;
