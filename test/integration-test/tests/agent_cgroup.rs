//! `futexscope agent --cgroup DIR` end to end: workloads moved into a fresh cgroup v2
//! directory and into a cgroup below it are counted exactly, and a workload outside them not
//! at all; the same for an agent in its own cgroup namespace (as in a container) given the
//! cgroup as it sees it. The agent's `/metrics` is read directly (plain HTTP), no Prometheus
//! needed.

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

/// Runs `workload eagain WAITS` after moving it into cgroup `group` (a directory; `None`:
/// where this test is).
fn run_in(group: Option<&Path>, workload: &Path, waits: &str) {
    let mut command = match group {
        // The shell moves itself into the cgroup, then becomes the workload.
        Some(group) => {
            let mut sh = Command::new("sh");
            sh.arg("-c")
                .arg(r#"echo $$ > "$1/cgroup.procs" && exec "$2" eagain "$3""#)
                .args(["sh", &group.display().to_string()])
                .arg(workload)
                .arg(waits);
            sh
        }
        None => {
            let mut direct = Command::new(workload);
            direct.args(["eagain", waits]);
            direct
        }
    };
    let status = command
        .stdout(Stdio::null())
        .status()
        .expect("run the workload");
    assert!(status.success(), "the workload in {group:?} failed");
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

    run_in(Some(&cgroup.0), &dir.0.join(&inside), "300");
    run_in(Some(&nested.0), &dir.0.join(&below), "70");
    run_in(None, &dir.0.join(&outside), "200");

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

#[test]
#[ignore = "needs root"]
fn cgroup_as_seen_inside_a_cgroup_namespace_counts_exactly_its_own_processes() {
    require_ebpf();
    let mount = cgroup2_mount();
    let tag = std::process::id() % 100_000;
    // The namespace's root, one level below the real root; the agent sees it as `/`.
    let root = Cgroup(mount.join(format!("futexscope-ns-{tag}")));
    std::fs::create_dir(&root.0)
        .unwrap_or_else(|err| panic!("create cgroup {}: {err}", root.0.display()));
    let (child, sibling) = (Cgroup(root.0.join("child")), Cgroup(root.0.join("sibling")));
    for group in [&child, &sibling] {
        std::fs::create_dir(&group.0)
            .unwrap_or_else(|err| panic!("create cgroup {}: {err}", group.0.display()));
    }
    let dir = TempDir(std::env::temp_dir().join(format!("futexscope-agent-cgroupns-{tag}")));
    std::fs::create_dir_all(&dir.0).expect("temp dir");
    let names = ["fxi", "fxs", "fxr", "fxh"].map(|prefix| {
        let name = format!("{prefix}{tag}");
        std::fs::copy(env!("CARGO_BIN_EXE_futexscope-workload"), dir.0.join(&name))
            .expect("copy the workload");
        name
    });
    let [inside, in_sibling, in_root, on_host] = &names;

    // The shell moves itself into the namespace's root cgroup, then unshares the cgroup and
    // mount namespaces and mounts cgroup2 privately: there the hierarchy starts at that root.
    let port = free_port();
    let _agent = Reaper(vec![
        Command::new("sh")
            .arg("-c")
            .arg(
                r#"echo $$ > "$1/cgroup.procs" && shift && exec unshare --cgroup --mount sh -c 'mount -t cgroup2 none /sys/fs/cgroup && exec "$@"' sh "$@""#,
            )
            .args(["sh", &root.0.display().to_string(), futexscope_exe()])
            .args(["agent", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--grace", "60s", "--cgroup", "/child"])
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the agent in its namespaces"),
    ]);
    assert!(
        eventually(Duration::from_secs(20), || http_get(port, "/healthz")).is_some(),
        "the agent did not answer /healthz"
    );

    run_in(Some(&child.0), &dir.0.join(inside), "300");
    run_in(Some(&sibling.0), &dir.0.join(in_sibling), "200");
    run_in(Some(&root.0), &dir.0.join(in_root), "100");
    run_in(None, &dir.0.join(on_host), "50");

    let mut last = String::new();
    let counted = eventually(Duration::from_secs(10), || {
        last = http_get(port, "/metrics")?;
        (sum(&last, "futexscope_value_changed_total", inside) == 300.0).then_some(())
    });
    assert!(counted.is_some(), "300 EAGAIN waits not counted:\n{last}");
    assert_eq!(
        sum(&last, "futexscope_waits_total", inside),
        300.0,
        "{last}"
    );
    let seen = comms(&last, "futexscope_waits_total");
    assert!(
        seen.iter().all(|c| c == inside || c == "sh"),
        "processes outside /child were traced: {seen:?}"
    );
    assert!(
        last.contains("cgroup /child"),
        "the info metric names the cgroup as given:\n{last}"
    );
}
