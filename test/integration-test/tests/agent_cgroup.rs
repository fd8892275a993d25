//! `futexscope agent --cgroup DIR` end to end: workloads moved into a fresh cgroup v2
//! directory and into a cgroup below it are counted exactly, and a workload outside them not
//! at all. The agent's
//! `/metrics` is read directly (plain HTTP), no Prometheus needed.

mod agent_support;
mod common;

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use agent_support::{Reaper, TempDir, eventually, free_port, http_get};
use common::{futexscope_exe, require_ebpf};

/// The cgroup v2 hierarchy's mount point: `/sys/fs/cgroup` (unified layout) or a mount below it
/// (`/sys/fs/cgroup/unified`, systemd's hybrid layout). Panics if there is none: the test must
/// not pass on a machine where `--cgroup` cannot work.
fn cgroup2_mount() -> PathBuf {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("/proc/self/mountinfo");
    let mounts: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let mount = left.split_whitespace().nth(4)?;
            (right.split_whitespace().next() == Some("cgroup2")).then(|| PathBuf::from(mount))
        })
        .filter(|m| m.starts_with("/sys/fs/cgroup"))
        .collect();
    mounts
        .iter()
        .find(|m| m.as_path() == Path::new("/sys/fs/cgroup"))
        .or(mounts.first())
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "no cgroup v2 hierarchy is mounted at or under /sys/fs/cgroup, which \
                 `futexscope agent --cgroup` needs: boot with the unified hierarchy \
                 (systemd.unified_cgroup_hierarchy=1) or mount one \
                 (`mount -t cgroup2 none /sys/fs/cgroup/unified`)"
            )
        })
}

/// A cgroup directory created for the test, removed on drop (after the processes in it ended).
struct Cgroup(PathBuf);

impl Drop for Cgroup {
    fn drop(&mut self) {
        // An exited process leaves the cgroup a moment after it is reaped.
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::fs::remove_dir(&self.0).is_err() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The sum of `metric`'s samples for processes named `comm`.
fn sum(metrics: &str, metric: &str, comm: &str) -> f64 {
    let label = format!("comm=\"{comm}\"");
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")) && l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The process names of `metric`'s samples.
fn comms(metrics: &str, metric: &str) -> Vec<String> {
    let mut comms: Vec<String> = metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")))
        .filter_map(|l| Some(l.split_once("comm=\"")?.1.split_once('"')?.0.to_owned()))
        .collect();
    comms.sort();
    comms.dedup();
    comms
}

#[test]
#[ignore = "needs root"]
fn cgroup_counts_exactly_its_own_processes() {
    require_ebpf();
    let mount = cgroup2_mount();
    let tag = std::process::id() % 100_000;
    let cgroup = Cgroup(mount.join(format!("futexscope-test-{tag}")));
    std::fs::create_dir(&cgroup.0)
        .unwrap_or_else(|err| panic!("create cgroup {}: {err}", cgroup.0.display()));
    // A cgroup below it, whose processes are traced too (declared after: removed first).
    let nested = Cgroup(cgroup.0.join("nested"));
    std::fs::create_dir(&nested.0)
        .unwrap_or_else(|err| panic!("create cgroup {}: {err}", nested.0.display()));
    let dir = TempDir(std::env::temp_dir().join(format!("futexscope-agent-cgroup-{tag}")));
    std::fs::create_dir_all(&dir.0).expect("temp dir");
    // Copies of the workload with names no other process has.
    let (inside, below, outside) = (
        format!("fxg{tag}"),
        format!("fxn{tag}"),
        format!("fxo{tag}"),
    );
    for name in [&inside, &below, &outside] {
        std::fs::copy(env!("CARGO_BIN_EXE_futexscope-workload"), dir.0.join(name))
            .expect("copy the workload");
    }

    let port = free_port();
    let _agent = Reaper(vec![
        Command::new(futexscope_exe())
            .args(["agent", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--grace", "60s", "--cgroup"])
            .arg(&cgroup.0)
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the agent"),
    ]);
    assert!(
        eventually(Duration::from_secs(20), || http_get(port, "/healthz")).is_some(),
        "the agent did not answer /healthz"
    );

    // The shell moves itself into the cgroup, then becomes the workload.
    for (group, name, waits) in [(&cgroup.0, &inside, "300"), (&nested.0, &below, "70")] {
        let status = Command::new("sh")
            .arg("-c")
            .arg(r#"echo $$ > "$1/cgroup.procs" && exec "$2" eagain "$3""#)
            .args(["sh", &group.display().to_string()])
            .arg(dir.0.join(name))
            .arg(waits)
            .stdout(Stdio::null())
            .status()
            .expect("run the workload in the cgroup");
        assert!(
            status.success(),
            "the workload in {} failed",
            group.display()
        );
    }
    let status = Command::new(dir.0.join(&outside))
        .args(["eagain", "200"])
        .stdout(Stdio::null())
        .status()
        .expect("run the workload outside the cgroup");
    assert!(status.success(), "the workload outside the cgroup failed");

    let mut last = String::new();
    let counted = eventually(Duration::from_secs(10), || {
        last = http_get(port, "/metrics")?;
        (sum(&last, "futexscope_value_changed_total", &inside) == 300.0
            && sum(&last, "futexscope_value_changed_total", &below) == 70.0)
            .then_some(())
    });
    assert!(
        counted.is_some(),
        "300 + 70 EAGAIN waits not counted:\n{last}"
    );
    assert_eq!(sum(&last, "futexscope_waits_total", &below), 70.0, "{last}");
    assert_eq!(
        sum(&last, "futexscope_waits_total", &inside),
        300.0,
        "{last}"
    );
    assert_eq!(
        sum(&last, "futexscope_waits_total", &outside),
        0.0,
        "{last}"
    );
    // Only the cgroups' processes: the workloads and the shells they started as.
    let seen = comms(&last, "futexscope_waits_total");
    assert!(
        seen.iter()
            .all(|c| *c == inside || *c == below || c == "sh"),
        "processes outside the cgroup were traced: {seen:?}"
    );
    assert!(
        last.contains(&format!("cgroup {}", cgroup.0.display())),
        "the info metric names the cgroup:\n{last}"
    );
}
