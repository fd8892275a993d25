//! `futexscope agent` scraped by a real Prometheus (Debian 13's 2.53, which `cargo xtask setup`
//! unpacks): workloads with known counts, one of them living well under a second, must show
//! those counts and histograms through Prometheus's query API and the agent's `/metrics`, with
//! the text format (classic buckets) and, with native histograms enabled in Prometheus, the
//! protobuf format (native and classic buckets); futexes shared between processes must be one
//! series each, named by file and offset; processes that come and go must leave the agent's
//! series and memory bounded.

mod agent_support;
mod common;

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use agent_support::{
    Reaper, eventually, free_port, http_get, prometheus_exe, query, settles_to, workload_named,
};
use common::{futexscope_exe, require_ebpf};

struct Setup {
    dir: PathBuf,
    agent_port: u16,
    prometheus_port: u16,
    reaper: Reaper,
}

/// Starts the agent (with `agent_args`) and a Prometheus scraping it every second; with
/// `native`, Prometheus ingests native histograms (it then asks for the protobuf format) and
/// keeps the classic buckets too.
fn start(tag: &str, agent_args: &[&str], native: bool) -> Setup {
    require_ebpf();
    let dir = std::env::temp_dir().join(format!("futexscope-agent-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (agent_port, prometheus_port) = (free_port(), free_port());
    let mut reaper = Reaper(Vec::new());
    let listen = format!("127.0.0.1:{agent_port}");
    reaper.0.push(
        Command::new(futexscope_exe())
            .args(["agent", "--listen", &listen])
            .args(agent_args)
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the agent"),
    );
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: futexscope\n    scrape_classic_histograms: {native}\n    static_configs:\n      - targets: ['{listen}']\n"
        ),
    )
    .expect("write the Prometheus config");
    let mut prometheus = Command::new(prometheus_exe());
    if native {
        prometheus.arg("--enable-feature=native-histograms");
    }
    reaper.0.push(
        prometheus
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{prometheus_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus"),
    );
    assert!(
        eventually(Duration::from_secs(60), || http_get(agent_port, "/healthz")).is_some(),
        "the agent did not answer /healthz"
    );
    assert!(
        eventually(Duration::from_secs(30), || http_get(
            prometheus_port,
            "/-/ready"
        ))
        .is_some(),
        "Prometheus did not become ready"
    );
    // Prometheus has scraped the agent once it knows its info metric.
    assert!(
        eventually(Duration::from_secs(30), || {
            (!query(prometheus_port, "futexscope_agent_info").is_empty()).then_some(())
        })
        .is_some(),
        "Prometheus never scraped the agent"
    );
    Setup {
        dir,
        agent_port,
        prometheus_port,
        reaper,
    }
}

fn run(path: &Path, args: &[&str]) -> Duration {
    let start = Instant::now();
    let status = Command::new(path)
        .args(args)
        .stdout(Stdio::null())
        .status()
        .expect("run the workload");
    assert!(status.success(), "{} {args:?} failed", path.display());
    start.elapsed()
}

#[test]
#[ignore = "needs root"]
fn prometheus_stores_the_counts_and_histograms_of_known_workloads() {
    let tag = format!("{}", std::process::id() % 100_000);
    let (eagain, timeouts) = (format!("fxe{tag}"), format!("fxt{tag}"));
    // Only the workloads (`--comm`, which picks each up as it starts): a scrape of every
    // process of a busy host can take longer than the 1 s scrape interval with a debug build.
    let setup = start(
        "counts",
        &["--grace", "60s", "--comm", &eagain, "--comm", &timeouts],
        false,
    );
    let p = setup.prometheus_port;
    // EAGAIN waits: a process that lives well under a second.
    let lived = run(&workload_named(&setup.dir, &eagain), &["eagain", "500"]);
    assert!(lived < Duration::from_secs(1), "lived {lived:?}");
    // Timeouts of 20 ms each.
    run(
        &workload_named(&setup.dir, &timeouts),
        &["timeouts", "6", "20"],
    );

    let q = |metric: &str, comm: &str| format!("sum({metric}{{comm=\"{comm}\"}})");
    assert_eq!(
        settles_to(p, &q("futexscope_value_changed_total", &eagain), 500.0),
        500.0
    );
    assert_eq!(
        settles_to(p, &q("futexscope_timeouts_total", &timeouts), 6.0),
        6.0
    );
    assert_eq!(
        settles_to(
            p,
            &q("futexscope_timeout_drift_seconds_count", &timeouts),
            6.0
        ),
        6.0
    );
    // The six 20 ms waits lie above 2^-6 s (15.6 ms) and at most 2^-4 s (62.5 ms) (a loaded
    // machine may stretch one, so only the lower bound is exact).
    let buckets = query(
        p,
        &format!("sum by (le) (futexscope_wait_seconds_bucket{{comm=\"{timeouts}\"}})"),
    );
    let at = |le: f64| {
        buckets
            .iter()
            .find(|(m, _)| m["le"].as_str().and_then(|v| v.parse::<f64>().ok()) == Some(le))
            .map(|s| s.1)
    };
    let below = at(2f64.powi(-6)).expect("a bucket at 2^-6 s");
    let inf = at(f64::INFINITY).expect("a +Inf bucket");
    assert!(inf - below >= 6.0, "buckets {buckets:?}");
    assert!(at(2f64.powi(-4)).expect("2^-4 s") - below >= 5.0);
    // Without native histograms Prometheus stores none.
    assert!(
        query(
            p,
            &format!("histogram_count(sum(futexscope_wait_seconds{{comm=\"{timeouts}\"}}))")
        )
        .is_empty(),
        "a native histogram from a text scrape"
    );
    // The agent's own endpoint, directly.
    let metrics = http_get(setup.agent_port, "/metrics").expect("/metrics");
    assert!(
        metrics.contains(&format!(
            "futexscope_value_changed_total{{comm=\"{eagain}\",lock=\"anon\"}} 500"
        )),
        "{metrics}"
    );
    assert!(metrics.contains("futexscope_agent_info{version="));
    drop(setup.reaper);
    let _ = std::fs::remove_dir_all(&setup.dir);
}

/// Non-private futex calls with known counts on shared memory, then a wait for stdin to close
/// (so the agent sees the process alive and reads its mappings):
/// `file PATH OFFSET WAITS WAKES`: on a word at OFFSET of file PATH mapped `MAP_SHARED`;
/// `anon WAITS`: on a word of `MAP_SHARED|MAP_ANONYMOUS` memory, in this process and in a
/// child forked after it was mapped, WAITS each. Every wait returns `EAGAIN` (the word never
/// holds the value waited for) and no wake finds a waiter. Prints `done` when the calls are made.
const SHARED_PROGRAM: &str = r#"
#include <fcntl.h>
#include <linux/futex.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static void calls(uint32_t *word, long waits, long wakes) {
    for (long i = 0; i < waits; i++)
        if (syscall(SYS_futex, word, FUTEX_WAIT, 1, NULL, NULL, 0) == 0) exit(3);
    for (long i = 0; i < wakes; i++) syscall(SYS_futex, word, FUTEX_WAKE, 1, NULL, NULL, 0);
}

int main(int argc, char **argv) {
    uint32_t *word;
    pid_t child = -1;
    if (argc == 6 && strcmp(argv[1], "file") == 0) {
        int fd = open(argv[2], O_RDWR | O_CREAT, 0600);
        if (fd < 0 || ftruncate(fd, 4096) != 0) { perror("file"); return 2; }
        char *page = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (page == MAP_FAILED) { perror("mmap"); return 2; }
        word = (uint32_t *)(page + strtol(argv[3], NULL, 0));
        calls(word, atol(argv[4]), atol(argv[5]));
    } else if (argc == 3 && strcmp(argv[1], "anon") == 0) {
        word = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (word == MAP_FAILED) { perror("mmap"); return 2; }
        fflush(stdout);
        child = fork();
        calls(word, atol(argv[2]), 0);
        if (child == 0) _exit(0);
        int status;
        if (waitpid(child, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status)) return 3;
    } else {
        fprintf(stderr, "usage: %s file PATH OFFSET WAITS WAKES | anon WAITS\n", argv[0]);
        return 2;
    }
    printf("done\n");
    fflush(stdout);
    char buf[64];
    while (read(0, buf, sizeof buf) > 0) {}
    return 0;
}
"#;

/// Starts `binary args`, and waits until it has made its futex calls (it then waits for its
/// stdin to close).
fn start_shared(binary: &Path, args: &[&str]) -> Child {
    let mut child = Command::new(binary)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the shared-memory program");
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().expect("stdout"))
        .read_line(&mut line)
        .expect("read its output");
    assert_eq!(line, "done\n", "{} {args:?} failed", binary.display());
    child
}

#[test]
#[ignore = "needs root"]
fn shared_futexes_are_one_series_each_named_by_file_and_offset() {
    let tag = format!("{}", std::process::id() % 100_000);
    // Copies with names no other process has: two processes of one name share a word of one
    // file, two of different names a word of another, and a parent and its child one in
    // anonymous shared memory.
    let [same, one, other, anon] = ["fxsa", "fxsb", "fxsc", "fxsd"].map(|p| format!("{p}{tag}"));
    let mut args = vec!["--grace", "60s"];
    for name in [&same, &one, &other, &anon] {
        args.extend(["--comm", name.as_str()]);
    }
    let setup = start("shared", &args, false);
    let p = setup.prometheus_port;
    let source = setup.dir.join("shared.c");
    std::fs::write(&source, SHARED_PROGRAM).expect("write the C program");
    let compiled = setup.dir.join("shared");
    common::compile_c(&source, &compiled, &["-O1"]);
    for name in [&same, &one, &other, &anon] {
        std::fs::copy(&compiled, setup.dir.join(name)).expect("copy the program");
    }
    let (file1, file2) = (
        format!("/dev/shm/fxs1-{tag}"),
        format!("/dev/shm/fxs2-{tag}"),
    );
    let _files = [&file1, &file2].map(|f| agent_support::TempFile(PathBuf::from(f)));
    let bin = |name: &str| setup.dir.join(name);
    let children = Reaper(vec![
        start_shared(&bin(&same), &["file", &file1, "0x10", "30", "5"]),
        start_shared(&bin(&same), &["file", &file1, "0x10", "40", "7"]),
        start_shared(&bin(&one), &["file", &file2, "0", "11", "0"]),
        start_shared(&bin(&other), &["file", &file2, "0", "13", "0"]),
        start_shared(&bin(&anon), &["anon", "25"]),
    ]);

    let lock1 = format!("{file1}+0x10");
    let lock2 = format!("{file2}+0x0");
    let waits = |lock: &str| format!("sum(futexscope_waits_total{{lock=\"{lock}\"}})");
    assert_eq!(settles_to(p, &waits(&lock1), 70.0), 70.0);
    assert_eq!(settles_to(p, &waits(&lock2), 24.0), 24.0);
    let anon_waits =
        format!("sum(futexscope_value_changed_total{{comm=\"{anon}\",lock=\"shared-anon\"}})");
    assert_eq!(settles_to(p, &anon_waits, 50.0), 50.0);
    // One series per word, labelled with the names of the processes that use it.
    let series = |lock: &str| {
        query(
            p,
            &format!("futexscope_wake_calls_total{{lock=\"{lock}\"}}"),
        )
        .into_iter()
        .map(|(labels, value)| (labels["comm"].as_str().unwrap_or("").to_owned(), value))
        .collect::<Vec<_>>()
    };
    assert_eq!(series(&lock1), vec![(same.clone(), 12.0)]);
    assert_eq!(series(&lock2), vec![(format!("{one},{other}"), 0.0)]);
    // Nothing of these processes went unnamed.
    let unnamed = query(
        p,
        &format!("futexscope_waits_total{{comm=~\"fxs.{tag}.*\",lock=~\"shared|anon|other\"}}"),
    );
    assert!(unnamed.is_empty(), "unnamed series: {unnamed:?}");
    drop(children);
    drop(setup.reaper);
    let _ = std::fs::remove_dir_all(&setup.dir);
}

#[test]
#[ignore = "needs root"]
fn prometheus_with_native_histograms_stores_native_and_classic_buckets() {
    let tag = format!("{}", std::process::id() % 100_000);
    let timeouts = format!("fxn{tag}");
    // Only the workload (`--comm`): a scrape of every process of a busy host can take longer
    // than the 1 s scrape interval with a debug build.
    let setup = start("native", &["--grace", "60s", "--comm", &timeouts], true);
    let p = setup.prometheus_port;
    run(
        &workload_named(&setup.dir, &timeouts),
        &["timeouts", "6", "20"],
    );
    let selector = |metric: &str| format!("{metric}{{comm=\"{timeouts}\"}}");
    let drift = selector("futexscope_timeout_drift_seconds");
    let wait = selector("futexscope_wait_seconds");
    // The native histograms count exactly the timed-out waits and every wait.
    assert_eq!(
        settles_to(p, &format!("histogram_count(sum({drift}))"), 6.0),
        6.0
    );
    let waits = settles_to(
        p,
        &format!("sum({})", selector("futexscope_waits_total")),
        6.0,
    );
    assert!(waits >= 6.0, "{waits} waits");
    assert_eq!(
        settles_to(p, &format!("histogram_count(sum({wait}))"), waits),
        waits
    );
    // Their sums are the exact sums the probes kept: those of the classic series, and each
    // of the six waits took at least its 20 ms timeout.
    let native_sum = query(p, &format!("histogram_sum(sum({wait}))"))[0].1;
    let classic_sum = query(
        p,
        &format!("sum({})", selector("futexscope_wait_seconds_sum")),
    )[0]
    .1;
    assert_eq!(native_sum, classic_sum);
    assert!(native_sum >= 6.0 * 0.020, "{native_sum} s");
    let drift_sum = query(p, &format!("histogram_sum(sum({drift}))"))[0].1;
    let classic_drift_sum = query(
        p,
        &format!("sum({})", selector("futexscope_timeout_drift_seconds_sum")),
    )[0]
    .1;
    assert_eq!(drift_sum, classic_drift_sum);
    // The classic buckets are still there, and at each classic bound (a power of two of
    // seconds, so a native bucket boundary: no interpolation) the native buckets below it hold
    // exactly the classic count.
    let classic = query(
        p,
        &format!(
            "sum by (le) ({})",
            selector("futexscope_wait_seconds_bucket")
        ),
    );
    assert_eq!(classic.len(), 14, "13 bounds and +Inf: {classic:?}");
    for (labels, count) in &classic {
        let le = labels["le"].as_str().expect("le");
        if le == "+Inf" {
            assert_eq!(*count, waits);
            continue;
        }
        let native = query(
            p,
            &format!("histogram_fraction(0, {le}, sum({wait})) * histogram_count(sum({wait}))"),
        )[0]
        .1;
        assert!(
            (native - count).abs() < 1e-9,
            "le={le}: native {native}, classic {count}"
        );
    }
    // The six 20 ms waits are above 2^-6 s: the native fraction below it leaves them out.
    let below = query(
        p,
        &format!("histogram_fraction(0, 0.015625, sum({wait})) * histogram_count(sum({wait}))"),
    )[0]
    .1;
    assert!(
        waits - below >= 6.0,
        "{below} of {waits} waits below 15.6 ms"
    );
    drop(setup.reaper);
    let _ = std::fs::remove_dir_all(&setup.dir);
}

#[test]
#[ignore = "needs root"]
fn series_and_memory_stay_bounded_while_processes_come_and_go() {
    let tag = format!("{}", std::process::id() % 100_000);
    let names: Vec<String> = (0..4).map(|i| format!("fxc{i}_{tag}")).collect();
    // Only the churning processes (`--comm`, which also picks up each new one as it starts):
    // the rest of the host (builds, other tests) must not move the memory figure.
    let mut args = vec!["--grace", "2s"];
    for name in &names {
        args.extend(["--comm", name.as_str()]);
    }
    let setup = start("churn", &args, false);
    let p = setup.prometheus_port;
    let paths: Vec<PathBuf> = names
        .iter()
        .map(|n| workload_named(&setup.dir, n))
        .collect();
    let rss = || {
        query(p, "futexscope_agent_resident_memory_bytes")
            .first()
            .map_or(0.0, |s| s.1)
    };
    let started = Instant::now();
    let mut first_rss = 0.0;
    let mut runs = 0;
    while started.elapsed() < Duration::from_secs(20) {
        for path in &paths {
            run(path, &["eagain", "50"]);
            runs += 1;
        }
        if first_rss == 0.0 && started.elapsed() > Duration::from_secs(5) {
            first_rss = rss();
        }
    }
    // Every run counted while its process was in the grace period or later.
    let total = settles_to(
        p,
        &format!("sum(futexscope_value_changed_total{{comm=~\"fxc._{tag}\"}})"),
        f64::from(runs * 50),
    );
    assert!(
        total >= f64::from(runs * 50),
        "{total} of {} EAGAIN waits",
        runs * 50
    );
    // After the grace period the processes are gone and so are their series.
    let gone = eventually(Duration::from_secs(20), || {
        let series = query(
            p,
            &format!("count(futexscope_waits_total{{comm=~\"fxc._{tag}\"}})"),
        );
        series.is_empty().then_some(())
    });
    assert!(
        gone.is_some(),
        "series of exited processes were not dropped"
    );
    let last_rss = rss();
    assert!(
        last_rss < first_rss * 1.5 + 4e6,
        "resident memory grew from {first_rss} to {last_rss} over {runs} processes"
    );
    drop(setup.reaper);
    let _ = std::fs::remove_dir_all(&setup.dir);
}

/// Five `EAGAIN` waits of its own, then a forked child that execs `argv[1] eagain 30`.
const FORK_EXEC_PROGRAM: &str = r#"
#include <linux/futex.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv) {
    (void)argc;
    static uint32_t word = 1;
    for (int i = 0; i < 5; i++)
        syscall(SYS_futex, &word, FUTEX_WAIT_PRIVATE, 0, NULL, NULL, 0);
    pid_t child = fork();
    if (child == 0) {
        execl(argv[1], argv[1], "eagain", "30", (char *)NULL);
        _exit(127);
    }
    int status = 0;
    waitpid(child, &status, 0);
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 1;
}
"#;

#[test]
#[ignore = "needs root"]
fn comm_follows_forked_children_until_they_run_another_program() {
    // Names no other test of this file uses: their agents run at the same time.
    let tag = format!("{}", std::process::id() % 100_000);
    let (parent, other) = (format!("fxp{tag}"), format!("fxq{tag}"));
    let setup = start("exec", &["--grace", "60s", "--comm", &parent], false);
    let source = setup.dir.join("fork_exec.c");
    std::fs::write(&source, FORK_EXEC_PROGRAM).expect("write the C program");
    let parent_path = setup.dir.join(&parent);
    common::compile_c(&source, &parent_path, &["-O1"]);
    let other_path = workload_named(&setup.dir, &other);
    run(&parent_path, &[other_path.to_str().unwrap()]);
    // The parent's own 5 waits are counted; its child's 30, made after it ran another
    // program, are not.
    let waits = format!("sum(futexscope_value_changed_total{{comm=\"{parent}\"}})");
    assert_eq!(settles_to(setup.prometheus_port, &waits, 5.0), 5.0);
    let metrics = http_get(setup.agent_port, "/metrics").expect("/metrics");
    assert!(
        !metrics.contains(&format!("comm=\"{other}\"")),
        "the child that ran {other} is still traced:\n{metrics}"
    );
    drop(setup.reaper);
    let _ = std::fs::remove_dir_all(&setup.dir);
}
