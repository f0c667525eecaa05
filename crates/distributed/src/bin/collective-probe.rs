//! Does burn-collective 0.21 serve data-parallel training across processes? Two node processes on loopback
//! (this binary re-run as `node`) register with an orchestrator (this process) and all-reduce a small tensor
//! `STEPS` times; each node prints every result as it arrives, and the launcher stops when no line came within the
//! timeout. Upstream 0.21.0 hangs at the second all-reduce; with the fix in vendor/burn-collective every step
//! returns (docs/MULTINODE.md).
//!
//! `cargo run -p token-shuffle-distributed --bin collective-probe -- [STEPS] [TIMEOUT_S]`

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use burn::backend::Flex;
use burn::tensor::{Tensor, TensorPrimitive};
use burn_collective::{AllReduceStrategy, CollectiveConfig, PeerId, ReduceOperation};
use burn_communication::Address;

type B = Flex;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn node(rank: u32, nodes: u32, orchestrator: u16, data_port: u16, steps: usize) {
    let device = Default::default();
    let address = |port: u16| Address::from_str(&format!("ws://127.0.0.1:{port}")).expect("an address");
    let config = CollectiveConfig::default()
        .with_num_devices(1)
        .with_num_nodes(nodes)
        .with_global_address(address(orchestrator))
        .with_node_address(address(data_port))
        .with_data_service_port(data_port)
        .with_global_all_reduce_strategy(AllReduceStrategy::Tree(2));
    burn_collective::register::<B>(PeerId::from(0), device, config).expect("register");
    println!("registered");
    for step in 0..steps {
        // Rank r contributes r + step: the mean over two ranks is 0.5 + step.
        let tensor = Tensor::<B, 1>::full([4], rank as f32 + step as f32, &Default::default());
        let reduced =
            burn_collective::all_reduce::<B>(PeerId::from(0), tensor.into_primitive().tensor(), ReduceOperation::Mean)
                .expect("all-reduce");
        let values = Tensor::<B, 1>::from_primitive(TensorPrimitive::Float(reduced))
            .into_data()
            .to_vec::<f32>()
            .expect("f32 values");
        // Exact: the mean of two small integers is a multiple of 0.5.
        assert_eq!(values, vec![0.5 + step as f32; 4], "step {step}");
        println!("step {step}: Ok({values:?})");
    }
    burn_collective::finish_collective::<B>(PeerId::from(0)).expect("finish");
    println!("finished");
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("node") {
        let n = |i: usize| args[i].parse::<u64>().expect("a number");
        node(n(2) as u32, n(3) as u32, n(4) as u16, n(5) as u16, n(6) as usize);
        return;
    }
    let steps: usize = args.get(1).map_or(3, |s| s.parse().expect("STEPS"));
    let timeout = Duration::from_secs(args.get(2).map_or(60, |s| s.parse().expect("TIMEOUT_S")));
    let orchestrator = free_port();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
        runtime.block_on(burn_collective::start_global_orchestrator(orchestrator));
    });
    let me = std::env::current_exe().expect("this binary");
    let (lines, received) = mpsc::channel();
    let mut children = Vec::new();
    for rank in 0..2u32 {
        let mut child = Command::new(&me)
            .args([
                "node",
                &rank.to_string(),
                "2",
                &orchestrator.to_string(),
                &free_port().to_string(),
            ])
            .arg(steps.to_string())
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
    std::process::exit(if finished == 2 { 0 } else { 1 });
}
