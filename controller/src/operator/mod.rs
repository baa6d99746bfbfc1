//! The Kubernetes side (DESIGN §3.7): the `ProxyRollout` custom resource and its status, bundles
//! stored as immutable ConfigMaps, the controller (kube-rs runtime) and the per-rollout workers it
//! keeps running, the request annotation through which `kubectl switchback` asks for verbs, leader
//! election on a Lease, and the health and metrics endpoints.

pub mod agent_reports;
pub mod bundle_store;
pub mod controller;
pub mod crd;
pub mod credentials;
pub mod drift;
mod events;
mod fetch;
pub mod health;
pub mod incident;
pub mod leader;
pub mod leader_label;
pub mod marks;
pub mod metrics;
mod options;
pub mod push_relay;
pub mod reference;
pub mod request;
mod resume;
mod setup;
pub mod shard;
mod shared_render;
mod source_policy;
pub mod spec;
pub mod status;
pub mod worker;
pub mod writeback;
