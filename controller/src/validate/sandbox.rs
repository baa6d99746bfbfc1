//! `nginx -t` with the real nginx binary in a throw-away prefix.
//!
//! STUB: being written on its own branch.
