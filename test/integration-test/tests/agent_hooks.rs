//! Which hooks `futexscope agent` uses: the futex syscalls' own tracepoints need tracefs;
//! without it (not mounted, and no CAP_SYS_ADMIN to mount it) the agent says so in a note and
//! falls back to `sys_enter`/`sys_exit`, which count the same; `--sys-enter-exit` asks for
//! those directly.

mod agent_support;
mod common;

use std::{
    fs::File,
    process::{Command, Stdio},
    time::Duration,
};

use agent_support::{Reaper, TempDir, eventually, free_port, http_get};
use common::{futexscope_exe, require_ebpf};

/// Runs `command` (the agent, listening on `port`, tracing `--comm fxh<tag>`), runs the workload
/// under that name, and returns what the agent wrote to stderr once it has counted the waits.
fn agent_counts_waits(tag: &str, mut command: Command, port: u16) -> String {
    let dir = TempDir(std::env::temp_dir().join(format!("futexscope-agent-hooks-{tag}")));
    std::fs::create_dir_all(&dir.0).expect("temp dir");
    let log = dir.0.join("stderr");
    let comm = format!("fxh{tag}");
    let workload = dir.0.join(&comm);
    std::fs::copy(env!("CARGO_BIN_EXE_futexscope-workload"), &workload).expect("copy workload");
    let _agent = Reaper(vec![
        command
            .args(["--comm", &comm])
            .stderr(File::create(&log).expect("agent log"))
            .spawn()
            .expect("start the agent"),
    ]);
    let stderr = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        eventually(Duration::from_secs(20), || http_get(port, "/healthz")).is_some(),
        "the agent did not answer /healthz: {}",
        stderr()
    );
    let status = Command::new(&workload)
        .args(["eagain", "100"])
        .stdout(Stdio::null())
        .status()
        .expect("run the workload");
    assert!(status.success());
    let want = format!("futexscope_value_changed_total{{comm=\"{comm}\",lock=\"anon\"}} 100");
    let mut last = String::new();
    let counted = eventually(Duration::from_secs(10), || {
        last = http_get(port, "/metrics")?;
        last.contains(&want).then_some(())
    });
    assert!(counted.is_some(), "100 EAGAIN waits not counted:\n{last}");
    stderr()
}

#[test]
#[ignore = "needs root"]
fn sys_enter_exit_hooks_on_request() {
    require_ebpf();
    let port = free_port();
    let mut command = Command::new(futexscope_exe());
    command.args([
        "agent",
        "--sys-enter-exit",
        "--listen",
        &format!("127.0.0.1:{port}"),
    ]);
    let stderr = agent_counts_waits(&format!("e{}", std::process::id() % 100_000), command, port);
    assert!(stderr.contains("(hooks sys_enter/sys_exit)"), "{stderr}");
    assert!(!stderr.contains("note:"), "{stderr}");
}

#[test]
#[ignore = "needs root"]
fn without_tracefs_falls_back_to_sys_enter_exit_with_a_note() {
    require_ebpf();
    for tool in ["unshare", "setpriv"] {
        assert!(
            Command::new(tool).arg("--version").output().is_ok(),
            "this test needs `{tool}` (util-linux)"
        );
    }
    let port = free_port();
    // A private mount namespace (nothing here reaches the host's mounts) without tracefs or
    // debugfs, and the agent without CAP_SYS_ADMIN, so it cannot mount tracefs again (CAP_BPF
    // and CAP_PERFMON load the probes).
    let mut command = Command::new("unshare");
    command
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(
            "umount -l /sys/kernel/tracing 2>/dev/null; umount -l /sys/kernel/debug 2>/dev/null; \
             exec setpriv --inh-caps=-sys_admin --bounding-set=-sys_admin -- \"$@\"",
        )
        .arg("sh")
        .arg(futexscope_exe())
        .args(["agent", "--listen", &format!("127.0.0.1:{port}")]);
    let stderr = agent_counts_waits(&format!("t{}", std::process::id() % 100_000), command, port);
    assert!(
        stderr.contains("futexscope agent: note: tracefs is not mounted"),
        "{stderr}"
    );
    assert!(
        stderr.contains("hooking sys_enter/sys_exit instead"),
        "{stderr}"
    );
    assert!(stderr.contains("(hooks sys_enter/sys_exit)"), "{stderr}");
}
