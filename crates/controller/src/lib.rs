//! The Kubernetes controller. Pure logic lives in modules with no IO
//! ([`status`]); [`status_loop`] is the thin layer that reads the cluster
//! through reflectors and writes status with server-side apply.

pub mod alerts;
pub mod config_server;
pub mod distribution;
pub mod leader;
pub mod mcp_probe;
pub mod mcp_workload;
pub mod metrics;
pub mod status;
pub mod status_loop;
pub mod tls;
pub mod workload;
pub mod workload_loop;

/// The one field manager for everything the controller writes.
pub const FIELD_MANAGER: &str = "tollgate-controller";
