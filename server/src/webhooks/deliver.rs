//! Delivery of one URL's events of one lane: in order, each retried with exponential backoff
//! until it is accepted (2xx) or its attempts run out.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use prism_proto::control::RoomEvent;
use tokio::sync::mpsc;

use super::WebhookStats;
use super::sign::{API_KEY_HEADER, EVENT_HEADER, EVENT_ID_HEADER, SIGNATURE_HEADER, sign};

/// How often and how patiently an event is delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub initial: Duration,
    pub max: Duration,
}

impl RetryPolicy {
    /// The wait after failed attempt `attempt` (1-based): initial, 2×, 4×, ... capped at max.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u32
            .checked_shl(attempt.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }
}

pub(super) struct Delivery {
    pub client: reqwest::Client,
    pub url: reqwest::Url,
    pub api_key: String,
    pub secret: String,
    pub policy: RetryPolicy,
    pub stats: Arc<WebhookStats>,
}

impl Delivery {
    pub async fn run(self: Arc<Self>, mut events: mpsc::Receiver<Arc<RoomEvent>>) {
        while let Some(event) = events.recv().await {
            self.deliver(&event).await;
        }
    }

    async fn deliver(&self, event: &RoomEvent) {
        let body = prism_proto::to_json(event);
        let signature = sign(&self.secret, body.as_bytes());
        for attempt in 1..=self.policy.max_attempts {
            self.stats.attempts.fetch_add(1, Ordering::Relaxed);
            match self.post(event, &body, &signature).await {
                Ok(()) => {
                    self.stats.delivered.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Err(why) if attempt == self.policy.max_attempts => {
                    self.stats.failed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(url = %self.url, event = %event.event, id = %event.id, attempts = attempt, error = %why, "webhook given up");
                    return;
                }
                Err(why) => {
                    let wait = self.policy.backoff(attempt);
                    tracing::debug!(url = %self.url, event = %event.event, id = %event.id, attempt, ?wait, error = %why, "webhook failed; retrying");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    async fn post(&self, event: &RoomEvent, body: &str, signature: &str) -> Result<(), String> {
        let response = self
            .client
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, signature)
            .header(API_KEY_HEADER, &self.api_key)
            .header(EVENT_HEADER, &event.event)
            .header(EVENT_ID_HEADER, &event.id)
            .body(body.to_owned())
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("HTTP {status}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let p = RetryPolicy {
            max_attempts: 10,
            initial: Duration::from_millis(100),
            max: Duration::from_millis(1000),
        };
        let waits: Vec<u128> = (1..=6).map(|a| p.backoff(a).as_millis()).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(p.backoff(200), Duration::from_millis(1000));
    }
}
