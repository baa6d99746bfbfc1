//! The subcommands that read config (`render`, `validate`, `parse`), one module each, with the
//! source and values handling they share; the services (`demo`, `local`); and the kubectl plugin.

pub(crate) mod controller;
pub(crate) mod demo;
pub(crate) mod layout;
pub(crate) mod local;
pub(crate) mod parse;
pub(crate) mod plugin;
pub(crate) mod render;
pub(crate) mod source;
pub(crate) mod validate;
