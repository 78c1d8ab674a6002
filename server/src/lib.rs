//! Prism, an SFU media server: each participant holds one WebRTC peer connection to the
//! server, which receives every track once and forwards it to its subscribers.
//!
//! Layers, data flowing down: [`api`] (HTTP, WebSocket signaling, the gRPC control plane) →
//! [`room`] (rooms, participants, subscriptions, data messages, room events) → [`media`] (the
//! per-packet hot path) → [`transport`] (UDP sockets and the peer connections on them, one
//! worker thread per core). [`webhooks`] delivers room events to configured URLs.

pub mod api;
pub mod auth;
pub mod bwe;
pub mod config;
pub mod media;
pub mod metrics;
pub mod room;
pub mod telemetry;
pub mod transport;
pub mod webhooks;

/// A media worker in virtual time, for deterministic simulations (see `transport::sim`).
#[doc(hidden)]
pub use transport::sim;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::oneshot;

use crate::api::AppState;
use crate::auth::TokenVerifier;
use crate::config::Config;
use crate::room::{EventBus, EventSink, RoomManager};
use crate::transport::{Transport, TransportError, WorkerSnapshot};
use crate::webhooks::{WebhookError, Webhooks};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("invalid configuration: {0}")]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error(transparent)]
    Webhooks(#[from] WebhookError),
    #[error(transparent)]
    Telemetry(#[from] telemetry::TelemetryError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A running server. Dropping it does not stop it; call [`Server::shutdown`].
pub struct Server {
    http_addr: SocketAddr,
    rooms: Arc<RoomManager>,
    transport: Arc<Transport>,
    webhooks: Option<Arc<Webhooks>>,
    otlp_metrics: Option<telemetry::otlp_metrics::OtlpMetrics>,
    stop: Option<oneshot::Sender<()>>,
    http: Option<tokio::task::JoinHandle<()>>,
}

impl Server {
    /// Binds every socket and starts serving. Port 0 in the config picks free ports (tests).
    pub async fn start(config: Config) -> Result<Self, ServerError> {
        config.validate()?;
        let config = Arc::new(config);
        let webhooks = Webhooks::start(&config)?;
        let sinks: Vec<Arc<dyn EventSink>> = webhooks
            .iter()
            .map(|w| w.clone() as Arc<dyn EventSink>)
            .collect();
        let transport = Arc::new(Transport::start(&config)?);
        let rooms = RoomManager::new(
            config.clone(),
            transport.clone(),
            Arc::new(EventBus::new(sinks)),
        );
        let verifier = Arc::new(TokenVerifier::new(&config.keys));
        let sources = metrics::Sources {
            rooms: rooms.clone(),
            transport: transport.clone(),
        };
        let telemetry = &config.telemetry;
        for w in transport.workers() {
            w.stats.histograms.set_enabled(telemetry.metrics);
        }
        let otlp_metrics = if telemetry.metrics && !telemetry.otlp_endpoint.is_empty() {
            Some(telemetry::otlp_metrics::OtlpMetrics::start(
                telemetry,
                sources.clone(),
            )?)
        } else {
            None
        };
        let state = AppState {
            rooms: rooms.clone(),
            verifier: verifier.clone(),
            whip: Default::default(),
            metrics: telemetry
                .metrics
                .then(|| Arc::new(metrics::Metrics::new(sources))),
        };
        let addr = SocketAddr::new(config.bind, config.port);
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| ServerError::Listen { addr, source })?;
        let http_addr = listener
            .local_addr()
            .map_err(|source| ServerError::Listen { addr, source })?;
        let (stop, stopped) = oneshot::channel::<()>();
        let grpc = api::grpc::router(rooms.clone(), verifier).await;
        let app = api::grpc::dispatch(api::router(state), grpc);
        let http = tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
                let _ = stopped.await;
            });
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "http server failed");
            }
        });
        tracing::info!(%http_addr, "prism listening");
        Ok(Self {
            http_addr,
            rooms,
            transport,
            webhooks,
            otlp_metrics,
            stop: Some(stop),
            http: Some(http),
        })
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    pub fn rooms(&self) -> &Arc<RoomManager> {
        &self.rooms
    }

    pub fn transport(&self) -> &Arc<Transport> {
        &self.transport
    }

    /// The webhook sender, when webhooks are configured.
    pub fn webhooks(&self) -> Option<&Arc<Webhooks>> {
        self.webhooks.as_ref()
    }

    /// What every worker holds, for leak checks.
    pub async fn worker_snapshots(&self) -> Vec<WorkerSnapshot> {
        let mut out = Vec::new();
        for w in self.transport.workers() {
            if let Ok(s) = w.snapshot().await {
                out.push(s);
            }
        }
        out
    }

    /// Stops accepting, ends sessions and stops the workers.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(http) = self.http.take() {
            http.abort();
            let _ = http.await;
        }
        if let Some(w) = &self.webhooks {
            w.shutdown();
        }
        if let Some(otlp) = self.otlp_metrics.take() {
            // Blocks on a last export, which the runtime carries.
            let done = tokio::task::spawn_blocking(move || otlp.shutdown()).await;
            if let Ok(Err(e)) = done {
                tracing::warn!(error = %e, "OTLP metrics shutdown");
            }
        }
        let transport = self.transport.clone();
        let _ = tokio::task::spawn_blocking(move || transport.shutdown()).await;
    }
}
