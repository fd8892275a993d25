//! First end-to-end eBPF test: load the real probes, trace a child with a known number of
//! futex waits, and see each one counted. Needs root (or CAP_BPF + CAP_PERFMON); in CI
//! (`CI=true`) it fails when it cannot run, elsewhere it skips and says why.

mod common;

use std::process::Command;

#[test]
fn counts_every_wait_of_a_traced_child() {
    if !common::ebpf_allowed() {
        return;
    }
    let waits = 250;
    let output = Command::new(env!("CARGO_BIN_EXE_futexscope"))
        .args([
            "run",
            "--",
            env!("CARGO_BIN_EXE_futexscope"),
            "workload",
            &waits.to_string(),
        ])
        .output()
        .expect("run futexscope");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "futexscope failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let word = stdout
        .lines()
        .find_map(|l| l.strip_prefix(&format!("workload: {waits} waits on ")))
        .expect("workload reports its futex word")
        .to_owned();
    let counted = stdout
        .lines()
        .find(|l| l.contains(&format!("futex {word}:")))
        .unwrap_or_else(|| panic!("no line for futex word {word} in:\n{stdout}"));
    assert!(
        counted.ends_with(&format!("waits {waits}")),
        "expected {waits} waits: {counted}"
    );
}
