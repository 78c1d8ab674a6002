// Offer/answer bookkeeping: one negotiation at a time, and glare with the client as the polite
// peer. Pure state, mirroring the Rust SDK's Negotiator; the room applies its decisions.
//
// Rules (see signal.proto): never send an offer while one of ours is unanswered (a change meanwhile
// is remembered and offered once the answer arrives); an answer whose id is not the outstanding
// offer's is stale; a server offer that arrives while ours is outstanding is glare: roll ours
// back, answer the server, then offer again (the server ignores our crossed offer).

export class Negotiator {
  #lastId = 0;
  #outstanding = null;
  #wanted = false;

  /** Something changed that needs an offer: the id to offer with now, or null (queued). */
  requestOffer() {
    if (this.#outstanding !== null) {
      this.#wanted = true;
      return null;
    }
    this.#wanted = false;
    this.#lastId = (this.#lastId + 1) >>> 0 || 1;
    this.#outstanding = this.#lastId;
    return this.#lastId;
  }

  /** Whether an answer with this id completes our outstanding offer. */
  acceptsAnswer(id) {
    return this.#outstanding !== null && this.#outstanding === id;
  }

  /** Our offer `id` was answered and applied: the id of the next offer to send, or null. */
  onAnswer(id) {
    if (this.#outstanding !== id) return null;
    this.#outstanding = null;
    return this.#wanted ? this.requestOffer() : null;
  }

  /** A server offer arrived: 'answer', or 'rollback' (glare: roll ours back first). */
  onRemoteOffer() {
    if (this.#outstanding !== null) {
      this.#outstanding = null;
      this.#wanted = true; // what our abandoned offer carried must be offered again
      return 'rollback';
    }
    return 'answer';
  }

  /** The server's offer was answered: the id of an offer to send now, or null. */
  afterRemoteOffer() {
    return this.#wanted && this.#outstanding === null ? this.requestOffer() : null;
  }

  /** Sending our offer failed before it reached the server: keep wanting one. */
  offerFailed() {
    if (this.#outstanding !== null) {
      this.#outstanding = null;
      this.#wanted = true;
    }
  }

  get hasOutstanding() {
    return this.#outstanding !== null;
  }
}
