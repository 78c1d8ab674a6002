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
}
