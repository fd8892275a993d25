//! `futexscope run` on a Rust program using std's `Mutex`/`Condvar` (`FUTEX_WAIT_BITSET`, which
//! futexctn does not see): the counts reported match the program's own, and its `static`
//! condvars are named.

mod common;

use std::process::Command;

/// The address the workload printed after `prefix`, e.g. `std-sync: timed condvar `.
fn address_after(stdout: &str, prefix: &str) -> u64 {
    let rest = stdout
        .lines()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no `{prefix}` in {stdout}"));
    let hex = rest.split(':').next().unwrap().trim_start_matches("0x");
    u64::from_str_radix(hex, 16).unwrap()
}

#[test]
#[ignore = "needs root"]
fn std_condvar_waits_are_counted_and_named() {
    common::require_ebpf();
    let json =
        std::env::temp_dir().join(format!("futexscope-std-sync-{}.json", std::process::id()));
    let (timeouts, parked) = (15, 3);
    let output = Command::new(common::futexscope_exe())
        .args(["run", "--view", "plain", "--json"])
        .arg(&json)
        .args(["--", env!("CARGO_BIN_EXE_futexscope-workload"), "std-sync"])
        .args([
            "--timeouts",
            &timeouts.to_string(),
            "--parked",
            &parked.to_string(),
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains(&format!(": {timeouts} timeouts")),
        "the workload's own count: {stdout}"
    );

    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    std::fs::remove_file(&json).unwrap();
    let row = |address: u64| {
        summary["futexes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["uaddr"] == format!("{address:#x}"))
            .unwrap_or_else(|| panic!("no row for {address:#x} in {summary:#}"))
            .clone()
    };
    let timed = row(address_after(&stdout, "std-sync: timed condvar "));
    assert_eq!(timed["waits"], timeouts, "{timed:#}");
    assert_eq!(
        timed["timeouts"], timeouts,
        "every wait timed out: {timed:#}"
    );
    assert!(
        timed["drift_ns"]["max"].as_u64().is_some(),
        "timeout drift measured: {timed:#}"
    );
    assert!(
        timed["label"].as_str().unwrap().ends_with("TIMED_CONDVAR"),
        "{timed:#}"
    );
    let park = row(address_after(&stdout, "std-sync: park condvar "));
    assert_eq!(park["waits"], parked, "{park:#}");
    assert_eq!(park["max_waiters"], parked, "all parked at once: {park:#}");
    assert_eq!(park["wake_calls"], 1, "one notify_all: {park:#}");
    assert_eq!(
        park["woken"], parked,
        "it woke every parked thread: {park:#}"
    );
    assert_eq!(park["waiters_now"], 0, "{park:#}");
    assert!(
        park["label"].as_str().unwrap().ends_with("PARK_CONDVAR"),
        "{park:#}"
    );
    assert_eq!(summary["ending"]["how"], "exited");
}
