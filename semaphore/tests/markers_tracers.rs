//! bpftrace and perf, attached to the futexscope markers of the `marker-workload` example,
//! count exactly what the workload says it did. Needs root (uprobes): ignored unless asked
//! for (`cargo xtask test` runs them as root); a missing privilege or tool is then a failure.
#![cfg(all(feature = "markers", target_os = "linux", not(feature = "portable")))]

use futexscope_probes_common::markers::MARKERS;
use std::{collections::BTreeMap, path::PathBuf, process::Command};

/// Timed acquires that must time out, rounds of one sleeper woken by one release, and
/// uncontended operations (which must fire no marker).
const TIMEOUTS: u32 = 7;
const WAKEUPS: u32 = 5;
const UNCONTENDED: u32 = 2000;

/// Panics, naming what is missing, unless this process may attach uprobes with `tool` (run
/// with `version_flag` to see that it is installed). Every test that calls it is
/// `#[ignore = "needs root"]`: a run without root lists it as ignored, and `cargo xtask test`
/// runs it as root (`-- --include-ignored`), where it must pass. (The same rule as the
/// tracer's `require_ebpf`.)
fn require_tracer(tool: &str, version_flag: &str) {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    assert!(
        root,
        "this {tool} test attaches uprobes and needs root: run it as root, \
         e.g. `sudo -E cargo xtask test`"
    );
    let installed = Command::new(tool)
        .arg(version_flag)
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        installed,
        "`{tool}` is not installed (`cargo xtask setup` installs it)"
    );
}

/// The `marker-workload` example, which `cargo test` builds next to this test binary.
fn workload_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("path of this test binary");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test binaries live in target/PROFILE/deps");
    let workload = profile_dir.join("examples").join("marker-workload");
    assert!(
        workload.exists(),
        "`{}` is missing: build it with `cargo build -p futexscope-semaphore --example marker-workload`",
        workload.display()
    );
    workload
}

/// `name=value` lines (the workload) and `@name: value` lines (bpftrace's map dump, keys
/// kept with their `@`).
fn counts(text: &str) -> BTreeMap<String, i64> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            let (name, value) = line.split_once('=').or_else(|| line.split_once(": "))?;
            Some((name.trim().to_owned(), value.trim().parse().ok()?))
        })
        .collect()
}

#[test]
#[ignore = "needs root"]
fn bpftrace_counts_equal_workload_counts() {
    require_tracer("bpftrace", "--version");
    let workload = workload_binary();
    let bin = workload.display();
    let script = format!(
        r#"
usdt:{bin}:futexscope:wait_begin {{
    @wait_begin = count();
    if (((arg5 >> 32) & 0xffff) + (arg5 >> 48) >= 1) {{ @wait_begin_registered = count(); }}
}}
usdt:{bin}:futexscope:wait_end {{
    @wait_end = count();
    if (arg2 == -110) {{ @wait_end_timedout = count(); }}
    if (arg2 == 0) {{ @wait_end_woken = count(); }}
}}
usdt:{bin}:futexscope:wake_begin {{ @wake_begin = count(); @wake_asked = sum(arg2); }}
usdt:{bin}:futexscope:wake_end {{ @wake_end = count(); @wake_woken = sum(arg2); }}
usdt:{bin}:futexscope:acquired {{ @acquired = count(); @acquired_tokens = sum(arg1); }}
usdt:{bin}:futexscope:timed_out {{
    @timed_out = count();
    if (arg3 >= arg2) {{ @timed_out_after_deadline = count(); }}
}}
"#
    );
    let command = format!("{bin} {TIMEOUTS} {WAKEUPS} {UNCONTENDED}");
    let output = Command::new("bpftrace")
        .args(["-e", &script, "-c", &command])
        .output()
        .expect("bpftrace runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "bpftrace failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let seen = counts(&stdout);
    let get = |name: &str| seen.get(name).copied().unwrap_or(0);
    let done = |name: &str| {
        seen.get(name)
            .copied()
            .unwrap_or_else(|| panic!("the workload did not print `{name}`: {stdout}"))
    };

    let (timeouts, wakeups) = (i64::from(TIMEOUTS), i64::from(WAKEUPS));
    assert_eq!(done("timed_out"), timeouts, "{stdout}");
    assert_eq!(done("woken_acquires"), wakeups, "{stdout}");
    for marker in MARKERS.map(|m| m.name) {
        assert_eq!(
            get(&format!("@{marker}")),
            done(&format!("expected_{marker}")),
            "`{marker}` hits seen by bpftrace vs the workload's count\n{stdout}"
        );
    }
    assert_eq!(
        get("@wait_end_timedout"),
        timeouts,
        "waits ending in ETIMEDOUT"
    );
    assert_eq!(get("@wait_end_woken"), wakeups, "waits ending woken");
    assert_eq!(get("@wake_asked"), wakeups, "threads asked to wake");
    assert_eq!(get("@wake_woken"), wakeups, "threads the kernel woke");
    assert_eq!(
        get("@wait_begin_registered"),
        get("@wait_begin"),
        "waits whose `state` shows no registered waiter (the sleeper itself counts)"
    );
    assert_eq!(
        get("@acquired_tokens"),
        wakeups,
        "tokens reported by `acquired` (one per woken acquire)"
    );
    assert_eq!(
        get("@timed_out_after_deadline"),
        timeouts,
        "gave up before the deadline"
    );
}

/// `bpftrace -l` lists every marker of the table, and nothing else under the provider.
#[test]
#[ignore = "needs root"]
fn bpftrace_lists_every_marker() {
    require_tracer("bpftrace", "--version");
    let workload = workload_binary();
    let pattern = format!("usdt:{}:futexscope:*", workload.display());
    let output = Command::new("bpftrace")
        .args(["-l", &pattern])
        .output()
        .expect("bpftrace runs");
    let listed = String::from_utf8_lossy(&output.stdout);
    let mut names: Vec<&str> = listed
        .lines()
        .filter_map(|line| line.rsplit_once(':').map(|(_, name)| name))
        .collect();
    names.sort_unstable();
    let mut table = MARKERS.map(|m| m.name).to_vec();
    table.sort_unstable();
    assert_eq!(names, table, "bpftrace -l {pattern}:\n{listed}");
}

/// perf adds every marker as an `sdt_futexscope:*` event (after `perf buildid-cache --add`),
/// and records exactly the hits the workload expects. perf needs tracefs; if it is not
/// mounted, it is mounted in a private mount namespace of the shell that runs perf, so the
/// machine's mounts stay as they were.
#[test]
#[ignore = "needs root"]
fn perf_sdt_events_count_the_workload() {
    require_tracer("perf", "--version");
    require_tracer("unshare", "--version");
    let workload = workload_binary();
    let home = std::env::temp_dir().join(format!("futexscope-perf-{}", std::process::id()));
    std::fs::create_dir_all(&home).expect("a scratch directory for perf's build-id cache");
    let probes: Vec<String> = MARKERS
        .iter()
        .map(|m| m.name)
        .map(|m| format!("perf probe -q -x \"$BIN\" sdt_futexscope:{m}"))
        .collect();
    let script = format!(
        "set -e
[ -e /sys/kernel/tracing/uprobe_events ] || mount -t tracefs nodev /sys/kernel/tracing
perf probe -q -d 'sdt_futexscope:*' 2>/dev/null || true
trap \"perf probe -q -d 'sdt_futexscope:*'\" EXIT
perf buildid-cache --add \"$BIN\"
{}
perf record -q -o \"$HOME/perf.data\" -e 'sdt_futexscope:*' \"$BIN\" {TIMEOUTS} {WAKEUPS} {UNCONTENDED} > \"$HOME/workload.out\"
perf script -i \"$HOME/perf.data\" -F event
",
        probes.join("\n")
    );
    let output = Command::new("unshare")
        .args(["--mount", "sh", "-c", &script])
        .env("HOME", &home)
        .env("BIN", &workload)
        .output()
        .expect("unshare runs");
    let events = String::from_utf8_lossy(&output.stdout).into_owned();
    let workload_out = std::fs::read_to_string(home.join("workload.out")).unwrap_or_default();
    std::fs::remove_dir_all(&home).expect("remove the scratch directory");
    assert!(
        output.status.success(),
        "perf failed: {events}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let expected = counts(&workload_out);
    for marker in MARKERS.map(|m| m.name) {
        let event = format!("sdt_futexscope:{marker}:");
        let recorded = events.lines().filter(|l| l.trim() == event).count();
        let expected = expected
            .get(&format!("expected_{marker}"))
            .copied()
            .unwrap_or_else(|| {
                panic!("the workload printed no `expected_{marker}`: {workload_out}")
            });
        assert_eq!(
            i64::try_from(recorded).expect("a small count"),
            expected,
            "`{event}` events recorded by perf vs the workload's count\n{workload_out}"
        );
    }
    assert_eq!(expected.get("timed_out"), Some(&i64::from(TIMEOUTS)));
}
