//! Keeps a client's repeated ClientHello away from the engine's DTLS server.
//!
//! rtc-dtls 0.21.1 clears its retransmission timer whenever a handshake record arrives while it
//! waits for the client's next flight, before it knows whether the record says anything new.
//! When our flight 4 (ServerHello .. ServerHelloDone) is lost, the client repeats its flight 3
//! (the ClientHello with the cookie); the engine then stops its timer, finds nothing new and
//! waits forever: the connection never comes up (`tests/sim_handshake.rs` reproduces it).
//! Dropping the repeat leaves the engine's own timer running, and it resends flight 4 within
//! its retransmission interval, as RFC 6347 4.2.4 has a server do.
//!
//! Only a ClientHello that carries a cookie, repeats one already passed, and was answered (our
//! ServerHello went out since) is dropped. A repeat of the first ClientHello (no cookie) must
//! reach the engine, which answers every one with a HelloVerifyRequest and keeps no timer of
//! its own for it; and one the engine has not answered (it may have arrived before the engine
//! was ready for it) must reach it again.

/// DTLS record: type (1), version (2), epoch (2), sequence number (6), length (2).
const RECORD_HEADER: usize = 13;
/// Handshake message: type (1), length (3), message_seq (2), fragment offset (3) and length (3).
const HANDSHAKE_HEADER: usize = 12;
const CONTENT_HANDSHAKE: u8 = 22;
const CLIENT_HELLO: u8 = 1;
const SERVER_HELLO: u8 = 2;

#[derive(Debug, Default)]
pub(crate) struct ClientHelloReplayGuard {
    /// message_seq of the ClientHello with a cookie that already reached the engine.
    passed: Option<u16>,
    /// Our ServerHello went out after it: the engine answered and runs its own timer.
    answered: bool,
}

impl ClientHelloReplayGuard {
    /// Whether `datagram` repeats a cookie-bearing ClientHello the engine already answered.
    pub fn is_repeat(&self, datagram: &[u8]) -> bool {
        self.answered && self.passed.is_some() && cookie_client_hello(datagram) == self.passed
    }

    /// `datagram` reached the engine.
    pub fn passed(&mut self, datagram: &[u8]) {
        if let Some(seq) = cookie_client_hello(datagram)
            && self.passed != Some(seq)
        {
            self.passed = Some(seq);
            self.answered = false;
        }
    }

    /// The engine sends `datagram`.
    pub fn sent(&mut self, datagram: &[u8]) {
        if self.passed.is_some() && !self.answered {
            self.answered = handshake_type(datagram) == Some(SERVER_HELLO);
        }
    }
}

/// The handshake message type starting an epoch-0 handshake record at the front of
/// `datagram`.
fn handshake_type(datagram: &[u8]) -> Option<u8> {
    (datagram.len() > RECORD_HEADER && datagram[0] == CONTENT_HANDSHAKE && datagram[3..5] == [0, 0])
        .then(|| datagram[RECORD_HEADER])
}

/// The message_seq of the ClientHello starting `datagram`, when it is the first fragment of a
/// ClientHello at epoch 0 that carries a cookie.
fn cookie_client_hello(datagram: &[u8]) -> Option<u16> {
    let record = datagram;
    if record.len() < RECORD_HEADER + HANDSHAKE_HEADER
        || record[0] != CONTENT_HANDSHAKE
        || record[3..5] != [0, 0]
    {
        return None;
    }
    let handshake = &record[RECORD_HEADER..];
    let fragment_offset = u32::from_be_bytes([0, handshake[6], handshake[7], handshake[8]]);
    if handshake[0] != CLIENT_HELLO || fragment_offset != 0 {
        return None;
    }
    let message_seq = u16::from_be_bytes([handshake[4], handshake[5]]);
    // Body: client_version (2), random (32), session_id (1 + n), cookie (1 + n).
    let body = &handshake[HANDSHAKE_HEADER..];
    let session_id_len = *body.get(34)? as usize;
    let cookie_len = *body.get(35 + session_id_len)?;
    (cookie_len > 0).then_some(message_seq)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A DTLS record holding the first fragment of a ClientHello.
    fn client_hello(message_seq: u16, record_seq: u8, cookie: &[u8]) -> Vec<u8> {
        let mut body = vec![0xfe, 0xfd];
        body.extend([7u8; 32]); // random
        body.push(0); // no session id
        body.push(cookie.len() as u8);
        body.extend(cookie);
        body.extend([0, 2, 0xc0, 0x2b, 1, 0]); // one cipher suite, null compression
        let len = body.len() as u32;
        let mut handshake = vec![CLIENT_HELLO];
        handshake.extend(&len.to_be_bytes()[1..]);
        handshake.extend(message_seq.to_be_bytes());
        handshake.extend([0, 0, 0]);
        handshake.extend(&len.to_be_bytes()[1..]);
        handshake.extend(body);
        let mut record = vec![
            CONTENT_HANDSHAKE,
            0xfe,
            0xfd,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            record_seq,
        ];
        record.extend((handshake.len() as u16).to_be_bytes());
        record.extend(handshake);
        record
    }

    /// The start of our flight 4: a ServerHello record.
    fn server_hello() -> Vec<u8> {
        let mut record = client_hello(1, 1, &[]);
        record[RECORD_HEADER] = SERVER_HELLO;
        record
    }

    #[test]
    fn a_repeated_cookie_client_hello_is_held_back_once_answered() {
        let mut guard = ClientHelloReplayGuard::default();
        let first = client_hello(1, 1, &[9; 20]);
        assert!(!guard.is_repeat(&first));
        guard.passed(&first);
        // Not answered yet (the engine may not have been ready): the repeat goes in.
        let repeat = client_hello(1, 2, &[9; 20]);
        assert!(!guard.is_repeat(&repeat));
        guard.passed(&repeat);
        guard.sent(&[0x80, 96, 0, 1]);
        assert!(!guard.is_repeat(&repeat));
        guard.sent(&server_hello());
        // Answered: the client's retransmission means our flight was lost; the engine's timer
        // resends it.
        assert!(guard.is_repeat(&client_hello(1, 3, &[9; 20])));
    }

    #[test]
    fn the_first_client_hello_always_passes() {
        let mut guard = ClientHelloReplayGuard::default();
        let no_cookie = client_hello(0, 0, &[]);
        guard.passed(&no_cookie);
        assert!(!guard.is_repeat(&client_hello(0, 1, &[])));
        // Then the one with the cookie, once.
        let with_cookie = client_hello(1, 2, &[9; 20]);
        assert!(!guard.is_repeat(&with_cookie));
    }

    #[test]
    fn other_records_pass() {
        let mut guard = ClientHelloReplayGuard::default();
        guard.passed(&client_hello(1, 1, &[9; 20]));
        guard.sent(&server_hello());
        let mut finished = client_hello(1, 3, &[9; 20]);
        finished[0] = 20; // change cipher spec
        assert!(!guard.is_repeat(&finished));
        let mut epoch1 = client_hello(1, 3, &[9; 20]);
        epoch1[4] = 1;
        assert!(!guard.is_repeat(&epoch1));
        assert!(!guard.is_repeat(&[22, 0xfe]));
        assert!(!guard.is_repeat(&[0x80, 96, 0, 1]));
        // Truncated inside the body: not read past the end.
        let hello = client_hello(1, 4, &[9; 20]);
        assert!(!guard.is_repeat(&hello[..RECORD_HEADER + HANDSHAKE_HEADER + 30]));
    }
}
