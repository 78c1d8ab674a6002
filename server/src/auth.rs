//! Access tokens. The format, the builder and the verifier live in
//! [`prism_proto::auth`], shared with the Rust SDK so both ends use one implementation.

pub use prism_proto::auth::*;
