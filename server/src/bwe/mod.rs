//! Downlink congestion control: how much each subscriber's link carries and how it is shared
//! among the tracks it subscribes to.
//!
//! - [`estimator`]: the send-side estimate from transport-wide CC feedback (REMB as fallback).
//! - [`probe`]: probe clusters and when to send them.
//! - [`pacer`]: the interceptor that meters each connection's packets onto the wire.
//! - [`allocator`]: which layer of which track fits the estimate.
//! - [`link`]: the state one connection's interceptors share with its worker.
//! - [`packet_groups`], [`trendline`]: the delay-based overuse detector the estimator uses.
//! - [`feedback_scope`]: tells the estimator which packets a feedback packet speaks for.

pub mod allocator;
pub mod estimator;
pub mod feedback_scope;
pub mod link;
pub mod pacer;
pub mod packet_groups;
pub mod probe;
pub mod quality;
pub mod trendline;
