use std::time::Duration;

/// What went wrong forming or using a cluster. Each names the ranks and addresses involved and what to do.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ClusterError {
    /// The rank is not one of the job's.
    #[error("rank {rank} of {nodes} nodes: a job needs at least one node, and ranks run from 0 to nodes - 1")]
    BadRank {
        /// The rank given.
        rank: u32,
        /// The number of nodes given.
        nodes: u32,
    },
    /// An address that cannot be used.
    #[error("address {address}: {why}")]
    BadAddress {
        /// The address as given.
        address: String,
        /// What is wrong with it.
        why: String,
    },
    /// A launcher's environment variable that cannot be read.
    #[error("environment variable {variable}={value:?}: {why}")]
    BadEnvironment {
        /// Its name.
        variable: String,
        /// Its value.
        value: String,
        /// What is wrong with it.
        why: String,
    },
    /// A port this rank must listen on is taken.
    #[error(
        "rank {rank} cannot listen on port {port} for its {what}: {why}; choose another port (--coordinator \
         HOST:PORT; each rank also uses PORT + 1 + its rank, or --node-address) or stop what holds it"
    )]
    PortInUse {
        /// This rank.
        rank: u32,
        /// The port.
        port: u16,
        /// What it is for: the coordinator, or the tensors this rank serves.
        what: &'static str,
        /// The operating system's reason.
        why: String,
    },
    /// The cluster did not form within the timeout: the coordinator is unreachable, or a rank never arrived.
    #[error(
        "rank {rank}: the {nodes} nodes did not all arrive at the coordinator {coordinator} within {} s: start \
         every rank (0 to {}) with --nodes {nodes} and the same --coordinator, check that rank 0 is running and \
         that {coordinator} is reachable from here",
        timeout.as_secs(), nodes - 1
    )]
    NotFormed {
        /// This rank.
        rank: u32,
        /// The nodes expected.
        nodes: u32,
        /// The coordinator's address.
        coordinator: String,
        /// How long this rank waited.
        timeout: Duration,
    },
    /// Another rank stopped answering mid-run (killed, crashed, or hung).
    #[error(
        "rank {rank}: {lost} stopped answering during {during}{}: the job stops; rerun every rank with the same \
         command to resume from the last checkpoint",
        match timeout { Some(t) => format!(" (no answer within {} s)", t.as_secs()), None => String::new() }
    )]
    Lost {
        /// This rank.
        rank: u32,
        /// The rank or ranks that may be gone, in words ("rank 1", "one of ranks 1, 2").
        lost: String,
        /// The collective that failed.
        during: String,
        /// The timeout that expired, or `None` when the transport failed at once.
        timeout: Option<Duration>,
    },
    /// The ranks were started with different configs.
    #[error(
        "rank {rank}'s {what} differs from another rank's in {}: start every rank with the same config, code and \
         run directory",
        fields.join(", ")
    )]
    Disagree {
        /// This rank.
        rank: u32,
        /// What was compared ("run config").
        what: String,
        /// This rank's fields that differ (`path = value here`); where the differing field is one this rank
        /// lacks, "a field this rank does not have".
        fields: Vec<String>,
    },
}
