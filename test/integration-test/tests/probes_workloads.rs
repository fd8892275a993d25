//! The probes against scripted workloads with known truth: every number the probes report is
//! compared with what the workload itself counted. Root only; in CI they must run.

mod common;

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use futexscope::collect::{
    ebpf::{ProbeOptions, Probes},
    spawn::GatedChild,
};
use futexscope_probes_common::{
    event::{Event, EventKind, spurious},
    maps::{FutexKey, FutexStats, TIME_BUCKETS, time_bucket},
};

/// What one traced workload run produced.
struct Run {
    pid: u32,
    report: HashMap<String, String>,
    stats: HashMap<u64, FutexStats>,
    events: Vec<Event>,
    probes: Probes,
}

impl Run {
    fn num(&self, key: &str) -> u64 {
        self.report
            .get(key)
            .unwrap_or_else(|| panic!("workload report has no `{key}`: {:?}", self.report))
            .parse()
            .unwrap_or_else(|_| panic!("`{key}` is not a number: {:?}", self.report))
    }

    fn word(&self, key: &str) -> u64 {
        let text = &self.report[key];
        u64::from_str_radix(text.trim_start_matches("0x"), 16).expect("hex word")
    }

    fn stats_of(&self, key: &str) -> FutexStats {
        let word = self.word(key);
        *self.stats.get(&word).unwrap_or_else(|| {
            panic!(
                "no statistics for word {word:#x}; have {:x?}",
                self.stats.keys().collect::<Vec<_>>()
            )
        })
    }
}

/// Runs `futexscope-workload ARGS` traced with `options`, collecting events while it runs.
fn traced(options: &ProbeOptions, args: &[&str]) -> Run {
    let mut probes = Probes::load_with(options).expect("load the probes");
    let report_path = std::env::temp_dir().join(format!(
        "futexscope-workload-{}-{}.txt",
        std::process::id(),
        args.join("-")
    ));
    let command = format!(
        "exec {} {} > {}",
        env!("CARGO_BIN_EXE_futexscope-workload"),
        args.join(" "),
        report_path.display()
    );
    let argv = ["sh".to_owned(), "-c".to_owned(), command];
    let gated = GatedChild::spawn(&argv).expect("spawn the workload");
    let pid = gated.pid();
    probes.trace_tgid(pid).expect("trace the workload");
    let child = gated.start("sh").expect("start the workload");
    let mut events = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        probes.read_events(|e| events.push(*e));
        let mut status = 0;
        // SAFETY: non-blocking wait for our own child with a valid status pointer.
        if unsafe { libc::waitpid(child, &mut status, libc::WNOHANG) } == child {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "workload {args:?} did not finish"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    probes.read_events(|e| events.push(*e));
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "workload {args:?} failed: {status}"
    );
    let text = std::fs::read_to_string(&report_path).expect("workload report");
    let _ = std::fs::remove_file(&report_path);
    let report = text
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let stats = probes
        .futex_stats()
        .expect("read statistics")
        .into_iter()
        .filter(|(key, _): &(FutexKey, FutexStats)| key.tgid == pid)
        .map(|(key, s)| (key.uaddr, s))
        .collect();
    Run {
        pid,
        report,
        stats,
        events,
        probes,
    }
}

fn assert_no_drops(run: &Run) {
    let drops = run.probes.drops().expect("read drops");
    assert_eq!(drops.ring_buffer_full, 0, "records dropped at test rates");
    assert_eq!(drops.map_full, 0, "map entries dropped");
}

fn hist_total(hist: &[u64; TIME_BUCKETS]) -> u64 {
    hist.iter().sum()
}

#[test]
#[ignore = "needs root"]
fn timed_out_waits_have_the_drift_the_workload_measured() {
    common::require_ebpf();
    let run = check_timed_out_waits(&ProbeOptions::default());
    assert!(
        run.probes.btf_syscall_hooks(),
        "this kernel has BTF: the syscalls are hooked by BTF tracepoint"
    );
}

#[test]
#[ignore = "needs root"]
fn raw_syscall_hooks_see_what_btf_hooks_see() {
    common::require_ebpf();
    // What a kernel without BTF runs: the same checks hold.
    let options = ProbeOptions {
        raw_syscall_hooks: true,
        ..ProbeOptions::default()
    };
    let run = check_timed_out_waits(&options);
    assert!(!run.probes.btf_syscall_hooks());
}

/// Traces timed-out waits with `options` and checks every count, drift and clock against
/// the workload's own.
fn check_timed_out_waits(options: &ProbeOptions) -> Run {
    let k = 9;
    let run = traced(options, &["timeouts", &k.to_string(), "20"]);
    assert_eq!(
        run.num("timeouts"),
        k,
        "the workload's own waits all timed out"
    );
    let stats = run.stats_of("word");
    assert_eq!(stats.waits, k);
    assert_eq!(stats.timeouts, k);
    assert_eq!(hist_total(&stats.drift_hist), k);
    assert_eq!(hist_total(&stats.wait_hist), k);
    assert_eq!((stats.waiters_now, stats.max_waiters), (0, 1));
    let word = run.word("word");
    let waits: Vec<&Event> = run
        .events
        .iter()
        .filter(|e| e.kind == EventKind::Wait as u32 && e.uaddr == word)
        .collect();
    assert_eq!(waits.len() as u64, k);
    let measured: Vec<u64> = run.report["drift_ns"]
        .split(' ')
        .map(|d| d.parse().expect("drift"))
        .collect();
    let mut expected_hist = [0u64; TIME_BUCKETS];
    let (mut drift_sum, mut drift_max, mut wait_sum, mut wait_max) = (0, 0, 0, 0);
    for (i, (event, &workload_drift)) in waits.iter().zip(&measured).enumerate() {
        assert_eq!(event.ret, -i64::from(libc::ETIMEDOUT));
        // Never early: the kernel returned at or after the deadline.
        assert!(
            event.ts_ns >= event.deadline_ns,
            "wait {i} returned before its deadline: {event:?}"
        );
        let drift = event.ts_ns - event.deadline_ns;
        // The workload read its clock after the syscall returned, so it saw at least the
        // probes' drift; realtime deadlines (every third wait) also carry the clock-offset
        // conversion, allowed 1 ms either way.
        let slack = if i % 3 == 2 { 1_000_000 } else { 0 };
        assert!(
            drift <= workload_drift + slack,
            "wait {i}: probe drift {drift} > workload drift {workload_drift}"
        );
        assert!(
            workload_drift - drift.min(workload_drift) < 1_000_000_000,
            "wait {i}: drifts {drift} and {workload_drift} disagree"
        );
        expected_hist[time_bucket(drift)] += 1;
        (drift_sum, drift_max) = (drift_sum + drift, drift_max.max(drift));
        let waited = event.ts_ns - event.start_ns;
        (wait_sum, wait_max) = (wait_sum + waited, wait_max.max(waited));
        let expected_clock = if i % 3 == 2 {
            libc::CLOCK_REALTIME
        } else {
            libc::CLOCK_MONOTONIC
        } as u32;
        assert_eq!(event.clock, expected_clock, "wait {i} clock");
    }
    assert_eq!(
        stats.drift_hist, expected_hist,
        "the histogram holds the records' drifts"
    );
    assert_eq!(
        (stats.drift_sum_ns, stats.drift_max_ns, stats.drift_early),
        (drift_sum, drift_max, 0),
        "the exact drift sum and maximum are the records'"
    );
    assert_eq!(
        (stats.wait_sum_ns, stats.wait_max_ns),
        (wait_sum, wait_max),
        "the exact wait sum and maximum are the records'"
    );
    assert_no_drops(&run);
    run
}

#[test]
#[ignore = "needs root"]
fn parked_threads_give_max_waiters() {
    common::require_ebpf();
    let w = 6;
    let run = traced(&ProbeOptions::default(), &["parked", &w.to_string()]);
    assert_eq!(
        run.num("woken"),
        w,
        "the workload's wake woke every parked thread"
    );
    let stats = run.stats_of("word");
    assert_eq!(stats.max_waiters, w as i64);
    assert_eq!(stats.waiters_now, 0);
    assert_eq!(stats.waits, w);
    assert_eq!(stats.wake_calls, 1);
    assert_eq!(stats.woken, w);
    assert_eq!(stats.wakeups, run.num("woken_returns"));
    assert_eq!(stats.no_waker, 0);
    assert_no_drops(&run);
}

#[test]
#[ignore = "needs root"]
fn signal_storm_counts_every_eintr() {
    common::require_ebpf();
    let n = 25;
    let run = traced(&ProbeOptions::default(), &["signals", &n.to_string()]);
    assert_eq!(run.num("eintr"), n);
    let stats = run.stats_of("word");
    assert_eq!(stats.eintr, n);
    assert_eq!(stats.waits, run.num("waits"));
    let word = run.word("word");
    let interrupted = run
        .events
        .iter()
        .filter(|e| {
            e.uaddr == word
                && e.kind == EventKind::Wait as u32
                && e.spurious & spurious::INTERRUPTED != 0
        })
        .count() as u64;
    assert_eq!(interrupted, n);
    assert_no_drops(&run);
}

#[test]
#[ignore = "needs root"]
fn stolen_wakeups_are_lost_races() {
    common::require_ebpf();
    // The consumer pauses 2 s after each token; a re-wait within 1 s of a wakeup is a lost
    // race, so only real re-waits count, even on a loaded machine.
    let options = ProbeOptions {
        lost_race_window_ns: 1_000_000_000,
        ..ProbeOptions::default()
    };
    let run = traced(&options, &["stolen", "2", "3", "2000"]);
    let stats = run.stats_of("word");
    assert!(
        run.num("lost") > 0,
        "the scenario produced no lost race: {:?}",
        run.report
    );
    assert_eq!(stats.lost_race, run.num("lost"));
    assert_eq!(stats.wakeups, run.num("woken"));
    assert_eq!(stats.waits, run.num("waits"));
    assert_eq!(stats.wake_calls, run.num("wake_calls"));
    assert_eq!(stats.woken, run.num("woken_by_wakes"));
    assert_eq!(stats.no_waker, 0, "every wakeup had a wake call");
    assert_no_drops(&run);
}

#[test]
#[ignore = "needs root"]
fn futex_waitv_waits_are_seen_on_each_word() {
    common::require_ebpf();
    let k = 4;
    let run = traced(&ProbeOptions::default(), &["waitv", &k.to_string(), "10"]);
    if !run
        .probes
        .syscalls()
        .iter()
        .any(|s| s.name == "futex_waitv" && s.present)
    {
        panic!("this kernel has no futex_waitv; the test needs Linux 5.16 or later");
    }
    assert_eq!(run.num("timeouts"), k);
    assert_eq!(run.num("woken_index"), 1);
    let (first, second) = (run.stats_of("word0"), run.stats_of("word1"));
    assert_eq!((first.waits, second.waits), (k + 1, k + 1));
    assert_eq!(first.timeouts, k, "timeouts belong to the first word");
    assert_eq!(hist_total(&first.drift_hist), k);
    assert_eq!(
        second.wakeups, 1,
        "the wakeup belongs to the word futex_waitv reports"
    );
    assert_eq!((second.wake_calls, second.woken), (1, run.num("woken")));
    assert_eq!((first.max_waiters, second.max_waiters), (1, 1));
    assert_eq!((first.waiters_now, second.waiters_now), (0, 0));
    assert_no_drops(&run);
}

#[test]
#[ignore = "needs root"]
fn a_wakeup_without_a_wake_call_is_flagged() {
    common::require_ebpf();
    // pthread_join sleeps on the thread-id word, which the kernel wakes at thread exit.
    let run = traced(&ProbeOptions::default(), &["join"]);
    let no_waker: u64 = run.stats.values().map(|s| s.no_waker).sum();
    assert_eq!(no_waker, 1, "{:?}", run.stats);
    assert_no_drops(&run);
}

#[test]
#[ignore = "needs root"]
fn a_tiny_ring_buffer_counts_its_drops_and_totals_stay_exact() {
    common::require_ebpf();
    let n = 20_000;
    let options = ProbeOptions {
        ring_buffer_bytes: 4096,
        ..ProbeOptions::default()
    };
    // `traced` reads every 5 ms; 20000 immediate EAGAIN waits overflow 4 KiB (23 records)
    // long before.
    let run = traced(&options, &["eagain", &n.to_string()]);
    let stats = run.stats_of("word");
    assert_eq!(stats.waits, n, "map totals stay exact");
    assert_eq!(stats.eagain, n);
    let drops = run.probes.drops().expect("drops");
    assert!(
        drops.ring_buffer_full > 0,
        "a 4 KiB ring buffer dropped nothing"
    );
    let records: u64 = run.stats.values().map(|s| s.waits + s.wake_calls).sum();
    let seen = run.events.iter().filter(|e| e.tgid == run.pid).count() as u64;
    assert_eq!(
        seen + drops.ring_buffer_full,
        records,
        "every record was either read or counted as dropped"
    );
}

#[test]
#[ignore = "needs root"]
fn untraced_processes_produce_nothing() {
    common::require_ebpf();
    let mut probes = Probes::load().expect("load the probes");
    let traced_child = GatedChild::spawn(&[
        env!("CARGO_BIN_EXE_futexscope-workload").to_owned(),
        "eagain".into(),
        "50".into(),
    ])
    .expect("spawn");
    let traced_pid = traced_child.pid();
    probes.trace_tgid(traced_pid).expect("trace");
    let other = std::process::Command::new(env!("CARGO_BIN_EXE_futexscope-workload"))
        .args(["eagain", "300"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("spawn the untraced workload");
    let child = traced_child.start("futexscope-workload").expect("start");
    futexscope::collect::spawn::wait(child).expect("wait");
    let other_pid = other.id();
    let out = other.wait_with_output().expect("untraced workload");
    assert!(out.status.success());
    let mut events = Vec::new();
    assert!(
        probes
            .wait_for_events(Duration::from_secs(5))
            .expect("poll"),
        "records are waiting"
    );
    probes.read_events(|e| events.push(*e));
    assert!(
        !probes.wait_for_events(Duration::ZERO).expect("poll"),
        "all records were read"
    );
    assert!(
        events.iter().all(|e| e.tgid == traced_pid),
        "an untraced process made records"
    );
    assert!(
        events
            .iter()
            .filter(|e| e.kind == EventKind::Wait as u32)
            .count()
            >= 50
    );
    let stats = probes.futex_stats().expect("stats");
    assert!(
        stats.iter().all(|(key, _)| key.tgid != other_pid),
        "an untraced process has statistics"
    );
    assert_eq!(probes.traced_tgids().expect("tgids"), vec![traced_pid]);
    probes.untrace_tgid(traced_pid).expect("untrace");
    probes
        .untrace_tgid(traced_pid)
        .expect("untracing twice is no error");
    assert!(probes.traced_tgids().expect("tgids").is_empty());
}

#[test]
#[ignore = "needs root"]
fn children_of_traced_processes_are_traced() {
    common::require_ebpf();
    let run = traced(&ProbeOptions::default(), &["eagain", "1"]);
    assert!(
        run.probes.follows_forks(),
        "fork following needs /sys/kernel/btf/vmlinux"
    );
    // `sh -c 'exec …'` forks nothing; trace a shell that runs the workload as a child.
    let mut probes = Probes::load().expect("load");
    let script = format!(
        "{} eagain 40 >/dev/null; true",
        env!("CARGO_BIN_EXE_futexscope-workload")
    );
    let gated = GatedChild::spawn(&["sh".to_owned(), "-c".to_owned(), script]).expect("spawn");
    let shell = gated.pid();
    probes.trace_tgid(shell).expect("trace");
    let pid = gated.start("sh").expect("start");
    futexscope::collect::spawn::wait(pid).expect("wait");
    let mut events = Vec::new();
    probes.read_events(|e| events.push(*e));
    let forks: Vec<u32> = events
        .iter()
        .filter(|e| e.kind == EventKind::Fork as u32 && e.tgid == shell)
        .map(|e| e.args[0] as u32)
        .collect();
    assert_eq!(forks.len(), 1, "one child forked: {forks:?}");
    let eagain: u64 = probes
        .futex_stats()
        .expect("stats")
        .iter()
        .filter(|(key, _)| key.tgid == forks[0])
        .map(|(_, s)| s.eagain)
        .sum();
    assert_eq!(eagain, 40, "the child's waits were traced");
}

#[test]
#[ignore = "needs root"]
fn a_thread_killed_inside_a_wait_leaves_no_waiter_behind() {
    common::require_ebpf();
    let run = traced(&ProbeOptions::default(), &["die"]);
    let stats = run.stats_of("word");
    assert_eq!(stats.waits, 1);
    assert_eq!(
        stats.waiters_now, 0,
        "the dead thread still counts as waiting"
    );
    // The kernel ends the wait for the fatal signal (a restart code at syscall exit) or the
    // thread exits without one: either way the wait is booked exactly once.
    assert_eq!(stats.eintr + stats.died_waiting, 1, "{stats:?}");
    assert_no_drops(&run);
}
