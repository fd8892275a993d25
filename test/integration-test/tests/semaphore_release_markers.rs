//! `futexscope run --all-markers` on an optimized (release) build of the semaphore's
//! `marker-workload` example: the build users ship, where the compiler copies the marked paths
//! into several callers and the linker drops the copies nobody calls. Every marker hit the
//! workload says it caused must reach futexscope's events file, and no site may be skipped.

mod common;

use std::{collections::BTreeMap, path::PathBuf, process::Command};

/// `target/release/examples/marker-workload`, which `cargo xtask test` builds
/// (`cargo build --release -p futexscope-semaphore --example marker-workload`).
fn release_workload() -> PathBuf {
    let futexscope = std::path::Path::new(common::futexscope_exe());
    let path = futexscope
        .parent()
        .and_then(std::path::Path::parent)
        .expect("target/<profile>/futexscope")
        .join("release/examples/marker-workload");
    assert!(
        path.exists(),
        "`{}` is missing: build it with \
         `cargo build --release -p futexscope-semaphore --example marker-workload`",
        path.display()
    );
    path
}

#[test]
#[ignore = "needs root"]
fn futexscope_counts_every_marker_of_a_release_build() {
    common::require_ebpf();
    let events = std::env::temp_dir().join(format!(
        "futexscope-release-markers-{}.jsonl",
        std::process::id()
    ));
    let output = Command::new(common::futexscope_exe())
        .args(["run", "--view", "plain", "--all-markers", "--events"])
        .arg(&events)
        .arg("--")
        .arg(release_workload())
        .args(["3", "4", "200"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(
        !stderr.contains("marker site skipped"),
        "a site of the release build was skipped: {stderr}"
    );
    let lines = std::fs::read_to_string(&events).unwrap();
    std::fs::remove_file(&events).unwrap();
    let mut seen: BTreeMap<String, u64> = BTreeMap::new();
    for line in lines.lines() {
        let record: serde_json::Value = serde_json::from_str(line).expect("one JSON object");
        if record["kind"] == "marker" {
            let name = record["marker"]
                .as_str()
                .expect("a known marker")
                .to_owned();
            *seen.entry(name).or_default() += 1;
        }
    }
    // The workload prints `expected_NAME=COUNT` for each of the six markers.
    let expected: BTreeMap<String, u64> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("expected_")?.split_once('='))
        .map(|(name, count)| (name.to_owned(), count.parse().expect("a count")))
        .collect();
    assert_eq!(expected.len(), 6, "{stdout}");
    assert!(expected.values().all(|&count| count > 0), "{stdout}");
    assert_eq!(
        seen, expected,
        "marker hits futexscope recorded vs the workload's own count"
    );
}
