//! Incident reports: what happened, when, and why Switchback rolled back, for people and scripts.
//!
//! STUB: being written on its own branch.
