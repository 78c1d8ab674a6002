//! Webhook signatures: `X-Prism-Signature: sha256=<lowercase hex HMAC-SHA256 of the exact body
//! bytes, keyed with the API secret>`. `X-Prism-Api-Key` names the key whose secret was used.

use hmac::{Hmac, Mac};
use sha2::Sha256;

pub const SIGNATURE_HEADER: &str = "x-prism-signature";
pub const API_KEY_HEADER: &str = "x-prism-api-key";
pub const EVENT_HEADER: &str = "x-prism-event";
pub const EVENT_ID_HEADER: &str = "x-prism-event-id";

const PREFIX: &str = "sha256=";

fn mac(secret: &str) -> Hmac<Sha256> {
    // HMAC takes a key of any length; this cannot fail.
    Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC accepts any key length")
}

/// The signature header value of `body`.
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = mac(secret);
    mac.update(body);
    format!("{PREFIX}{}", hex::encode(mac.finalize().into_bytes()))
}

/// Whether `header` is the signature of `body` with `secret` (constant-time comparison).
pub fn verify(secret: &str, body: &[u8], header: &str) -> bool {
    let Some(hex_sig) = header.trim().strip_prefix(PREFIX) else {
        return false;
    };
    let Ok(sig) = hex::decode(hex_sig) else {
        return false;
    };
    let mut mac = mac(secret);
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vector() {
        // RFC 4231 test case 2.
        let sig = sign("Jefe", b"what do ya want for nothing?");
        assert_eq!(
            sig,
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert!(verify("Jefe", b"what do ya want for nothing?", &sig));
    }

    #[test]
    fn tampering_is_detected() {
        let sig = sign("secret", b"{\"event\":\"room_started\"}");
        assert!(!verify("secret", b"{\"event\":\"room_finished\"}", &sig));
        assert!(!verify("other", b"{\"event\":\"room_started\"}", &sig));
        assert!(!verify(
            "secret",
            b"{\"event\":\"room_started\"}",
            "sha256=zz"
        ));
        assert!(!verify(
            "secret",
            b"{\"event\":\"room_started\"}",
            &sig[7..]
        ));
    }
}
