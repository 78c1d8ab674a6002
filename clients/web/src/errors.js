// Errors the SDK reports. `ConnectError.reason` is a stable machine-readable string; the
// message is for people.

/** Why connecting (or reconnecting) failed. */
export const ConnectErrorReason = Object.freeze({
  /** The server rejected the access token (bad signature, expired, malformed). */
  Unauthorized: 'unauthorized',
  /** The token is valid but does not allow joining. */
  Forbidden: 'forbidden',
  /** The room has reached its maximum number of participants. */
  RoomFull: 'room_full',
  /** The room does not exist and the server does not create rooms on join. */
  RoomNotFound: 'room_not_found',
  /** Nothing answered at the server's address. */
  Unreachable: 'unreachable',
  /** The server did not answer in time. */
  Timeout: 'timeout',
  /** The server refused the join for another reason (see the message). */
  ServerError: 'server_error',
  /** The connection closed or `disconnect()` was called while connecting. */
  Cancelled: 'cancelled',
});

export class ConnectError extends Error {
  /**
   * @param {string} reason one of ConnectErrorReason
   * @param {string} message
   * @param {{status?: number, code?: string}} [details] HTTP status / server error code
   */
  constructor(reason, message, details = {}) {
    super(message);
    this.name = 'ConnectError';
    this.reason = reason;
    this.status = details.status;
    this.code = details.code;
  }
}

/** An `error` message from the server about one of our requests; the session goes on. */
export class SignalError extends Error {
  constructor(code, message, request) {
    super(message);
    this.name = 'SignalError';
    this.code = code;
    this.request = request;
  }
}
