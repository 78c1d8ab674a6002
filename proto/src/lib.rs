//! Prism's wire messages. `signal` is the client signaling protocol carried over the WebSocket
//! at `/rtc` as protobuf JSON; [`to_json`] and [`from_json`] are the one way both ends encode it.
//! `control` is the gRPC control plane (`RoomService`, client and server), [`auth`] the access
//! tokens both use.

pub mod auth;

#[allow(clippy::all, missing_docs)]
pub mod signal {
    include!(concat!(env!("OUT_DIR"), "/prism.signal.rs"));
    include!(concat!(env!("OUT_DIR"), "/prism.signal.serde.rs"));
}

#[allow(clippy::all, missing_docs)]
pub mod control {
    include!(concat!(env!("OUT_DIR"), "/prism.control.rs"));
    include!(concat!(env!("OUT_DIR"), "/prism.control.serde.rs"));
}

/// The encoded `FileDescriptorSet` of every Prism .proto file, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/prism_descriptor.bin"));

/// Encodes a message as protobuf JSON.
pub fn to_json<T: serde::Serialize>(message: &T) -> String {
    // Serializing generated pbjson types into a String cannot fail.
    serde_json::to_string(message).expect("pbjson message serializes")
}

/// Decodes a message from protobuf JSON, with serde's description of what is wrong.
pub fn from_json<'a, T: serde::Deserialize<'a>>(text: &'a str) -> Result<T, serde_json::Error> {
    serde_json::from_str(text)
}

#[cfg(test)]
mod tests {
    use super::signal::*;

    #[test]
    fn request_round_trips_as_proto3_json() {
        let req = SignalRequest {
            message: Some(signal_request::Message::Subscription(
                UpdateSubscriptionRequest {
                    track_sids: vec!["TR_a".into()],
                    subscribe: true,
                },
            )),
        };
        let text = super::to_json(&req);
        assert_eq!(
            text,
            r#"{"subscription":{"trackSids":["TR_a"],"subscribe":true}}"#
        );
        let back: SignalRequest = super::from_json(&text).unwrap();
        assert_eq!(back, req);
    }

    #[test]
    fn unknown_fields_and_bad_types_are_errors() {
        assert!(super::from_json::<SignalRequest>(r#"{"offer":{"sdp":5}}"#).is_err());
        assert!(super::from_json::<SignalRequest>("not json").is_err());
    }

    /// The same bytes clients/web/test/data.test.mjs expects from the browser SDK's codec.
    #[test]
    fn data_packet_binary_matches_the_browser_sdk_fixture() {
        use prost::Message;
        let packet = crate::signal::DataPacket {
            sender_identity: "al".into(),
            payload: vec![1, 2],
            topic: "t".into(),
            kind: crate::signal::data_packet::Kind::Lossy as i32,
            destination_identities: vec!["b".into()],
        };
        assert_eq!(
            packet.encode_to_vec(),
            [
                0x0a, 2, 0x61, 0x6c, 0x12, 2, 1, 2, 0x1a, 1, 0x74, 0x20, 1, 0x2a, 1, 0x62
            ]
        );
    }
}
