//! Real git repositories in temp dirs for tests: a work repo with commits and a bare "remote".
//!
//! STUB: being written on its own branch.
