//! First end-to-end eBPF test: load the real probes, trace a child with a known number of
//! futex waits, and see each one counted. Needs root (or CAP_BPF + CAP_PERFMON): ignored
//! unless asked for (`cargo xtask test` runs it as root; `-- --include-ignored`).

mod common;

use std::process::Command;

#[test]
#[ignore = "needs root"]
fn counts_every_wait_of_a_traced_child() {
    common::require_ebpf();
    let waits = 250;
    let output = Command::new(common::futexscope_exe())
        .args([
            "run",
            "--",
            env!("CARGO_BIN_EXE_futexscope-workload"),
            "eagain",
            &waits.to_string(),
        ])
        .output()
        .expect("run futexscope");
    // The workload's own lines on stdout; futexscope's report on stderr.
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "futexscope failed: {stdout}\n{report}"
    );
    let word = stdout
        .lines()
        .find_map(|l| l.strip_prefix("word "))
        .expect("workload reports its futex word")
        .to_owned();
    // The summary table: PID, FUTEX, LABEL, WAITERS, MAX, WAITS, ...
    let counted = report
        .lines()
        .find(|l| {
            let mut fields = l.split_whitespace();
            fields.next().is_some_and(|pid| pid.parse::<u32>().is_ok())
                && fields.next() == Some(word.as_str())
        })
        .unwrap_or_else(|| panic!("no line for futex word {word} in:\n{report}"));
    assert_eq!(
        counted.split_whitespace().nth(5),
        Some(waits.to_string().as_str()),
        "expected {waits} waits: {counted}"
    );
}
