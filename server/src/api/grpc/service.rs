//! `prism.control.RoomService`: each call authenticates, checks its arguments and grant, then
//! asks the room layer. Errors are gRPC statuses with a message saying what is wrong.

use std::sync::Arc;
use std::time::Duration;

use prism_proto::auth::TokenVerifier;
use prism_proto::control::room_service_server::RoomService;
use prism_proto::control::*;
use prism_proto::signal::{self as pb, DataPacket, DisconnectReason};
use tonic::{Request, Response, Status};

use super::auth::{Need, authenticate, authorize};
use super::status::{from_room_error, require};
use super::watch::{EventStream, room_events};
use crate::room::{MAX_DATA_PACKET, ParticipantUpdate, Room, RoomManager, RoomSettings};

pub struct RoomServiceImpl {
    pub rooms: Arc<RoomManager>,
    pub verifier: Arc<TokenVerifier>,
}

type Reply<T> = Result<Response<T>, Status>;

impl RoomServiceImpl {
    /// Authenticates the caller and checks it may do `need`.
    fn check<T>(
        &self,
        request: &Request<T>,
        need: Need<'_>,
    ) -> Result<prism_proto::auth::Claims, Status> {
        let claims = authenticate(&self.verifier, request.metadata())?;
        authorize(&claims, need)?;
        Ok(claims)
    }

    fn room(&self, name: &str) -> Result<Arc<Room>, Status> {
        self.rooms
            .get(name)
            .ok_or_else(|| Status::not_found(format!("room {name:?} does not exist")))
    }

    /// The common preamble of calls about one room: authenticated, `room` given, room_admin
    /// for it, and the room exists.
    fn admin<T>(&self, request: &Request<T>, room: &str) -> Result<Arc<Room>, Status> {
        authenticate(&self.verifier, request.metadata()).and_then(|claims| {
            require("room", room)?;
            authorize(&claims, Need::Admin(room))
        })?;
        self.room(room)
    }
}

#[tonic::async_trait]
impl RoomService for RoomServiceImpl {
    async fn create_room(&self, request: Request<CreateRoomRequest>) -> Reply<pb::Room> {
        let claims = authenticate(&self.verifier, request.metadata())?;
        let r = request.get_ref();
        require("name", &r.name)?;
        authorize(&claims, Need::Create(&r.name))?;
        let defaults = self.rooms.default_settings();
        let settings = RoomSettings {
            empty_timeout: match r.empty_timeout {
                0 => defaults.empty_timeout,
                secs => Duration::from_secs(secs.into()),
            },
            max_participants: match r.max_participants {
                0 => defaults.max_participants,
                n => n,
            },
            metadata: r.metadata.clone(),
        };
        let (room, _created) = self
            .rooms
            .create(&r.name, settings)
            .map_err(from_room_error)?;
        Ok(Response::new(room.info()))
    }

    async fn list_rooms(&self, request: Request<ListRoomsRequest>) -> Reply<ListRoomsResponse> {
        let claims = self.check(&request, Need::List)?;
        let names = &request.get_ref().names;
        let mut rooms: Vec<pb::Room> = self
            .rooms
            .rooms()
            .iter()
            .filter(|r| names.is_empty() || names.contains(&r.name))
            // A token limited to one room sees only that room.
            .filter(|r| claims.room.is_empty() || claims.room == r.name)
            .map(|r| r.info())
            .collect();
        rooms.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Response::new(ListRoomsResponse { rooms }))
    }

    async fn delete_room(&self, request: Request<DeleteRoomRequest>) -> Reply<DeleteRoomResponse> {
        let room = request.get_ref().room.clone();
        self.admin(&request, &room)?;
        self.rooms.delete(&room).map_err(from_room_error)?;
        Ok(Response::new(DeleteRoomResponse {}))
    }

    async fn list_participants(
        &self,
        request: Request<ListParticipantsRequest>,
    ) -> Reply<ListParticipantsResponse> {
        let room = self.admin(&request, &request.get_ref().room)?;
        let mut participants = room.participants();
        participants.sort_by(|a, b| a.identity.cmp(&b.identity));
        Ok(Response::new(ListParticipantsResponse { participants }))
    }

    async fn get_participant(
        &self,
        request: Request<RoomParticipantIdentity>,
    ) -> Reply<pb::ParticipantInfo> {
        let r = request.get_ref();
        let room = self.admin(&request, &r.room)?;
        require("identity", &r.identity)?;
        room.participant(&r.identity)
            .map(Response::new)
            .ok_or_else(|| {
                Status::not_found(format!(
                    "participant {:?} is not in room {:?}",
                    r.identity, r.room
                ))
            })
    }

    async fn remove_participant(
        &self,
        request: Request<RoomParticipantIdentity>,
    ) -> Reply<RemoveParticipantResponse> {
        let r = request.get_ref();
        let room = self.admin(&request, &r.room)?;
        require("identity", &r.identity)?;
        room.remove_participant(&r.identity, DisconnectReason::ParticipantRemoved)
            .map_err(from_room_error)?;
        Ok(Response::new(RemoveParticipantResponse {}))
    }

    async fn update_participant(
        &self,
        request: Request<UpdateParticipantRequest>,
    ) -> Reply<pb::ParticipantInfo> {
        let room = self.admin(&request, &request.get_ref().room)?;
        let r = request.into_inner();
        require("identity", &r.identity)?;
        let update = ParticipantUpdate {
            name: r.name,
            metadata: r.metadata,
            permission: r.permission,
        };
        room.update_participant(&r.identity, update)
            .map(Response::new)
            .map_err(from_room_error)
    }

    async fn mute_published_track(
        &self,
        request: Request<MuteRoomTrackRequest>,
    ) -> Reply<MuteRoomTrackResponse> {
        let r = request.get_ref();
        let room = self.admin(&request, &r.room)?;
        require("identity", &r.identity)?;
        require("track_sid", &r.track_sid)?;
        let track = room
            .mute_track(&r.identity, &r.track_sid, r.muted)
            .map_err(from_room_error)?;
        Ok(Response::new(MuteRoomTrackResponse { track: Some(track) }))
    }

    async fn update_subscriptions(
        &self,
        request: Request<UpdateSubscriptionsRequest>,
    ) -> Reply<UpdateSubscriptionsResponse> {
        let r = request.get_ref();
        let room = self.admin(&request, &r.room)?;
        require("identity", &r.identity)?;
        if r.track_sids.is_empty() {
            return Err(Status::invalid_argument("track_sids is empty"));
        }
        room.update_subscriptions_of(&r.identity, &r.track_sids, r.subscribe)
            .map_err(from_room_error)?;
        Ok(Response::new(UpdateSubscriptionsResponse {}))
    }

    async fn send_data(&self, request: Request<SendDataRequest>) -> Reply<SendDataResponse> {
        let room = self.admin(&request, &request.get_ref().room)?;
        let r = request.into_inner();
        if r.data.len() > MAX_DATA_PACKET {
            return Err(Status::invalid_argument(format!(
                "data is {} bytes; at most {MAX_DATA_PACKET} are relayed",
                r.data.len()
            )));
        }
        if pb::data_packet::Kind::try_from(r.kind).is_err() {
            return Err(Status::invalid_argument(format!(
                "unknown data kind {}",
                r.kind
            )));
        }
        let packet = DataPacket {
            sender_identity: String::new(),
            payload: r.data,
            topic: r.topic,
            kind: r.kind,
            destination_identities: r.destination_identities,
        };
        room.send_data(None, packet).map_err(from_room_error)?;
        Ok(Response::new(SendDataResponse {}))
    }

    type WatchRoomStream = EventStream;

    async fn watch_room(&self, request: Request<WatchRoomRequest>) -> Reply<Self::WatchRoomStream> {
        // Subscribe before looking the room up, so no event falls between the two.
        let events = self.rooms.events().subscribe();
        let room = self.admin(&request, &request.get_ref().room)?;
        Ok(Response::new(room_events(events, room.sid.clone())))
    }
}
