//! `futexscope run` on the semaphore's `shared-fork` example: a `SharedSemaphore` used by a
//! parent and its forked child is one futex (keyed by file and offset), used by both pids, with
//! every wait woken by a wake (no `no_waker` spurious wake-ups).

mod common;

use std::process::Command;

/// The `shared-fork` example of futexscope-semaphore, built next to this test's profile.
fn shared_fork_exe() -> std::path::PathBuf {
    let futexscope = std::path::Path::new(common::futexscope_exe());
    let path = futexscope
        .parent()
        .expect("target/<profile>")
        .join("examples")
        .join("shared-fork");
    assert!(
        path.exists(),
        "`{}` is missing: build it with `cargo build -p futexscope-semaphore --example shared-fork`",
        path.display()
    );
    path
}

#[test]
#[ignore = "needs root"]
fn a_shared_semaphore_is_one_futex_used_by_both_processes() {
    common::require_ebpf();
    let json =
        std::env::temp_dir().join(format!("futexscope-shared-sem-{}.json", std::process::id()));
    let rounds = 4;
    let output = Command::new(common::futexscope_exe())
        .args(["run", "--view", "plain", "--json"])
        .arg(&json)
        .arg("--")
        .arg(shared_fork_exe())
        .arg(rounds.to_string())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    std::fs::remove_file(&json).unwrap();
    assert_eq!(summary["ending"]["how"], "exited", "{summary:#}");
    let waited: Vec<&serde_json::Value> = summary["futexes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["waits"].as_u64().unwrap_or(0) > 0 && !r["shared"].is_null())
        .collect();
    assert_eq!(
        waited.len(),
        1,
        "one shared futex that was waited on: {summary:#}"
    );
    let row = waited[0];
    assert_eq!(
        row["pids"].as_array().unwrap().len(),
        2,
        "used by parent and child: {row:#}"
    );
    // Each round, each process sleeps once and is woken by the other's release.
    assert_eq!(row["waits"], 2 * rounds, "{row:#}");
    assert_eq!(row["woken"], 2 * rounds, "{row:#}");
    assert_eq!(row["spurious"]["no_waker"], 0, "{row:#}");
    assert_eq!(row["timeouts"], 0, "{row:#}");
}
