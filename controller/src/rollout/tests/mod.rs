//! Tests of the rollout machine: examples a person can follow, the purity guard, and property
//! tests of the invariants against a model fleet.

mod config;
mod examples;
mod manual;
mod model;
mod props;
mod purity;
mod revert;
mod support;
