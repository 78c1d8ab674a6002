//! Just enough STUN parsing to route a datagram on a shared socket: recognise a STUN message and
//! read the local (server) ufrag from its USERNAME attribute ("server_ufrag:client_ufrag").
//! Integrity is checked later by the connection itself; this only picks which one to ask.

const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];
const HEADER_LEN: usize = 20;
const ATTR_USERNAME: u16 = 0x0006;

/// True when the datagram has the shape of a STUN message (RFC 8489 §5, RFC 7983 demux).
pub fn is_stun(datagram: &[u8]) -> bool {
    datagram.len() >= HEADER_LEN && datagram[0] < 2 && datagram[4..8] == MAGIC_COOKIE
}

/// The server-side ufrag named by a STUN binding request's USERNAME, if any.
pub fn local_ufrag(datagram: &[u8]) -> Option<&str> {
    if !is_stun(datagram) {
        return None;
    }
    let body_len = u16::from_be_bytes([datagram[2], datagram[3]]) as usize;
    let end = HEADER_LEN.checked_add(body_len)?.min(datagram.len());
    let mut at = HEADER_LEN;
    while at + 4 <= end {
        let kind = u16::from_be_bytes([datagram[at], datagram[at + 1]]);
        let len = u16::from_be_bytes([datagram[at + 2], datagram[at + 3]]) as usize;
        let value = datagram.get(at + 4..at + 4 + len)?;
        if kind == ATTR_USERNAME {
            let username = std::str::from_utf8(value).ok()?;
            return username.split(':').next().filter(|u| !u.is_empty());
        }
        // Attributes are padded to a multiple of four bytes.
        at += 4 + len.div_ceil(4) * 4;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding_request(username: &[u8]) -> Vec<u8> {
        let padded = username.len().div_ceil(4) * 4;
        let mut m = vec![0x00, 0x01];
        m.extend_from_slice(&((4 + padded) as u16).to_be_bytes());
        m.extend_from_slice(&MAGIC_COOKIE);
        m.extend_from_slice(&[7; 12]);
        m.extend_from_slice(&ATTR_USERNAME.to_be_bytes());
        m.extend_from_slice(&(username.len() as u16).to_be_bytes());
        m.extend_from_slice(username);
        m.resize(HEADER_LEN + 4 + padded, 0);
        m
    }

    #[test]
    fn reads_server_ufrag_from_username() {
        let m = binding_request(b"srvUfrag:cli");
        assert!(is_stun(&m));
        assert_eq!(local_ufrag(&m), Some("srvUfrag"));
    }

    #[test]
    fn rejects_non_stun_and_truncated() {
        assert_eq!(local_ufrag(&[0x80; 40]), None); // RTP
        assert_eq!(local_ufrag(&[0x16; 40]), None); // DTLS
        let m = binding_request(b"abc:def");
        assert_eq!(local_ufrag(&m[..HEADER_LEN + 6]), None);
        assert_eq!(local_ufrag(&binding_request(b":x")), None);
    }

    #[test]
    fn any_input_is_safe() {
        for len in 0..64 {
            let mut m = vec![0u8; len];
            if len >= 8 {
                m[4..8].copy_from_slice(&MAGIC_COOKIE);
                m[2] = 0xff;
                m[3] = 0xff;
            }
            if len >= 24 {
                m[20..22].copy_from_slice(&ATTR_USERNAME.to_be_bytes());
                m[22] = 0xff;
            }
            let _ = local_ufrag(&m);
        }
    }
}
