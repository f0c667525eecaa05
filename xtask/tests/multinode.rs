//! Multi-node training through the command line: two ranks on 127.0.0.1 (`--nodes 2 --node-rank K --coordinator
//! 127.0.0.1:P`, ports chosen free) train run-tiny's LM with two micro-batches per step, one per rank. Their final
//! weights must equal one process's bit for bit — also after rank 1 is killed (-9) mid-run, rank 0 stops naming it
//! and the last checkpoint, and both are rerun. Ranks started with different configs must refuse to start, naming
//! the field. Each rank runs the LM step only, on a copy of a run whose tokenizer, text and codes steps are made.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use burn::backend::Flex;
use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::Tensor;
use token_shuffle_train::TrainedRun;

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

fn command(config: &Path, run: &Path, extra: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_xtask"));
    command
        .args(["train", "--config"])
        .arg(config)
        .arg("--run")
        .arg(run)
        .args(extra)
        .current_dir(ROOT)
        .env("RUST_BACKTRACE", "0");
    for launcher in [
        "WORLD_SIZE",
        "RANK",
        "MASTER_ADDR",
        "MASTER_PORT",
        "SLURM_NTASKS",
        "SLURM_PROCID",
    ] {
        command.env_remove(launcher);
    }
    command
}

fn train(config: &Path, run: &Path, extra: &[&str]) -> Output {
    let output = command(config, run, extra).output().expect("xtask runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    output
}

/// Run-tiny with two micro-batches of two samples per step, and enough steps to kill a rank midway.
fn config(dir: &Path, name: &str, edit: impl FnOnce(&mut serde_json::Value)) -> PathBuf {
    let tiny = std::fs::read_to_string(Path::new(ROOT).join("configs/run-tiny.json")).unwrap();
    let mut config: serde_json::Value = serde_json::from_str(&tiny).unwrap();
    let lm = &mut config["lm"];
    lm["batch_size"] = 2.into();
    lm["gradient_accumulation"] = 2.into();
    lm["stages"][0]["steps"] = 400.into();
    lm["checkpoint_every"] = 20.into();
    lm["valid_every"] = 100.into();
    edit(&mut config);
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_string_pretty(&config).unwrap()).unwrap();
    path
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A port `p` with `p`, `p + 1` and `p + 2` free on loopback (the coordinator and the two ranks).
fn free_ports() -> u16 {
    loop {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        if port < 65000 && (0..3).all(|i| TcpListener::bind(("127.0.0.1", port + i)).is_ok()) {
            return port;
        }
    }
}

/// The two ranks, started; their stderr lines arrive on the receiver as `(rank, line)`.
fn ranks(
    config: &Path,
    other_config: &Path,
    run: &Path,
    timeout_s: u32,
) -> (Vec<Child>, mpsc::Receiver<(usize, String)>) {
    ranks_with(config, other_config, run, timeout_s, &[])
}

/// [`ranks`] with more arguments for each.
fn ranks_with(
    config: &Path,
    other_config: &Path,
    run: &Path,
    timeout_s: u32,
    extra: &[&str],
) -> (Vec<Child>, mpsc::Receiver<(usize, String)>) {
    let coordinator = format!("127.0.0.1:{}", free_ports());
    let (lines, received) = mpsc::channel();
    let children = [config, other_config]
        .iter()
        .enumerate()
        .map(|(rank, config)| {
            let rank_arg = rank.to_string();
            let args = ["--nodes", "2", "--node-rank", &rank_arg, "--coordinator", &coordinator];
            let mut child = command(config, run, &args)
                .args(["--collective-timeout", &timeout_s.to_string()])
                .args(extra)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("a rank starts");
            let stderr = child.stderr.take().unwrap();
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    let _ = lines.send((rank, line));
                }
            });
            child
        })
        .collect();
    (children, received)
}

/// Waits for both ranks to exit (at most two minutes), with what they printed.
fn finish(mut children: Vec<Child>, lines: mpsc::Receiver<(usize, String)>) -> ([bool; 2], [String; 2]) {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut printed = [String::new(), String::new()];
    let mut success = [false; 2];
    for (rank, child) in children.iter_mut().enumerate() {
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                success[rank] = status.success();
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("rank {rank} still running after two minutes");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    // Both exited: their stderr closes, the reader threads end.
    for (rank, line) in lines.iter() {
        printed[rank] += &(line + "\n");
    }
    (success, printed)
}

/// Waits until rank 0 has written the checkpoint of step 100.
fn until_checkpoint_100(lines: &mpsc::Receiver<(usize, String)>) {
    loop {
        let (rank, line) = lines
            .recv_timeout(Duration::from_secs(120))
            .expect("the ranks make progress");
        assert!(!line.contains("error"), "rank {rank}: {line}");
        if rank == 0 && line.contains("checkpoint") && line.contains("step-00000100") {
            return;
        }
    }
}

/// Every float parameter of a finished run's LM, in module order.
fn weights(run: &Path) -> Vec<Vec<f32>> {
    struct Collect(Vec<Vec<f32>>);
    impl ModuleVisitor<Flex> for Collect {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<Flex, D>>) {
            self.0.push(param.val().into_data().to_vec().unwrap());
        }
    }
    let trained = TrainedRun::<Flex>::load(run, &Default::default()).expect("a finished run");
    let mut collect = Collect(Vec::new());
    trained.lm.visit(&mut collect);
    collect.0
}

#[test]
fn two_ranks_train_as_one_process_does_and_resume_after_a_rank_is_killed() {
    let scratch = tempfile::tempdir().unwrap();
    let config = config(scratch.path(), "run.json", |_| {});
    let single = scratch.path().join("single");
    train(&config, &single, &["--until", "codes"]);
    let multi = scratch.path().join("multi");
    copy_dir(&single, &multi);

    let started = Instant::now();
    train(&config, &single, &[]);
    eprintln!("one process: {:.1} s", started.elapsed().as_secs_f32());

    // Both ranks run until rank 0 has written the checkpoint of step 100; then rank 1 is killed.
    let (mut children, lines) = ranks(&config, &config, &multi, 30);
    until_checkpoint_100(&lines);
    children[1].kill().unwrap();
    let killed = Instant::now();
    let (success, printed) = finish(children, lines);
    eprintln!(
        "rank 0 stopped {:.1} s after rank 1 was killed: {}",
        killed.elapsed().as_secs_f32(),
        printed[0]
            .lines()
            .filter(|l| l.starts_with("Error"))
            .collect::<String>()
    );
    assert!(!success[0], "rank 0 must stop: {}", printed[0]);
    assert!(
        killed.elapsed() < Duration::from_secs(60),
        "rank 0 stopped after {:?}",
        killed.elapsed()
    );
    assert!(printed[0].contains("rank 1 stopped answering"), "{}", printed[0]);
    assert!(printed[0].contains("the last checkpoint is"), "{}", printed[0]);
    assert!(
        !multi.join("lm/model.mpk").exists(),
        "no final weights from a stopped job"
    );

    // Rerun both: they resume from rank 0's newest checkpoint and finish as one process did.
    let (children, lines) = ranks(&config, &config, &multi, 30);
    let (success, printed) = finish(children, lines);
    assert!(
        success[0] && success[1],
        "rank 0:\n{}\nrank 1:\n{}",
        printed[0],
        printed[1]
    );
    assert!(printed[1].contains("rank 1 of 2 nodes"), "{}", printed[1]);
    assert_eq!(
        weights(&multi),
        weights(&single),
        "two ranks = one process, bit for bit"
    );
}

#[test]
fn ranks_with_different_configs_refuse_to_start_naming_the_field() {
    let scratch = tempfile::tempdir().unwrap();
    let config_a = config(scratch.path(), "a.json", |_| {});
    let config_b = config(scratch.path(), "b.json", |c| c["lm"]["seed"] = 1.into());
    let run = scratch.path().join("run");
    train(&config_a, &run, &["--until", "codes"]);
    let (children, lines) = ranks(&config_a, &config_b, &run, 30);
    let (success, printed) = finish(children, lines);
    assert_eq!(success, [false, false], "{printed:?}");
    assert!(printed[0].contains("lm.seed = 0 here"), "{}", printed[0]);
    assert!(printed[1].contains("lm.seed = 1 here"), "{}", printed[1]);
    assert!(!run.join("lm/checkpoints").exists(), "nothing trained");
    assert!(
        !run.join("lm/stage.json").exists(),
        "the LM step not recorded with either config"
    );

    // A rank whose coordinator never answers (nothing listens on port 9) stops within its timeout.
    let empty = scratch.path().join("empty");
    let output = command(
        &config_a,
        &empty,
        &["--nodes", "2", "--node-rank", "1", "--coordinator", "127.0.0.1:9"],
    )
    .args(["--collective-timeout", "2"])
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("did not all arrive at the coordinator 127.0.0.1:9 within 2 s"),
        "{stderr}"
    );
}

#[test]
fn a_rank_that_hangs_is_named_after_the_timeout() {
    let scratch = tempfile::tempdir().unwrap();
    let config = config(scratch.path(), "run.json", |_| {});
    let run = scratch.path().join("run");
    train(&config, &run, &["--until", "codes"]);
    let (mut children, lines) = ranks(&config, &config, &run, 3);
    until_checkpoint_100(&lines);
    // Stopped, not killed: its connections stay open, and only the timeout can tell.
    let stopped = Command::new("kill")
        .args(["-STOP", &children[1].id().to_string()])
        .status()
        .unwrap();
    assert!(stopped.success());
    let started = Instant::now();
    let status = children[0].wait().unwrap();
    let waited = started.elapsed();
    children[1].kill().unwrap();
    let (_, printed) = finish(children, lines);
    assert!(!status.success(), "{}", printed[0]);
    assert!(waited < Duration::from_secs(30), "rank 0 waited {waited:?}");
    assert!(printed[0].contains("rank 1 stopped answering"), "{}", printed[0]);
    assert!(printed[0].contains("no answer within 3 s"), "{}", printed[0]);
}

#[test]
fn two_ranks_of_two_devices_each_train_as_one_process_to_rounding() {
    let scratch = tempfile::tempdir().unwrap();
    let config = config(scratch.path(), "run.json", |c| {
        c["lm"]["batch_size"] = 1.into();
        c["lm"]["gradient_accumulation"] = 4.into();
        c["lm"]["stages"][0]["steps"] = 100.into();
    });
    let single = scratch.path().join("single");
    train(&config, &single, &["--until", "codes"]);
    let multi = scratch.path().join("multi");
    copy_dir(&single, &multi);
    train(&config, &single, &[]);
    let (children, lines) = ranks_with(&config, &config, &multi, 30, &["--devices", "cpu,cpu"]);
    let (success, printed) = finish(children, lines);
    assert!(
        success[0] && success[1],
        "rank 0:\n{}\nrank 1:\n{}",
        printed[0],
        printed[1]
    );
    // Rank k sums micro-batches k and k + 2 on its devices, then the ranks add: (g0 + g2) + (g1 + g3) where one
    // process adds ((g0 + g1) + g2) + g3, so the weights agree to rounding, not bit for bit.
    let (a, b) = (weights(&multi), weights(&single));
    let worst = a
        .iter()
        .flatten()
        .zip(b.iter().flatten())
        .map(|(x, y)| (x - y).abs() / y.abs().max(1e-3))
        .fold(0.0f32, f32::max);
    eprintln!("2 ranks × 2 devices against one process, 100 steps: largest relative difference {worst:e}");
    // Measured 1.1e-5 (2026-12-04): ten times that is the bound.
    assert!(worst < 1e-4, "{worst}");
}
