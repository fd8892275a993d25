//! `--stacks` names JIT code from the process's perf map (`/tmp/perf-PID.map`): a C program
//! generates a function that makes futex waits into anonymous executable memory and names it
//! in its perf map, as the JVM, V8, CPython's `-X perf` and .NET do.

mod common;

use std::process::Command;

#[test]
#[ignore = "needs root"]
fn jit_frames_are_named_from_the_perf_map() {
    common::require_ebpf();
    let dir = std::env::temp_dir().join(format!("futexscope-jit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let binary = dir.join("stacks_jit");
    common::compile_c(
        std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/stacks_jit.c")),
        &binary,
        &["-O2"],
    );
    let json = dir.join("summary.json");
    let output = Command::new(env!("CARGO_BIN_EXE_futexscope"))
        .args(["run", "--view", "quiet", "--stacks", "--json"])
        .arg(&json)
        .arg("--")
        .arg(&binary)
        .output()
        .expect("run futexscope");
    let report = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{report}");
    // The program's own count: every wait timed out, so each slept and has a stack.
    let own = String::from_utf8_lossy(&output.stdout);
    assert!(own.contains("jit: 20 waits timed out"), "{own}");
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let pid = summary["pids"][0].as_u64().unwrap();
    let _ = std::fs::remove_file(format!("/tmp/perf-{pid}.map"));
    let waiter_stacks: Vec<&serde_json::Value> = summary["futexes"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|row| row["waiter_stacks"].as_array().into_iter().flatten())
        .collect();
    let leaves: Vec<&str> = waiter_stacks
        .iter()
        .filter_map(|stack| stack["frames"][0].as_str())
        .collect();
    assert!(
        leaves.iter().any(|leaf| leaf.starts_with("jit_futex_wait")),
        "the leaf frame is named from the perf map: {leaves:?}"
    );
    let waits: u64 = waiter_stacks
        .iter()
        .filter(|stack| {
            stack["frames"][0]
                .as_str()
                .unwrap_or("")
                .starts_with("jit_futex_wait")
        })
        .map(|stack| stack["waits"].as_u64().unwrap())
        .sum();
    assert_eq!(waits, 20, "every wait's stack: {waiter_stacks:?}");
}
