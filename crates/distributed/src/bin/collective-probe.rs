//! Two ranks on loopback (this binary re-run as `node`) join a cluster ([`Cluster::join`]: rank 0 hosts the
//! coordinator) and sum a buffer of `ELEMENTS` f32 `STEPS` times; each prints every result as it arrives, checked
//! exactly, then the median time of a sum, and the launcher stops when no line came within the timeout. Upstream
//! burn-collective 0.21.0 hangs at the second all-reduce; with the fix in vendor/burn-collective every step
//! returns (docs/MULTINODE.md). With a model's parameter count as `ELEMENTS`, the median is what summing its
//! gradients costs per step (docs/BENCHMARKS.md).
//!
//! `cargo run -p token-shuffle-distributed --bin collective-probe -- [STEPS] [TIMEOUT_S] [ELEMENTS]`

use std::io::{BufRead, BufReader};
use std::process::{Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use token_shuffle_distributed::{Cluster, ClusterConfig, ClusterError, Endpoint};

/// A port `p` with `p`, `p + 1` and `p + 2` free on loopback: the coordinator and the two ranks' tensor services.
fn free_ports() -> u16 {
    let bind = |port| std::net::TcpListener::bind(("127.0.0.1", port));
    loop {
        let port = bind(0)
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free loopback port");
        if port < 65000 && (0..3).all(|i| bind(port + i).is_ok()) {
            return port;
        }
    }
}

fn node(rank: u32, port: u16, steps: usize, timeout: Duration, elements: usize) -> Result<(), ClusterError> {
    let coordinator = Endpoint {
        host: "127.0.0.1".into(),
        port,
    };
    let mut config = ClusterConfig::new(2, rank, coordinator)?;
    config.timeout = timeout;
    let cluster = Cluster::join(config)?;
    println!("registered");
    let mut seconds = Vec::with_capacity(steps);
    for step in 0..steps {
        // Rank r contributes r + step: the sum over two ranks is 1 + 2 step, exact in f32.
        let started = Instant::now();
        let values = cluster.all_reduce_sum(vec![rank as f32 + step as f32; elements], "the probe")?;
        seconds.push(started.elapsed().as_secs_f64());
        let expected = 1.0 + 2.0 * step as f32;
        assert!(
            values.len() == elements && values.iter().all(|v| *v == expected),
            "step {step}"
        );
        println!("step {step}: Ok({:?})", &values[..elements.min(4)]);
    }
    seconds.sort_by(f64::total_cmp);
    if let Some(median) = seconds.get(steps / 2) {
        let mib = (elements * 4) as f64 / (1 << 20) as f64;
        println!(
            "sum of {elements} f32 ({mib:.1} MiB): median {:.2} ms, range {:.2}–{:.2} ms over {steps} steps",
            median * 1e3,
            seconds[0] * 1e3,
            seconds[steps - 1] * 1e3
        );
    }
    drop(cluster);
    println!("finished");
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let number = |i: usize, default: u64| args.get(i).map_or(default, |s| s.parse().expect("a number"));
    if args.get(1).map(String::as_str) == Some("node") {
        let timeout = Duration::from_secs(number(5, 60));
        let (rank, port, steps, elements) = (number(2, 0), number(3, 0), number(4, 3), number(6, 4));
        return match node(rank as u32, port as u16, steps as usize, timeout, elements as usize) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                println!("error: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let steps = number(1, 3);
    let timeout = Duration::from_secs(number(2, 60));
    let elements = number(3, 4).max(1);
    let port = free_ports();
    let me = std::env::current_exe().expect("this binary");
    let (lines, received) = mpsc::channel();
    let mut children = Vec::new();
    for rank in 0..2u32 {
        let mut child = Command::new(&me)
            .args(["node", &rank.to_string(), &port.to_string(), &steps.to_string()])
            .arg(timeout.as_secs().to_string())
            .arg(elements.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .expect("a node process");
        let stdout = child.stdout.take().expect("piped");
        let lines = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = lines.send((rank, line));
            }
        });
        children.push(child);
    }
    drop(lines);
    let started = Instant::now();
    let mut finished = 0;
    while finished < 2 {
        match received.recv_timeout(timeout.saturating_sub(started.elapsed())) {
            Ok((rank, line)) => {
                println!("[{:>5.1} s] rank {rank}: {line}", started.elapsed().as_secs_f32());
                finished += usize::from(line == "finished");
            }
            Err(_) => {
                println!("no progress within {} s: the nodes hang (killed)", timeout.as_secs());
                break;
            }
        }
    }
    for mut child in children {
        let _ = child.kill();
        let _ = child.wait();
    }
    if finished == 2 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
