//! The Kubernetes side (DESIGN §3.7): the `ProxyRollout` custom resource and its status. The controller wiring
//! (kube-rs runtime, leases, status by server-side apply) lands in the operator issue.

pub mod crd;
pub mod status;
