//! The Kubernetes side (DESIGN §3.7): the `ProxyRollout` custom resource, its status, and bundles
//! stored as immutable ConfigMaps. The controller wiring (kube-rs runtime, leases, status by
//! server-side apply) is still to come in the operator issue.

pub mod bundle_store;
pub mod controller;
pub mod crd;
pub mod health;
pub mod leader;
pub mod metrics;
pub mod status;
