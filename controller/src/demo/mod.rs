//! `switchback demo`: the outage replayed on one machine with real nginx, real git and real HTTP.
//!
//! STUB: parts being written on their own branches.
