//! The signaling WebSocket: URL, handshake errors and the protobuf JSON codec.

use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use prism_proto::signal::{SignalRequest, SignalResponse, signal_request};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use url::Url;

use crate::error::{ClientError, Result};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Builds `{base}/rtc?access_token=..&auto_subscribe=..`, turning http(s) into ws(s).
pub(crate) fn rtc_url(base: &str, token: &str, auto_subscribe: bool) -> Result<Url> {
    let mut url = Url::parse(base).map_err(|e| ClientError::InvalidUrl(format!("{base}: {e}")))?;
    let scheme = match url.scheme() {
        "http" | "ws" => "ws",
        "https" | "wss" => "wss",
        other => {
            return Err(ClientError::InvalidUrl(format!(
                "{base}: unsupported scheme {other:?}"
            )));
        }
    };
    url.set_scheme(scheme)
        .map_err(|()| ClientError::InvalidUrl(base.to_owned()))?;
    let path = url.path().trim_end_matches('/').to_owned();
    url.set_path(&format!("{path}/rtc"));
    url.set_query(None);
    url.query_pairs_mut()
        .append_pair("access_token", token)
        .append_pair(
            "auto_subscribe",
            if auto_subscribe { "true" } else { "false" },
        );
    Ok(url)
}

/// Encodes a request as one text frame.
pub(crate) fn encode(message: signal_request::Message) -> String {
    prism_proto::to_json(&SignalRequest {
        message: Some(message),
    })
}

/// Decodes one text frame; an empty oneof is as malformed as bad JSON.
pub(crate) fn decode(text: &str) -> Result<prism_proto::signal::signal_response::Message> {
    let response: SignalResponse = prism_proto::from_json(text)
        .map_err(|e| ClientError::Protocol(format!("undecodable server message: {e}")))?;
    response
        .message
        .ok_or_else(|| ClientError::Protocol("server message without content".into()))
}

/// What the reading half yields.
#[derive(Debug)]
pub(crate) enum Incoming {
    Message(Box<prism_proto::signal::signal_response::Message>),
    /// A frame that could not be decoded; the session goes on.
    Malformed(ClientError),
    /// The socket closed or failed; nothing follows.
    Closed(Option<String>),
}

/// Sending half.
pub(crate) struct SignalWriter {
    sink: SplitSink<Ws, Message>,
}

impl SignalWriter {
    pub(crate) async fn send(&mut self, message: signal_request::Message) -> Result<()> {
        let text = encode(message);
        tracing::trace!(%text, "signal send");
        self.sink.send(Message::Text(text.into())).await?;
        Ok(())
    }

    pub(crate) async fn close(&mut self) {
        let _ = self.sink.close().await;
    }
}

/// Receiving half.
pub(crate) struct SignalReader {
    stream: SplitStream<Ws>,
}

impl SignalReader {
    pub(crate) async fn next(&mut self) -> Incoming {
        loop {
            match self.stream.next().await {
                None => return Incoming::Closed(None),
                Some(Err(e)) => return Incoming::Closed(Some(e.to_string())),
                Some(Ok(Message::Text(text))) => {
                    tracing::trace!(text = %text.as_str(), "signal recv");
                    return match decode(text.as_str()) {
                        Ok(m) => Incoming::Message(Box::new(m)),
                        Err(e) => Incoming::Malformed(e),
                    };
                }
                Some(Ok(Message::Binary(_))) => {
                    return Incoming::Malformed(ClientError::Protocol(
                        "binary frame on a text protocol".into(),
                    ));
                }
                Some(Ok(Message::Close(frame))) => {
                    return Incoming::Closed(frame.map(|f| f.reason.to_string()));
                }
                // Ping/pong are answered by tungstenite itself.
                Some(Ok(_)) => continue,
            }
        }
    }
}

/// Opens the signaling socket. A refused upgrade becomes [`ClientError::Unauthorized`]
/// (401/403) or [`ClientError::HttpStatus`], with the response body as text.
pub(crate) async fn connect(url: &Url) -> Result<(SignalWriter, SignalReader)> {
    let ws = match tokio_tungstenite::connect_async(url.as_str()).await {
        Ok((ws, _response)) => ws,
        Err(tungstenite::Error::Http(response)) => {
            let status = response.status().as_u16();
            let body = response
                .body()
                .as_deref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            let code = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| {
                    Some((
                        v.get("error")?.as_str()?.to_owned(),
                        v.get("message")?.as_str()?.to_owned(),
                    ))
                });
            return Err(
                if let Some(("room_full", message)) = code.as_ref().map(|(c, m)| (c.as_str(), m)) {
                    ClientError::RoomFull(message.clone())
                } else if status == 401 || status == 403 {
                    ClientError::Unauthorized { status, body }
                } else {
                    ClientError::HttpStatus { status, body }
                },
            );
        }
        Err(e) => return Err(e.into()),
    };
    let (sink, stream) = ws.split();
    Ok((SignalWriter { sink }, SignalReader { stream }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use prism_proto::signal::{Ping, signal_response};

    #[test]
    fn http_urls_become_ws_with_query() {
        let url = rtc_url("http://127.0.0.1:7880", "a.b.c", true).unwrap();
        assert_eq!(
            url.as_str(),
            "ws://127.0.0.1:7880/rtc?access_token=a.b.c&auto_subscribe=true"
        );
        let url = rtc_url("https://example.com/prism/", "t", false).unwrap();
        assert_eq!(
            url.as_str(),
            "wss://example.com/prism/rtc?access_token=t&auto_subscribe=false"
        );
        let url = rtc_url("ws://h:1", "t", false).unwrap();
        assert_eq!(url.scheme(), "ws");
        assert!(rtc_url("ftp://h", "t", true).is_err());
        assert!(rtc_url("not a url", "t", true).is_err());
    }

    #[test]
    fn decode_rejects_garbage_without_panicking() {
        assert!(matches!(decode("nope"), Err(ClientError::Protocol(_))));
        assert!(matches!(decode("{}"), Err(ClientError::Protocol(_))));
        assert!(matches!(
            decode(r#"{"join":{"pingIntervalMs":"x"}}"#),
            Err(ClientError::Protocol(_))
        ));
        let m = decode(r#"{"pong":{"timestamp":"5"}}"#).unwrap();
        assert!(matches!(m, signal_response::Message::Pong(p) if p.timestamp == 5));
    }

    #[test]
    fn encode_is_proto3_json() {
        let text = encode(signal_request::Message::Ping(Ping { timestamp: 7 }));
        assert_eq!(text, r#"{"ping":{"timestamp":"7"}}"#);
    }
}
