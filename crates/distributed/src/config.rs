//! Where a process stands in a multi-node job: the number of nodes, its rank, the coordinator's address, from the
//! command line or from the environment a launcher gives (torchrun, Slurm).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, ToSocketAddrs, UdpSocket};
use std::str::FromStr;
use std::time::Duration;

use crate::ClusterError;

/// The port the coordinator listens on when the environment names none (torchrun's default).
pub const DEFAULT_PORT: u16 = 29500;

/// How long a collective waits for the other ranks by default: longer than the longest pause rank 0 takes
/// between steps (a validation pass, a benchmark probe, a checkpoint), which the others spend waiting.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// A `HOST:PORT` address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// A host name or IP address.
    pub host: String,
    /// A TCP port.
    pub port: u16,
}

impl FromStr for Endpoint {
    type Err = ClusterError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| ClusterError::BadAddress {
            address: s.to_string(),
            why: why.to_string(),
        };
        let (host, port) = s.rsplit_once(':').ok_or_else(|| bad("expected HOST:PORT"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(bad("the host is empty"));
        }
        let port = port
            .parse::<u16>()
            .map_err(|_| bad("the port is not a number from 1 to 65535"))?;
        if port == 0 {
            return Err(bad("port 0 is not a port a rank can reach"));
        }
        Ok(Self {
            host: host.to_string(),
            port,
        })
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

impl Endpoint {
    /// Its first IP address.
    pub fn resolve(&self) -> Result<IpAddr, ClusterError> {
        (self.host.as_str(), self.port)
            .to_socket_addrs()
            .ok()
            .and_then(|mut addresses| addresses.next())
            .map(|a| a.ip())
            .ok_or_else(|| ClusterError::BadAddress {
                address: self.to_string(),
                why: "the host name does not resolve".into(),
            })
    }
}

/// One process's place in a multi-node job.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterConfig {
    /// Processes in the job (one per machine, each with its own devices).
    pub nodes: u32,
    /// This process's rank, `0..nodes`; rank 0 hosts the coordinator and writes the run directory.
    pub rank: u32,
    /// Where rank 0's coordinator listens, and every rank reaches it.
    pub coordinator: Endpoint,
    /// Where this rank serves the tensors its peers fetch. Default: the address this machine reaches the
    /// coordinator from (loopback when the coordinator is on loopback), port `coordinator.port + 1 + rank`.
    pub node: Option<Endpoint>,
    /// How long a collective (forming the cluster included) waits for the other ranks before it fails, naming
    /// them. Default: [`DEFAULT_TIMEOUT`].
    pub timeout: Duration,
}

impl ClusterConfig {
    /// A job of `nodes` processes, this one of rank `rank`, with the default node address and timeout.
    ///
    /// # Errors
    /// [`ClusterError::BadRank`] when `nodes` is 0 or `rank` is not below it.
    pub fn new(nodes: u32, rank: u32, coordinator: Endpoint) -> Result<Self, ClusterError> {
        if nodes == 0 || rank >= nodes {
            return Err(ClusterError::BadRank { rank, nodes });
        }
        Ok(Self {
            nodes,
            rank,
            coordinator,
            node: None,
            timeout: DEFAULT_TIMEOUT,
        })
    }

    /// The job a launcher describes in the environment `var` reads: torchrun's `WORLD_SIZE`, `RANK`,
    /// `MASTER_ADDR`, `MASTER_PORT`, or Slurm's `SLURM_NTASKS`, `SLURM_PROCID` and the first host of
    /// `SLURM_NODELIST` (port `MASTER_PORT` or [`DEFAULT_PORT`]). `None` when neither launcher's variables are set.
    ///
    /// # Errors
    /// A variable that is set but unreadable, named.
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, ClusterError> {
        let number = |name: &str| -> Result<Option<u32>, ClusterError> {
            var(name)
                .map(|value| {
                    value.trim().parse::<u32>().map_err(|_| ClusterError::BadEnvironment {
                        variable: name.to_string(),
                        value: value.clone(),
                        why: "not a whole number".into(),
                    })
                })
                .transpose()
        };
        let (nodes, rank, host) = if let Some(nodes) = number("WORLD_SIZE")? {
            (nodes, number("RANK")?, var("MASTER_ADDR"))
        } else if let Some(nodes) = number("SLURM_NTASKS")? {
            let host = match var("MASTER_ADDR") {
                Some(host) => Some(host),
                None => var("SLURM_NODELIST").map(|list| first_host(&list)).transpose()?,
            };
            (nodes, number("SLURM_PROCID")?, host)
        } else {
            return Ok(None);
        };
        let missing = |variable: &str| ClusterError::BadEnvironment {
            variable: variable.into(),
            value: String::new(),
            why: "not set, while the launcher's other variables are".into(),
        };
        let rank = rank.ok_or_else(|| missing("RANK (or SLURM_PROCID)"))?;
        let host = host.ok_or_else(|| missing("MASTER_ADDR (or SLURM_NODELIST)"))?;
        let port = match var("MASTER_PORT") {
            Some(port) => port.trim().parse::<u16>().map_err(|_| ClusterError::BadEnvironment {
                variable: "MASTER_PORT".into(),
                value: port.clone(),
                why: "not a port".into(),
            })?,
            None => DEFAULT_PORT,
        };
        Self::new(nodes, rank, Endpoint { host, port }).map(Some)
    }

    /// Where this rank serves its tensors (see [`node`](Self::node)).
    ///
    /// # Errors
    /// [`ClusterError::BadAddress`] when the coordinator does not resolve or the default port passes 65535.
    pub fn node_endpoint(&self) -> Result<Endpoint, ClusterError> {
        if let Some(node) = &self.node {
            return Ok(node.clone());
        }
        let coordinator = self.coordinator.resolve()?;
        let host = if coordinator.is_loopback() {
            coordinator
        } else {
            // The address of the interface that routes to the coordinator (connecting a UDP socket sends nothing).
            UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
                .and_then(|socket| socket.connect((coordinator, self.coordinator.port)).map(|()| socket))
                .and_then(|socket| socket.local_addr())
                .map(|a| a.ip())
                .map_err(|e| ClusterError::BadAddress {
                    address: self.coordinator.to_string(),
                    why: format!(
                        "no route to it from this machine ({e}); give this rank's address with --node-address"
                    ),
                })?
        };
        let port =
            u16::try_from(u32::from(self.coordinator.port) + 1 + self.rank).map_err(|_| ClusterError::BadAddress {
                address: self.coordinator.to_string(),
                why: format!(
                    "port {} + 1 + rank {} passes 65535: choose a lower port",
                    self.coordinator.port, self.rank
                ),
            })?;
        Ok(Endpoint {
            host: host.to_string(),
            port,
        })
    }
}

/// The first host of a Slurm node list: `node[07-09,12],gpu1` → `node07`.
fn first_host(list: &str) -> Result<String, ClusterError> {
    let bad = || ClusterError::BadEnvironment {
        variable: "SLURM_NODELIST".into(),
        value: list.to_string(),
        why: "not a Slurm node list (host, host[01-04], comma-separated)".into(),
    };
    let list = list.trim();
    let first = match (list.find('['), list.find(',')) {
        (Some(open), comma) if comma.is_none_or(|c| c > open) => {
            let close = list[open..].find(']').map(|c| open + c).ok_or_else(bad)?;
            let range = &list[open + 1..close];
            let first = range.split([',', '-']).next().unwrap_or_default();
            let rest = list[close + 1..].split(',').next().unwrap_or_default();
            format!("{}{first}{rest}", &list[..open])
        }
        _ => list.split(',').next().unwrap_or_default().to_string(),
    };
    if first.is_empty() { Err(bad()) } else { Ok(first) }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn endpoints_parse_and_bad_ones_are_named() {
        let e: Endpoint = "10.0.0.7:29500".parse().unwrap();
        assert_eq!((e.host.as_str(), e.port), ("10.0.0.7", 29500));
        assert_eq!("[::1]:80".parse::<Endpoint>().unwrap().host, "::1");
        for bad in ["nohost", ":80", "h:0", "h:70000", "h:x"] {
            let err = bad.parse::<Endpoint>().unwrap_err().to_string();
            assert!(err.contains(bad), "{err}");
        }
    }

    #[test]
    fn torchrun_and_slurm_environments_give_the_job() {
        let torchrun = env(&[
            ("WORLD_SIZE", "4"),
            ("RANK", "2"),
            ("MASTER_ADDR", "n0"),
            ("MASTER_PORT", "1234"),
        ]);
        let c = ClusterConfig::from_env(torchrun).unwrap().unwrap();
        assert_eq!((c.nodes, c.rank, c.coordinator.to_string()), (4, 2, "n0:1234".into()));
        let slurm = env(&[
            ("SLURM_NTASKS", "2"),
            ("SLURM_PROCID", "1"),
            ("SLURM_NODELIST", "gpu[07-08],cpu1"),
        ]);
        let c = ClusterConfig::from_env(slurm).unwrap().unwrap();
        assert_eq!(
            (c.nodes, c.rank, c.coordinator.to_string()),
            (2, 1, format!("gpu07:{DEFAULT_PORT}"))
        );
        assert_eq!(ClusterConfig::from_env(env(&[])).unwrap(), None);
    }

    #[test]
    fn a_bad_environment_is_named() {
        let cases: [&[(&str, &str)]; 4] = [
            &[("WORLD_SIZE", "two"), ("RANK", "0"), ("MASTER_ADDR", "h")],
            &[("WORLD_SIZE", "2"), ("MASTER_ADDR", "h")],
            &[("WORLD_SIZE", "2"), ("RANK", "2"), ("MASTER_ADDR", "h")],
            &[
                ("WORLD_SIZE", "2"),
                ("RANK", "1"),
                ("MASTER_ADDR", "h"),
                ("MASTER_PORT", "-1"),
            ],
        ];
        let named = ["WORLD_SIZE", "RANK", "rank 2", "MASTER_PORT"];
        for (case, name) in cases.iter().zip(named) {
            let err = ClusterConfig::from_env(env(case)).unwrap_err().to_string();
            assert!(err.contains(name), "{err}");
        }
    }

    #[test]
    fn slurm_node_lists_give_their_first_host() {
        for (list, first) in [
            ("n1", "n1"),
            ("n1,n2", "n1"),
            ("node[07-09,12]", "node07"),
            ("a[3,5]-ib,b1", "a3-ib"),
            ("x1,node[2-3]", "x1"),
        ] {
            assert_eq!(first_host(list).unwrap(), first, "{list}");
        }
        assert!(first_host("node[1-2").is_err());
    }

    #[test]
    fn a_loopback_coordinator_gives_loopback_node_addresses_one_port_per_rank() {
        let c = ClusterConfig::new(3, 2, "127.0.0.1:5000".parse().unwrap()).unwrap();
        assert_eq!(c.node_endpoint().unwrap().to_string(), "127.0.0.1:5003");
        let high = ClusterConfig::new(3, 2, "127.0.0.1:65534".parse().unwrap()).unwrap();
        assert!(high.node_endpoint().unwrap_err().to_string().contains("65535"));
    }
}
