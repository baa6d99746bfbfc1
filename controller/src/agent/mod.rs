//! The agent: runs next to one nginx, applies bundles atomically, ingests its logs and serves
//! health counters (DESIGN §3.6).
//!
//! STUB: being written on its own branch.
