//! burn-collective across two processes on loopback, with the barrier fix carried in vendor/burn-collective: 50
//! global all-reduces (sums) of two node processes, each checked by the probe against the expected sum. Without
//! the fix the second all-reduce never returns (docs/MULTINODE.md), and this test fails at its timeout.

use std::process::Command;

#[test]
fn two_processes_all_reduce_fifty_times_on_loopback() {
    let output = Command::new(env!("CARGO_BIN_EXE_collective-probe"))
        .args(["50", "60"])
        .output()
        .expect("the probe runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for rank in 0..2 {
        let last = format!("rank {rank}: step 49: Ok([99.0, 99.0, 99.0, 99.0])");
        assert!(stdout.contains(&last), "{stdout}");
        assert!(stdout.contains(&format!("rank {rank}: finished")), "{stdout}");
    }
}
