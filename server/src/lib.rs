//! Prism server library.
