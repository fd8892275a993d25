//! `futexscope agent` scraped by a real Prometheus (Debian's `prometheus`, which `cargo xtask
//! setup` installs): workloads with known counts, one of them living well under a second, must
//! show those counts and histograms through Prometheus's query API and the agent's `/metrics`;
//! processes that come and go must leave the agent's series and memory bounded.

mod agent_support;
mod common;

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
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

/// Starts the agent (with `agent_args`) and a Prometheus scraping it every second.
fn start(tag: &str, agent_args: &[&str]) -> Setup {
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
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: futexscope\n    static_configs:\n      - targets: ['{listen}']\n"
        ),
    )
    .expect("write the Prometheus config");
    reaper.0.push(
        Command::new(prometheus_exe())
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
        eventually(Duration::from_secs(20), || http_get(agent_port, "/healthz")).is_some(),
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
    let setup = start("counts", &["--grace", "60s"]);
    let p = setup.prometheus_port;
    // EAGAIN waits: a process that lives well under a second.
    let eagain = format!("fxe{tag}");
    let lived = run(&workload_named(&setup.dir, &eagain), &["eagain", "500"]);
    assert!(lived < Duration::from_secs(1), "lived {lived:?}");
    // Timeouts of 20 ms each.
    let timeouts = format!("fxt{tag}");
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
    // The six 20 ms waits lie above 2^24 ns (16.8 ms) and at most 2^26 ns (67 ms) (a loaded
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
    let below = at((1u64 << 24) as f64 / 1e9).expect("a bucket at 2^24 ns");
    let inf = at(f64::INFINITY).expect("a +Inf bucket");
    assert!(inf - below >= 6.0, "buckets {buckets:?}");
    assert!(at((1u64 << 26) as f64 / 1e9).expect("2^26 ns") - below >= 5.0);
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
    let setup = start("churn", &args);
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
