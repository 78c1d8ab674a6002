//! The one error type of the SDK.

use prism_proto::signal::ErrorCode;

/// Everything that can go wrong in the SDK.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The server URL could not be turned into a signaling URL.
    #[error("invalid server URL: {0}")]
    InvalidUrl(String),
    /// The server refused the access token (HTTP 401/403 before the WebSocket upgrade).
    #[error("unauthorized (HTTP {status}): {body}")]
    Unauthorized {
        /// HTTP status code.
        status: u16,
        /// Response body, as text.
        body: String,
    },
    /// The server answered the WebSocket upgrade with another non-101 status.
    #[error("signaling upgrade refused (HTTP {status}): {body}")]
    HttpStatus {
        /// HTTP status code.
        status: u16,
        /// Response body, as text.
        body: String,
    },
    /// The WebSocket transport failed.
    #[error("websocket: {0}")]
    WebSocket(#[source] Box<tokio_tungstenite::tungstenite::Error>),
    /// The WebRTC stack failed.
    #[error("webrtc: {0}")]
    WebRtc(#[from] webrtc::error::Error),
    /// The server sent something that does not follow the signaling protocol.
    #[error("protocol: {0}")]
    Protocol(String),
    /// The server reported an error for one of our requests.
    #[error("server error {code:?} on {request:?}: {message}")]
    Server {
        /// Error class.
        code: ErrorCode,
        /// Human readable description.
        message: String,
        /// Which request failed, e.g. "offer".
        request: String,
    },
    /// Something we waited for did not happen in time.
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    /// The room was left or its connection is gone.
    #[error("the room is closed")]
    Closed,
    /// The remote track has ended.
    #[error("track ended")]
    TrackEnded,
    /// A caller-supplied argument is not usable.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The room has reached its maximum number of participants.
    #[error("room full: {0}")]
    RoomFull(String),
    /// A control-plane call failed: the gRPC status says why.
    #[error("control plane: {:?}: {}", .0.code(), .0.message())]
    Rpc(Box<tonic::Status>),
    /// The control-plane connection could not be set up.
    #[error("control plane connection: {0}")]
    Connect(String),
    /// An access token could not be made.
    #[error("access token: {0}")]
    Token(#[from] prism_proto::auth::AuthError),
}

impl From<tonic::Status> for ClientError {
    fn from(status: tonic::Status) -> Self {
        ClientError::Rpc(Box::new(status))
    }
}

impl ClientError {
    /// The gRPC status code of a failed control-plane call.
    pub fn rpc_code(&self) -> Option<tonic::Code> {
        match self {
            ClientError::Rpc(status) => Some(status.code()),
            _ => None,
        }
    }
}

impl From<tokio_tungstenite::tungstenite::Error> for ClientError {
    fn from(e: tokio_tungstenite::tungstenite::Error) -> Self {
        ClientError::WebSocket(Box::new(e))
    }
}

/// Result alias used throughout the SDK.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;
