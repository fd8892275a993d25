//! `futexscope demo`: the built-in workload traced live, each of its semaphores named, its
//! counts consistent with the workload's own.

mod common;

use std::process::Command;

#[test]
#[ignore = "needs root"]
fn demo_traces_every_semaphore_by_name() {
    common::require_ebpf();
    let json = std::env::temp_dir().join(format!("futexscope-demo-{}.json", std::process::id()));
    let output = Command::new(env!("CARGO_BIN_EXE_futexscope"))
        .args([
            "demo",
            "--duration",
            "2s",
            "--interval",
            "500ms",
            "--view",
            "plain",
            "--json",
        ])
        .arg(&json)
        .output()
        .unwrap();
    // futexscope's report (live lines, then the summary) is on stderr.
    let report = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{report}");
    // Live lines each interval, then the summary.
    assert!(report.matches(" futex words, ").count() >= 3, "{report}");
    assert!(report.contains("futexscope summary"), "{report}");

    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    std::fs::remove_file(&json).unwrap();
    assert_eq!(summary["ending"]["how"], "duration");
    let rows = summary["futexes"].as_array().unwrap();
    let waits_on = |semaphore: &str| -> u64 {
        rows.iter()
            .filter(|r| {
                r["label"]
                    .as_str()
                    .unwrap()
                    .starts_with(&format!("futexscope::demo::{semaphore}"))
            })
            .map(|r| r["waits"].as_u64().unwrap())
            .sum()
    };
    for semaphore in ["POOL", "SCARCE", "STORM", "SLOTS", "ITEMS"] {
        assert!(
            waits_on(semaphore) > 0,
            "no waits on {semaphore}: {summary:#}"
        );
    }
    // "demo: SCARCE: N timeouts, M acquired": every timed-out acquire on SCARCE waited at
    // least once.
    // The demo's own lines are on its stdout, untouched by futexscope.
    let own = String::from_utf8_lossy(&output.stdout);
    let scarce: Vec<u64> = own
        .lines()
        .find_map(|l| l.strip_prefix("demo: SCARCE: "))
        .map(|rest| {
            rest.split_whitespace()
                .filter_map(|word| word.trim_end_matches(',').parse().ok())
                .collect()
        })
        .unwrap_or_default();
    let [timeouts, acquired] = scarce[..] else {
        panic!("the demo reports its SCARCE timeouts and acquires: {own}");
    };
    assert!(timeouts > 0, "{own}");
    let futex_timeouts: u64 = rows
        .iter()
        .filter(|r| {
            r["label"]
                .as_str()
                .unwrap()
                .starts_with("futexscope::demo::SCARCE")
        })
        .map(|r| r["timeouts"].as_u64().unwrap())
        .sum();
    // A timed-out acquire ends in one futex wait that timed out, unless its deadline passed
    // between two waits (then it gives up without a system call). A futex wait can also time
    // out just as a release lands: the acquire then takes the permit instead of giving up.
    assert!(
        futex_timeouts > 0 && futex_timeouts <= timeouts + acquired,
        "{futex_timeouts} futex timeouts, {timeouts} timed-out and {acquired} successful acquires"
    );
    assert_eq!(
        summary["drops"]["ring_buffer_full"], 0,
        "no records dropped at the demo's rate"
    );
    assert!(
        summary["events"].as_u64().unwrap() > 0,
        "event records received"
    );
    // The markers were found and attached: no futex-only note.
    assert!(
        summary["notes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| !n.as_str().unwrap().contains("no futexscope markers")),
        "{summary:#}"
    );
    assert!(
        waits_on("SCARCE") >= timeouts,
        "{} waits < {timeouts} timeouts",
        waits_on("SCARCE")
    );
}
