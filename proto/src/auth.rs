//! Access tokens: JWTs signed with HS256 using an API secret, issued by its API key.
//!
//! # Wire format (stable)
//!
//! Header: `{"alg": "HS256", "typ": "JWT"}`; any other algorithm (including `none`) is refused.
//!
//! Claims:
//!
//! ```json
//! {
//!   "iss": "<api key>",             // required: selects the secret that verifies the signature
//!   "sub": "<participant identity>", // required, non-empty
//!   "name": "<display name>",       // optional, default ""
//!   "metadata": "<opaque string>",  // optional, default ""
//!   "room": "<room name>",          // optional, default ""
//!   "iat": 1700000000,               // optional, unix seconds
//!   "nbf": 1700000000,               // optional, unix seconds
//!   "exp": 1700021600,               // required, unix seconds
//!   "grants": {                      // optional; so is every field in it
//!     "room_join": true,             // default true
//!     "can_publish": true,           // default true
//!     "can_subscribe": true,         // default true
//!     "can_publish_data": true,      // default true
//!     "room_create": false,          // default false
//!     "room_list": false,            // default false
//!     "room_admin": false            // default false
//!   }
//! }
//! ```
//!
//! A minimal join token therefore needs only `iss`, `sub`, `exp` and `room`. Unknown claims are
//! ignored. `exp` and `nbf` are checked with [`LEEWAY_SECS`] of clock skew allowed.
//!
//! Every [`AuthError`] message is safe to return to a client: none contains a secret.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// Lifetime of a token when [`AccessToken::ttl`] is not called.
pub const DEFAULT_TTL: Duration = Duration::from_secs(6 * 60 * 60);
/// Clock skew tolerated when checking `exp` and `nbf`.
pub const LEEWAY_SECS: u64 = 10;
/// Tokens longer than this are refused before any decoding.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// Why a token could not be issued or was refused. Messages are safe to show a client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no access token was provided")]
    Missing,
    #[error("malformed access token: {0}")]
    Malformed(String),
    #[error("unsupported token signing algorithm: only HS256 is accepted")]
    UnsupportedAlgorithm,
    #[error("unknown API key {0:?}")]
    UnknownKey(String),
    #[error("access token signature is invalid")]
    BadSignature,
    #[error("access token has expired")]
    Expired,
    #[error("access token is not valid yet")]
    NotYetValid,
    #[error("access token has no identity (sub)")]
    MissingIdentity,
    #[error("API key and secret must not be empty")]
    EmptyCredentials,
    #[error("could not sign access token: {0}")]
    Signing(String),
}

/// What the bearer may do. The default allows joining, publishing, subscribing and sending
/// data, and nothing administrative.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Grants {
    pub room_join: bool,
    pub can_publish: bool,
    pub can_subscribe: bool,
    pub can_publish_data: bool,
    pub room_create: bool,
    pub room_list: bool,
    pub room_admin: bool,
}

impl Default for Grants {
    fn default() -> Self {
        Grants {
            room_join: true,
            can_publish: true,
            can_subscribe: true,
            can_publish_data: true,
            room_create: false,
            room_list: false,
            room_admin: false,
        }
    }
}

/// The verified contents of an access token (see the module docs for the JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// API key that signed the token.
    pub iss: String,
    /// Participant identity.
    pub sub: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub metadata: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub room: String,
    #[serde(default)]
    pub nbf: u64,
    pub exp: u64,
    #[serde(default)]
    pub iat: u64,
    #[serde(default)]
    pub grants: Grants,
}

/// Builds and signs an access token.
#[derive(Clone)]
pub struct AccessToken {
    api_key: String,
    api_secret: String,
    identity: String,
    name: String,
    metadata: String,
    room: String,
    ttl: Duration,
    grants: Grants,
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessToken")
            .field("api_key", &self.api_key)
            .field("identity", &self.identity)
            .field("name", &self.name)
            .field("room", &self.room)
            .field("ttl", &self.ttl)
            .field("grants", &self.grants)
            .finish_non_exhaustive()
    }
}

impl AccessToken {
    pub fn new(api_key: &str, api_secret: &str) -> Self {
        AccessToken {
            api_key: api_key.to_owned(),
            api_secret: api_secret.to_owned(),
            identity: String::new(),
            name: String::new(),
            metadata: String::new(),
            room: String::new(),
            ttl: DEFAULT_TTL,
            grants: Grants::default(),
        }
    }

    /// Participant identity (`sub`); required.
    pub fn identity(mut self, identity: &str) -> Self {
        self.identity = identity.to_owned();
        self
    }

    /// Display name.
    pub fn name(mut self, name: &str) -> Self {
        self.name = name.to_owned();
        self
    }

    /// Opaque metadata handed to other participants.
    pub fn metadata(mut self, metadata: &str) -> Self {
        self.metadata = metadata.to_owned();
        self
    }

    /// Room the token is for.
    pub fn room(mut self, room: &str) -> Self {
        self.room = room.to_owned();
        self
    }

    /// Lifetime from now; default [`DEFAULT_TTL`] (6 h). Rounded down to whole seconds.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    pub fn grants(mut self, grants: Grants) -> Self {
        self.grants = grants;
        self
    }

    /// The claims this token would carry if issued at `now` (unix seconds).
    pub fn claims_at(&self, now: u64) -> Claims {
        Claims {
            iss: self.api_key.clone(),
            sub: self.identity.clone(),
            name: self.name.clone(),
            metadata: self.metadata.clone(),
            room: self.room.clone(),
            nbf: now,
            exp: now.saturating_add(self.ttl.as_secs()),
            iat: now,
            grants: self.grants,
        }
    }

    /// Signs the token, valid from now for its TTL.
    pub fn to_jwt(&self) -> Result<String, AuthError> {
        if self.api_key.is_empty() || self.api_secret.is_empty() {
            return Err(AuthError::EmptyCredentials);
        }
        sign(&self.claims_at(unix_now()), &self.api_secret)
    }
}

/// Signs arbitrary claims with HS256. Refuses an empty identity or issuer.
pub fn sign(claims: &Claims, api_secret: &str) -> Result<String, AuthError> {
    if claims.iss.is_empty() || api_secret.is_empty() {
        return Err(AuthError::EmptyCredentials);
    }
    if claims.sub.is_empty() {
        return Err(AuthError::MissingIdentity);
    }
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(api_secret.as_bytes()),
    )
    .map_err(|e| AuthError::Signing(e.to_string()))
}

/// Checks access tokens against the configured API keys.
#[derive(Clone)]
pub struct TokenVerifier {
    keys: BTreeMap<String, String>,
}

impl fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenVerifier")
            .field("keys", &self.keys.keys())
            .finish()
    }
}

/// Only the header field we look at.
#[derive(Deserialize)]
struct RawHeader {
    alg: Option<String>,
}

/// Only the claim needed to pick the secret, read before the signature is checked.
#[derive(Deserialize)]
struct RawIssuer {
    iss: Option<String>,
}

/// The claims as they may appear on the wire, before the checks that make them [`Claims`].
#[derive(Deserialize)]
struct RawClaims {
    #[serde(default)]
    sub: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    metadata: String,
    #[serde(default)]
    room: String,
    #[serde(default)]
    nbf: u64,
    exp: Option<u64>,
    #[serde(default)]
    iat: u64,
    #[serde(default)]
    grants: Grants,
}

impl TokenVerifier {
    /// A verifier for the given API key -> secret map (as in the config's `keys`).
    pub fn new(keys: &BTreeMap<String, String>) -> Self {
        TokenVerifier { keys: keys.clone() }
    }

    /// Verifies a token's signature and validity period now; returns its claims.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        self.verify_at(token, unix_now())
    }

    /// Same as [`verify`](Self::verify), at the given time (unix seconds).
    pub fn verify_at(&self, token: &str, now: u64) -> Result<Claims, AuthError> {
        let token = token.trim();
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        if token.len() > MAX_TOKEN_LEN {
            return Err(AuthError::Malformed("token is too long".into()));
        }
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(_signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthError::Malformed(
                "expected three dot-separated parts".into(),
            ));
        };

        let header: RawHeader = decode_json_part(header, "header")?;
        if header.alg.as_deref() != Some("HS256") {
            return Err(AuthError::UnsupportedAlgorithm);
        }
        let issuer: RawIssuer = decode_json_part(payload, "claims")?;
        let iss = match issuer.iss {
            Some(iss) if !iss.is_empty() => iss,
            _ => return Err(AuthError::Malformed("missing issuer (iss)".into())),
        };
        let Some(secret) = self.keys.get(&iss) else {
            return Err(AuthError::UnknownKey(truncate(&iss, 64)));
        };

        let mut validation = Validation::new(Algorithm::HS256);
        validation.required_spec_claims.clear();
        validation.validate_exp = false; // checked below, against `now`
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.leeway = 0;
        let data = jsonwebtoken::decode::<RawClaims>(
            token,
            &DecodingKey::from_secret(secret.as_bytes()),
            &validation,
        )
        .map_err(map_jwt_error)?;
        let raw = data.claims;

        let Some(exp) = raw.exp else {
            return Err(AuthError::Malformed("missing expiry (exp)".into()));
        };
        if exp.saturating_add(LEEWAY_SECS) < now {
            return Err(AuthError::Expired);
        }
        if raw.nbf > now.saturating_add(LEEWAY_SECS) {
            return Err(AuthError::NotYetValid);
        }
        if raw.sub.is_empty() {
            return Err(AuthError::MissingIdentity);
        }
        Ok(Claims {
            iss,
            sub: raw.sub,
            name: raw.name,
            metadata: raw.metadata,
            room: raw.room,
            nbf: raw.nbf,
            exp,
            iat: raw.iat,
            grants: raw.grants,
        })
    }
}

fn map_jwt_error(e: jsonwebtoken::errors::Error) -> AuthError {
    use jsonwebtoken::errors::ErrorKind;
    match e.kind() {
        ErrorKind::InvalidSignature => AuthError::BadSignature,
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
            AuthError::UnsupportedAlgorithm
        }
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::Base64(_) => AuthError::Malformed("invalid base64url encoding".into()),
        ErrorKind::Json(e) => AuthError::Malformed(format!("invalid claims: {e}")),
        ErrorKind::Utf8(_) => AuthError::Malformed("invalid UTF-8".into()),
        _ => AuthError::Malformed("invalid token".into()),
    }
}

fn decode_json_part<T: for<'de> Deserialize<'de>>(part: &str, what: &str) -> Result<T, AuthError> {
    let bytes = base64url_decode(part)
        .ok_or_else(|| AuthError::Malformed(format!("{what} is not valid base64url")))?;
    serde_json::from_slice(&bytes)
        .map_err(|_| AuthError::Malformed(format!("{what} is not a valid JSON object")))
}

/// Unpadded base64url (RFC 4648 §5), as JWTs use; trailing `=` padding is tolerated.
fn base64url_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.trim_end_matches('=').as_bytes();
    if s.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0u32;
    for &c in s {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

fn truncate(s: &str, max_chars: usize) -> String {
    s.chars().take(max_chars).collect()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "APIkey1";
    const SECRET: &str = "0123456789abcdef0123456789abcdef";
    const OTHER_SECRET: &str = "fedcba9876543210fedcba9876543210";

    fn verifier() -> TokenVerifier {
        TokenVerifier::new(&BTreeMap::from([
            (KEY.to_owned(), SECRET.to_owned()),
            ("second".to_owned(), OTHER_SECRET.to_owned()),
        ]))
    }

    fn b64(bytes: &[u8]) -> String {
        const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
            for i in 0..=chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            }
        }
        out
    }

    /// A token with the given header and claims JSON, signed with HS256 by `secret`.
    fn hand_built(header: &str, claims: &str, secret: &str) -> String {
        let signing_input = format!("{}.{}", b64(header.as_bytes()), b64(claims.as_bytes()));
        // Reuse jsonwebtoken's HMAC for the signature over our own (possibly odd) parts.
        let sig = jsonwebtoken::crypto::sign(
            signing_input.as_bytes(),
            &EncodingKey::from_secret(secret.as_bytes()),
            Algorithm::HS256,
        )
        .unwrap();
        format!("{signing_input}.{sig}")
    }

    fn now() -> u64 {
        unix_now()
    }

    #[test]
    fn round_trip() {
        let grants = Grants {
            can_publish: false,
            room_admin: true,
            ..Grants::default()
        };
        let token = AccessToken::new(KEY, SECRET)
            .identity("alice")
            .name("Alice A.")
            .metadata("{\"team\":1}")
            .room("lobby")
            .ttl(Duration::from_secs(60))
            .grants(grants)
            .to_jwt()
            .unwrap();
        let c = verifier().verify(&token).unwrap();
        assert_eq!(c.iss, KEY);
        assert_eq!(c.sub, "alice");
        assert_eq!(c.name, "Alice A.");
        assert_eq!(c.metadata, "{\"team\":1}");
        assert_eq!(c.room, "lobby");
        assert_eq!(c.exp - c.nbf, 60);
        assert_eq!(c.iat, c.nbf);
        assert!(c.nbf.abs_diff(now()) <= 2);
        assert_eq!(c.grants, grants);
    }

    #[test]
    fn default_ttl_is_six_hours() {
        let token = AccessToken::new(KEY, SECRET)
            .identity("a")
            .to_jwt()
            .unwrap();
        let c = verifier().verify(&token).unwrap();
        assert_eq!(c.exp - c.iat, 6 * 3600);
        assert_eq!(c.grants, Grants::default());
        assert_eq!(c.room, "");
    }

    #[test]
    fn wire_format_is_stable() {
        let claims = AccessToken::new(KEY, SECRET)
            .identity("bob")
            .room("r")
            .claims_at(1000);
        let json = serde_json::to_value(&claims).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "iss": KEY, "sub": "bob", "room": "r", "nbf": 1000, "exp": 1000 + 6 * 3600,
                "iat": 1000,
                "grants": {
                    "room_join": true, "can_publish": true, "can_subscribe": true,
                    "can_publish_data": true, "room_create": false, "room_list": false,
                    "room_admin": false
                }
            })
        );
    }

    #[test]
    fn second_key_verifies_its_own_tokens() {
        let token = AccessToken::new("second", OTHER_SECRET)
            .identity("x")
            .to_jwt()
            .unwrap();
        assert_eq!(verifier().verify(&token).unwrap().iss, "second");
    }

    #[test]
    fn expired() {
        let t = now();
        let mut claims = AccessToken::new(KEY, SECRET)
            .identity("a")
            .claims_at(t - 100);
        claims.exp = t - LEEWAY_SECS - 1;
        let token = sign(&claims, SECRET).unwrap();
        assert_eq!(verifier().verify(&token), Err(AuthError::Expired));
        // Within the leeway it is still accepted.
        assert!(verifier().verify_at(&token, t - 1).is_ok());
        // A zero TTL token is good for the leeway only.
        let token = AccessToken::new(KEY, SECRET)
            .identity("a")
            .ttl(Duration::ZERO)
            .to_jwt()
            .unwrap();
        assert!(verifier().verify(&token).is_ok());
        assert_eq!(
            verifier().verify_at(&token, t + 60),
            Err(AuthError::Expired)
        );
    }

    #[test]
    fn not_yet_valid() {
        let t = now();
        let claims = AccessToken::new(KEY, SECRET)
            .identity("a")
            .claims_at(t + 3600);
        let token = sign(&claims, SECRET).unwrap();
        assert_eq!(verifier().verify(&token), Err(AuthError::NotYetValid));
        assert!(verifier().verify_at(&token, t + 3600 - LEEWAY_SECS).is_ok());
    }

    #[test]
    fn forged_signature() {
        // Claims to be KEY, signed with another secret.
        let token = AccessToken::new(KEY, OTHER_SECRET)
            .identity("mallory")
            .to_jwt()
            .unwrap();
        assert_eq!(verifier().verify(&token), Err(AuthError::BadSignature));

        // A genuine token whose claims were altered after signing.
        let token = AccessToken::new(KEY, SECRET)
            .identity("a")
            .to_jwt()
            .unwrap();
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        let mut claims = AccessToken::new(KEY, SECRET).identity("a").claims_at(now());
        claims.grants.room_admin = true;
        parts[1] = b64(serde_json::to_string(&claims).unwrap().as_bytes());
        assert_eq!(
            verifier().verify(&parts.join(".")),
            Err(AuthError::BadSignature)
        );

        // A truncated signature.
        let cut = &token[..token.len() - 4];
        assert!(verifier().verify(cut).is_err());
    }

    #[test]
    fn unknown_key() {
        let token = AccessToken::new("nope", SECRET)
            .identity("a")
            .to_jwt()
            .unwrap();
        let e = verifier().verify(&token).unwrap_err();
        assert_eq!(e, AuthError::UnknownKey("nope".into()));
        assert!(!e.to_string().contains(SECRET));
    }

    #[test]
    fn alg_none_refused() {
        let claims = format!(r#"{{"iss":"{KEY}","sub":"eve","exp":{}}}"#, now() + 600);
        let unsigned = format!(
            "{}.{}.",
            b64(br#"{"alg":"none","typ":"JWT"}"#),
            b64(claims.as_bytes())
        );
        assert_eq!(
            verifier().verify(&unsigned),
            Err(AuthError::UnsupportedAlgorithm)
        );
        for alg in ["None", "NONE", "HS512", "RS256", "ES256"] {
            let header = format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#);
            let token = format!("{}.{}.AAAA", b64(header.as_bytes()), b64(claims.as_bytes()));
            assert_eq!(
                verifier().verify(&token),
                Err(AuthError::UnsupportedAlgorithm),
                "{alg}"
            );
        }
        let no_alg = format!(
            "{}.{}.AAAA",
            b64(br#"{"typ":"JWT"}"#),
            b64(claims.as_bytes())
        );
        assert_eq!(
            verifier().verify(&no_alg),
            Err(AuthError::UnsupportedAlgorithm)
        );
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        let v = verifier();
        assert_eq!(v.verify(""), Err(AuthError::Missing));
        assert_eq!(v.verify("   "), Err(AuthError::Missing));
        let long = "a".repeat(MAX_TOKEN_LEN + 1);
        let cases = [
            "garbage",
            "a.b",
            "a.b.c.d",
            "...",
            "!!.??.**",
            "eyJ.eyJ.sig",
            "Bearer abc.def.ghi",
            "\u{1F600}.\u{1F600}.\u{1F600}",
            &long,
        ];
        for case in cases {
            match v.verify(case) {
                Err(AuthError::Malformed(_)) => {}
                other => panic!("{case:?}: {other:?}"),
            }
        }
        // Valid base64 and JSON, but not objects / wrong types.
        let hs = b64(br#"{"alg":"HS256"}"#);
        for claims in [
            "[]",
            "42",
            r#"{"iss":7}"#,
            r#"{"sub":"a"}"#,
            r#"{"iss":""}"#,
        ] {
            let token = format!("{hs}.{}.AAAA", b64(claims.as_bytes()));
            assert!(
                matches!(v.verify(&token), Err(AuthError::Malformed(_))),
                "{claims}"
            );
        }
        // Signed correctly but with wrong claim types.
        let token = hand_built(
            r#"{"alg":"HS256"}"#,
            &format!(r#"{{"iss":"{KEY}","sub":"a","exp":"soon"}}"#),
            SECRET,
        );
        assert!(matches!(v.verify(&token), Err(AuthError::Malformed(_))));
    }

    #[test]
    fn missing_grants_default() {
        let exp = now() + 600;
        // No grants object at all.
        let token = hand_built(
            r#"{"alg":"HS256","typ":"JWT"}"#,
            &format!(r#"{{"iss":"{KEY}","sub":"a","room":"r","exp":{exp}}}"#),
            SECRET,
        );
        let c = verifier().verify(&token).unwrap();
        assert_eq!(c.grants, Grants::default());
        assert_eq!(
            (c.nbf, c.iat, c.name.as_str(), c.metadata.as_str()),
            (0, 0, "", "")
        );
        assert_eq!(c.room, "r");
        // A partial grants object: absent fields take their defaults.
        let token = hand_built(
            r#"{"alg":"HS256"}"#,
            &format!(
                r#"{{"iss":"{KEY}","sub":"a","exp":{exp},"grants":{{"can_publish":false,"room_list":true}},"extra":1}}"#
            ),
            SECRET,
        );
        let g = verifier().verify(&token).unwrap().grants;
        assert_eq!(
            g,
            Grants {
                room_join: true,
                can_publish: false,
                can_subscribe: true,
                can_publish_data: true,
                room_create: false,
                room_list: true,
                room_admin: false,
            }
        );
    }

    #[test]
    fn missing_exp_or_sub_refused() {
        let token = hand_built(
            r#"{"alg":"HS256"}"#,
            &format!(r#"{{"iss":"{KEY}","sub":"a"}}"#),
            SECRET,
        );
        assert!(
            matches!(verifier().verify(&token), Err(AuthError::Malformed(m)) if m.contains("exp"))
        );
        let token = hand_built(
            r#"{"alg":"HS256"}"#,
            &format!(r#"{{"iss":"{KEY}","sub":"","exp":{}}}"#, now() + 60),
            SECRET,
        );
        assert_eq!(verifier().verify(&token), Err(AuthError::MissingIdentity));
    }

    #[test]
    fn to_jwt_refuses_empty_identity_or_credentials() {
        assert_eq!(
            AccessToken::new(KEY, SECRET).to_jwt(),
            Err(AuthError::MissingIdentity)
        );
        assert_eq!(
            AccessToken::new(KEY, SECRET).identity("").to_jwt(),
            Err(AuthError::MissingIdentity)
        );
        assert_eq!(
            AccessToken::new("", SECRET).identity("a").to_jwt(),
            Err(AuthError::EmptyCredentials)
        );
        assert_eq!(
            AccessToken::new(KEY, "").identity("a").to_jwt(),
            Err(AuthError::EmptyCredentials)
        );
    }

    #[test]
    fn debug_never_shows_secrets() {
        let s = format!("{:?} {:?}", AccessToken::new(KEY, SECRET), verifier());
        assert!(!s.contains(SECRET) && !s.contains(OTHER_SECRET), "{s}");
    }

    #[test]
    fn base64url_decoder() {
        for input in [
            &b""[..],
            b"f",
            b"fo",
            b"foo",
            b"foob",
            b"fooba",
            b"foobar",
            &[0xff, 0xfe, 0xfd],
        ] {
            assert_eq!(base64url_decode(&b64(input)).unwrap(), input);
        }
        assert_eq!(base64url_decode("Zm9vYg==").unwrap(), b"foob");
        assert!(base64url_decode("Z").is_none());
        assert!(base64url_decode("Zm9v+g").is_none());
    }
}
