//! An independent witness: bpftrace, on the classic `syscalls:sys_{enter,exit}_futex`
//! tracepoints, watches the same workload at the same time as the probes, and both must agree
//! on waits, wake calls and timeouts. Root only; in CI it must run.

mod common;

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use futexscope::collect::{ebpf::Probes, spawn::GatedChild};

/// Wait-type and wake-type commands as the probes classify them; a command naming two words
/// (requeue, wake-op) is one wake call on each.
fn script(pid: u32) -> String {
    format!(
        r#"BEGIN {{ printf("ready\n"); }}
tracepoint:syscalls:sys_enter_futex /pid == {pid}/ {{
  $c = args->op & 127;
  if ($c == 0 || $c == 6 || $c == 9 || $c == 11 || $c == 13) {{ @waits = count(); @inwait[tid] = 1; }}
  if ($c == 1 || $c == 7 || $c == 10) {{ @wakes = count(); }}
  if ($c == 3 || $c == 4 || $c == 5 || $c == 12) {{ @wakes = count(); @wakes = count(); }}
}}
tracepoint:syscalls:sys_exit_futex /pid == {pid} && @inwait[tid] == 1/ {{
  if (args->ret == -110) {{ @timeouts = count(); }}
  delete(@inwait[tid]);
}}
"#
    )
}

fn ensure_tracefs() {
    if Path::new("/sys/kernel/tracing/events").exists() {
        return;
    }
    let status = Command::new("mount")
        .args(["-t", "tracefs", "nodev", "/sys/kernel/tracing"])
        .status()
        .expect("run mount");
    assert!(status.success(), "cannot mount tracefs for bpftrace");
}

#[test]
#[ignore = "needs root"]
fn bpftrace_agrees_on_waits_wakes_and_timeouts() {
    common::require_ebpf();
    ensure_tracefs();
    let mut probes = Probes::load().expect("load the probes");
    let report =
        std::env::temp_dir().join(format!("futexscope-bpftrace-{}.txt", std::process::id()));
    let command = format!(
        "exec {} mixed 6 5 4 > {}",
        env!("CARGO_BIN_EXE_futexscope-workload"),
        report.display()
    );
    let gated = GatedChild::spawn(&["sh".to_owned(), "-c".to_owned(), command]).expect("spawn");
    let pid = gated.pid();
    probes.trace_tgid(pid).expect("trace");
    let mut bpftrace = Command::new("bpftrace")
        .args(["-e", &script(pid)])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run bpftrace");
    let mut lines = BufReader::new(bpftrace.stdout.take().expect("bpftrace stdout")).lines();
    loop {
        let line = lines
            .next()
            .expect("bpftrace ended before it was ready")
            .expect("read bpftrace");
        if line.trim() == "ready" {
            break;
        }
    }
    let child = gated.start("sh").expect("start the workload");
    let status = futexscope::collect::spawn::wait(child).expect("wait for the workload");
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
    std::thread::sleep(Duration::from_millis(100));
    // SAFETY: signalling our own child, still running.
    unsafe { libc::kill(bpftrace.id() as i32, libc::SIGINT) };
    let witness: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(
        bpftrace.wait().expect("bpftrace").success(),
        "bpftrace failed: {witness:?}"
    );
    let seen = |name: &str| -> u64 {
        witness
            .iter()
            .find_map(|l| l.strip_prefix(&format!("@{name}: ")))
            .map_or(0, |n| n.trim().parse().expect("bpftrace count"))
    };
    let workload = std::fs::read_to_string(&report).expect("workload report");
    let _ = std::fs::remove_file(&report);
    assert!(workload.contains("timeouts 6"), "{workload}");

    let stats = probes.futex_stats().expect("stats");
    let ours = stats
        .iter()
        .filter(|(key, _)| key.tgid == pid)
        .map(|(_, s)| s);
    let (waits, wakes, timeouts) = ours.fold((0, 0, 0), |(w, k, t), s| {
        (w + s.waits, k + s.wake_calls, t + s.timeouts)
    });
    assert_eq!(
        seen("timeouts"),
        6,
        "bpftrace saw the workload's timeouts: {witness:?}"
    );
    assert!(seen("waits") >= 6 + 4 && seen("wakes") >= 1, "{witness:?}");
    assert_eq!(
        waits,
        seen("waits"),
        "waits disagree with bpftrace: {witness:?}"
    );
    assert_eq!(
        wakes,
        seen("wakes"),
        "wake calls disagree with bpftrace: {witness:?}"
    );
    assert_eq!(
        timeouts,
        seen("timeouts"),
        "timeouts disagree with bpftrace: {witness:?}"
    );
}
