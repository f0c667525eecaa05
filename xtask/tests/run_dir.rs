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
