//! `futexscope attach` traces the whole process tree that runs at attach time: a shell whose
//! children (CPython, a real program nobody here wrote) do the futex work, as the backends of a
//! server do; `--no-children` traces the process alone.

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    time::Duration,
};

/// Threads of one CPython process handing a `threading.Condition` back and forth for 20 s,
/// long enough for any attach; every hand-off is a futex wait and wake.
const PING_PONG: &str = "
import threading, time
cond = threading.Condition()
turn = [0]
def player(me):
    end = time.monotonic() + 20
    while time.monotonic() < end:
        with cond:
            while turn[0] != me and time.monotonic() < end:
                cond.wait(0.1)
            turn[0] = 1 - me
            cond.notify()
threads = [threading.Thread(target=player, args=(i,)) for i in (0, 1)]
for t in threads: t.start()
for t in threads: t.join()
";

/// A shell running three CPython ping-pongs as its children; prints their pids, one a line.
fn shell_with_children() -> (Child, Vec<u32>) {
    let script =
        "for i in 1 2 3; do /usr/bin/python3 -c \"$0\" >/dev/null & echo $!; done; exec 1>&-; wait";
    let mut shell = Command::new("sh")
        .args(["-c", script, PING_PONG])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start sh");
    let reader = BufReader::new(shell.stdout.take().expect("piped"));
    let children = reader
        .lines()
        .map(|line| line.expect("a line").trim().parse().expect("a pid"))
        .collect();
    (shell, children)
}

/// Runs `futexscope attach` on `pid` for 2 s with `extra` options; returns its JSON summary.
fn attach(pid: u32, extra: &[&str], name: &str) -> serde_json::Value {
    let json = std::env::temp_dir().join(format!("futexscope-{name}-{}.json", std::process::id()));
    let output = Command::new(env!("CARGO_BIN_EXE_futexscope"))
        .args(["attach", "--view", "quiet", "--duration", "2s", "--json"])
        .arg(&json)
        .args(extra)
        .arg(pid.to_string())
        .output()
        .expect("run futexscope");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "futexscope failed: {stderr}");
    let summary = std::fs::read_to_string(&json).expect("the JSON summary");
    let _ = std::fs::remove_file(&json);
    serde_json::from_str(&summary).expect("JSON")
}

fn stop(mut shell: Child, children: &[u32]) {
    for pid in children {
        // SAFETY: signalling processes this test started; at worst they have exited.
        unsafe { libc::kill(*pid as i32, libc::SIGTERM) };
    }
    let _ = shell.wait();
}

/// The pids with at least one futex word that slept (`waits` > 0) in `summary`.
fn pids_that_waited(summary: &serde_json::Value) -> Vec<u64> {
    let mut pids: Vec<u64> = summary["futexes"]
        .as_array()
        .expect("futexes")
        .iter()
        .filter(|row| row["waits"].as_u64() > Some(0))
        .map(|row| row["tgid"].as_u64().expect("tgid"))
        .collect();
    pids.sort_unstable();
    pids.dedup();
    pids
}

#[test]
#[ignore = "needs root"]
fn attach_traces_the_children_that_already_run() {
    let (shell, children) = shell_with_children();
    // Let the children start their threads.
    std::thread::sleep(Duration::from_millis(500));
    let summary = attach(shell.id(), &[], "tree");
    stop(shell, &children);
    let traced: Vec<u64> = summary["pids"]
        .as_array()
        .expect("pids")
        .iter()
        .map(|p| p.as_u64().expect("a pid"))
        .collect();
    let waited = pids_that_waited(&summary);
    for child in &children {
        assert!(
            traced.contains(&u64::from(*child)),
            "{child} traced: {traced:?}"
        );
        assert!(
            waited.contains(&u64::from(*child)),
            "child {child} made futex waits: {waited:?} ({summary})"
        );
    }
    let notes = summary["notes"].to_string();
    assert!(
        notes.contains("and its 3 descendants (4 processes)"),
        "{notes}"
    );
}

#[test]
#[ignore = "needs root"]
fn attach_with_no_children_traces_the_process_alone() {
    let (shell, children) = shell_with_children();
    let shell_pid = shell.id();
    std::thread::sleep(Duration::from_millis(500));
    let summary = attach(shell_pid, &["--no-children"], "alone");
    stop(shell, &children);
    let waited = pids_that_waited(&summary);
    for child in &children {
        assert!(
            !waited.contains(&u64::from(*child)),
            "{child} not traced: {waited:?}"
        );
    }
    assert_eq!(summary["pids"], serde_json::json!([shell_pid]));
    assert!(summary["notes"].to_string().contains("--no-children"));
}
