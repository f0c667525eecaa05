//! Joining a cluster that cannot form ends with a named error within the timeout, never a hang.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use token_shuffle_distributed::{Cluster, ClusterConfig, ClusterError, Endpoint};

fn loopback(port: u16) -> Endpoint {
    Endpoint {
        host: "127.0.0.1".into(),
        port,
    }
}

#[test]
fn an_unreachable_coordinator_is_named_within_the_timeout() {
    // A port nothing listens on: bound, then released.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut config = ClusterConfig::new(2, 1, loopback(port.saturating_sub(20))).unwrap();
    config.timeout = Duration::from_secs(3);
    let started = Instant::now();
    let err = Cluster::join(config).expect_err("no cluster forms");
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    assert!(
        matches!(err, ClusterError::NotFormed { rank: 1, nodes: 2, .. }),
        "{err}"
    );
    let message = err.to_string();
    assert!(
        message.contains("within 3 s") && message.contains("rank 0"),
        "{message}"
    );
}

#[test]
fn a_coordinator_port_in_use_is_named() {
    let taken = TcpListener::bind("0.0.0.0:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let err = Cluster::join(ClusterConfig::new(2, 0, loopback(port)).unwrap()).expect_err("the port is taken");
    assert!(
        matches!(
            err,
            ClusterError::PortInUse {
                rank: 0,
                what: "coordinator",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains(&port.to_string()), "{err}");
}

#[test]
fn ranks_outside_the_job_are_refused() {
    for (nodes, rank) in [(0, 0), (2, 2)] {
        let err = ClusterConfig::new(nodes, rank, loopback(1000)).unwrap_err();
        assert_eq!(err, ClusterError::BadRank { rank, nodes });
    }
}
