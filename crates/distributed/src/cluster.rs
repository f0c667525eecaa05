//! A joined cluster: burn-collective's global all-reduce behind a channel, so that every collective waits for the
//! other ranks for at most the timeout (burn-collective itself has none, docs/MULTINODE.md).

use std::net::TcpListener;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

use burn::backend::Flex;
use burn::tensor::{Tensor, TensorData, TensorPrimitive};
use burn_collective::{AllReduceStrategy, CollectiveConfig, PeerId, ReduceOperation};
use burn_communication::Address;

use crate::{ClusterConfig, ClusterError, Endpoint, fingerprint};

/// The backend the collectives run on: the buffers are host memory whatever backend trains.
type Host = Flex;

/// burn-collective sends each tensor as one message of at most 512 MiB: buffers go in chunks of 256 MiB.
const CHUNK: usize = 64 << 20;

/// How long a rank waits for the others to leave the cluster at the end.
const FINISH_WAIT: Duration = Duration::from_secs(10);

/// This process's burn-collective peer: one per process (one device's worth of host buffers).
const PEER: PeerId = PeerId(0);

enum Request {
    AllReduce(Vec<f32>, mpsc::Sender<Result<Vec<f32>, String>>),
    Finish(mpsc::Sender<()>),
}

/// A multi-node job this process has joined ([`Cluster::join`]); the ranks sum host buffers with
/// [`all_reduce_sum`](Self::all_reduce_sum). Leaving (drop) tells the coordinator this rank is done.
pub struct Cluster {
    config: ClusterConfig,
    requests: mpsc::Sender<Request>,
    /// Set after a collective failed: the transport is gone, later ones fail at once.
    broken: AtomicBool,
}

/// Binds `port` where burn-communication's servers will listen and lets it go: a port in use is named now, not
/// as a panic inside burn-collective's server task.
fn check_free(rank: u32, port: u16, what: &'static str) -> Result<(), ClusterError> {
    TcpListener::bind((burn_communication::websocket::listen_host(), port))
        .map(drop)
        .map_err(|e| ClusterError::PortInUse {
            rank,
            port,
            what,
            why: e.to_string(),
        })
}

fn ws(endpoint: &Endpoint) -> Result<Address, ClusterError> {
    Address::from_str(&format!("ws://{endpoint}")).map_err(|e| ClusterError::BadAddress {
        address: endpoint.to_string(),
        why: format!("{e:?}"),
    })
}

/// Serves `requests` with burn-collective after registering this rank, until a finish request or a failure.
fn serve(
    collective: CollectiveConfig,
    registered: mpsc::Sender<Result<(), String>>,
    requests: mpsc::Receiver<Request>,
) {
    let device = Default::default();
    if let Err(e) = burn_collective::register::<Host>(PEER, device, collective) {
        let _ = registered.send(Err(format!("{e:?}")));
        return;
    }
    let _ = registered.send(Ok(()));
    for request in requests {
        match request {
            Request::AllReduce(values, reply) => {
                let len = values.len();
                let tensor = Tensor::<Host, 1>::from_data(TensorData::new(values, [len]), &Default::default());
                let reduced =
                    burn_collective::all_reduce::<Host>(PEER, tensor.into_primitive().tensor(), ReduceOperation::Sum)
                        .map_err(|e| format!("{e:?}"))
                        .and_then(|sum| {
                            Tensor::<Host, 1>::from_primitive(TensorPrimitive::Float(sum))
                                .into_data()
                                .into_vec::<f32>()
                                .map_err(|e| format!("{e:?}"))
                        });
                let failed = reduced.is_err();
                let _ = reply.send(reduced);
                if failed {
                    return;
                }
            }
            Request::Finish(done) => {
                let _ = burn_collective::finish_collective::<Host>(PEER);
                let _ = done.send(());
                return;
            }
        }
    }
}

impl Cluster {
    /// Joins the job `config` describes: rank 0 starts the coordinator (burn-collective's orchestrator) on
    /// `config.coordinator`'s port; every rank registers and waits until all `config.nodes` have.
    ///
    /// # Errors
    /// [`ClusterError::PortInUse`] when a port this rank listens on is taken, [`ClusterError::NotFormed`] when the
    /// ranks have not all arrived within the timeout, [`ClusterError::BadAddress`] for an unusable address.
    pub fn join(config: ClusterConfig) -> Result<Self, ClusterError> {
        let ClusterConfig { nodes, rank, .. } = config;
        if nodes == 0 || rank >= nodes {
            return Err(ClusterError::BadRank { rank, nodes });
        }
        let node = config.node_endpoint()?;
        // Listen where this rank is reached (vendor/burn-communication), not on every interface: on rank 0 the
        // coordinator too, unless it is reached at another address (then both listen on every interface).
        let here = Endpoint::resolve(&node)?;
        if rank != 0 || config.coordinator.resolve()? == here {
            burn_communication::websocket::set_listen_host(here);
        }
        if rank == 0 {
            check_free(rank, config.coordinator.port, "coordinator")?;
        }
        check_free(rank, node.port, "tensors")?;
        let collective = CollectiveConfig::default()
            .with_num_devices(1)
            .with_num_nodes(nodes)
            .with_global_address(ws(&config.coordinator)?)
            .with_node_address(ws(&node)?)
            .with_data_service_port(node.port)
            // The default, Ring, refuses tensors with fewer elements than nodes (docs/MULTINODE.md).
            .with_global_all_reduce_strategy(AllReduceStrategy::Tree(2));
        if rank == 0 {
            let port = config.coordinator.port;
            std::thread::Builder::new()
                .name("coordinator".into())
                .spawn(move || match tokio::runtime::Runtime::new() {
                    Ok(runtime) => runtime.block_on(burn_collective::start_global_orchestrator(port)),
                    Err(e) => eprintln!("rank 0: the coordinator cannot start a tokio runtime: {e}"),
                })
                .map_err(|e| ClusterError::PortInUse {
                    rank,
                    port,
                    what: "coordinator",
                    why: format!("no thread for it: {e}"),
                })?;
        }
        let (requests, received) = mpsc::channel();
        let (registered, arrival) = mpsc::channel();
        std::thread::Builder::new()
            .name(format!("collective-rank-{rank}"))
            .spawn(move || serve(collective, registered, received))
            .map_err(|e| ClusterError::BadAddress {
                address: node.to_string(),
                why: format!("no thread for the collective: {e}"),
            })?;
        let not_formed = || ClusterError::NotFormed {
            rank,
            nodes,
            coordinator: config.coordinator.to_string(),
            timeout: config.timeout,
        };
        match arrival.recv_timeout(config.timeout) {
            Ok(Ok(())) => Ok(Self {
                config,
                requests,
                broken: AtomicBool::new(false),
            }),
            Ok(Err(_)) | Err(_) => Err(not_formed()),
        }
    }

    /// The number of nodes.
    pub fn nodes(&self) -> u32 {
        self.config.nodes
    }

    /// This process's rank.
    pub fn rank(&self) -> u32 {
        self.config.rank
    }

    /// Whether this rank is rank 0 (the one that writes).
    pub fn is_leader(&self) -> bool {
        self.config.rank == 0
    }

    /// The other ranks, in words: "rank 1", "one of ranks 0, 2".
    fn others(&self) -> String {
        let others: Vec<String> = (0..self.config.nodes)
            .filter(|r| *r != self.config.rank)
            .map(|r| r.to_string())
            .collect();
        match others.as_slice() {
            [one] => format!("rank {one}"),
            _ => format!("one of ranks {}", others.join(", ")),
        }
    }

    /// The element-wise sum of `values` over all ranks (every rank passes a buffer of the same length, in the
    /// same order). With two ranks each element is `a + b`, exactly what one process adding the two would get.
    ///
    /// # Errors
    /// [`ClusterError::Lost`], naming `during` and the other ranks, when an answer does not come within the
    /// timeout or the transport fails (a rank was killed); later calls then fail at once.
    pub fn all_reduce_sum(&self, values: Vec<f32>, during: &str) -> Result<Vec<f32>, ClusterError> {
        if self.config.nodes == 1 {
            return Ok(values);
        }
        let lost = |timeout| ClusterError::Lost {
            rank: self.config.rank,
            lost: self.others(),
            during: during.to_string(),
            timeout,
        };
        if self.broken.load(Ordering::Relaxed) {
            return Err(lost(None));
        }
        let mut sum = Vec::with_capacity(values.len());
        for chunk in values.chunks(CHUNK) {
            let (reply, answer) = mpsc::channel();
            let outcome = self
                .requests
                .send(Request::AllReduce(chunk.to_vec(), reply))
                .map_err(|_| lost(None))
                .and_then(|()| match answer.recv_timeout(self.config.timeout) {
                    Ok(Ok(reduced)) => Ok(reduced),
                    Ok(Err(_)) | Err(RecvTimeoutError::Disconnected) => Err(lost(None)),
                    Err(RecvTimeoutError::Timeout) => Err(lost(Some(self.config.timeout))),
                });
            match outcome {
                Ok(reduced) => sum.extend(reduced),
                Err(e) => {
                    self.broken.store(true, Ordering::Relaxed);
                    return Err(e);
                }
            }
        }
        Ok(sum)
    }

    /// Checks that every rank passes the same `fields` (`path`, `value` pairs: a run config flattened, the hash
    /// of the initial weights, …), with one all-reduce.
    ///
    /// # Errors
    /// [`ClusterError::Disagree`] on every rank, naming this rank's differing fields, when any rank's differ;
    /// [`ClusterError::Lost`] as [`all_reduce_sum`](Self::all_reduce_sum).
    pub fn check_agreement(&self, what: &str, fields: &[(String, String)]) -> Result<(), ClusterError> {
        let sum = self.all_reduce_sum(
            fingerprint::buffer(fields),
            &format!("the comparison of the ranks' {what}"),
        )?;
        let differing = fingerprint::differing(fields, &sum, self.config.nodes);
        if differing.is_empty() {
            return Ok(());
        }
        Err(ClusterError::Disagree {
            rank: self.config.rank,
            what: what.to_string(),
            fields: differing,
        })
    }
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("rank", &self.config.rank)
            .field("nodes", &self.config.nodes)
            .field("coordinator", &self.config.coordinator.to_string())
            .finish_non_exhaustive()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.config.nodes == 1 || self.broken.load(Ordering::Relaxed) {
            return;
        }
        let (done, finished) = mpsc::channel();
        if self.requests.send(Request::Finish(done)).is_ok() {
            let _ = finished.recv_timeout(FINISH_WAIT);
        }
    }
}
