//! `futexscope kernel-report` and `kernel-diff`: the facts against independent evidence, the
//! experiments against documented kernel behaviour, the JSON round trip, and the diff.

mod common;

use std::{process::Command, sync::OnceLock};

use futexscope::kernel_report::{self, Battery, Report, TracedWakeups, Wakeups};

/// The quick battery, run once for all tests of this file.
fn report() -> &'static Report {
    static REPORT: OnceLock<Report> = OnceLock::new();
    REPORT.get_or_init(|| {
        kernel_report::run(Battery { quick: true }).expect("the quick battery runs")
    })
}

/// Whether `/proc/kallsyms` names the x86-64 entry point of system call `name`, when it can
/// be read with addresses (root); `None` when it cannot tell.
fn kallsyms_has_syscall(name: &str) -> Option<bool> {
    let symbols = std::fs::read_to_string("/proc/kallsyms").ok()?;
    if symbols.lines().next()?.starts_with("0000000000000000") {
        return None;
    }
    let wanted = format!(" __x64_sys_{name}");
    Some(
        symbols
            .lines()
            .any(|line| line.ends_with(&wanted) && line.contains(" T ")),
    )
}

/// (major, minor) of the running kernel from /proc/sys/kernel/osrelease.
fn kernel_version() -> (u32, u32) {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut parts = release
        .trim()
        .split(['.', '-', '+'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap(), parts.next().unwrap())
}

/// The number of CPUs in `Cpus_allowed_list` of /proc/self/status (e.g. `0-3,6`).
fn cpus_allowed_from_proc() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let list = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .unwrap()
        .trim();
    list.split(',')
        .map(|range| match range.split_once('-') {
            Some((low, high)) => high.parse::<usize>().unwrap() - low.parse::<usize>().unwrap() + 1,
            None => 1,
        })
        .sum()
}

#[test]
fn futex2_detection_agrees_with_kallsyms_and_the_kernel_version() {
    let facts = &report().facts;
    let version = kernel_version();
    assert_eq!(
        facts.futex_waitv,
        version >= (5, 16),
        "futex_waitv arrived in 5.16"
    );
    assert_eq!(
        facts.futex2_wake,
        version >= (6, 7),
        "futex_wake arrived in 6.7"
    );
    assert_eq!(
        facts.futex2_wait,
        version >= (6, 7),
        "futex_wait arrived in 6.7"
    );
    assert_eq!(
        facts.futex2_requeue,
        version >= (6, 7),
        "futex_requeue arrived in 6.7"
    );
    for (name, detected) in [
        ("futex_waitv", facts.futex_waitv),
        ("futex_wake", facts.futex2_wake),
        ("futex_wait", facts.futex2_wait),
        ("futex_requeue", facts.futex2_requeue),
    ] {
        if let Some(in_kallsyms) = kallsyms_has_syscall(name) {
            assert_eq!(
                detected, in_kallsyms,
                "{name}: detection disagrees with /proc/kallsyms"
            );
        }
    }
    assert!(facts.futex_wake_op, "FUTEX_WAKE_OP exists since 2.6.14");
}

#[test]
fn facts_agree_with_proc_and_sys() {
    let facts = &report().facts;
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert_eq!(facts.kernel_release, release.trim());
    let slack = std::fs::read_to_string("/proc/self/timerslack_ns").unwrap();
    assert_eq!(
        facts.default_timer_slack_ns,
        slack.trim().parse::<u64>().unwrap()
    );
    let realtime = std::fs::read_to_string("/sys/kernel/realtime").is_ok_and(|s| s.trim() == "1");
    assert_eq!(facts.preempt_rt, realtime);
    assert_eq!(facts.cpus, cpus_allowed_from_proc());
    assert_eq!(
        facts.bpf.btf,
        std::path::Path::new("/sys/kernel/btf/vmlinux").exists()
    );
}

#[test]
fn signals_interrupt_futex_waits_as_signal_7_documents() {
    // signal(7): FUTEX_WAIT is restarted after an SA_RESTART handler only without a timeout;
    // a timed FUTEX_WAIT always fails with EINTR.
    for case in &report().eintr {
        let expected = if !case.timed && case.sa_restart {
            "restarted"
        } else {
            "eintr"
        };
        assert_eq!(case.verdict, expected, "{case:?}");
        assert_eq!(case.interrupted + case.restarted, case.trials);
    }
    assert_eq!(report().eintr.len(), 4);
}

#[test]
fn timed_waits_never_return_before_their_deadline() {
    let overshoots = &report().timeout_overshoot;
    assert_eq!(overshoots.len(), 3 * 2 * 2, "3 timeouts x 2 slacks x 2 ops");
    for o in overshoots {
        assert_eq!(o.early, 0, "{o:?}");
        assert!(o.overshoot.samples > 0 && o.overshoot.min_ns >= 0, "{o:?}");
        assert!(
            o.overshoot.min_ns <= o.overshoot.p50_ns && o.overshoot.p50_ns <= o.overshoot.max_ns
        );
    }
}

#[test]
fn wake_order_requeue_and_waitv_account_for_every_waiter() {
    let report = report();
    let order = &report.wake_order;
    assert_eq!(order.fifo + order.lifo + order.other, order.trials);
    let requeue = &report.requeue.cmp_requeue;
    assert_eq!(
        (requeue.returned, requeue.woken_from_target),
        (3, 2),
        "1 woken + 2 requeued of 3"
    );
    assert!(requeue.mismatch_gives_eagain);
    if let Some(waitv) = &report.waitv {
        assert!(
            waitv.returns_woken_index
                && waitv.mismatch_gives_eagain
                && waitv.deadline_gives_etimedout
        );
    }
    assert!(report.wake_latency.same_cpu.samples > 0);
}

#[test]
fn single_permit_semaphore_waiters_wake_in_the_plain_futex_order() {
    let report = report();
    let tokens: Vec<u32> = report
        .semaphore_wake_order
        .iter()
        .map(|s| s.tokens)
        .collect();
    assert_eq!(tokens, [1, 2], "single-permit, then multi-permit waiters");
    for s in &report.semaphore_wake_order {
        let o = &s.order;
        assert!(o.trials > 0, "{s:?}");
        assert_eq!(o.fifo + o.lifo + o.other, o.trials, "{s:?}");
        assert_eq!(o.first_woken.len(), o.waiters, "{s:?}");
        assert_eq!(o.first_woken.iter().sum::<usize>(), o.trials, "{s:?}");
    }
    // One FUTEX_WAKE(1) per released permit and nobody else acquiring: the woken waiter is
    // the one the kernel's queue gives, as for plain waiters.
    assert_eq!(
        report.semaphore_wake_order[0].order.verdict, report.wake_order.verdict,
        "{:?}",
        report.semaphore_wake_order[0]
    );
}

#[test]
#[ignore = "needs root"]
fn contended_semaphore_wakeups_are_traced_and_the_independent_counts_agree() {
    common::require_ebpf();
    let contended = &report().contended_semaphore;
    assert_eq!(
        contended.len(),
        2,
        "single-permit and multi-permit acquires"
    );
    for c in contended {
        assert!(c.permits < c.threads as u32 * c.tokens, "contended: {c:?}");
        assert!(
            c.acquires > 0 && c.acquires % c.threads as u64 == 0,
            "{c:?}"
        );
        let Wakeups::Measured(t) = &c.wakeups else {
            panic!("not measured as root: {c:?}");
        };
        // The semaphore's own count of its futex waits (`wait_begin` markers) against the
        // syscall hooks' count on the semaphore's words; every woken wait either got the
        // permits or was followed by another wait; no records lost.
        assert_eq!(t.disagreements(c.acquires), Vec::<String>::new(), "{c:?}");
        assert!(t.slept_acquires > 0, "nobody slept: {c:?}");
        assert!(t.futex_waits >= t.slept_acquires, "{c:?}");
        assert!(
            t.spurious_wake_in_flight <= t.spurious
                && t.spurious <= t.woken
                && t.woken + t.eagain + t.eintr <= t.futex_waits,
            "{c:?}"
        );
    }
}

#[test]
#[ignore = "needs root"]
fn probes_count_the_same_plain_waits_as_the_experiments() {
    common::require_ebpf();
    let probes = &report().probes;
    assert!(probes.available, "{:?}", probes.error);
    assert!(report().facts.bpf.probes_loaded);
    // Words that no signal restarted: every wait call (FUTEX_WAIT, FUTEX_WAIT_BITSET, or
    // futex_waitv on each of its words) is one syscall entry the probes see.
    let plain = probes.words.iter().filter(|w| {
        [
            "wake order",
            "timeout overshoot",
            "FUTEX_CMP_REQUEUE",
            "futex_waitv",
        ]
        .contains(&w.experiment.as_str())
    });
    let mut checked = 0;
    for word in plain {
        assert_eq!(word.waits, word.probe_waits, "{word:?}");
        checked += 1;
    }
    assert!(checked >= 12, "only {checked} words checked");
}

#[test]
fn json_round_trips_and_other_schemas_are_refused() {
    let report = report();
    let back = Report::from_json(&report.to_json(), "mem").unwrap();
    assert_eq!(&back, report);
    let mut value: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
    value["schema_version"] = 999.into();
    let err = Report::from_json(&value.to_string(), "old.json")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("old.json") && err.contains("schema_version"),
        "{err}"
    );
    let err = Report::from_json("not json", "x.json")
        .unwrap_err()
        .to_string();
    assert!(err.contains("x.json"), "{err}");
}

#[test]
fn kernel_diff_shows_exactly_the_differing_fields() {
    let mut a = report().clone();
    let mut b = a.clone();
    b.facts.futex_waitv = !a.facts.futex_waitv;
    b.wake_latency.same_cpu.p50_ns = a.wake_latency.same_cpu.p50_ns * 10 + 100_000;
    // A small timing change is noise, not a difference.
    b.timeout_overshoot[0].overshoot.p50_ns += 1_000;
    // Wake orders compare by verdict: other counts behind the same verdict are no difference.
    let (order_a, order_b) = (
        &mut a.semaphore_wake_order[1].order,
        &mut b.semaphore_wake_order[1].order,
    );
    (order_a.verdict, order_a.fifo, order_a.lifo, order_a.other) = ("mixed".into(), 3, 0, 2);
    (order_b.verdict, order_b.fifo, order_b.lifo, order_b.other) = ("mixed".into(), 1, 1, 3);
    (order_a.trials, order_b.trials) = (5, 5);
    // Rates compare with a tolerance: 0.40 against 0.45 stolen is the same, 0 against 0.30
    // spurious is not.
    let traced = TracedWakeups {
        slept_acquires: 100,
        marker_waits: 150,
        futex_waits: 150,
        woken: 120,
        satisfied: 80,
        stolen: 40,
        spurious: 0,
        spurious_wake_in_flight: 0,
        eagain: 30,
        eintr: 0,
        dropped_records: 0,
    };
    a.contended_semaphore[0].acquires = 200;
    b.contended_semaphore[0].acquires = 200;
    a.contended_semaphore[0].wakeups = Wakeups::Measured(traced.clone());
    b.contended_semaphore[0].wakeups = Wakeups::Measured(TracedWakeups {
        satisfied: 75,
        stolen: 45,
        spurious: 30,
        ..traced
    });
    a.contended_semaphore[1].wakeups = b.contended_semaphore[1].wakeups.clone();
    a.contended_semaphore[1].acquires = b.contended_semaphore[1].acquires;
    let expected = [
        "facts.futex_waitv",
        "semaphore.contended.acquire_1_of_2.spurious",
        "wake_latency.same_cpu",
    ];
    let differing: Vec<String> = kernel_report::diff_rows(&[a.clone(), b.clone()])
        .into_iter()
        .filter(|r| r.differs)
        .map(|r| r.key)
        .collect();
    assert_eq!(differing, expected);

    let dir = std::env::temp_dir().join(format!("futexscope-kernel-diff-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (path_a, path_b) = (dir.join("a.json"), dir.join("b.json"));
    a.write(&path_a).unwrap();
    b.write(&path_b).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_futexscope"))
        .arg("kernel-diff")
        .arg(&path_a)
        .arg(&path_b)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let rows: Vec<&str> = text
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(rows, expected, "{text}");

    let same = Command::new(env!("CARGO_BIN_EXE_futexscope"))
        .arg("kernel-diff")
        .arg(&path_a)
        .arg(&path_a)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&same.stdout).contains("no differences"));
    let missing = Command::new(env!("CARGO_BIN_EXE_futexscope"))
        .arg("kernel-diff")
        .arg(&path_a)
        .arg(dir.join("absent.json"))
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("absent.json"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn kernel_report_command_writes_its_json() {
    let dir = std::env::temp_dir().join(format!("futexscope-kernel-report-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("report.json");
    let out = Command::new(env!("CARGO_BIN_EXE_futexscope"))
        .args(["kernel-report", "--quick", "--json"])
        .arg(&json)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("facts.futex_waitv"));
    let report = Report::read(&json).unwrap();
    assert_eq!(report.schema_version, kernel_report::SCHEMA_VERSION);
    assert!(report.quick);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn without_privilege_the_experiments_run_and_the_probes_are_reported_missing() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let binary = common::NobodyCopy::of(env!("CARGO_BIN_EXE_futexscope"));
    let mut command = if root {
        // Drop to `nobody` with no capabilities.
        let mut setpriv = Command::new("setpriv");
        setpriv.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ]);
        setpriv.arg(&binary.path);
        setpriv
    } else {
        Command::new(&binary.path)
    };
    let out = command.args(["kernel-report", "--quick"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}{}",
        text,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("probes unavailable: "), "{text}");
    let probes_loaded = text
        .lines()
        .find(|l| l.starts_with("facts.bpf.probes_loaded"))
        .unwrap();
    assert!(probes_loaded.ends_with("false"), "{probes_loaded}");
    let restarted = text
        .lines()
        .find(|l| l.starts_with("eintr.untimed.sa_restart"))
        .unwrap();
    assert!(
        restarted.ends_with("restarted"),
        "the experiments ran: {restarted}"
    );
    // The semaphore's wake order needs no probes; its wakeup rates say why they are missing.
    for tokens in [1, 2] {
        let key = format!("wake_order.semaphore.acquire_{tokens} ");
        let row = text.lines().find(|l| l.starts_with(&key)).unwrap();
        assert!(row.contains(" of "), "{row}");
    }
    let unmeasured: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("semaphore.contended.") && l.contains(".cross_check"))
        .collect();
    assert_eq!(unmeasured.len(), 2, "{text}");
    for row in unmeasured {
        assert!(row.contains("not measured: probes unavailable: "), "{row}");
    }
}
