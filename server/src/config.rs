//! Server configuration.
//!
//! Every setting has an embedded default (see [`Config::default`]), so `prism` with no
//! arguments runs a development server: HTTP, WebSocket signaling, WHIP/WHEP and gRPC on
//! `127.0.0.1:7880`, UDP media from port 7882 (one port per worker), and the fixed, well-known
//! API key [`DEV_API_KEY`] / secret [`DEV_API_SECRET`].
//!
//! Layers, lowest to highest priority:
//!
//! 1. the embedded defaults;
//! 2. a TOML file, if one is given (unknown keys are an error naming the key);
//! 3. `PRISM_*` environment variables: the rest of the name is the setting's path, with `__`
//!    between levels (`PRISM_PORT=9000`, `PRISM_RTC__UDP_PORT=9002`,
//!    `PRISM_ROOM__AUTO_CREATE=false`, `PRISM_LOG__LEVEL=debug`,
//!    `PRISM_RTC__ADVERTISE_IPS=[203.0.113.7]`). Variables whose first segment is not a
//!    setting (`PRISM_URL`, `PRISM_CONFIG`, ...) are ignored, so tools sharing the prefix don't
//!    break the server; a typo below a known section (`PRISM_RTC__UDPPORT`) is an error.
//!
//! API keys (`keys`, a map from API key to secret) are never merged across layers: the highest
//! layer that sets them wins outright. From highest to lowest: `PRISM_API_KEY` together with
//! `PRISM_API_SECRET` (exactly that one pair); `PRISM_KEYS` (figment dict syntax,
//! `PRISM_KEYS={mykey="secret"}`, or `PRISM_KEYS__MYKEY=secret`); the file's `[keys]` table;
//! the dev pair.
//!
//! [`Config::validate`] (run by [`Config::load`]) refuses to serve the well-known dev secret on
//! anything but a loopback address: a well-known secret never faces a network.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};

use figment::providers::{Format, Serialized, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use serde::{Deserialize, Serialize};

/// API key of the development key pair, used when no keys are configured.
pub const DEV_API_KEY: &str = "devkey";
/// API secret of the development key pair. It is public: a server using it only binds loopback.
pub const DEV_API_SECRET: &str = "prism-dev-secret-do-not-use-in-production";

/// Minimum length, in bytes, of a configured (non-dev) API secret.
pub const MIN_SECRET_LEN: usize = 32;

/// Prefix of the environment variables that override settings.
pub const ENV_PREFIX: &str = "PRISM_";

/// Why a configuration could not be loaded or is not acceptable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A syntax error, a wrong type, or an unknown key (the message names the key and its source).
    #[error("invalid configuration: {0}")]
    Parse(Box<figment::Error>),
    #[error("PRISM_API_KEY and PRISM_API_SECRET must be set together (only {0} is set)")]
    IncompleteKeyPair(&'static str),
    #[error(
        "no API keys are configured: set [keys] in the config file, PRISM_KEYS, or PRISM_API_KEY and PRISM_API_SECRET"
    )]
    NoKeys,
    #[error("an API key name is empty")]
    EmptyKeyName,
    #[error(
        "the secret of API key {key:?} is {len} bytes long; secrets must be at least {MIN_SECRET_LEN} bytes"
    )]
    WeakSecret { key: String, len: usize },
    #[error(
        "refusing to bind {bind} with the well-known development API secret: a well-known secret \
         never faces a network. Configure your own keys ([keys] in the config file, PRISM_KEYS, \
         or PRISM_API_KEY and PRISM_API_SECRET), or bind a loopback address"
    )]
    DevKeysOnNetwork { bind: IpAddr },
    #[error(
        "rtc.udp_port {udp_port} with one port per worker ({workers} workers) goes beyond port 65535: lower rtc.udp_port or rtc.workers"
    )]
    UdpPortRange { udp_port: u16, workers: usize },
    #[error(
        "rtc.ice_failed_timeout_ms ({failed}) must not be shorter than rtc.ice_disconnected_timeout_ms ({disconnected})"
    )]
    IceTimeouts { disconnected: u64, failed: u64 },
    #[error("webhooks.urls: {url:?} is not an http:// or https:// URL")]
    WebhookUrl { url: String },
    #[error(
        "webhooks.api_key {key:?} is not a configured API key (webhooks are signed with its secret)"
    )]
    WebhookKey { key: String },
    #[error(
        "webhooks.api_key must name the API key whose secret signs webhooks: several keys are configured"
    )]
    WebhookKeyAmbiguous,
    #[error("webhooks.{0} must be greater than 0")]
    WebhookZero(&'static str),
    #[error("room.stream_keys: the key of room {room:?} is shorter than 16 characters")]
    WeakStreamKey { room: String },
    #[error("telemetry.otlp_endpoint: {0:?} is not an http:// or https:// URL")]
    OtlpEndpoint(String),
    #[error("telemetry.otlp_interval_ms must be greater than 0")]
    OtlpInterval,
    #[error("bwe: need 0 < min_bps <= initial_bps <= max_bps")]
    BweRange,
}

impl From<figment::Error> for ConfigError {
    fn from(e: figment::Error) -> Self {
        ConfigError::Parse(Box::new(e))
    }
}

/// The whole server configuration. See the module documentation for how it is loaded.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address HTTP/WebSocket/gRPC and UDP media bind to. Default `127.0.0.1`.
    pub bind: IpAddr,
    /// Port for HTTP, WebSocket signaling, WHIP/WHEP and gRPC. Default 7880.
    pub port: u16,
    /// API key -> secret. Default: `{DEV_API_KEY: DEV_API_SECRET}`.
    pub keys: BTreeMap<String, String>,
    pub rtc: RtcConfig,
    pub room: RoomConfig,
    pub log: LogConfig,
    pub webhooks: WebhookConfig,
    pub web: WebConfig,
    pub telemetry: TelemetryConfig,
    pub bwe: BweConfig,
}

/// Downlink congestion control: a send-side bandwidth estimate per subscriber (transport-wide
/// CC feedback, REMB as fallback), probing, pacing, and the allocator that picks each
/// subscribed track's layer within it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BweConfig {
    /// Default true. Off: no estimate, no pacing; subscribers get the layers they ask for.
    pub enabled: bool,
    /// Estimate before the first feedback, bits per second. Default 1500000.
    pub initial_bps: u64,
    /// Floor and ceiling of the estimate. Defaults 50000 and 50000000.
    pub min_bps: u64,
    pub max_bps: u64,
}

impl Default for BweConfig {
    fn default() -> Self {
        BweConfig {
            enabled: true,
            initial_bps: 1_500_000,
            min_bps: 50_000,
            max_bps: 50_000_000,
        }
    }
}

/// Metrics and OpenTelemetry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// Collect metrics: `/metrics`, the OTLP metrics and the workers' histograms (join time,
    /// first packet, loop time, downlink). Off: `/metrics` is 404 and nothing is recorded
    /// (the workers' plain counters remain: logs and worker placement use them). Default true.
    pub metrics: bool,
    /// OTLP/gRPC collector to send traces and metrics to, e.g. `http://127.0.0.1:4317`. Empty
    /// = none: no exporter, no OpenTelemetry work. Default: `OTEL_EXPORTER_OTLP_ENDPOINT` when
    /// set, else empty.
    pub otlp_endpoint: String,
    /// How often metrics are pushed over OTLP. Default 10000 ms.
    pub otlp_interval_ms: u64,
    /// The `service.name` of the exported telemetry. Default `prism`.
    pub service_name: String,
    /// Which spans go to OTLP, as a tracing filter (independent of `log.level`). Default
    /// `prism_server=info`: joins, negotiations, publications, subscriptions, gRPC calls.
    pub trace_filter: String,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            metrics: true,
            otlp_endpoint: String::new(),
            otlp_interval_ms: 10_000,
            service_name: "prism".to_owned(),
            trace_filter: "prism_server=info".to_owned(),
        }
    }
}

/// Webhooks: room and participant events POSTed as JSON to every URL, signed with an API
/// secret (`X-Prism-Signature: sha256=<hex HMAC-SHA256 of the body>`), retried with
/// exponential backoff, in order per room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookConfig {
    /// Where events are POSTed. Default: none (webhooks off).
    pub urls: Vec<String>,
    /// The API key whose secret signs the bodies. Default: the only configured key.
    pub api_key: String,
    /// Timeout of one delivery attempt. Default 5000 ms.
    pub timeout_ms: u64,
    /// Attempts per event before it is given up (logged). Default 8.
    pub max_attempts: u32,
    /// Wait before the first retry; doubled each time up to `retry_max_ms`. Default 500 ms.
    pub retry_initial_ms: u64,
    /// Longest wait between retries. Default 30000 ms.
    pub retry_max_ms: u64,
    /// Events waiting per URL; when full, new events are dropped and counted. Default 4096.
    pub queue_size: usize,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            urls: Vec::new(),
            api_key: String::new(),
            timeout_ms: 5_000,
            max_attempts: 8,
            retry_initial_ms: 500,
            retry_max_ms: 30_000,
            queue_size: 4096,
        }
    }
}

/// Media transport settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RtcConfig {
    /// First UDP media port; worker `i` listens on `udp_port + i`. Default 7882. 0 lets the OS
    /// pick a port per worker (tests, embedding); clients learn it from the candidates.
    pub udp_port: u16,
    /// Number of media workers; 0 = one per core. Default 0.
    pub workers: usize,
    /// Candidate addresses given to clients; empty = automatic (see [`Config::advertised_ips`]).
    pub advertise_ips: Vec<IpAddr>,
    /// ICE disconnected timeout. Default 5000 ms.
    pub ice_disconnected_timeout_ms: u64,
    /// A participant whose connection is gone this long is removed. Default 15000 ms.
    pub ice_failed_timeout_ms: u64,
    /// SO_RCVBUF requested for each media socket. Default 4 MiB.
    pub socket_recv_buffer: usize,
    /// SO_SNDBUF requested for each media socket. Default 4 MiB.
    pub socket_send_buffer: usize,
    /// STUN/TURN servers offered to WHIP/WHEP clients (`Link` headers). Default none: the
    /// server is ICE-lite on its advertised addresses.
    pub ice_servers: Vec<IceServerConfig>,
}

/// A STUN or TURN server clients may use, e.g. `{ urls = ["turn:turn.example.com:3478"],
/// username = "u", credential = "p" }`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IceServerConfig {
    pub urls: Vec<String>,
    pub username: String,
    pub credential: String,
}

/// Room lifecycle settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoomConfig {
    /// A room is created by its first join. Default true.
    pub auto_create: bool,
    /// An empty room closes after this; 0 = as soon as the last participant leaves. Default 300.
    pub empty_timeout_secs: u64,
    /// 0 = unlimited. Default 0.
    pub max_participants: u32,
    /// A participant that never connects its peer connection is removed after this. Default 20.
    pub join_timeout_secs: u64,
    /// At most one keyframe request per layer this often. Default 500 ms.
    pub keyframe_request_interval_ms: u64,
    /// Dynacast: simulcast layers no subscriber needs are paused at the publisher (the client
    /// is told through signaling). Default true.
    pub dynacast: bool,
    /// WHIP stream keys, room name -> key: `Authorization: Bearer <key>` on `POST /whip/<room>`
    /// publishes there without an access token (for encoders like OBS configured once). Keys
    /// must be at least 16 characters. Default none.
    pub stream_keys: BTreeMap<String, String>,
}

/// The demo conference page and its token endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebConfig {
    /// Serve the demo conference page at `/` and the browser SDK at `/sdk/`. Default true.
    pub demo: bool,
    /// `POST /api/token` mints access tokens for anyone who asks, so the demo page can join
    /// without a backend. Default true, but only ever served with the development keys (see
    /// [`Config::token_endpoint_enabled`]): with your own keys, mint tokens in your backend.
    pub token_endpoint: bool,
    /// Serve the live dashboard at `/dashboard`; its data (`/api/dashboard`) needs a node-wide
    /// admin token. Default true.
    pub dashboard: bool,
}

/// Logging settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A tracing filter directive (`info`, `debug`, `prism_server=trace,info`, ...). Default `info`.
    pub level: String,
    /// One JSON object per line instead of human-readable text. Default false.
    pub json: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 7880,
            keys: dev_keys(),
            rtc: RtcConfig::default(),
            room: RoomConfig::default(),
            log: LogConfig::default(),
            webhooks: WebhookConfig::default(),
            web: WebConfig::default(),
            telemetry: TelemetryConfig::default(),
            bwe: BweConfig::default(),
        }
    }
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            demo: true,
            token_endpoint: true,
            dashboard: true,
        }
    }
}

impl Default for RtcConfig {
    fn default() -> Self {
        RtcConfig {
            udp_port: 7882,
            workers: 0,
            advertise_ips: Vec::new(),
            ice_disconnected_timeout_ms: 5_000,
            ice_failed_timeout_ms: 15_000,
            socket_recv_buffer: 4 * 1024 * 1024,
            socket_send_buffer: 4 * 1024 * 1024,
            ice_servers: Vec::new(),
        }
    }
}

impl Default for RoomConfig {
    fn default() -> Self {
        RoomConfig {
            auto_create: true,
            empty_timeout_secs: 300,
            max_participants: 0,
            join_timeout_secs: 20,
            keyframe_request_interval_ms: 500,
            dynacast: true,
            stream_keys: BTreeMap::new(),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".to_owned(),
            json: false,
        }
    }
}

/// Secrets are never printed: `Debug` shows the key names only.
impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Redacted<'a>(&'a BTreeMap<String, String>);
        impl fmt::Debug for Redacted<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_map()
                    .entries(self.0.keys().map(|k| (k, "<redacted>")))
                    .finish()
            }
        }
        f.debug_struct("Config")
            .field("bind", &self.bind)
            .field("port", &self.port)
            .field("keys", &Redacted(&self.keys))
            .field("rtc", &self.rtc)
            .field("room", &self.room)
            .field("log", &self.log)
            .field("webhooks", &self.webhooks)
            .field("web", &self.web)
            .field("telemetry", &self.telemetry)
            .field("bwe", &self.bwe)
            .finish()
    }
}

fn dev_keys() -> BTreeMap<String, String> {
    BTreeMap::from([(DEV_API_KEY.to_owned(), DEV_API_SECRET.to_owned())])
}

/// Top-level settings an environment variable may name; others with the prefix are ignored.
const TOP_LEVEL: &[&str] = &[
    "bind",
    "port",
    "keys",
    "rtc",
    "room",
    "log",
    "webhooks",
    "web",
    "telemetry",
    "bwe",
];

/// The standard OpenTelemetry variable, used when `telemetry.otlp_endpoint` is not set.
pub const OTEL_ENDPOINT_ENV: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";

impl Config {
    /// Embedded defaults < TOML file (if given) < `PRISM_*` environment variables; then
    /// [`validate`](Self::validate).
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        Self::load_from(file, std::env::vars())
    }

    /// Same as [`load`](Self::load), reading the environment from `env` instead of the process.
    pub fn load_from(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let env: Vec<(String, String)> = env.into_iter().collect();
        let otel_endpoint = env
            .iter()
            .find(|(k, _)| k == OTEL_ENDPOINT_ENV)
            .map(|(_, v)| v.trim().to_owned());
        let env = EnvLayer::parse(env)?;

        // Keys are replaced, never merged, so the base layer carries none.
        let base = Config {
            keys: BTreeMap::new(),
            ..Config::default()
        };
        let mut figment = Figment::from(Serialized::defaults(base));
        let mut file_has_keys = false;
        if let Some(path) = file {
            // Read it once ourselves for an error that names the path; figment re-reads it so
            // its errors name the file too.
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_owned(),
                source,
            })?;
            file_has_keys = Figment::from(Toml::file_exact(path))
                .find_value("keys")
                .is_ok();
            figment = figment.merge(Toml::file_exact(path));
        }
        figment = figment.merge(&env);
        let mut config: Config = figment.extract()?;

        if config.telemetry.otlp_endpoint.is_empty()
            && let Some(endpoint) = otel_endpoint
        {
            config.telemetry.otlp_endpoint = endpoint;
        }
        if let Some(keys) = env.keys {
            config.keys = keys;
        } else if !file_has_keys {
            config.keys = dev_keys();
        }
        config.validate()?;
        Ok(config)
    }

    /// Checks the settings against each other; see [`ConfigError`] for what is refused.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.keys.is_empty() {
            return Err(ConfigError::NoKeys);
        }
        if let Some((room, _)) = self.room.stream_keys.iter().find(|(_, k)| k.len() < 16) {
            return Err(ConfigError::WeakStreamKey { room: room.clone() });
        }
        let b = &self.bwe;
        if b.min_bps == 0 || b.min_bps > b.initial_bps || b.initial_bps > b.max_bps {
            return Err(ConfigError::BweRange);
        }
        for (key, secret) in &self.keys {
            if key.is_empty() {
                return Err(ConfigError::EmptyKeyName);
            }
            if secret != DEV_API_SECRET && secret.len() < MIN_SECRET_LEN {
                return Err(ConfigError::WeakSecret {
                    key: key.clone(),
                    len: secret.len(),
                });
            }
        }
        if self.uses_dev_keys() && !self.bind.is_loopback() {
            return Err(ConfigError::DevKeysOnNetwork { bind: self.bind });
        }
        let workers = self.worker_count();
        let last = (self.rtc.udp_port as usize).saturating_add(workers.saturating_sub(1));
        if last > u16::MAX as usize {
            return Err(ConfigError::UdpPortRange {
                udp_port: self.rtc.udp_port,
                workers,
            });
        }
        if self.rtc.ice_failed_timeout_ms < self.rtc.ice_disconnected_timeout_ms {
            return Err(ConfigError::IceTimeouts {
                disconnected: self.rtc.ice_disconnected_timeout_ms,
                failed: self.rtc.ice_failed_timeout_ms,
            });
        }
        let otlp = &self.telemetry.otlp_endpoint;
        if !otlp.is_empty() {
            let lower = otlp.to_ascii_lowercase();
            if !(lower.starts_with("http://") || lower.starts_with("https://"))
                || otlp.contains(char::is_whitespace)
            {
                return Err(ConfigError::OtlpEndpoint(otlp.clone()));
            }
            if self.telemetry.otlp_interval_ms == 0 {
                return Err(ConfigError::OtlpInterval);
            }
        }
        if !self.webhooks.urls.is_empty() {
            self.webhook_key()?;
            let w = &self.webhooks;
            for url in &w.urls {
                let lower = url.to_ascii_lowercase();
                let scheme_ok = lower.starts_with("http://") || lower.starts_with("https://");
                if !scheme_ok || url.contains(char::is_whitespace) {
                    return Err(ConfigError::WebhookUrl { url: url.clone() });
                }
            }
            for (name, value) in [
                ("timeout_ms", w.timeout_ms),
                ("max_attempts", u64::from(w.max_attempts)),
                ("retry_initial_ms", w.retry_initial_ms),
                ("retry_max_ms", w.retry_max_ms),
                ("queue_size", w.queue_size as u64),
            ] {
                if value == 0 {
                    return Err(ConfigError::WebhookZero(name));
                }
            }
        }
        Ok(())
    }

    /// The API key and secret that sign webhooks: `webhooks.api_key`, or the only key.
    pub fn webhook_key(&self) -> Result<(&str, &str), ConfigError> {
        let key = &self.webhooks.api_key;
        if key.is_empty() {
            if self.keys.len() != 1 {
                return Err(ConfigError::WebhookKeyAmbiguous);
            }
            let (k, s) = self.keys.iter().next().ok_or(ConfigError::NoKeys)?;
            return Ok((k, s));
        }
        self.keys
            .get_key_value(key)
            .map(|(k, s)| (k.as_str(), s.as_str()))
            .ok_or_else(|| ConfigError::WebhookKey { key: key.clone() })
    }

    /// Whether `POST /api/token` is served: asked for, and the server runs on the development
    /// keys (which only ever bind loopback), so it cannot hand out tokens for real keys.
    pub fn token_endpoint_enabled(&self) -> bool {
        self.web.token_endpoint && self.uses_dev_keys()
    }

    /// Whether the well-known dev secret is among the keys.
    pub fn uses_dev_keys(&self) -> bool {
        self.keys.values().any(|s| s == DEV_API_SECRET)
    }

    /// Number of media workers: `rtc.workers`, or one per core when it is 0.
    pub fn worker_count(&self) -> usize {
        match self.rtc.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }

    /// UDP media port of each worker, in worker order (`udp_port + i`).
    pub fn udp_ports(&self) -> std::ops::RangeInclusive<u16> {
        let last = self.rtc.udp_port as usize + self.worker_count() - 1;
        // Validation keeps `last` within u16; clamp rather than overflow if it was skipped.
        self.rtc.udp_port..=u16::try_from(last).unwrap_or(u16::MAX)
    }

    /// Addresses given to clients as ICE candidates: `rtc.advertise_ips` if set; else the bind
    /// address if it is not unspecified; else the address of the interface the default route
    /// leaves through (found with a UDP `connect`, which sends nothing), falling back to
    /// 127.0.0.1.
    pub fn advertised_ips(&self) -> Vec<IpAddr> {
        if !self.rtc.advertise_ips.is_empty() {
            return self.rtc.advertise_ips.clone();
        }
        if !self.bind.is_unspecified() {
            return vec![self.bind];
        }
        let mut ips = Vec::new();
        if let Some(ip) = route_source(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))) {
            ips.push(ip);
        }
        // A `[::]` socket is dual-stack: offer the IPv6 address as well.
        if self.bind.is_ipv6() {
            let doc = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
            if let Some(ip) = route_source(IpAddr::V6(doc)) {
                ips.push(ip);
            }
        }
        if ips.is_empty() {
            ips.push(IpAddr::V4(Ipv4Addr::LOCALHOST));
        }
        ips
    }
}

/// Local address the OS would send from to reach `dest`. `connect` on a UDP socket only sets
/// the default destination (a route lookup); no datagram is sent.
fn route_source(dest: IpAddr) -> Option<IpAddr> {
    let any: SocketAddr = match dest {
        IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        IpAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(any).ok()?;
    socket.connect((dest, 9)).ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_unspecified() && !ip.is_loopback()).then_some(ip)
}

/// The `PRISM_*` variables, as a figment provider (settings other than keys) plus the keys.
struct EnvLayer {
    dict: Dict,
    keys: Option<BTreeMap<String, String>>,
}

impl EnvLayer {
    fn parse(env: impl IntoIterator<Item = (String, String)>) -> Result<EnvLayer, ConfigError> {
        let mut dict = Dict::new();
        let (mut api_key, mut api_secret) = (None, None);
        for (name, value) in env {
            let Some(rest) = strip_prefix_ignore_case(name.trim(), ENV_PREFIX) else {
                continue;
            };
            let path = rest.to_ascii_lowercase();
            match path.as_str() {
                "api_key" => api_key = Some(value),
                "api_secret" => api_secret = Some(value),
                _ => {
                    let segments: Vec<&str> = path.split("__").collect();
                    if segments.iter().any(|s| s.is_empty()) || !TOP_LEVEL.contains(&segments[0]) {
                        continue;
                    }
                    let value: Value = value.parse().unwrap_or_else(|e| match e {});
                    insert_path(&mut dict, &segments, value);
                }
            }
        }

        let keys = match (api_key, api_secret) {
            (Some(key), Some(secret)) => Some(BTreeMap::from([(key, secret)])),
            (Some(_), None) => return Err(ConfigError::IncompleteKeyPair("PRISM_API_KEY")),
            (None, Some(_)) => return Err(ConfigError::IncompleteKeyPair("PRISM_API_SECRET")),
            (None, None) => None,
        };
        // Whatever else set keys, take them out so they replace (not merge with) the file's.
        let env_keys = dict.remove("keys");
        let keys = match (keys, env_keys) {
            (Some(pair), _) => Some(pair),
            (None, Some(value)) => {
                let figment = Figment::from(EnvLayer::single("keys", value));
                Some(figment.extract_inner::<BTreeMap<String, String>>("keys")?)
            }
            (None, None) => None,
        };
        Ok(EnvLayer { dict, keys })
    }

    fn single(key: &str, value: Value) -> EnvLayer {
        let mut dict = Dict::new();
        dict.insert(key.to_owned(), value);
        EnvLayer { dict, keys: None }
    }
}

impl Provider for EnvLayer {
    fn metadata(&self) -> Metadata {
        Metadata::named(format!("`{ENV_PREFIX}` environment variable(s)")).interpolater(
            |_: &Profile, path: &[&str]| {
                let path: Vec<String> = path.iter().map(|k| k.to_ascii_uppercase()).collect();
                format!("{ENV_PREFIX}{}", path.join("__"))
            },
        )
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.dict.clone()))
    }
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// Inserts `value` at `path` (non-empty), creating or replacing intermediate dicts.
fn insert_path(dict: &mut Dict, path: &[&str], value: Value) {
    let (first, rest) = match path.split_first() {
        Some(split) => split,
        None => return,
    };
    if rest.is_empty() {
        dict.insert((*first).to_owned(), value);
        return;
    }
    let entry = dict
        .entry((*first).to_owned())
        .or_insert_with(|| Value::from(Dict::new()));
    if entry.as_dict().is_none() {
        *entry = Value::from(Dict::new());
    }
    if let Value::Dict(_, inner) = entry {
        insert_path(inner, rest, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const GOOD_SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// A TOML file in the temp dir, removed on drop.
    struct TempToml(PathBuf);
    impl TempToml {
        fn new(name: &str, contents: &str) -> TempToml {
            let path = std::env::temp_dir().join(format!(
                "prism-config-test-{}-{name}.toml",
                std::process::id()
            ));
            let mut f = std::fs::File::create(&path).unwrap();
            f.write_all(contents.as_bytes()).unwrap();
            TempToml(path)
        }
    }
    impl Drop for TempToml {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn load(file: Option<&TempToml>, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::load_from(file.map(|f| f.0.as_path()), env(vars))
    }

    #[test]
    fn otlp_endpoint_from_config_or_the_standard_variable() {
        assert_eq!(load(None, &[]).unwrap().telemetry.otlp_endpoint, "");
        let c = load(None, &[(OTEL_ENDPOINT_ENV, "http://127.0.0.1:4317")]).unwrap();
        assert_eq!(c.telemetry.otlp_endpoint, "http://127.0.0.1:4317");
        // Prism's own setting wins over the standard variable.
        let c = load(
            None,
            &[
                (OTEL_ENDPOINT_ENV, "http://127.0.0.1:4317"),
                ("PRISM_TELEMETRY__OTLP_ENDPOINT", "http://10.0.0.1:4317"),
            ],
        )
        .unwrap();
        assert_eq!(c.telemetry.otlp_endpoint, "http://10.0.0.1:4317");
        assert!(matches!(
            load(
                None,
                &[("PRISM_TELEMETRY__OTLP_ENDPOINT", "collector:4317")]
            ),
            Err(ConfigError::OtlpEndpoint(_))
        ));
        let c = load(None, &[("PRISM_TELEMETRY__METRICS", "false")]).unwrap();
        assert!(!c.telemetry.metrics);
    }

    #[test]
    fn short_stream_keys_are_refused() {
        let mut c = Config::default();
        c.room.stream_keys = [("live".to_owned(), "short".to_owned())].into();
        assert!(matches!(c.validate(), Err(ConfigError::WeakStreamKey { room }) if room == "live"));
        c.room.stream_keys = [("live".to_owned(), "a-key-of-sixteen+".to_owned())].into();
        assert!(c.validate().is_ok());
    }

    #[test]
    fn defaults() {
        let c = load(None, &[]).unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.bind, IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(c.port, 7880);
        assert_eq!(c.keys, dev_keys());
        assert!(c.uses_dev_keys());
        assert_eq!(c.rtc.udp_port, 7882);
        assert_eq!(c.rtc.workers, 0);
        assert!(c.rtc.advertise_ips.is_empty());
        assert_eq!(c.rtc.ice_disconnected_timeout_ms, 5000);
        assert_eq!(c.rtc.ice_failed_timeout_ms, 15000);
        assert_eq!(c.rtc.socket_recv_buffer, 4 << 20);
        assert_eq!(c.rtc.socket_send_buffer, 4 << 20);
        assert!(c.room.auto_create);
        assert_eq!(c.room.empty_timeout_secs, 300);
        assert_eq!(c.room.max_participants, 0);
        assert_eq!(c.room.join_timeout_secs, 20);
        assert_eq!(c.room.keyframe_request_interval_ms, 500);
        assert!(c.web.demo);
        assert!(c.token_endpoint_enabled());
        assert_eq!(
            c.log,
            LogConfig {
                level: "info".into(),
                json: false
            }
        );
        assert!(DEV_API_SECRET.len() >= MIN_SECRET_LEN);
        assert!(c.worker_count() >= 1);
        assert_eq!(c.udp_ports().count(), c.worker_count());
    }

    #[test]
    fn file_overrides_defaults() {
        let f = TempToml::new(
            "file",
            &format!(
                r#"
                bind = "0.0.0.0"
                port = 8000
                [keys]
                prod = "{GOOD_SECRET}"
                [rtc]
                udp_port = 50000
                workers = 3
                advertise_ips = ["203.0.113.7"]
                [room]
                auto_create = false
                [log]
                json = true
                "#
            ),
        );
        let c = load(Some(&f), &[]).unwrap();
        assert_eq!(c.bind, IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        assert_eq!(c.port, 8000);
        // The file's keys replace the dev pair instead of being merged with it.
        assert_eq!(
            c.keys,
            BTreeMap::from([("prod".to_owned(), GOOD_SECRET.to_owned())])
        );
        assert!(!c.uses_dev_keys());
        assert_eq!(c.rtc.udp_port, 50000);
        assert_eq!(c.worker_count(), 3);
        assert_eq!(c.udp_ports(), 50000..=50002);
        assert_eq!(
            c.advertised_ips(),
            vec!["203.0.113.7".parse::<IpAddr>().unwrap()]
        );
        assert!(!c.room.auto_create);
        assert!(c.log.json);
        // Untouched settings keep their defaults.
        assert_eq!(c.rtc.ice_failed_timeout_ms, 15000);
        assert_eq!(c.room.empty_timeout_secs, 300);
        assert_eq!(c.log.level, "info");
    }

    #[test]
    fn env_overrides_file() {
        let f = TempToml::new("env", "port = 8000\n[rtc]\nudp_port = 50000\nworkers = 2\n");
        let c = load(
            Some(&f),
            &[
                ("PRISM_PORT", "9000"),
                ("PRISM_RTC__UDP_PORT", "9002"),
                ("PRISM_ROOM__AUTO_CREATE", "false"),
                ("PRISM_LOG__LEVEL", "debug"),
                ("PRISM_RTC__ADVERTISE_IPS", "[198.51.100.1, 2001:db8::5]"),
                ("PRISM_BIND", "::1"),
                // Not settings: ignored.
                ("PRISM_URL", "http://localhost:7880"),
                ("PRISM_CONFIG", "/etc/prism.toml"),
                ("PRISM_PORT_7880_TCP", "tcp://10.0.0.1:7880"),
                ("OTHER_PORT", "1"),
            ],
        )
        .unwrap();
        assert_eq!(c.port, 9000);
        assert_eq!(c.rtc.udp_port, 9002);
        assert_eq!(c.rtc.workers, 2, "file value kept where env is silent");
        assert!(!c.room.auto_create);
        assert_eq!(c.log.level, "debug");
        assert_eq!(c.bind, "::1".parse::<IpAddr>().unwrap());
        assert_eq!(
            c.rtc.advertise_ips,
            vec![
                "198.51.100.1".parse::<IpAddr>().unwrap(),
                "2001:db8::5".parse().unwrap()
            ]
        );
        assert!(c.uses_dev_keys());
    }

    #[test]
    fn env_keys_dict_replaces_file_keys() {
        let f = TempToml::new("keys", &format!("[keys]\nfilekey = \"{GOOD_SECRET}\"\n"));
        let dict = format!("{{envkey=\"{GOOD_SECRET}\", other=\"{GOOD_SECRET}x\"}}");
        let c = load(
            Some(&f),
            &[("PRISM_KEYS", &dict), ("PRISM_BIND", "0.0.0.0")],
        )
        .unwrap();
        assert_eq!(c.keys.len(), 2);
        assert_eq!(c.keys["envkey"], GOOD_SECRET);
        assert_eq!(c.keys["other"], format!("{GOOD_SECRET}x"));

        let c = load(None, &[("PRISM_KEYS__NESTED", GOOD_SECRET)]).unwrap();
        assert_eq!(
            c.keys,
            BTreeMap::from([("nested".to_owned(), GOOD_SECRET.to_owned())])
        );
    }

    #[test]
    fn env_api_key_pair_replaces_all_keys() {
        let f = TempToml::new("pair", &format!("[keys]\nfilekey = \"{GOOD_SECRET}\"\n"));
        let dict = format!("{{envkey=\"{GOOD_SECRET}\"}}");
        let c = load(
            Some(&f),
            &[
                ("PRISM_KEYS", &dict),
                ("PRISM_API_KEY", "MyKey"),
                ("PRISM_API_SECRET", "s3cret-s3cret-s3cret-s3cret-s3cret"),
                ("PRISM_BIND", "0.0.0.0"),
            ],
        )
        .unwrap();
        assert_eq!(
            c.keys,
            BTreeMap::from([(
                "MyKey".to_owned(),
                "s3cret-s3cret-s3cret-s3cret-s3cret".to_owned()
            )])
        );
    }

    #[test]
    fn half_an_api_key_pair_is_refused() {
        let e = load(None, &[("PRISM_API_KEY", "k")]).unwrap_err();
        assert!(
            matches!(e, ConfigError::IncompleteKeyPair("PRISM_API_KEY")),
            "{e}"
        );
        let e = load(None, &[("PRISM_API_SECRET", GOOD_SECRET)]).unwrap_err();
        assert!(
            matches!(e, ConfigError::IncompleteKeyPair("PRISM_API_SECRET")),
            "{e}"
        );
    }

    #[test]
    fn unknown_file_key_is_named() {
        let f = TempToml::new("unknown", "[rtc]\nudp_prot = 9000\n");
        let e = load(Some(&f), &[]).unwrap_err();
        assert!(matches!(e, ConfigError::Parse(_)), "{e}");
        let msg = e.to_string();
        assert!(msg.contains("udp_prot"), "{msg}");

        let f = TempToml::new("unknown-top", "prot = 9000\n");
        let msg = load(Some(&f), &[]).unwrap_err().to_string();
        assert!(msg.contains("prot"), "{msg}");
    }

    #[test]
    fn unknown_env_key_below_a_section_is_named() {
        let msg = load(None, &[("PRISM_RTC__UDPPORT", "1")])
            .unwrap_err()
            .to_string();
        assert!(msg.contains("udpport"), "{msg}");
    }

    #[test]
    fn bad_values_are_errors() {
        let e = load(None, &[("PRISM_PORT", "tcp://10.0.0.1:7880")]).unwrap_err();
        assert!(matches!(e, ConfigError::Parse(_)), "{e}");
        assert!(e.to_string().contains("PRISM_PORT"), "{e}");

        let f = TempToml::new("badtype", "port = \"x\"\n");
        assert!(matches!(load(Some(&f), &[]), Err(ConfigError::Parse(_))));

        let f = TempToml::new("syntax", "port = = 1\n");
        assert!(matches!(load(Some(&f), &[]), Err(ConfigError::Parse(_))));

        let e = load(None, &[("PRISM_PORT", "70000")]).unwrap_err();
        assert!(matches!(e, ConfigError::Parse(_)), "{e}");
    }

    #[test]
    fn missing_file_is_an_error_naming_it() {
        let path = std::env::temp_dir().join("prism-config-test-does-not-exist.toml");
        let e = Config::load_from(Some(&path), env(&[])).unwrap_err();
        assert!(matches!(e, ConfigError::Read { .. }), "{e}");
        assert!(
            e.to_string()
                .contains("prism-config-test-does-not-exist.toml"),
            "{e}"
        );
    }

    #[test]
    fn dev_keys_on_network_refused() {
        let e = load(None, &[("PRISM_BIND", "0.0.0.0")]).unwrap_err();
        assert!(matches!(e, ConfigError::DevKeysOnNetwork { .. }), "{e}");
        let msg = e.to_string();
        assert!(
            msg.contains("never faces a network") && msg.contains("keys"),
            "{msg}"
        );

        // Even alongside real keys.
        let mut c = Config {
            bind: "192.0.2.10".parse().unwrap(),
            ..Config::default()
        };
        c.keys.insert("prod".into(), GOOD_SECRET.into());
        assert!(matches!(
            c.validate(),
            Err(ConfigError::DevKeysOnNetwork { .. })
        ));

        // Loopback, v4 or v6, is fine.
        let c = load(None, &[("PRISM_BIND", "::1")]).unwrap();
        assert!(c.uses_dev_keys());
    }

    #[test]
    fn empty_keys_refused() {
        let f = TempToml::new("nokeys", "[keys]\n");
        assert!(matches!(load(Some(&f), &[]), Err(ConfigError::NoKeys)));
        let c = Config {
            keys: BTreeMap::new(),
            ..Config::default()
        };
        assert!(matches!(c.validate(), Err(ConfigError::NoKeys)));
    }

    #[test]
    fn empty_key_name_refused() {
        let c = Config {
            keys: BTreeMap::from([(String::new(), GOOD_SECRET.to_owned())]),
            ..Config::default()
        };
        assert!(matches!(c.validate(), Err(ConfigError::EmptyKeyName)));
    }

    #[test]
    fn short_secret_refused() {
        let e = load(
            None,
            &[("PRISM_API_KEY", "k"), ("PRISM_API_SECRET", "short")],
        )
        .unwrap_err();
        match &e {
            ConfigError::WeakSecret { key, len } => assert_eq!((key.as_str(), *len), ("k", 5)),
            other => panic!("unexpected {other}"),
        }
        // The message never contains the secret itself.
        assert!(!e.to_string().contains("short"), "{e}");
        // 32 bytes is enough.
        let s = "a".repeat(MIN_SECRET_LEN);
        assert!(load(None, &[("PRISM_API_KEY", "k"), ("PRISM_API_SECRET", &s)]).is_ok());
    }

    #[test]
    fn udp_port_zero_is_allowed_for_ephemeral_ports() {
        let c = load(None, &[("PRISM_RTC__UDP_PORT", "0")]).unwrap();
        assert_eq!(c.rtc.udp_port, 0);
    }

    #[test]
    fn udp_port_range_must_fit() {
        let e = load(
            None,
            &[
                ("PRISM_RTC__UDP_PORT", "65534"),
                ("PRISM_RTC__WORKERS", "3"),
            ],
        )
        .unwrap_err();
        assert!(
            matches!(
                e,
                ConfigError::UdpPortRange {
                    udp_port: 65534,
                    workers: 3
                }
            ),
            "{e}"
        );
        let c = load(
            None,
            &[
                ("PRISM_RTC__UDP_PORT", "65534"),
                ("PRISM_RTC__WORKERS", "2"),
            ],
        )
        .unwrap();
        assert_eq!(c.udp_ports(), 65534..=65535);

        // HTTP port inside the UDP range is fine: different protocols.
        let c = load(None, &[("PRISM_PORT", "7882")]).unwrap();
        assert_eq!(c.port, c.rtc.udp_port);
    }

    #[test]
    fn ice_timeouts_ordered() {
        let e = load(None, &[("PRISM_RTC__ICE_FAILED_TIMEOUT_MS", "1000")]).unwrap_err();
        assert!(matches!(e, ConfigError::IceTimeouts { .. }), "{e}");
    }

    #[test]
    fn advertised_ips_explicit_bind_and_auto() {
        let mut c = Config::default();
        assert_eq!(c.advertised_ips(), vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]);

        c.bind = "::1".parse().unwrap();
        assert_eq!(c.advertised_ips(), vec![c.bind]);

        c.bind = "192.0.2.33".parse().unwrap();
        assert_eq!(c.advertised_ips(), vec![c.bind]);

        c.rtc.advertise_ips = vec![
            "203.0.113.1".parse().unwrap(),
            "203.0.113.2".parse().unwrap(),
        ];
        assert_eq!(c.advertised_ips(), c.rtc.advertise_ips);

        // Unspecified bind: a real interface address if there is a route, else loopback.
        c.rtc.advertise_ips.clear();
        c.bind = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        let ips = c.advertised_ips();
        assert!(!ips.is_empty());
        assert!(ips.iter().all(|ip| !ip.is_unspecified()), "{ips:?}");
    }

    #[test]
    fn token_endpoint_needs_the_dev_keys() {
        let own_keys = [("PRISM_API_KEY", "prod"), ("PRISM_API_SECRET", GOOD_SECRET)];
        assert!(!load(None, &own_keys).unwrap().token_endpoint_enabled());
        let off = load(None, &[("PRISM_WEB__TOKEN_ENDPOINT", "false")]).unwrap();
        assert!(!off.token_endpoint_enabled());
        assert!(off.web.demo);
    }

    #[test]
    fn debug_redacts_secrets() {
        let s = format!("{:?}", Config::default());
        assert!(!s.contains(DEV_API_SECRET), "{s}");
        assert!(s.contains(DEV_API_KEY), "{s}");
    }

    #[test]
    fn example_file_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("prism.example.toml");
        if !path.exists() {
            return; // Only meaningful inside the server crate.
        }
        let c = Config::load_from(Some(&path), env(&[])).unwrap();
        assert_eq!(c, Config::default());
    }
}
