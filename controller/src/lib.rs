//! Switchback: GitOps for reverse-proxy configuration.
//!
//! The library is laid out along the pipeline in `DESIGN.md`: [`source`] reads a revision of the
//! config repository, [`render`] turns it into a [`render::Bundle`], [`validate`] decides whether that
//! bundle may ever reach a proxy. Render and the parse/lint gates of validate are pure (no I/O, no
//! clock), so they can be tested exhaustively; the edges (git, the `nginx -t` sandbox) are kept apart.
#![warn(missing_docs)]

pub mod agent;
pub mod analysis;
pub mod confine;
pub mod demo;
pub mod fleet;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod http_server;
pub mod operator;
#[cfg(test)]
mod purity;
pub mod render;
pub mod report;
pub mod rollout;
pub mod runner;
pub mod signals;
mod slots;
pub mod source;
pub mod stable_hash;
pub mod validate;
