//! The run-directory cases through the command line, as a user meets them: `cargo xtask train` on
//! `configs/run-tiny.json` in a temporary directory, then a changed config, a corrupt file and a second process.
//! Each must fail with a clear message and exit code 1 (an error, never a panic's 101), and leave the run intact.

use std::path::Path;
use std::process::{Command, Output};

fn xtask(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("the xtask binary runs")
}

fn train(config: &Path, run: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "train",
        "--config",
        config.to_str().unwrap(),
        "--run",
        run.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    xtask(&args)
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn a_run_directory_refuses_what_would_spoil_it_and_says_what_to_do() {
    let scratch = tempfile::tempdir().unwrap();
    let run = scratch.path().join("run");
    let tiny = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/run-tiny.json"));
    let first = train(tiny, &run, &[]);
    assert!(first.status.success(), "{}", stderr(&first));

    // A changed config: refused, naming the step, the field and both values; nothing rewritten.
    let changed = scratch.path().join("changed.json");
    let text = std::fs::read_to_string(tiny)
        .unwrap()
        .replace("\"steps\": 2,", "\"steps\": 3,");
    std::fs::write(&changed, text).unwrap();
    let run_json = std::fs::read(run.join("run.json")).unwrap();
    let refused = train(&changed, &run, &[]);
    let message = stderr(&refused);
    assert_eq!(refused.status.code(), Some(1), "{message}");
    assert!(
        message.contains("its tokenizer step is from another config")
            && message.contains("`tokenizer.steps` = 2, the config says 3")
            && message.contains("--restart-from tokenizer"),
        "{message}"
    );
    assert_eq!(
        std::fs::read(run.join("run.json")).unwrap(),
        run_json,
        "run.json untouched"
    );

    // A corrupt final LM: named, with the fix; the fix works.
    let weights = run.join("lm/model.mpk");
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &bytes[..bytes.len() / 2]).unwrap();
    let corrupt = train(tiny, &run, &[]);
    let message = stderr(&corrupt);
    assert_eq!(corrupt.status.code(), Some(1), "{message}");
    assert!(
        message.contains("lm/model.mpk") && message.contains("--restart-from lm"),
        "{message}"
    );
    let restarted = train(tiny, &run, &["--restart-from", "lm"]);
    let message = stderr(&restarted);
    assert!(restarted.status.success(), "{message}");
    assert!(
        message.contains("restarting from the lm step") && message.contains("tokenizer: up to date"),
        "{message}"
    );

    // A second process: refused at once, naming the holder.
    let _held = token_shuffle_train::RunLock::acquire(&run).unwrap();
    let second = train(tiny, &run, &[]);
    let message = stderr(&second);
    assert_eq!(second.status.code(), Some(1), "{message}");
    assert!(message.contains("already in use by process"), "{message}");
}

/// A run killed (SIGKILL) during LM training whose newest checkpoint is then corrupted: the next `train` names
/// the corrupt checkpoint, resumes from the older valid one and finishes.
#[test]
fn a_killed_run_with_a_corrupt_newest_checkpoint_resumes_from_the_older_one() {
    let scratch = tempfile::tempdir().unwrap();
    let run = scratch.path().join("run");
    let tiny = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/run-tiny.json"));
    // Enough LM steps that the run is still training when its second checkpoint appears.
    let config = scratch.path().join("long.json");
    let text = std::fs::read_to_string(tiny)
        .unwrap()
        .replace("\"window\": 2, \"steps\": 2,", "\"window\": 2, \"steps\": 400,");
    assert!(
        text.contains("\"steps\": 400"),
        "run-tiny.json's LM stage changed shape"
    );
    std::fs::write(&config, text).unwrap();
    let checkpoints = run.join("lm/checkpoints");
    let complete = || -> Vec<std::path::PathBuf> {
        let mut dirs: Vec<_> = std::fs::read_dir(&checkpoints)
            .map(|entries| entries.filter_map(|e| Some(e.ok()?.path())).collect())
            .unwrap_or_default();
        dirs.retain(|d| {
            d.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| !n.ends_with(".partial"))
        });
        dirs.sort();
        dirs
    };
    let mut child = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args([
            "train",
            "--config",
            config.to_str().unwrap(),
            "--run",
            run.to_str().unwrap(),
        ])
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while complete().len() < 2 {
        assert!(
            started.elapsed().as_secs() < 300,
            "no two LM checkpoints after 5 minutes"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "train ended before its second checkpoint"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(!run.join("lm/done.json").exists(), "killed before the LM finished");

    let dirs = complete();
    let (older, newest) = (&dirs[dirs.len() - 2], &dirs[dirs.len() - 1]);
    let weights = newest.join("model.mpk");
    let mut bytes = std::fs::read(&weights).unwrap();
    let (middle, end) = (bytes.len() / 2, (bytes.len() / 2 + 64).min(bytes.len()));
    bytes[middle..end].fill(0);
    std::fs::write(&weights, bytes).unwrap();
    let older_step: usize = older.file_name().unwrap().to_str().unwrap()["step-".len()..]
        .parse()
        .unwrap();

    let resumed = train(&config, &run, &[]);
    let message = stderr(&resumed);
    assert!(resumed.status.success(), "{message}");
    assert!(
        message.contains(&format!("skipping checkpoint {}", newest.display()))
            && message.contains(&format!("from step {}", older_step + 1)),
        "{message}"
    );
    assert!(run.join("lm/done.json").exists());
}
