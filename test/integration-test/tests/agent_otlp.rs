//! `futexscope agent --otlp` pushing to a real OTLP receiver: Debian 13's VictoriaMetrics
//! (OTLP/HTTP metrics in, with Prometheus naming; Prometheus's query API out), which `cargo
//! xtask setup` unpacks (Debian's Prometheus is built without its OTLP receiver). Workloads
//! with known counts must arrive with those counts, the histograms bucket for bucket as
//! `/metrics` has them, under the names `/metrics` uses, with the resource attributes; a
//! receiver that is not there must not stop `/metrics`, shows in the failures metric and is
//! logged once; the push at SIGTERM must land.

mod agent_support;
mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    fs::File,
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use agent_support::{
    Reaper, TempDir, eventually, free_port, http_get, query, settles_to, victoria_metrics_exe,
    workload_named,
};
use common::{futexscope_exe, require_ebpf};

/// A fresh temporary directory for test `tag`.
fn temp_dir(tag: &str) -> TempDir {
    let dir = TempDir(std::env::temp_dir().join(format!(
        "futexscope-agent-otlp-{tag}-{}",
        std::process::id()
    )));
    let _ = std::fs::remove_dir_all(&dir.0);
    std::fs::create_dir_all(&dir.0).expect("temp dir");
    dir
}

/// Starts VictoriaMetrics on a free port with its data in `dir`; returns the port once it is
/// healthy. Recent samples are queryable at once (`-search.latencyOffset=0s`), and OTLP names
/// are translated as Prometheus's OTLP receiver does (unit suffix, `_total` on counters).
fn start_receiver(dir: &Path, reaper: &mut Reaper) -> u16 {
    let port = free_port();
    reaper.0.push(
        Command::new(victoria_metrics_exe())
            .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
            .arg(format!("-storageDataPath={}", dir.join("vm").display()))
            .arg("-retentionPeriod=1d")
            .arg("-opentelemetry.usePrometheusNaming")
            .arg("-search.latencyOffset=0s")
            .arg("-search.disableCache")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start victoria-metrics"),
    );
    assert!(
        eventually(Duration::from_secs(30), || http_get(port, "/health")).is_some(),
        "VictoriaMetrics did not become healthy"
    );
    port
}

/// The agent's command: listening on `port`, pushing to `url` every `interval`, tracing the
/// processes named `comms`, its stderr in `log`.
fn start_agent(port: u16, url: &str, interval: &str, comms: &[&str], log: &Path) -> Child {
    let mut command = Command::new(futexscope_exe());
    command.args([
        "agent",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--grace",
        "60s",
        "--otlp",
        url,
        "--otlp-interval",
        interval,
    ]);
    for comm in comms {
        command.args(["--comm", comm]);
    }
    let agent = command
        .stderr(File::create(log).expect("agent log"))
        .spawn()
        .expect("start the agent");
    assert!(
        eventually(Duration::from_secs(20), || http_get(port, "/healthz")).is_some(),
        "the agent did not answer /healthz: {}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
    agent
}

fn run(path: &Path, args: &[&str]) {
    let status = Command::new(path)
        .args(args)
        .stdout(Stdio::null())
        .status()
        .expect("run the workload");
    assert!(status.success(), "{} {args:?} failed", path.display());
}

/// Stops the agent with SIGTERM and waits for it; true if it exited with 0.
fn terminate(mut agent: Child) -> bool {
    // SAFETY: kill(2) with the pid of a child this test spawned and has not reaped.
    unsafe { libc::kill(agent.id() as i32, libc::SIGTERM) };
    agent.wait().expect("wait for the agent").success()
}

/// The samples of `/metrics` (OpenMetrics text): name, labels, value.
fn scraped(text: &str) -> Vec<(String, BTreeMap<String, String>, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("`series value`");
            let (name, labels) = series.split_once('{').unwrap_or((series, "}"));
            let labels = labels
                .trim_end_matches('}')
                .split("\",")
                .filter(|kv| !kv.is_empty())
                .map(|kv| {
                    let (k, v) = kv.split_once("=\"").expect("label=\"value\"");
                    (k.to_owned(), v.trim_end_matches('"').to_owned())
                })
                .collect();
            let value = value.parse().expect("a number");
            (name.to_owned(), labels, value)
        })
        .collect()
}

/// `le` → count of the buckets of `metric` for `comm`, summed over its locks.
type Buckets = BTreeMap<String, f64>;

fn le(text: &str) -> String {
    // Both sides' spellings of one bound (`1.024e-6`, `1.024e-06`, `+Inf`) as one key.
    format!("{:e}", text.parse::<f64>().expect("a bucket bound"))
}

fn scraped_buckets(text: &str, metric: &str, comm: &str) -> Buckets {
    let mut buckets = Buckets::new();
    for (name, labels, value) in scraped(text) {
        if name == metric && labels.get("comm").is_some_and(|c| c == comm) {
            *buckets.entry(le(&labels["le"])).or_default() += value;
        }
    }
    buckets
}

fn stored_buckets(port: u16, metric: &str, comm: &str) -> Buckets {
    query(port, &format!("sum by (le) ({metric}{{comm=\"{comm}\"}})"))
        .into_iter()
        .map(|(labels, value)| (le(labels["le"].as_str().expect("an le label")), value))
        .collect()
}

#[test]
#[ignore = "needs root"]
fn the_receiver_stores_the_counts_histograms_and_names_of_metrics() {
    require_ebpf();
    let tag = std::process::id() % 100_000;
    let dir = temp_dir("counts");
    let mut reaper = Reaper(Vec::new());
    let receiver = start_receiver(&dir.0, &mut reaper);
    let (eagain, timeouts) = (format!("fxoe{tag}"), format!("fxot{tag}"));
    let port = free_port();
    let url = format!("http://127.0.0.1:{receiver}/opentelemetry/v1/metrics");
    let log = dir.0.join("agent.log");
    reaper
        .0
        .push(start_agent(port, &url, "1s", &[&eagain, &timeouts], &log));
    run(&workload_named(&dir.0, &eagain), &["eagain", "500"]);
    run(&workload_named(&dir.0, &timeouts), &["timeouts", "6", "20"]);

    let q = |metric: &str, comm: &str| format!("sum({metric}{{comm=\"{comm}\"}})");
    assert_eq!(
        settles_to(
            receiver,
            &q("futexscope_value_changed_total", &eagain),
            500.0
        ),
        500.0
    );
    assert_eq!(
        settles_to(receiver, &q("futexscope_timeouts_total", &timeouts), 6.0),
        6.0
    );
    assert_eq!(
        settles_to(
            receiver,
            &q("futexscope_timeout_drift_seconds_count", &timeouts),
            6.0
        ),
        6.0
    );
    // The histograms as `/metrics` has them, bucket for bucket (both processes have exited:
    // their counts no longer move). The six 20 ms waits lie above 2^-6 s (15.6 ms).
    let metrics = http_get(port, "/metrics").expect("/metrics");
    for metric in [
        "futexscope_wait_seconds_bucket",
        "futexscope_timeout_drift_seconds_bucket",
    ] {
        let want = scraped_buckets(&metrics, metric, &timeouts);
        assert_eq!(want.len(), 14, "13 bounds and +Inf: {want:?}");
        let mut stored = Buckets::new();
        eventually(Duration::from_secs(10), || {
            stored = stored_buckets(receiver, metric, &timeouts);
            (stored == want).then_some(())
        });
        assert_eq!(stored, want, "{metric}");
    }
    let wait = scraped_buckets(&metrics, "futexscope_wait_seconds_bucket", &timeouts);
    let below = wait[&le(&2f64.powi(-6).to_string())];
    assert!(wait[&le("+Inf")] - below >= 6.0, "{wait:?}");
    // Every metric `/metrics` serves, under the same name.
    let served: BTreeSet<String> = scraped(&metrics).into_iter().map(|s| s.0).collect();
    let mut stored = BTreeSet::new();
    eventually(Duration::from_secs(10), || {
        stored = query(
            receiver,
            "count by (__name__) ({__name__=~\"futexscope_.+\"})",
        )
        .into_iter()
        .filter_map(|(labels, _)| labels["__name__"].as_str().map(str::to_owned))
        .collect();
        (stored == served).then_some(())
    });
    assert_eq!(stored, served);
    // The resource attributes (on every series, as labels) and the info metric's labels.
    let info = query(receiver, "futexscope_agent_info");
    let labels = &info.first().expect("futexscope_agent_info").0;
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").expect("uname -r");
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("host name");
    assert_eq!(labels["service_name"], "futexscope-agent", "{labels}");
    assert_eq!(labels["host_name"], host.trim(), "{labels}");
    assert_eq!(labels["os_version"], kernel.trim(), "{labels}");
    assert_eq!(labels["kernel"], kernel.trim(), "{labels}");
    assert_eq!(labels["service_version"], labels["version"], "{labels}");
    assert!(
        metrics.contains("futexscope_agent_otlp_failures_total 0"),
        "{metrics}"
    );
    drop(reaper);
}

#[test]
#[ignore = "needs root"]
fn an_unreachable_receiver_is_counted_and_logged_once_and_metrics_keeps_serving() {
    require_ebpf();
    let tag = std::process::id() % 100_000;
    let dir = temp_dir("unreachable");
    let comm = format!("fxou{tag}");
    let port = free_port();
    // A loopback port nothing listens on: every push is refused.
    let url = format!("http://127.0.0.1:{}/v1/metrics", free_port());
    let log = dir.0.join("agent.log");
    let agent = start_agent(port, &url, "1s", &[&comm], &log);
    run(&workload_named(&dir.0, &comm), &["eagain", "200"]);
    let counted = format!("futexscope_value_changed_total{{comm=\"{comm}\",lock=\"anon\"}} 200");
    let mut metrics = String::new();
    let failing = eventually(Duration::from_secs(20), || {
        metrics = http_get(port, "/metrics")?;
        let failures = scraped(&metrics)
            .into_iter()
            .find(|s| s.0 == "futexscope_agent_otlp_failures_total")?
            .2;
        (metrics.contains(&counted) && failures >= 3.0).then_some(())
    });
    assert!(failing.is_some(), "{metrics}");
    assert!(terminate(agent), "the agent did not exit cleanly");
    let stderr = std::fs::read_to_string(&log).expect("agent log");
    let failed: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("OTLP push") && l.contains("failed"))
        .collect();
    assert_eq!(failed.len(), 1, "logged once:\n{stderr}");
    assert!(failed[0].contains("cannot connect"), "{stderr}");
}

#[test]
#[ignore = "needs root"]
fn the_push_at_sigterm_lands() {
    require_ebpf();
    let tag = std::process::id() % 100_000;
    let dir = temp_dir("final");
    let mut reaper = Reaper(Vec::new());
    let receiver = start_receiver(&dir.0, &mut reaper);
    let comm = format!("fxof{tag}");
    let port = free_port();
    let url = format!("http://127.0.0.1:{receiver}/opentelemetry/v1/metrics");
    let log = dir.0.join("agent.log");
    // No periodic push comes before the agent stops.
    let agent = start_agent(port, &url, "1h", &[&comm], &log);
    run(&workload_named(&dir.0, &comm), &["eagain", "300"]);
    let counted = format!("futexscope_value_changed_total{{comm=\"{comm}\",lock=\"anon\"}} 300");
    assert!(
        eventually(Duration::from_secs(10), || {
            http_get(port, "/metrics").filter(|m| m.contains(&counted))
        })
        .is_some(),
        "the agent did not count the waits"
    );
    let stored = format!("sum(futexscope_value_changed_total{{comm=\"{comm}\"}})");
    assert!(query(receiver, &stored).is_empty(), "pushed before SIGTERM");
    assert!(terminate(agent), "the agent did not exit cleanly");
    assert_eq!(
        settles_to(receiver, &stored, 300.0),
        300.0,
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    drop(reaper);
}
