//! Source: where config comes from. Git repositories (the normal case) and plain directories
//! (for `switchback validate DIR` and tests), both read into a [`crate::render::ConfigTree`].
pub mod git;
pub mod local;
pub mod verify;
pub mod webhook;
