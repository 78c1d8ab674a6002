//! The spans of one signaling session (see `crate::telemetry` for what each covers). A span
//! is held, never entered across an await, and ends when it is dropped: `join` when the peer
//! connection connects, `negotiate` when the answer is applied, `publish` when the track's
//! media arrives, `subscribe` when media is negotiated for the track. Spans still open when the
//! session ends close with `outcome = "abandoned"`.

use std::collections::HashMap;

use tracing::Span;
use tracing::field::Empty;

/// Publications and subscriptions tracked at once; beyond it new ones go untraced, so a client
/// announcing tracks it never sends cannot grow this without bound.
const MAX_PENDING: usize = 256;

pub(super) struct SessionSpans {
    join: Option<Span>,
    server_offer: Option<(u32, Span)>,
    publishing: HashMap<String, Span>,
    subscribing: HashMap<String, Span>,
}

impl SessionSpans {
    pub fn join(room: &str, identity: &str) -> Self {
        let join = tracing::info_span!(
            "join",
            room = %room,
            identity = %identity,
            participant = Empty,
            outcome = Empty,
            otel.status_code = Empty,
        );
        Self {
            join: Some(join),
            server_offer: None,
            publishing: HashMap::new(),
            subscribing: HashMap::new(),
        }
    }

    /// The parent of what happens while joining; nothing (a new trace) once joined.
    fn parent(&self) -> Option<tracing::Id> {
        self.join.as_ref().and_then(Span::id)
    }

    pub fn joined(&self, participant_sid: &str) {
        if let Some(join) = &self.join {
            join.record("participant", participant_sid);
        }
    }

    /// The peer connection is up: the join is done.
    pub fn connected(&mut self) {
        if let Some(join) = self.join.take() {
            join.record("outcome", "connected");
        }
    }

    pub fn join_failed(&mut self, why: &str) {
        if let Some(join) = self.join.take() {
            join.record("outcome", why);
            join.record("otel.status_code", "ERROR");
        }
    }

    /// A span for applying a client offer; the caller instruments the call with it.
    pub fn client_offer(&self) -> Span {
        tracing::info_span!(parent: self.parent(), "negotiate", initiator = "client")
    }

    /// The server sent offer `id`; its span lasts until the answer is applied.
    pub fn server_offer(&mut self, id: u32) {
        let span = tracing::info_span!(parent: self.parent(), "negotiate", initiator = "server", offer = id, outcome = Empty);
        self.server_offer = Some((id, span));
    }

    pub fn server_offer_answered(&mut self, id: u32, ok: bool) {
        if self.server_offer.as_ref().is_some_and(|(o, _)| *o == id)
            && let Some((_, span)) = self.server_offer.take()
        {
            span.record("outcome", if ok { "applied" } else { "refused" });
        }
    }

    /// The client announced a track (`cid`, its own id for it).
    pub fn publish_started(&mut self, cid: &str, participant_sid: &str) {
        if self.publishing.len() >= MAX_PENDING || self.publishing.contains_key(cid) {
            return;
        }
        let span = tracing::info_span!(parent: self.parent(), "publish", participant = %participant_sid, cid = %cid, track = Empty, outcome = Empty);
        self.publishing.insert(cid.to_owned(), span);
    }

    pub fn is_publishing(&self, cid: &str) -> bool {
        self.publishing.contains_key(cid)
    }

    /// The track's media arrived and it is published as `track_sid` (None: it was refused).
    pub fn published(&mut self, cid: &str, track_sid: Option<&str>) {
        if let Some(span) = self.publishing.remove(cid) {
            match track_sid {
                Some(sid) => span.record("track", sid),
                None => span.record("outcome", "refused"),
            };
        }
    }

    /// The participant will be subscribed to `track_sid` (asked, or auto-subscribed).
    pub fn subscribe_started(&mut self, track_sid: &str, participant_sid: &str) {
        if self.subscribing.len() >= MAX_PENDING || self.subscribing.contains_key(track_sid) {
            return;
        }
        let span = tracing::info_span!(parent: self.parent(), "subscribe", participant = %participant_sid, track = %track_sid, outcome = Empty);
        self.subscribing.insert(track_sid.to_owned(), span);
    }

    pub fn subscribe_ended(&mut self, track_sid: &str, outcome: &'static str) {
        if let Some(span) = self.subscribing.remove(track_sid) {
            span.record("outcome", outcome);
        }
    }

    /// The session is over: whatever is still open did not complete.
    pub fn finish(&mut self) {
        self.join_failed("abandoned");
        let open = self
            .subscribing
            .drain()
            .map(|(_, s)| s)
            .chain(self.publishing.drain().map(|(_, s)| s))
            .chain(self.server_offer.take().map(|(_, s)| s));
        for span in open {
            span.record("outcome", "abandoned");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_spans_are_bounded() {
        let mut spans = SessionSpans::join("r", "alice");
        for i in 0..MAX_PENDING + 10 {
            spans.subscribe_started(&format!("TR_{i}"), "PA_x");
            spans.publish_started(&format!("cid{i}"), "PA_x");
        }
        assert_eq!(spans.subscribing.len(), MAX_PENDING);
        assert_eq!(spans.publishing.len(), MAX_PENDING);
        spans.subscribe_ended("TR_0", "subscribed");
        spans.published("cid0", Some("TR_9"));
        assert_eq!(spans.subscribing.len(), MAX_PENDING - 1);
        spans.finish();
        assert!(spans.subscribing.is_empty() && spans.publishing.is_empty());
        assert!(spans.join.is_none());
    }
}
