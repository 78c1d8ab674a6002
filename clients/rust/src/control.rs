//! The control-plane client: `prism.control.RoomService` over gRPC, authenticated with an API
//! key and secret. Every call carries a short-lived access token holding only the grant the
//! call needs (room_create, room_list or room_admin).
//!
//! ```no_run
//! # async fn run() -> Result<(), prism_client::ClientError> {
//! use prism_client::control::{ControlClient, CreateRoomRequest};
//! let control = ControlClient::connect("http://127.0.0.1:7880", "devkey", "secret").await?;
//! let room = control
//!     .create_room(CreateRoomRequest { name: "demo".into(), empty_timeout: 600, ..Default::default() })
//!     .await?;
//! for p in control.list_participants(&room.name).await? {
//!     println!("{} ({})", p.identity, p.sid);
//! }
//! # Ok(())
//! # }
//! ```

use std::time::Duration;

use futures::{Stream, StreamExt};
use prism_proto::auth::{AccessToken, Grants};
use prism_proto::control::room_service_client::RoomServiceClient;
pub use prism_proto::control::{
    CreateRoomRequest, MuteRoomTrackRequest, RoomEvent, SendDataRequest, UpdateParticipantRequest,
    UpdateSubscriptionsRequest,
};
use prism_proto::control::{
    DeleteRoomRequest, ListParticipantsRequest, ListRoomsRequest, RoomParticipantIdentity,
    WatchRoomRequest,
};
use prism_proto::signal::{ParticipantInfo, Room as RoomInfo, TrackInfo};
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use crate::error::{ClientError, Result};

/// Lifetime of the token minted for one call.
const CALL_TOKEN_TTL: Duration = Duration::from_secs(10 * 60);
/// Identity the control plane's tokens carry.
const IDENTITY: &str = "prism-control";

/// A connection to a server's control plane. Cheap to clone.
#[derive(Clone)]
pub struct ControlClient {
    client: RoomServiceClient<Channel>,
    api_key: String,
    api_secret: String,
}

impl std::fmt::Debug for ControlClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlClient")
            .field("api_key", &self.api_key)
            .finish_non_exhaustive()
    }
}

/// The gRPC endpoint of a server base URL (http(s):// or ws(s)://, as for `Room::connect`).
fn endpoint(url: &str) -> Result<Endpoint> {
    let url = url.trim().trim_end_matches('/');
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| ClientError::InvalidUrl(format!("{url}: no scheme")))?;
    let (scheme, tls) = match scheme.to_ascii_lowercase().as_str() {
        "http" | "ws" => ("http", false),
        "https" | "wss" => ("https", true),
        other => {
            return Err(ClientError::InvalidUrl(format!(
                "{url}: unsupported scheme {other:?}"
            )));
        }
    };
    let endpoint = Endpoint::from_shared(format!("{scheme}://{rest}"))
        .map_err(|e| ClientError::InvalidUrl(format!("{url}: {e}")))?
        .connect_timeout(Duration::from_secs(10));
    if tls {
        endpoint
            .tls_config(ClientTlsConfig::new().with_webpki_roots())
            .map_err(|e| ClientError::Connect(e.to_string()))
    } else {
        Ok(endpoint)
    }
}

impl ControlClient {
    /// Connects to the server at `url` (its base URL, e.g. `http://127.0.0.1:7880`).
    pub async fn connect(url: &str, api_key: &str, api_secret: &str) -> Result<Self> {
        let channel = endpoint(url)?
            .connect()
            .await
            .map_err(|e| ClientError::Connect(format!("{url}: {e}")))?;
        Ok(Self::with_channel(channel, api_key, api_secret))
    }

    /// A client over an existing channel.
    pub fn with_channel(channel: Channel, api_key: &str, api_secret: &str) -> Self {
        Self {
            client: RoomServiceClient::new(channel),
            api_key: api_key.to_owned(),
            api_secret: api_secret.to_owned(),
        }
    }

    /// Wraps `message` with a token carrying `grants`.
    fn request<T>(&self, message: T, grants: Grants) -> Result<tonic::Request<T>> {
        let token = AccessToken::new(&self.api_key, &self.api_secret)
            .identity(IDENTITY)
            .ttl(CALL_TOKEN_TTL)
            .grants(Grants {
                room_join: false,
                can_publish: false,
                can_subscribe: false,
                can_publish_data: false,
                ..grants
            })
            .to_jwt()?;
        let mut request = tonic::Request::new(message);
        let value = format!("Bearer {token}")
            .parse()
            .map_err(|_| ClientError::InvalidArgument("the token is not a header value".into()))?;
        request.metadata_mut().insert("authorization", value);
        Ok(request)
    }

    fn admin<T>(&self, message: T) -> Result<tonic::Request<T>> {
        self.request(
            message,
            Grants {
                room_admin: true,
                ..Grants::default()
            },
        )
    }

    /// Creates a room (or returns the existing one of that name).
    pub async fn create_room(&self, request: CreateRoomRequest) -> Result<RoomInfo> {
        let request = self.request(
            request,
            Grants {
                room_create: true,
                ..Grants::default()
            },
        )?;
        Ok(self.client.clone().create_room(request).await?.into_inner())
    }

    /// Rooms on the server; only those named when `names` is not empty.
    pub async fn list_rooms(&self, names: &[String]) -> Result<Vec<RoomInfo>> {
        let request = self.request(
            ListRoomsRequest {
                names: names.to_vec(),
            },
            Grants {
                room_list: true,
                ..Grants::default()
            },
        )?;
        Ok(self
            .client
            .clone()
            .list_rooms(request)
            .await?
            .into_inner()
            .rooms)
    }

    /// Closes a room, disconnecting everyone in it.
    pub async fn delete_room(&self, room: &str) -> Result<()> {
        let request = self.admin(DeleteRoomRequest { room: room.into() })?;
        self.client.clone().delete_room(request).await?;
        Ok(())
    }

    /// The participants of a room.
    pub async fn list_participants(&self, room: &str) -> Result<Vec<ParticipantInfo>> {
        let request = self.admin(ListParticipantsRequest { room: room.into() })?;
        Ok(self
            .client
            .clone()
            .list_participants(request)
            .await?
            .into_inner()
            .participants)
    }

    /// One participant, by identity.
    pub async fn get_participant(&self, room: &str, identity: &str) -> Result<ParticipantInfo> {
        let request = self.admin(RoomParticipantIdentity {
            room: room.into(),
            identity: identity.into(),
        })?;
        Ok(self
            .client
            .clone()
            .get_participant(request)
            .await?
            .into_inner())
    }

    /// Disconnects a participant (it is told: `PARTICIPANT_REMOVED`).
    pub async fn remove_participant(&self, room: &str, identity: &str) -> Result<()> {
        let request = self.admin(RoomParticipantIdentity {
            room: room.into(),
            identity: identity.into(),
        })?;
        self.client.clone().remove_participant(request).await?;
        Ok(())
    }

    /// Changes a participant's name, metadata or permissions, live.
    pub async fn update_participant(
        &self,
        request: UpdateParticipantRequest,
    ) -> Result<ParticipantInfo> {
        let request = self.admin(request)?;
        Ok(self
            .client
            .clone()
            .update_participant(request)
            .await?
            .into_inner())
    }

    /// Mutes or unmutes a participant's published track.
    pub async fn mute_published_track(&self, request: MuteRoomTrackRequest) -> Result<TrackInfo> {
        let request = self.admin(request)?;
        self.client
            .clone()
            .mute_published_track(request)
            .await?
            .into_inner()
            .track
            .ok_or_else(|| ClientError::Protocol("MutePublishedTrack returned no track".into()))
    }

    /// Subscribes a participant to tracks, or unsubscribes it.
    pub async fn update_subscriptions(&self, request: UpdateSubscriptionsRequest) -> Result<()> {
        let request = self.admin(request)?;
        self.client.clone().update_subscriptions(request).await?;
        Ok(())
    }

    /// Sends data to a room's participants (all, or those named).
    pub async fn send_data(&self, request: SendDataRequest) -> Result<()> {
        let request = self.admin(request)?;
        self.client.clone().send_data(request).await?;
        Ok(())
    }

    /// The room's events as they happen; the stream ends when the room closes.
    pub async fn watch_room(
        &self,
        room: &str,
    ) -> Result<impl Stream<Item = Result<RoomEvent>> + use<>> {
        let request = self.admin(WatchRoomRequest { room: room.into() })?;
        let stream = self.client.clone().watch_room(request).await?.into_inner();
        Ok(stream.map(|item| item.map_err(ClientError::from)))
    }
}
