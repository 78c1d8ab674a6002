//! Offer/answer bookkeeping: one negotiation at a time, and glare with the client as the polite
//! peer. Pure state; the room applies its decisions to the peer connection.
//!
//! Rules (see `signal.proto`):
//! - the client never sends an offer while one of its own is unanswered; a renegotiation wanted
//!   meanwhile is remembered and sent once the answer arrives;
//! - an answer whose id is not the outstanding offer's is stale and ignored;
//! - a server offer that arrives while our offer is outstanding is glare: roll our offer back,
//!   answer the server, then offer again (the server ignores our crossed offer).

/// What to do with a server offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RemoteOffer {
    /// Apply it and answer.
    Answer,
    /// Glare: roll our local offer back first, then apply and answer.
    RollbackThenAnswer,
}

/// Offer/answer state of one peer connection.
#[derive(Debug, Default)]
pub(crate) struct Negotiator {
    last_id: u32,
    outstanding: Option<u32>,
    wanted: bool,
}

impl Negotiator {
    /// Something changed that needs an offer. Returns the id to offer with now, or `None` if an
    /// offer is already outstanding (it will come from [`Self::on_answer`]).
    pub(crate) fn request_offer(&mut self) -> Option<u32> {
        if self.outstanding.is_some() {
            self.wanted = true;
            return None;
        }
        self.wanted = false;
        self.last_id = self.last_id.wrapping_add(1).max(1);
        self.outstanding = Some(self.last_id);
        Some(self.last_id)
    }

    /// Whether an answer with this id completes our outstanding offer.
    pub(crate) fn accepts_answer(&self, id: u32) -> bool {
        self.outstanding == Some(id)
    }

    /// Our offer `id` was answered (and applied). Returns the id of the next offer to send, if
    /// a renegotiation was requested meanwhile.
    pub(crate) fn on_answer(&mut self, id: u32) -> Option<u32> {
        if self.outstanding != Some(id) {
            return None;
        }
        self.outstanding = None;
        if self.wanted {
            self.request_offer()
        } else {
            None
        }
    }

    /// A server offer arrived.
    pub(crate) fn on_remote_offer(&mut self) -> RemoteOffer {
        if self.outstanding.take().is_some() {
            // Our offer is abandoned; what it carried must be offered again.
            self.wanted = true;
            RemoteOffer::RollbackThenAnswer
        } else {
            RemoteOffer::Answer
        }
    }

    /// The server's offer was answered. Returns the id of an offer to send now, if one is wanted.
    pub(crate) fn after_remote_offer(&mut self) -> Option<u32> {
        if self.wanted && self.outstanding.is_none() {
            self.request_offer()
        } else {
            None
        }
    }

    /// Sending our offer failed before it reached the server: forget it, keep wanting one.
    pub(crate) fn offer_failed(&mut self) {
        if self.outstanding.take().is_some() {
            self.wanted = true;
        }
    }

    /// Whether one of our offers is unanswered.
    #[cfg(test)]
    pub(crate) fn has_outstanding(&self) -> bool {
        self.outstanding.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offers_are_serialized_and_coalesced() {
        let mut n = Negotiator::default();
        assert_eq!(n.request_offer(), Some(1));
        // Two more changes while 1 is unanswered: one follow-up offer, not two.
        assert_eq!(n.request_offer(), None);
        assert_eq!(n.request_offer(), None);
        assert!(!n.accepts_answer(7));
        assert_eq!(n.on_answer(7), None, "stale answer ignored");
        assert!(n.has_outstanding());
        assert!(n.accepts_answer(1));
        assert_eq!(n.on_answer(1), Some(2));
        assert_eq!(n.on_answer(2), None);
        assert!(!n.has_outstanding());
        assert_eq!(n.request_offer(), Some(3));
    }

    #[test]
    fn server_offer_without_glare_is_just_answered() {
        let mut n = Negotiator::default();
        assert_eq!(n.on_remote_offer(), RemoteOffer::Answer);
        assert_eq!(n.after_remote_offer(), None);
    }

    #[test]
    fn glare_rolls_back_answers_then_reoffers() {
        let mut n = Negotiator::default();
        assert_eq!(n.request_offer(), Some(1));
        assert_eq!(n.on_remote_offer(), RemoteOffer::RollbackThenAnswer);
        assert!(!n.has_outstanding());
        // The answer to the rolled-back offer, should the server send one anyway, is stale.
        assert!(!n.accepts_answer(1));
        assert_eq!(n.after_remote_offer(), Some(2));
        assert!(n.accepts_answer(2));
        assert_eq!(n.on_answer(2), None);
    }

    #[test]
    fn failed_offer_is_retried_after_next_negotiation() {
        let mut n = Negotiator::default();
        assert_eq!(n.request_offer(), Some(1));
        n.offer_failed();
        assert!(!n.has_outstanding());
        assert_eq!(n.on_remote_offer(), RemoteOffer::Answer);
        assert_eq!(n.after_remote_offer(), Some(2));
    }
}
