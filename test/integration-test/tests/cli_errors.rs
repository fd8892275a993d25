//! Every error case of the `futexscope` command: a clear message and its documented exit code,
//! and nothing lost when tracing ends early (Ctrl-C, --duration, the target exiting).

mod common;

use std::{
    os::unix::process::CommandExt,
    path::PathBuf,
    process::{Command, Output, Stdio},
    thread,
    time::Duration,
};

fn futexscope() -> Command {
    Command::new(common::futexscope_exe())
}

fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn temp_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "futexscope-cli-errors-{}-{name}",
        std::process::id()
    ))
}

#[test]
#[ignore = "needs root"]
fn not_root_names_the_capabilities_and_exits_77() {
    common::require_ebpf();
    let binary = common::NobodyCopy::of(common::futexscope_exe());
    let mut command = Command::new(&binary.path);
    command.args(["run", "--", "true"]);
    // SAFETY: setgid/setuid are async-signal-safe and only change this child's credentials.
    unsafe {
        command.pre_exec(|| {
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setgid(65534) != 0
                || libc::setuid(65534) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let output = command.output().expect("run futexscope as nobody");
    let (_, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(77), "{stderr}");
    for capability in ["CAP_BPF", "CAP_PERFMON", "CAP_SYS_ADMIN"] {
        assert!(
            stderr.contains(capability),
            "message names {capability}: {stderr}"
        );
    }
}

#[test]
#[ignore = "needs root"]
fn bpf_and_perfmon_capabilities_are_enough() {
    common::require_ebpf();
    // Drop every capability but CAP_BPF and CAP_PERFMON (still uid 0).
    let output = Command::new("setpriv")
        .args([
            "--bounding-set=-all,+bpf,+perfmon",
            "--inh-caps=-all",
            common::futexscope_exe(),
        ])
        .args([
            "run",
            "--",
            env!("CARGO_BIN_EXE_futexscope-workload"),
            "eagain",
            "5",
        ])
        .output()
        .expect("setpriv runs");
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("futexscope summary"), "{stderr}");
}

#[test]
fn no_such_pid_exits_67() {
    let mut child = Command::new("true").spawn().expect("spawn true");
    let pid = child.id();
    child.wait().expect("reap true");
    let output = futexscope()
        .args(["attach", &pid.to_string()])
        .output()
        .expect("run futexscope");
    let (_, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(67), "{stderr}");
    assert!(
        stderr.contains(&format!("no such process: {pid}")),
        "{stderr}"
    );
}

#[test]
#[ignore = "needs root"]
fn command_not_found_exits_127_and_not_executable_126() {
    common::require_ebpf();
    let output = futexscope()
        .args(["run", "--", "/nonexistent/futexscope-test-command"])
        .output()
        .unwrap();
    let (_, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(127), "{stderr}");
    assert!(stderr.contains("cannot start the command"), "{stderr}");
    assert!(stderr.contains("No such file or directory"), "{stderr}");

    let script = temp_path("not-executable");
    std::fs::write(&script, "#!/bin/sh\nexit 0\n").unwrap();
    let output = futexscope()
        .args(["run", "--"])
        .arg(&script)
        .output()
        .unwrap();
    std::fs::remove_file(&script).unwrap();
    let (_, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(126), "{stderr}");
    assert!(stderr.contains("Permission denied"), "{stderr}");
}

/// Installs a seccomp filter that makes system call `nr` fail with `errno`, as on a kernel
/// built without the feature behind it.
fn deny_syscall(nr: libc::c_long, errno: i32) -> std::io::Result<()> {
    const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
    const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
    const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
    let statement = |code: u16, k: u32| libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    };
    let jump = |code: u16, k: u32, jt: u8, jf: u8| libc::sock_filter { code, jt, jf, k };
    let load = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
    let jeq = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
    let ret = (libc::BPF_RET | libc::BPF_K) as u16;
    let filter = [
        statement(load, 4), // seccomp_data.arch
        jump(jeq, AUDIT_ARCH_X86_64, 1, 0),
        statement(ret, SECCOMP_RET_ALLOW),
        statement(load, 0), // seccomp_data.nr
        jump(jeq, nr as u32, 0, 1),
        statement(ret, SECCOMP_RET_ERRNO | errno as u32),
        statement(ret, SECCOMP_RET_ALLOW),
    ];
    let program = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr().cast_mut(),
    };
    // SAFETY: `program` points at a live, well-formed classic BPF filter for the duration of
    // the call; PR_SET_NO_NEW_PRIVS and PR_SET_SECCOMP only affect this process.
    let ok = unsafe {
        libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0
            && libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &raw const program,
            ) == 0
    };
    if ok {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[test]
#[ignore = "needs root"]
fn kernel_without_uprobes_traces_futex_calls_and_says_so() {
    common::require_ebpf();
    // Uprobes are attached with perf_event_open; without it the markers cannot be used.
    let json = temp_path("no-uprobes.json");
    let mut command = futexscope();
    command
        .args(["run", "--duration", "1s", "--view", "quiet", "--json"])
        .arg(&json);
    command.args(["--", common::futexscope_exe(), "demo-workload"]);
    // SAFETY: the closure only calls prctl, which is async-signal-safe, on data it owns.
    unsafe { command.pre_exec(|| deny_syscall(libc::SYS_perf_event_open, libc::ENOENT)) };
    let output = command.output().unwrap();
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(124), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("cannot attach to the markers of"),
        "says which hook failed: {stderr}"
    );
    assert!(stderr.contains("uprobe"), "names the uprobe hook: {stderr}");
    assert!(stderr.contains("tracing futex calls only"), "{stderr}");
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    std::fs::remove_file(&json).unwrap();
    let waits: u64 = summary["futexes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["waits"].as_u64().unwrap())
        .sum();
    assert!(waits > 0, "futex calls still traced: {summary:#}");
}

#[test]
#[ignore = "needs root"]
fn kernel_without_bpf_exits_69() {
    common::require_ebpf();
    let mut command = futexscope();
    command.args(["run", "--", "true"]);
    // SAFETY: the closure only calls prctl, which is async-signal-safe, on data it owns.
    unsafe { command.pre_exec(|| deny_syscall(libc::SYS_bpf, libc::ENOSYS)) };
    let output = command.output().expect("run futexscope");
    let (_, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(69), "{stderr}");
    assert!(stderr.contains("no BPF support"), "{stderr}");
}

#[test]
#[ignore = "needs root"]
fn unwritable_output_file_exits_74_before_running_the_command() {
    common::require_ebpf();
    let marker = temp_path("must-not-exist");
    let output = futexscope()
        .args([
            "run",
            "--json",
            "/nonexistent/dir/summary.json",
            "--",
            "touch",
        ])
        .arg(&marker)
        .output()
        .unwrap();
    let (_, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(74), "{stderr}");
    assert!(
        stderr.contains("cannot write `/nonexistent/dir/summary.json`"),
        "{stderr}"
    );
    assert!(!marker.exists(), "the command must not have run");
}

#[test]
#[ignore = "needs root"]
fn the_commands_exit_status_is_passed_through() {
    common::require_ebpf();
    let output = futexscope()
        .args(["run", "--", "sh", "-c", "exit 3"])
        .output()
        .unwrap();
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert_eq!(stdout, "", "nothing of futexscope's goes to stdout");
    assert!(
        stderr.contains("the command exited with status 3"),
        "{stderr}"
    );

    let output = futexscope()
        .args(["run", "--", "sh", "-c", "kill -9 $$"])
        .output()
        .unwrap();
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(128 + 9), "{stderr}");
    assert_eq!(stdout, "", "nothing of futexscope's goes to stdout");
    assert!(stderr.contains("killed by signal 9"), "{stderr}");
}

#[test]
#[ignore = "needs root"]
fn duration_ends_run_with_124_and_stops_the_command() {
    common::require_ebpf();
    let started = std::time::Instant::now();
    let output = futexscope()
        .args(["run", "--duration", "300ms", "--", "sleep", "30"])
        .output()
        .unwrap();
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(124), "{stdout}\n{stderr}");
    assert!(stderr.contains("the duration elapsed"), "{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "the command was not stopped"
    );
}

#[test]
#[ignore = "needs root"]
fn ctrl_c_on_attach_prints_the_summary_and_writes_complete_files() {
    common::require_ebpf();
    let mut target = Command::new("sleep").arg("30").spawn().unwrap();
    let json = temp_path("ctrl-c.json");
    let export = temp_path("ctrl-c.trace.json");
    let tracer = futexscope()
        .args(["attach", "--view", "plain", "--interval", "100ms", "--json"])
        .arg(&json)
        .arg("--export")
        .arg(&export)
        .arg(target.id().to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    thread::sleep(Duration::from_millis(700));
    // SAFETY: sending SIGINT to our own child.
    unsafe { libc::kill(tracer.id() as i32, libc::SIGINT) };
    let output = tracer.wait_with_output().unwrap();
    target.kill().unwrap();
    target.wait().unwrap();
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("futexscope summary") && stderr.contains("interrupted"),
        "{stderr}"
    );
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(summary["ending"]["how"], "interrupted");
    let trace: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&export).unwrap()).unwrap();
    assert!(trace["traceEvents"].is_array());
    std::fs::remove_file(json).unwrap();
    std::fs::remove_file(export).unwrap();
}

#[test]
#[ignore = "needs root"]
fn attach_ends_cleanly_when_the_target_exits() {
    common::require_ebpf();
    let mut target = Command::new("sleep").arg("1").spawn().unwrap();
    let output = futexscope()
        .args(["attach", "--view", "plain"])
        .arg(target.id().to_string())
        .output()
        .unwrap();
    target.wait().unwrap();
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stderr.contains("the traced process exited"), "{stderr}");
}

fn tracefs_mounts() -> usize {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(" - tracefs "))
        .count()
}

#[test]
#[ignore = "needs root"]
fn tracing_needs_no_tracefs() {
    common::require_ebpf();
    let before = tracefs_mounts();
    let output = futexscope()
        .args([
            "run",
            "--",
            env!("CARGO_BIN_EXE_futexscope-workload"),
            "eagain",
            "7",
        ])
        .output()
        .unwrap();
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(
        stderr
            .lines()
            .any(|l| l.contains("  7  ") || l.split_whitespace().nth(5) == Some("7")),
        "{stderr}"
    );
    assert_eq!(
        tracefs_mounts(),
        before,
        "futexscope must not mount tracefs"
    );
}

/// Builds a C program without markers that makes `argv[1]` futex waits that return EAGAIN.
fn markerless_program() -> PathBuf {
    let source = temp_path("eagain.c");
    std::fs::write(
        &source,
        "#include <linux/futex.h>\n#include <stdlib.h>\n#include <sys/syscall.h>\n#include <unistd.h>\n\
         static int word = 1;\n\
         int main(int argc, char **argv) {\n\
           for (int i = 0; i < atoi(argv[1]); i++)\n\
             syscall(SYS_futex, &word, FUTEX_WAIT_PRIVATE, 0, NULL, NULL, 0);\n\
           usleep(200000); /* names come from the live process maps */\n\
           return 0;\n\
         }\n",
    )
    .unwrap();
    let binary = temp_path("eagain");
    let status = Command::new("cc")
        .arg("-o")
        .arg(&binary)
        .arg(&source)
        .status()
        .expect("cc");
    assert!(status.success(), "cc failed");
    std::fs::remove_file(source).unwrap();
    binary
}

#[test]
#[ignore = "needs root"]
fn a_binary_without_markers_is_traced_in_futex_only_mode_and_says_so() {
    common::require_ebpf();
    let program = markerless_program();
    let json = temp_path("no-markers.json");
    let output = futexscope()
        .args(["run", "--json"])
        .arg(&json)
        .arg("--")
        .arg(&program)
        .arg("9")
        .output()
        .unwrap();
    std::fs::remove_file(&program).unwrap();
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("no futexscope markers found: tracing futex calls only"),
        "{stderr}"
    );
    assert!(
        stderr.contains("note: no futexscope markers"),
        "the summary repeats the note: {stderr}"
    );
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    std::fs::remove_file(&json).unwrap();
    let notes = summary["notes"].as_array().unwrap();
    assert!(
        notes
            .iter()
            .any(|n| n.as_str().unwrap().contains("no futexscope markers")),
        "{summary:#}"
    );
    let rows = summary["futexes"].as_array().unwrap();
    let word = rows
        .iter()
        .find(|r| r["label"] == "word")
        .unwrap_or_else(|| panic!("the static `word`: {summary:#}"));
    assert_eq!(word["waits"], 9, "futex calls still traced: {word:#}");
    assert_eq!(word["spurious"]["eagain"], 9, "{word:#}");
}

#[test]
#[ignore = "needs root"]
fn a_binary_with_markers_gets_them_attached() {
    common::require_ebpf();
    // futexscope links the semaphore: its demo workload has markers.
    let essential = demo_marker_sites(&[]);
    assert!(essential > 0, "no marker site attached");
    // `--all-markers` adds the sites of wait_end, wake_begin and wake_end.
    let all = demo_marker_sites(&["--all-markers"]);
    assert!(
        all > essential,
        "all markers attach {all} sites, the essential ones {essential}"
    );
}

/// Traces the demo workload for a second with `options`; the number in its "N futexscope
/// marker sites attached" note.
fn demo_marker_sites(options: &[&str]) -> usize {
    let output = futexscope()
        .args(["run", "--duration", "1s", "--view", "quiet"])
        .args(options)
        .arg("--")
        .arg(common::futexscope_exe())
        .arg("demo-workload")
        .output()
        .unwrap();
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(124), "{stdout}\n{stderr}");
    assert!(!stderr.contains("no futexscope markers"), "{stderr}");
    stderr
        .lines()
        .find_map(|l| {
            l.strip_prefix("futexscope: note: ")?
                .split_once(" futexscope marker sites attached")
        })
        .and_then(|(count, _)| count.parse().ok())
        .unwrap_or_else(|| panic!("no marker sites note in {stderr}"))
}

#[test]
#[ignore = "needs root"]
fn attach_to_a_thread_id_traces_its_whole_process() {
    common::require_ebpf();
    // A process whose second thread waits on a futex; attach by that thread's id.
    let mut target = Command::new(env!("CARGO_BIN_EXE_futexscope-workload"))
        .args(["std-sync", "--timeouts", "0", "--parked", "1"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = target.id();
    let thread = loop {
        let tasks: Vec<u32> = std::fs::read_dir(format!("/proc/{pid}/task"))
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .filter(|&tid| tid != pid)
            .collect();
        if let Some(&tid) = tasks.first() {
            break tid;
        }
        thread::sleep(Duration::from_millis(5));
    };
    let output = futexscope()
        .args(["attach", "--view", "quiet"])
        .arg(thread.to_string())
        .output()
        .unwrap();
    target.wait().unwrap();
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stderr.contains(&format!("` (pid {pid}) traced for")),
        "traced the process: {stderr}"
    );
}

#[test]
#[ignore = "needs root"]
fn ctrl_c_on_run_stops_the_command_and_exits_130() {
    common::require_ebpf();
    let json = temp_path("run-ctrl-c.json");
    let tracer = futexscope()
        .args(["run", "--view", "plain", "--json"])
        .arg(&json)
        .args(["--", "sleep", "30"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    thread::sleep(Duration::from_millis(500));
    // SAFETY: sending SIGINT to our own child (only to it: the command gets it from futexscope).
    unsafe { libc::kill(tracer.id() as i32, libc::SIGINT) };
    let started = std::time::Instant::now();
    let output = tracer.wait_with_output().unwrap();
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(130), "{stdout}\n{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the command was stopped"
    );
    assert!(
        stderr.contains("futexscope summary") && stderr.contains("interrupted"),
        "{stderr}"
    );
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    std::fs::remove_file(&json).unwrap();
    assert_eq!(summary["ending"]["how"], "interrupted");
}

#[test]
fn a_bad_buffer_size_is_a_clear_usage_error() {
    let output = futexscope()
        .args(["run", "--buffer-size", "3M", "--", "true"])
        .output()
        .unwrap();
    let (_, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("not a power of two"), "{stderr}");
}

#[test]
fn an_https_otlp_url_is_refused_at_start_saying_why() {
    let output = futexscope()
        .args(["agent", "--otlp", "https://127.0.0.1:4318/v1/metrics"])
        .output()
        .unwrap();
    let (_, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("https is not supported"), "{stderr}");
    assert!(stderr.contains("no TLS"), "{stderr}");
}

#[test]
#[ignore = "needs root"]
fn a_full_ring_buffer_is_counted_and_shown_never_silent() {
    common::require_ebpf();
    let json = temp_path("full-ring.json");
    // 4 KiB holds a few dozen records, which 2,000,000 calls/s (or as many as the machine
    // makes) fill within microseconds, faster than the probes' wakeup at a quarter full can
    // get the tracer to drain them.
    let output = futexscope()
        .args(["run", "--view", "plain", "--buffer-size", "4K", "--json"])
        .arg(&json)
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_futexscope-workload"))
        .args(["flood", "--rate", "2000000", "--seconds", "1"])
        .output()
        .unwrap();
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let _ = std::fs::remove_file(&json);
    let dropped = summary["drops"]["ring_buffer_full"].as_u64().unwrap();
    assert!(
        dropped > 0,
        "a 4 KiB buffer at up to 2,000,000 calls/s dropped nothing"
    );
    assert!(
        stderr.contains(&format!("DROPPED: {dropped} event records")),
        "the summary does not show the {dropped} drops:\n{stderr}"
    );
}
