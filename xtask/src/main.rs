//! futexscope's build and test automation. `cargo xtask --help` lists the tasks.

mod kernel_matrix;
mod setup;

use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Command, Stdio},
};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

/// Build and test automation for futexscope.
#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what the project needs and is missing: Debian packages, the nightly toolchain's
    /// rust-src, bpf-linker. Idempotent.
    Setup,
    /// Set up if needed, build, and trace the built-in demo workload for a few seconds.
    Demo {
        /// How long to trace, in seconds.
        #[arg(long, default_value_t = 5)]
        seconds: u32,
    },
    /// Set up if needed, then `cargo fmt --check`, clippy and every test, including the
    /// root-only eBPF tests (`#[ignore = "needs root"]`, run when root; under `CI=true` not
    /// being root is a failure) and the semaphore's model checking.
    Test,
    /// Boot Debian's 6.1, 6.12 and 6.12-rt kernels under QEMU, run `futexscope kernel-report`
    /// in each and print the matrix and the differences from the host kernel.
    KernelMatrix {
        /// Run the short battery (checks the machinery; figures are coarse).
        #[arg(long)]
        quick: bool,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().task {
        Task::Setup => setup::run(),
        Task::Demo { seconds } => demo(seconds),
        Task::Test => test(),
        Task::KernelMatrix { quick } => kernel_matrix::run(quick),
    }
}

fn demo(seconds: u32) -> anyhow::Result<()> {
    setup::run()?;
    cargo(&["build", "--release", "-p", "futexscope"])?;
    let futexscope = workspace_root().join("target/release/futexscope");
    run(Command::new(&futexscope).args(["demo", "--duration", &seconds.to_string()]))
}

fn test() -> anyhow::Result<()> {
    setup::run()?;
    let ebpf_manifest = workspace_root().join("probes/ebpf/Cargo.toml");
    let ebpf_manifest = ebpf_manifest.to_str().context("non-UTF-8 path")?;
    step("format");
    cargo(&["fmt", "--all", "--check"])?;
    cargo(&["fmt", "--manifest-path", ebpf_manifest, "--check"])?;
    step("clippy");
    // The workspace, then the semaphore with markers compiled out and in its portable form.
    for packages_and_features in [
        &["--workspace"][..],
        &["-p", "futexscope-semaphore", "--no-default-features"],
        &["-p", "futexscope-semaphore", "--features", "portable"],
    ] {
        let mut args = vec!["clippy", "--all-targets"];
        args.extend(packages_and_features);
        args.extend(["--", "-D", "warnings"]);
        cargo(&args)?;
    }
    run(Command::new("cargo").args([
        "+nightly",
        "clippy",
        "--manifest-path",
        ebpf_manifest,
        "--release",
        "--target",
        "bpfel-unknown-none",
        "-Z",
        "build-std=core",
        "--",
        "-D",
        "warnings",
    ]))?;
    // The integration tests in test/integration-test run the `futexscope` binary, which cargo
    // builds only for the tracer's own tests.
    step("binaries the tests run");
    cargo(&["build", "--workspace", "--bins"])?;
    // An optimized build of the marker workload, which the tracer's release-markers test runs.
    cargo(&[
        "build",
        "--release",
        "-p",
        "futexscope-semaphore",
        "--example",
        "marker-workload",
    ])?;
    step("tests");
    // The tests that load eBPF or attach uprobes are `#[ignore = "needs root"]`, and no other
    // test is ignored: as root they all run, and must pass.
    let root = is_root();
    if !root && std::env::var("CI").is_ok_and(|v| v == "true") {
        bail!(
            "CI=true but not root: in CI every root-only test (`#[ignore = \"needs root\"]`) \
             must run; run `cargo xtask test` as root"
        );
    }
    let harness: &[&str] = if root {
        &["--", "--include-ignored"]
    } else {
        &[]
    };
    let mut totals = TestTotals::default();
    totals.run(&[&["test", "--workspace"], harness].concat(), &[])?;
    step("tests with markers compiled out");
    totals.run(
        &[
            &[
                "test",
                "-p",
                "futexscope-semaphore",
                "--no-default-features",
            ],
            harness,
        ]
        .concat(),
        &[],
    )?;
    step("tests of the portable (Mutex + Condvar) semaphore");
    totals.run(
        &[
            &[
                "test",
                "-p",
                "futexscope-semaphore",
                "--features",
                "portable",
            ],
            harness,
        ]
        .concat(),
        &[],
    )?;
    step("marker notes of an optimized (release) build");
    // What users ship: inlined copies of the marked paths, and dropped code whose notes must
    // go with it. The notes themselves, then bpftrace and perf counting them.
    totals.run(
        &[
            &[
                "test",
                "--release",
                "-p",
                "futexscope-semaphore",
                "--test",
                "markers",
                "--test",
                "markers_tracers",
            ],
            harness,
        ]
        .concat(),
        &[],
    )?;
    step("model checking the semaphore with loom");
    // LOOM_MAX_PREEMPTIONS=2 takes about 20 s here; 3 (about 9 min) is the thorough setting.
    let preemptions = std::env::var("LOOM_MAX_PREEMPTIONS").unwrap_or_else(|_| "2".into());
    totals.run(
        &[
            "test",
            "--release",
            "-p",
            "futexscope-semaphore",
            "--test",
            "loom",
        ],
        &[
            ("RUSTFLAGS", "--cfg loom"),
            ("LOOM_MAX_PREEMPTIONS", &preemptions),
            ("CARGO_TARGET_DIR", "target/loom"),
        ],
    )?;
    println!("\nall checks passed");
    if totals.ignored > 0 {
        println!(
            "note: {} root-only tests did not run (not root); `sudo -E cargo xtask test` runs them",
            totals.ignored
        );
    }
    println!(
        "tests: {} passed, {} failed, {} skipped",
        totals.passed, totals.failed, totals.ignored
    );
    Ok(())
}

/// Test counts summed over several `cargo test` runs, for one closing line.
#[derive(Default)]
struct TestTotals {
    passed: u64,
    failed: u64,
    ignored: u64,
}

impl TestTotals {
    /// Runs `cargo ARGS` with environment `envs`, echoing its output and adding up its
    /// `test result:` lines.
    fn run(&mut self, args: &[&str], envs: &[(&str, &str)]) -> anyhow::Result<()> {
        let mut cmd = Command::new(env!("CARGO"));
        cmd.args(args)
            .envs(envs.iter().copied())
            .current_dir(workspace_root())
            .stdout(Stdio::piped());
        let shown_envs: String = envs.iter().map(|(k, v)| format!("{k}=\"{v}\" ")).collect();
        println!("$ {shown_envs}cargo {}", args.join(" "));
        let mut child = cmd.spawn().context("cannot run cargo")?;
        let stdout = child.stdout.take().context("cargo's stdout")?;
        for line in BufReader::new(stdout).lines() {
            let line = line?;
            println!("{line}");
            if let Some(result) = line.strip_prefix("test result: ") {
                self.add(result);
            }
        }
        let status = child.wait()?;
        if !status.success() {
            bail!("`cargo {}` failed ({status})", args.join(" "));
        }
        Ok(())
    }

    /// Adds the counts of one `ok. 3 passed; 0 failed; 1 ignored; ...` summary.
    fn add(&mut self, summary: &str) {
        for part in summary.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(label), Some(count)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(count) = count.parse::<u64>() else {
                continue;
            };
            match label {
                "passed" => self.passed += count,
                "failed" => self.failed += count,
                "ignored" => self.ignored += count,
                _ => {}
            }
        }
    }
}

fn step(name: &str) {
    println!("\n== {name}");
}

/// Runs `cargo ARGS` in the workspace root.
fn cargo(args: &[&str]) -> anyhow::Result<()> {
    run(Command::new(env!("CARGO")).args(args))
}

/// Runs `cmd` in the workspace root, echoing it; fails if it fails.
fn run(cmd: &mut Command) -> anyhow::Result<()> {
    cmd.current_dir(workspace_root());
    let shown = format!(
        "{} {}",
        cmd.get_program().to_string_lossy(),
        cmd.get_args()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!("$ {shown}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot run `{shown}`"))?;
    if !status.success() {
        bail!("`{shown}` failed ({status})");
    }
    Ok(())
}

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|uids| uids.split_whitespace().nth(1).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::TestTotals;

    #[test]
    fn adds_up_cargo_test_summaries() {
        let mut totals = TestTotals::default();
        totals.add(
            "ok. 3 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s",
        );
        totals.add(
            "FAILED. 2 passed; 1 failed; 0 ignored; 0 measured; 5 filtered out; finished in 1s",
        );
        assert_eq!((totals.passed, totals.failed, totals.ignored), (5, 1, 1));
    }
}
