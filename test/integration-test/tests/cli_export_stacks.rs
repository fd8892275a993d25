//! `futexscope run --stacks --export FILE`: each wait and wake slice of the Perfetto export
//! carries its call stack (interned callstacks), read back with the independent decoder of
//! `perfetto/mod.rs`, on the condvar program of the tracer's `cli_stacks.rs` (`-O2
//! -fomit-frame-pointer -g`).

mod common;
#[allow(
    dead_code,
    reason = "this test reads the slices' names and stacks only"
)]
mod perfetto;

use std::process::Command;

#[test]
#[ignore = "needs root"]
fn perfetto_wait_and_wake_slices_carry_their_stacks() {
    common::require_ebpf();
    let dir = std::env::temp_dir().join(format!("futexscope-export-stacks-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let binary = dir.join("stacks_waiters");
    let status = Command::new("cc")
        .args(["-O2", "-fomit-frame-pointer", "-g", "-pthread", "-o"])
        .arg(&binary)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tracer/tests/stacks_waiters.c"
        ))
        .status()
        .expect("cc");
    assert!(status.success(), "cc failed");
    let trace = dir.join("trace.pftrace");
    let output = Command::new(common::futexscope_exe())
        .args(["run", "--view", "quiet", "--stacks", "--export"])
        .arg(&trace)
        .arg("--")
        .arg(&binary)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let bytes = std::fs::read(&trace).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let decoded = perfetto::decode(&bytes);
    let named = |stack: &[String], function: &str| {
        stack
            .iter()
            .position(|f| f == function || f.starts_with(&format!("{function} (")))
    };
    // The condvar's waits that slept, root first: wait_level_one → two → three → glibc.
    let waits: Vec<&perfetto::Slice> = decoded
        .slices
        .iter()
        .filter(|s| s.name.starts_with("wait "))
        .filter(|s| named(&s.stack, "wait_level_one").is_some())
        .collect();
    assert!(
        waits.len() >= 30,
        "most of the 40 waits slept and have a stack"
    );
    for wait in &waits {
        let levels = [
            named(&wait.stack, "wait_level_one"),
            named(&wait.stack, "wait_level_two"),
            named(&wait.stack, "wait_level_three"),
        ];
        assert!(
            levels.iter().all(Option::is_some) && levels.is_sorted(),
            "the three levels, root first: {:#?}",
            wait.stack
        );
        assert!(
            wait.stack
                .iter()
                .any(|f| f.starts_with("wait_level_three (") && f.contains("stacks_waiters.c:")),
            "file and line: {:#?}",
            wait.stack
        );
        let cond_wait = wait
            .stack
            .iter()
            .position(|f| f.contains("pthread_cond_wait"))
            .expect("glibc's condvar wait");
        assert!(cond_wait > levels[2].unwrap(), "{:#?}", wait.stack);
    }
    // The wakes that woke, from the two signalling functions, under main.
    let wakes: Vec<&perfetto::Slice> = decoded
        .slices
        .iter()
        .filter(|s| s.name.starts_with("wake ") && !s.stack.is_empty())
        .collect();
    for function in ["signal_from_alpha", "signal_from_beta"] {
        let from: Vec<&&perfetto::Slice> = wakes
            .iter()
            .filter(|w| named(&w.stack, function).is_some())
            .collect();
        assert!(!from.is_empty(), "wakes from {function}");
        for wake in from {
            assert!(
                named(&wake.stack, "main") < named(&wake.stack, function),
                "{:#?}",
                wake.stack
            );
        }
    }
}
