//! Webhooks: room events POSTed as protobuf JSON (`prism.control.RoomEvent`) to the configured
//! URLs, signed (see [`sign`]), retried with exponential backoff.
//!
//! Rooms hand events over without blocking: each URL has a few lanes, each a bounded queue and
//! one delivery task; a room's events always take the same lane, so they arrive in order,
//! while a slow room does not hold up rooms on other lanes. When a lane's queue is full the
//! event is dropped, counted ([`WebhookStats::dropped`]) and logged.

mod deliver;
pub mod sign;

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prism_proto::control::RoomEvent;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub use deliver::RetryPolicy;
pub use sign::{SIGNATURE_HEADER, sign, verify};

use crate::config::{Config, ConfigError};
use crate::room::EventSink;
use crate::room::events as ev;

/// Delivery lanes per URL.
pub const LANES: usize = 4;

/// The events webhooks carry (WatchRoom streams more).
pub const EVENTS: &[&str] = &[
    ev::ROOM_STARTED,
    ev::ROOM_FINISHED,
    ev::PARTICIPANT_JOINED,
    ev::PARTICIPANT_LEFT,
    ev::TRACK_PUBLISHED,
    ev::TRACK_UNPUBLISHED,
];

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("webhooks.urls: {url:?}: {reason}")]
    Url { url: String, reason: String },
    #[error("cannot create the webhook HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

/// Counters, for tests and diagnostics.
#[derive(Debug, Default)]
pub struct WebhookStats {
    /// Events accepted by a receiver.
    pub delivered: AtomicU64,
    /// Events given up after their last attempt.
    pub failed: AtomicU64,
    /// Events dropped because a queue was full.
    pub dropped: AtomicU64,
    /// HTTP requests made.
    pub attempts: AtomicU64,
}

struct Target {
    url: String,
    lanes: Vec<mpsc::Sender<Arc<RoomEvent>>>,
}

/// The webhook sender of a server.
pub struct Webhooks {
    targets: Vec<Target>,
    stats: Arc<WebhookStats>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Webhooks {
    /// Starts the delivery tasks; `None` when no URL is configured.
    pub fn start(config: &Config) -> Result<Option<Arc<Self>>, WebhookError> {
        let w = &config.webhooks;
        if w.urls.is_empty() {
            return Ok(None);
        }
        let (api_key, secret) = config.webhook_key()?;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(w.timeout_ms))
            .user_agent(concat!("prism/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let policy = RetryPolicy {
            max_attempts: w.max_attempts.max(1),
            initial: Duration::from_millis(w.retry_initial_ms),
            max: Duration::from_millis(w.retry_max_ms),
        };
        let stats = Arc::new(WebhookStats::default());
        let per_lane = (w.queue_size / LANES).max(1);
        let mut targets = Vec::new();
        let mut tasks = Vec::new();
        for url in &w.urls {
            let parsed = reqwest::Url::parse(url).map_err(|e| WebhookError::Url {
                url: url.clone(),
                reason: e.to_string(),
            })?;
            let delivery = Arc::new(deliver::Delivery {
                client: client.clone(),
                url: parsed,
                api_key: api_key.to_owned(),
                secret: secret.to_owned(),
                policy,
                stats: stats.clone(),
            });
            let mut lanes = Vec::new();
            for _ in 0..LANES {
                let (tx, rx) = mpsc::channel(per_lane);
                lanes.push(tx);
                tasks.push(tokio::spawn(delivery.clone().run(rx)));
            }
            targets.push(Target {
                url: url.clone(),
                lanes,
            });
        }
        Ok(Some(Arc::new(Self {
            targets,
            stats,
            tasks: Mutex::new(tasks),
        })))
    }

    pub fn stats(&self) -> &WebhookStats {
        &self.stats
    }

    /// Stops delivering; events still queued are lost.
    pub fn shutdown(&self) {
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        for t in tasks {
            t.abort();
        }
    }
}

fn lane_of(room: &str) -> usize {
    let mut h = DefaultHasher::new();
    room.hash(&mut h);
    (h.finish() % LANES as u64) as usize
}

impl EventSink for Webhooks {
    fn emit(&self, event: &Arc<RoomEvent>) {
        if !EVENTS.contains(&event.event.as_str()) {
            return;
        }
        let room = event.room.as_ref().map_or("", |r| r.name.as_str());
        let lane = lane_of(room);
        for target in &self.targets {
            if let Err(e) = target.lanes[lane].try_send(event.clone()) {
                let n = self.stats.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::warn!(url = %target.url, event = %event.event, room, error = %e, dropped = n, "webhook queue full; event dropped");
            }
        }
    }
}
