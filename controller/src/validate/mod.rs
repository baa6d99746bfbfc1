//! Validation: the three gates a bundle passes before any proxy sees it (DESIGN §3.3).
//! Parse and lint are pure; the `nginx -t` sandbox is the one edge here.

pub mod ast;
pub mod crossplane;
pub mod diagnostic;
pub mod lint;
pub mod parser;
pub mod paths;
pub mod pipeline;
pub mod sandbox;
pub mod shared;

pub use diagnostic::{Diagnostic, Severity};
pub use paths::{ConfigRoot, ImageFiles, ProxyLayout};
pub use pipeline::{
    DEFAULT_ENTRY, NginxGate, Report, check_static, check_static_with, validate, validate_with,
};
