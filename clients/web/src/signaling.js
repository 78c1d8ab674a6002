// The signaling WebSocket: /rtc?access_token=JWT&auto_subscribe=..., protobuf JSON text frames
// (proto/proto/prism/signal.proto; proto3 JSON: lowerCamelCase names, enums as their names,
// 64-bit integers as strings, default values omitted).

import { Emitter } from './emitter.js';
import { ConnectError, ConnectErrorReason } from './errors.js';

/** The signaling URL for a server base URL (http(s):// or ws(s)://). */
export function signalUrl(url, token, autoSubscribe) {
  const u = new URL(url, globalThis.location?.href);
  if (u.protocol === 'http:') u.protocol = 'ws:';
  else if (u.protocol === 'https:') u.protocol = 'wss:';
  if (u.protocol !== 'ws:' && u.protocol !== 'wss:') {
    throw new ConnectError(ConnectErrorReason.Unreachable, `not a server URL: ${url}`);
  }
  u.pathname = `${u.pathname.replace(/\/+$/, '')}/rtc`;
  u.search = '';
  u.searchParams.set('access_token', token);
  u.searchParams.set('auto_subscribe', autoSubscribe ? 'true' : 'false');
  return u.toString();
}

/** The same URL over plain HTTP(S), to ask the server why an upgrade failed. */
function probeUrl(wsUrl) {
  const u = new URL(wsUrl);
  u.protocol = u.protocol === 'wss:' ? 'https:' : 'http:';
  return u.toString();
}

const HTTP_ERRORS = {
  unauthenticated: [ConnectErrorReason.Unauthorized, 'the server rejected the access token'],
  invalid_token: [ConnectErrorReason.Unauthorized, 'the access token is not usable'],
  permission_denied: [ConnectErrorReason.Forbidden, 'the access token does not allow joining'],
  room_full: [ConnectErrorReason.RoomFull, 'the room is full'],
  room_not_found: [ConnectErrorReason.RoomNotFound, 'the room does not exist'],
};

/**
 * A browser cannot see the HTTP status of a refused WebSocket upgrade, so after a failed
 * connect the same request is repeated as a plain GET: Prism answers it with the JSON error it
 * refused the upgrade with (`{"error", "message"}`).
 */
async function diagnose(wsUrl) {
  const target = new URL(wsUrl);
  let response;
  try {
    response = await fetch(probeUrl(wsUrl), { cache: 'no-store' });
  } catch {
    return new ConnectError(
      ConnectErrorReason.Unreachable,
      `cannot reach the server at ${target.host}`,
    );
  }
  let body = null;
  try {
    body = await response.json();
  } catch {
    // not a Prism answer
  }
  const known = body && HTTP_ERRORS[body.error];
  if (known) {
    const [reason, summary] = known;
    return new ConnectError(reason, `${summary}: ${body.message ?? body.error}`, {
      status: response.status,
      code: body.error,
    });
  }
  const detail = body?.message ?? `HTTP ${response.status}`;
  return new ConnectError(
    ConnectErrorReason.ServerError,
    `the server at ${target.host} refused the signaling connection (${detail})`,
    { status: response.status, code: body?.error },
  );
}

/** Server `error` codes that end a join, as ConnectError reasons. */
function joinErrorReason(error) {
  if (error.code === 'NOT_ALLOWED') return ConnectErrorReason.Forbidden;
  if (error.code === 'ROOM_FULL' || /\bis full\b/.test(error.message ?? '')) {
    return ConnectErrorReason.RoomFull;
  }
  return ConnectErrorReason.ServerError;
}

/**
 * One signaling connection. Emits 'message' (a SignalResponse object) after the join, and
 * 'close' ({reason}) once, when the socket closes or stops answering pings.
 */
export class SignalClient extends Emitter {
  #ws;
  #closed = false;
  #pingTimer = null;
  #lastHeard = Date.now();
  /** Signaling round-trip time from the last pong, in ms. */
  rtt = null;

  constructor(ws) {
    super();
    this.#ws = ws;
  }

  /**
   * Opens the socket and waits for the server's join.
   * @returns {Promise<{client: SignalClient, join: object}>}
   */
  static connect(url, token, { autoSubscribe = true, timeoutMs = 10_000, signal } = {}) {
    const wsUrl = signalUrl(url, token, autoSubscribe);
    return new Promise((resolve, reject) => {
      let settled = false;
      const ws = new WebSocket(wsUrl);
      const client = new SignalClient(ws);
      const fail = (error) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
        try {
          ws.close();
        } catch {
          // already closed
        }
        reject(error);
      };
      const timer = setTimeout(
        () => fail(new ConnectError(ConnectErrorReason.Timeout, 'the server did not answer the join in time')),
        timeoutMs,
      );
      signal?.addEventListener('abort', () =>
        fail(new ConnectError(ConnectErrorReason.Cancelled, 'connecting was cancelled')),
      );
      ws.onmessage = (event) => {
        let message;
        try {
          message = JSON.parse(event.data);
        } catch {
          fail(new ConnectError(ConnectErrorReason.ServerError, 'the server sent a malformed message'));
          return;
        }
        if (message.join) {
          settled = true;
          clearTimeout(timer);
          client.#attach();
          resolve({ client, join: message.join });
        } else if (message.error) {
          const e = message.error;
          fail(new ConnectError(joinErrorReason(e), `the server refused the join: ${e.message}`, { code: e.code }));
        } else if (message.leave) {
          fail(new ConnectError(ConnectErrorReason.ServerError, `the server closed the session: ${message.leave.message ?? message.leave.reason}`));
        }
      };
      // A refused upgrade and an unreachable server look the same here (code 1006): ask.
      ws.onclose = () => {
        if (settled) return;
        diagnose(wsUrl).then(fail, fail);
      };
    });
  }

  #attach() {
    const ws = this.#ws;
    ws.onmessage = (event) => {
      this.#lastHeard = Date.now();
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        console.warn('prism: malformed signaling message dropped');
        return;
      }
      if (message.pong) {
        const sent = Number(message.pong.timestamp);
        if (Number.isFinite(sent)) this.rtt = Date.now() - sent;
        return;
      }
      this.emit('message', message);
    };
    ws.onclose = (event) => this.#finish(event.reason || `closed (code ${event.code})`);
    ws.onerror = null;
  }

  /**
   * Pings every `intervalMs`; a server silent for three intervals is gone (a dropped network
   * does not close a WebSocket for minutes).
   */
  startPings(intervalMs) {
    clearInterval(this.#pingTimer);
    this.#lastHeard = Date.now();
    this.#pingTimer = setInterval(() => {
      if (Date.now() - this.#lastHeard > 3 * intervalMs) {
        this.#finish('the server stopped answering');
        return;
      }
      this.send({ ping: { timestamp: String(Date.now()) } });
    }, intervalMs);
  }

  /** Sends a SignalRequest; false when the socket is not open. */
  send(request) {
    if (this.#closed || this.#ws.readyState !== WebSocket.OPEN) return false;
    this.#ws.send(JSON.stringify(request));
    return true;
  }

  get isOpen() {
    return !this.#closed && this.#ws.readyState === WebSocket.OPEN;
  }

  /** Closes the socket (after sending `leave` when asked); emits nothing. */
  close({ leave = false } = {}) {
    if (leave) this.send({ leave: {} });
    this.#closed = true;
    clearInterval(this.#pingTimer);
    this.#ws.onclose = this.#ws.onmessage = null;
    try {
      this.#ws.close(1000);
    } catch {
      // already closed
    }
  }

  #finish(reason) {
    if (this.#closed) return;
    this.close();
    this.emit('close', { reason });
  }
}
