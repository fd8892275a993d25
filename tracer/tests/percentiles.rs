//! `futexscope run` on a C program that times each of its own futex waits: the wait-time and
//! drift percentiles, maxima and means of the JSON summary against the program's own exact
//! values, and against the probes' own per-wait records (`--events`).
//!
//! Needs root (the suite runs ignored tests as root); a run that cannot load the probes fails.

mod common;

use std::{path::PathBuf, process::Command};

/// 200 waits with deadlines 50 µs to 20 ms ahead (absolute CLOCK_MONOTONIC, FUTEX_WAIT_BITSET)
/// under timer slacks from 1 ns to 1 ms, so both the wait times and the drifts spread over
/// orders of magnitude. Each wait's start, end and deadline are read with CLOCK_MONOTONIC just
/// around the system call and printed.
const PROGRAM: &str = r#"
#define _GNU_SOURCE
#include <errno.h>
#include <linux/futex.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static uint32_t word;

static uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

int main(void) {
    static const uint64_t timeouts_us[] = {300, 1100, 5000, 20000, 700, 2500, 50, 9000, 150, 3300};
    static const unsigned long slacks_ns[] = {50000, 1, 200000, 20000, 1000000, 5000, 400000};
    printf("word %p\n", (void *)&word);
    for (int i = 0; i < 200; i++) {
        prctl(PR_SET_TIMERSLACK, slacks_ns[i % 7]);
        uint64_t start = now_ns();
        uint64_t deadline = start + timeouts_us[i % 10] * 1000;
        struct timespec ts = {(time_t)(deadline / 1000000000u), (long)(deadline % 1000000000u)};
        long r = syscall(SYS_futex, &word, FUTEX_WAIT_BITSET | FUTEX_PRIVATE_FLAG, 0, &ts, NULL,
                         FUTEX_BITSET_MATCH_ANY);
        uint64_t end = now_ns();
        if (r != -1 || errno != ETIMEDOUT) {
            fprintf(stderr, "wait %d returned %ld (errno %d)\n", i, r, errno);
            return 1;
        }
        printf("wait %llu %llu %llu\n", (unsigned long long)start, (unsigned long long)end,
               (unsigned long long)deadline);
    }
    return 0;
}
"#;

fn build(dir: &std::path::Path) -> PathBuf {
    let source = dir.join("timed_waits.c");
    std::fs::write(&source, PROGRAM).unwrap();
    let binary = dir.join("timed_waits");
    common::compile_c(&source, &binary, &["-O1", "-g"]);
    binary
}

/// The value at rank `ceil(n * per_mille / 1000)` of `values` (futexscope's definition).
fn percentile(values: &[u64], per_mille: usize) -> u64 {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    sorted[(sorted.len() * per_mille).div_ceil(1000).max(1) - 1]
}

fn mean(values: &[u64]) -> u64 {
    let n = values.len() as u64;
    (values.iter().sum::<u64>() + n / 2) / n
}

/// One distribution of the JSON summary (`wait_ns` or `drift_ns`).
struct Reported {
    p50: u64,
    p99: u64,
    max: u64,
    mean: u64,
    sum: u64,
    count: u64,
}

impl Reported {
    fn of(value: &serde_json::Value) -> Reported {
        let field = |name: &str| {
            value[name]
                .as_u64()
                .unwrap_or_else(|| panic!("no `{name}` in {value}"))
        };
        Reported {
            p50: field("p50"),
            p99: field("p99"),
            max: field("max"),
            mean: field("mean"),
            sum: field("sum"),
            count: field("count"),
        }
    }

    /// Checks the distribution against the probes' own per-wait values (`probe`): p50 and p99
    /// within 1/16 of the true percentile, the count, sum, maximum and mean exact; and against
    /// the program's own (`own`): within 10 %, plus `skew`, the largest difference between the
    /// program's and the probes' value of one wait (the clock reads around the system call are
    /// not the probes').
    fn check(&self, what: &str, probe: &[u64], own: &[u64], skew: u64) {
        assert_eq!(self.count, probe.len() as u64, "{what} count");
        assert_eq!(self.sum, probe.iter().sum::<u64>(), "{what} sum");
        assert_eq!(self.max, *probe.iter().max().unwrap(), "{what} max");
        assert_eq!(self.mean, mean(probe), "{what} mean");
        for (name, per_mille, reported) in [("p50", 500, self.p50), ("p99", 990, self.p99)] {
            let truth = percentile(probe, per_mille);
            assert!(
                reported.abs_diff(truth) * 16 <= truth,
                "{what} {name}: reported {reported}, the probes' records say {truth}"
            );
        }
        for (name, reported, truth) in [
            ("p50", self.p50, percentile(own, 500)),
            ("p99", self.p99, percentile(own, 990)),
            ("max", self.max, *own.iter().max().unwrap()),
            ("mean", self.mean, mean(own)),
        ] {
            assert!(
                reported.abs_diff(truth) <= truth / 10 + skew,
                "{what} {name}: reported {reported}, the program measured {truth} (skew {skew})"
            );
        }
    }
}

#[test]
#[ignore = "needs root"]
fn percentiles_match_the_programs_own_timing() {
    common::require_ebpf();
    let dir = std::env::temp_dir().join(format!("futexscope-percentiles-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let binary = build(&dir);
    let (json, events) = (dir.join("summary.json"), dir.join("events.ndjson"));
    let output = Command::new(env!("CARGO_BIN_EXE_futexscope"))
        .args(["run", "--view", "plain", "--json"])
        .arg(&json)
        .arg("--events")
        .arg(&events)
        .arg("--")
        .arg(&binary)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );

    // The program's own measurements: (start, end, deadline) of each wait.
    let word = stdout
        .lines()
        .find_map(|l| l.strip_prefix("word "))
        .expect("the program prints its word")
        .to_owned();
    let own: Vec<[u64; 3]> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("wait "))
        .map(|l| {
            let v: Vec<u64> = l.split(' ').map(|n| n.parse().unwrap()).collect();
            [v[0], v[1], v[2]]
        })
        .collect();
    assert_eq!(own.len(), 200, "{stdout}");

    // The probes' record of each wait: (start, end, deadline).
    let records = std::fs::read_to_string(&events).unwrap();
    let mut probe: Vec<[u64; 3]> = records
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["kind"] == "wait" && e["uaddr"] == word.as_str())
        .map(|e| {
            let n = |k: &str| e[k].as_u64().unwrap();
            [n("start_ns"), n("ts_ns"), n("deadline_ns")]
        })
        .collect();
    probe.sort_unstable();
    assert_eq!(probe.len(), own.len(), "one record per wait");

    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let row = summary["futexes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["uaddr"] == word.as_str())
        .unwrap_or_else(|| panic!("no row for {word}: {summary:#}"));

    let own_waits: Vec<u64> = own.iter().map(|[s, e, _]| e - s).collect();
    let own_drifts: Vec<u64> = own.iter().map(|[_, e, d]| e - d).collect();
    let probe_waits: Vec<u64> = probe.iter().map(|[s, e, _]| e - s).collect();
    let probe_drifts: Vec<u64> = probe.iter().map(|[_, e, d]| e - d).collect();
    for (i, (o, p)) in own.iter().zip(&probe).enumerate() {
        // The probes' deadline is the program's (absolute), and their clock reads fall inside
        // the program's.
        assert_eq!(o[2], p[2], "wait {i}: deadline");
        assert!(o[0] <= p[0] && p[1] <= o[1], "wait {i}: {o:?} around {p:?}");
    }
    // The program's clock reads sit outside the probes': its wait time is longer by both ends,
    // its drift by the exit end.
    let skews = |own: &[u64], probe: &[u64]| -> Vec<u64> {
        let mut s: Vec<u64> = own.iter().zip(probe).map(|(o, p)| o - p).collect();
        s.sort_unstable();
        s
    };
    let (wait_skews, drift_skews) = (
        skews(&own_waits, &probe_waits),
        skews(&own_drifts, &probe_drifts),
    );
    eprintln!(
        "clock-read skew, program minus probes (ns): wait median {} max {}, drift median {} max {}",
        wait_skews[wait_skews.len() / 2],
        wait_skews.last().unwrap(),
        drift_skews[drift_skews.len() / 2],
        drift_skews.last().unwrap(),
    );
    assert!(
        wait_skews[wait_skews.len() / 2] < 50_000,
        "the probes and the program time the same waits: {wait_skews:?}"
    );

    Reported::of(&row["wait_ns"]).check(
        "wait",
        &probe_waits,
        &own_waits,
        *wait_skews.last().unwrap(),
    );
    Reported::of(&row["drift_ns"]).check(
        "drift",
        &probe_drifts,
        &own_drifts,
        *drift_skews.last().unwrap(),
    );
}
