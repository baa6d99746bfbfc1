//! Render: a config directory plus values becomes a [`Bundle`] (DESIGN §3.1). Pure and
//! deterministic: the same tree and values always give the same digest.

pub mod bundle;
pub mod tree;

pub use bundle::{Bundle, Digest};
pub use tree::{ConfigTree, TreeEntry};
