//! Server reflection: a generic gRPC client that has none of Prism's .proto files lists the
//! services, downloads their descriptors, and calls RoomService with dynamic messages.

mod common;

use std::time::Duration;

use common::*;
use prism_server::auth::{AccessToken, Grants};
use prism_server::config::{DEV_API_KEY, DEV_API_SECRET};
use prost::Message as _;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, Value};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

async fn ask(
    client: &mut ServerReflectionClient<Channel>,
    request: MessageRequest,
) -> MessageResponse {
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    };
    let mut responses = client
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .expect("reflection call")
        .into_inner();
    responses
        .message()
        .await
        .expect("reflection response")
        .expect("one response")
        .message_response
        .expect("response set")
}

/// Encodes and decodes messages known only by their runtime descriptor.
struct DynamicCodec(MessageDescriptor);
struct DynamicEncoder;
struct DynamicDecoder(MessageDescriptor);

impl Codec for DynamicCodec {
    type Encode = DynamicMessage;
    type Decode = DynamicMessage;
    type Encoder = DynamicEncoder;
    type Decoder = DynamicDecoder;
    fn encoder(&mut self) -> DynamicEncoder {
        DynamicEncoder
    }
    fn decoder(&mut self) -> DynamicDecoder {
        DynamicDecoder(self.0.clone())
    }
}

impl Encoder for DynamicEncoder {
    type Item = DynamicMessage;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: DynamicMessage,
        dst: &mut EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        item.encode(dst)
            .map_err(|e| tonic::Status::internal(e.to_string()))
    }
}

impl Decoder for DynamicDecoder {
    type Item = DynamicMessage;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<DynamicMessage>, tonic::Status> {
        DynamicMessage::decode(self.0.clone(), src)
            .map(Some)
            .map_err(|e| tonic::Status::internal(e.to_string()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generic_client_discovers_and_calls_the_room_service() {
    let server = start().await;
    let channel = tonic::transport::Endpoint::from_shared(http_url(&server))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut reflection = ServerReflectionClient::new(channel.clone());

    let MessageResponse::ListServicesResponse(list) =
        ask(&mut reflection, MessageRequest::ListServices(String::new())).await
    else {
        panic!("expected a service list");
    };
    let services: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in [
        "prism.control.RoomService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
    ] {
        assert!(
            services.iter().any(|s| s == expected),
            "{expected} in {services:?}"
        );
    }

    // Descriptors of the service's file and its imports, straight from the server.
    let MessageResponse::FileDescriptorResponse(files) = ask(
        &mut reflection,
        MessageRequest::FileContainingSymbol("prism.control.RoomService".into()),
    )
    .await
    else {
        panic!("expected file descriptors");
    };
    // Fetch missing imports by file name, as generic clients (grpcurl) do.
    let mut protos: Vec<prost_types::FileDescriptorProto> = files
        .file_descriptor_proto
        .iter()
        .map(|b| prost_types::FileDescriptorProto::decode(&b[..]).unwrap())
        .collect();
    loop {
        let missing = protos
            .iter()
            .flat_map(|f| f.dependency.iter())
            .find(|d| !protos.iter().any(|f| f.name() == d.as_str()))
            .cloned();
        let Some(missing) = missing else { break };
        let MessageResponse::FileDescriptorResponse(more) = ask(
            &mut reflection,
            MessageRequest::FileByFilename(missing.clone()),
        )
        .await
        else {
            panic!("expected the descriptor of {missing}");
        };
        protos.extend(
            more.file_descriptor_proto
                .iter()
                .map(|b| prost_types::FileDescriptorProto::decode(&b[..]).unwrap()),
        );
    }
    // Dependencies first.
    protos.sort_by_key(|f| f.dependency.len());
    let mut pool = DescriptorPool::new();
    pool.add_file_descriptor_protos(protos)
        .expect("a consistent descriptor set");
    let service = pool
        .get_service_by_name("prism.control.RoomService")
        .expect("service");
    let methods: Vec<String> = service.methods().map(|m| m.name().to_owned()).collect();
    for m in [
        "CreateRoom",
        "ListRooms",
        "DeleteRoom",
        "ListParticipants",
        "GetParticipant",
        "RemoveParticipant",
        "UpdateParticipant",
        "MutePublishedTrack",
        "UpdateSubscriptions",
        "SendData",
        "WatchRoom",
    ] {
        assert!(methods.iter().any(|x| x == m), "{m} in {methods:?}");
    }

    // Call CreateRoom, then ListRooms, with dynamic messages only.
    let token = AccessToken::new(DEV_API_KEY, DEV_API_SECRET)
        .identity("generic")
        .grants(Grants {
            room_create: true,
            room_list: true,
            ..Grants::default()
        })
        .ttl(Duration::from_secs(60))
        .to_jwt()
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    let mut call = async |name: &str, input: DynamicMessage| -> DynamicMessage {
        let method = service.methods().find(|m| m.name() == name).unwrap();
        let mut request = tonic::Request::new(input);
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        let path = format!("/{}/{}", service.full_name(), method.name())
            .parse()
            .unwrap();
        grpc.ready().await.unwrap();
        grpc.unary(request, path, DynamicCodec(method.output()))
            .await
            .unwrap_or_else(|e| panic!("{name}: {e:?}"))
            .into_inner()
    };
    let create = service
        .methods()
        .find(|m| m.name() == "CreateRoom")
        .unwrap();
    let mut request = DynamicMessage::new(create.input());
    request.set_field_by_name("name", Value::String("reflected".into()));
    request.set_field_by_name("empty_timeout", Value::U32(60));
    let room = call("CreateRoom", request).await;
    assert_eq!(
        room.get_field_by_name("name").unwrap().as_str(),
        Some("reflected")
    );

    let list = service.methods().find(|m| m.name() == "ListRooms").unwrap();
    let rooms = call("ListRooms", DynamicMessage::new(list.input())).await;
    let rooms = rooms.get_field_by_name("rooms").unwrap();
    let rooms = rooms.as_list().unwrap();
    assert_eq!(rooms.len(), 1);
    assert_eq!(
        rooms[0]
            .as_message()
            .unwrap()
            .get_field_by_name("name")
            .unwrap()
            .as_str(),
        Some("reflected")
    );
    server.shutdown().await;
}
