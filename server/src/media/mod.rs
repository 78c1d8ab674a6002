//! The media hot path: what a worker does with each RTP packet. A publisher's packet is parsed
//! once ([`receiver`], [`codec`]); each subscriber's [`down_track`] rewrites only the header
//! ([`munger`], [`extensions`]) and shares the payload bytes.

pub mod audio_level;
pub mod codec;
pub mod down_track;
pub mod extensions;
pub mod layers;
pub mod munger;
pub mod picture_id;
pub mod rate;
pub mod receiver;
pub mod reports;

/// A published track on a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReceiverId(pub u64);

/// A subscriber's copy of a track on a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DownTrackId(pub u64);
