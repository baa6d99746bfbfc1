//! Support for Switchback's end-to-end tests: git fixtures, nginx harness, reference tools.

pub mod agent_harness;
pub mod agent_process;
pub mod bin;
pub mod chaos;
pub mod chart;
pub mod cluster_ext;
pub mod controller_process;
pub mod fake_agents;
pub mod files;
pub mod git_fixture;
pub mod git_http;
pub mod hostile;
pub mod http_recorder;
pub mod json_diff;
pub mod kube;
pub mod load;
pub mod local_run;
pub mod manifests;
pub mod operator_fixture;
pub mod pod_process;
pub mod pod_security;
pub mod push_hook;
pub mod rbac_audit;
pub mod release;
pub mod upstream;
