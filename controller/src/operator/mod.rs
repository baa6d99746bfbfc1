//! The Kubernetes side (DESIGN §3.7): the `ProxyRollout` custom resource, its status, bundles
//! stored as immutable ConfigMaps, leader election on a Lease, and the health and metrics
//! endpoints. The kube-rs runtime wiring and status by server-side apply are still to come in
//! the operator issue.

pub mod bundle_store;
pub mod controller;
pub mod crd;
pub mod health;
pub mod leader;
pub mod metrics;
pub mod status;
