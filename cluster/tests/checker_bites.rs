//! The chaos checker catches lost acknowledged writes: a power-cut run
//! against nodes that skip every fsync (`--unsafe-no-fsync`) must fail with
//! lost acknowledgements. The same run against the real build is CI's
//! `powercut,kill` chaos run, which must pass.
//!
//! Needs `/dev/fuse` and root, and the `synap` binary of this build next to
//! `synap-chaos` (`cargo test --workspace` builds both).

use std::process::Command;

#[test]
fn a_powercut_run_without_fsync_reports_lost_acknowledged_publishes() {
    let output = Command::new(env!("CARGO_BIN_EXE_synap-chaos"))
        .args(["--target", "local", "--duration", "15", "--seed", "7", "--faults", "powercut", "--unsafe-no-fsync"])
        .output()
        .expect("run synap-chaos");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "synap-chaos must exit 1 (violations); it printed:\n{stdout}");
    assert!(stdout.contains("powercut    all nodes"), "the run cut the whole cluster's power:\n{stdout}");
    assert!(stdout.contains("LostAck"), "the violations include lost acknowledged publishes:\n{stdout}");
}
