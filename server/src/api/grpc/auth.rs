//! Who may call what: `authorization: Bearer <JWT>` checked against the configured API keys,
//! then the grant the call needs.

use prism_proto::auth::{Claims, TokenVerifier};
use tonic::Status;
use tonic::metadata::MetadataMap;

/// The grant a call needs.
#[derive(Debug, Clone, Copy)]
pub enum Need<'a> {
    /// `room_create`, for this room.
    Create(&'a str),
    /// `room_list`.
    List,
    /// `room_admin`, for this room.
    Admin(&'a str),
}

/// The verified claims of the caller's token.
pub fn authenticate(verifier: &TokenVerifier, metadata: &MetadataMap) -> Result<Claims, Status> {
    let value = metadata.get("authorization").ok_or_else(|| {
        Status::unauthenticated("missing credentials: send `authorization: Bearer <access token>`")
    })?;
    let value = value
        .to_str()
        .map_err(|_| Status::unauthenticated("the authorization header is not valid text"))?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .ok_or_else(|| {
            Status::unauthenticated("the authorization header must be `Bearer <access token>`")
        })?;
    verifier
        .verify(token)
        .map_err(|e| Status::unauthenticated(format!("invalid access token: {e}")))
}

/// Checks that `claims` cover `need`: the grant, and the token's room when it names one.
pub fn authorize(claims: &Claims, need: Need<'_>) -> Result<(), Status> {
    let g = &claims.grants;
    let (granted, grant, room) = match need {
        Need::Create(room) => (g.room_create, "room_create", Some(room)),
        Need::List => (g.room_list, "room_list", None),
        Need::Admin(room) => (g.room_admin, "room_admin", Some(room)),
    };
    if !granted {
        return Err(Status::permission_denied(format!(
            "the access token does not grant {grant}"
        )));
    }
    if let Some(room) = room
        && !claims.room.is_empty()
        && claims.room != room
    {
        return Err(Status::permission_denied(format!(
            "the access token is limited to room {:?}",
            claims.room
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use prism_proto::auth::Grants;

    fn claims(room: &str, grants: Grants) -> Claims {
        Claims {
            iss: "k".into(),
            sub: "admin".into(),
            name: String::new(),
            metadata: String::new(),
            room: room.into(),
            nbf: 0,
            exp: u64::MAX,
            iat: 0,
            grants,
        }
    }

    #[test]
    fn grants_and_room_scope() {
        let admin = Grants {
            room_admin: true,
            ..Grants::default()
        };
        assert!(authorize(&claims("", admin), Need::Admin("a")).is_ok());
        assert!(authorize(&claims("a", admin), Need::Admin("a")).is_ok());
        let e = authorize(&claims("b", admin), Need::Admin("a")).unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        assert!(e.message().contains("\"b\""), "{}", e.message());
        let e = authorize(&claims("", admin), Need::Create("a")).unwrap_err();
        assert!(e.message().contains("room_create"), "{}", e.message());
        assert!(authorize(&claims("", admin), Need::List).is_err());
        assert!(authorize(&claims("", Grants::default()), Need::Admin("a")).is_err());
    }
}
