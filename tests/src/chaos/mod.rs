//! The chaos harness of issue 16's fault matrix: a [`witness::Witness`] recording what every
//! pod was told and applied, the [`invariants`] checked after each fault, and the
//! [`report::Row`] each fault prints. The faults themselves live where they are injected: the
//! API server's in [`crate::kube::faults`], the others in the test files that use them.

pub mod api_tap;
pub mod blackhole;
pub mod invariants;
pub mod relay;
pub mod report;
pub mod rig;
#[cfg(test)]
mod tests;
pub mod witness;
