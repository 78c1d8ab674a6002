//! Prism Rust SDK (under construction).
