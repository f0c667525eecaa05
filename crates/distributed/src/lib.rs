//! Multi-node data parallelism for token-shuffle-rs on burn-collective 0.21: a process joins a job of `nodes`
//! ranks ([`Cluster::join`], from the command line or a launcher's environment, [`ClusterConfig::from_env`]), the
//! ranks sum host buffers ([`Cluster::all_reduce_sum`]) and compare their configs before they start
//! ([`Cluster::check_agreement`]). Every collective waits at most a timeout, and a rank that stops is named.
//!
//! Rank 0 hosts the coordinator (burn-collective's orchestrator). It and each rank's tensor service listen only on
//! the address the rank is reached at (a patch carried in vendor/burn-communication: upstream binds `0.0.0.0`),
//! without authentication or encryption: run jobs on a trusted network (docs/MULTINODE.md).

mod cluster;
mod config;
mod error;
mod fingerprint;

pub use cluster::Cluster;
pub use config::{ClusterConfig, DEFAULT_PORT, DEFAULT_TIMEOUT, Endpoint};
pub use error::ClusterError;
