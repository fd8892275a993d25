//! `cargo xtask setup`: installs what the project needs and is missing, and says what it does.
//! Run twice, the second run changes nothing.

use std::process::Command;

use anyhow::{Context, bail};

/// Debian packages: LLVM 22 (bpf-linker links against it; it must match rustc's LLVM), what
/// bpf-linker's build links, and the tools the tests use as independent witnesses: bpftrace,
/// perf (`linux-perf`), readelf (`binutils`); `util-linux` gives `unshare` and `setpriv`,
/// `gcc` builds the C test programs, `valgrind` counts instructions for the benchmarks;
/// `python3` and `xz-utils` are real programs the tests trace; `qt6-base-dev` is the Qt peer of
/// the semaphore benchmark. Prometheus and VictoriaMetrics come apart, from Debian 13 (see
/// [`prometheus`], [`victoria_metrics`]).
const DEBIAN_PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
    "bpftrace",
    "linux-perf",
    "binutils",
    "util-linux",
    "gcc",
    "python3",
    "xz-utils",
    "valgrind",
    // sem-bench's `qt` peer (semaphore/bench): Qt 6's QtCore headers and library, found with
    // pkg-config, and g++ for its C++ shim.
    "qt6-base-dev",
    "pkg-config",
    "g++",
];

/// The bpf-linker release built against Debian's LLVM 22.
const BPF_LINKER_VERSION: &str = "0.13.0";

/// The toolchain that builds the eBPF programs (`-Z build-std` needs nightly).
const EBPF_TOOLCHAIN: &str = "nightly";

/// Installs whatever is missing.
pub fn run() -> anyhow::Result<()> {
    println!("setup: checking what futexscope needs");
    debian_packages()?;
    rust_src()?;
    bpf_linker()?;
    prometheus()?;
    victoria_metrics()?;
    println!("setup: everything is in place");
    Ok(())
}

fn debian_packages() -> anyhow::Result<()> {
    let missing: Vec<&str> = DEBIAN_PACKAGES
        .iter()
        .copied()
        .filter(|p| !deb_installed(p))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let install = format!("apt-get update && apt-get install -y {}", missing.join(" "));
    if which("apt-get").is_none() {
        bail!(
            "missing Debian packages {} and there is no apt-get here: install their equivalents by hand",
            missing.join(", ")
        );
    }
    if !super::is_root() {
        bail!(
            "missing Debian packages {}: run as root, or by hand: sudo sh -c '{install}'",
            missing.join(", ")
        );
    }
    println!("setup: installing Debian packages {}", missing.join(" "));
    super::run(Command::new("apt-get").arg("update").arg("-q"))?;
    super::run(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

fn deb_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .is_ok_and(|out| {
            out.status.success()
                && String::from_utf8_lossy(&out.stdout).contains("install ok installed")
        })
}

fn rust_src() -> anyhow::Result<()> {
    let installed = Command::new("rustup")
        .args([
            "component",
            "list",
            "--installed",
            "--toolchain",
            EBPF_TOOLCHAIN,
        ])
        .output()
        .context("cannot run `rustup`: futexscope needs rustup with a nightly toolchain")?;
    if !installed.status.success() {
        bail!(
            "the `{EBPF_TOOLCHAIN}` toolchain is missing (it builds the eBPF programs): run `rustup toolchain install {EBPF_TOOLCHAIN} --component rust-src`"
        );
    }
    if String::from_utf8_lossy(&installed.stdout)
        .lines()
        .any(|l| l.starts_with("rust-src"))
    {
        return Ok(());
    }
    println!("setup: adding rust-src to the {EBPF_TOOLCHAIN} toolchain");
    super::run(Command::new("rustup").args([
        "component",
        "add",
        "rust-src",
        "--toolchain",
        EBPF_TOOLCHAIN,
    ]))
}

fn bpf_linker() -> anyhow::Result<()> {
    let version = Command::new("bpf-linker").arg("--version").output();
    if let Ok(out) = &version
        && String::from_utf8_lossy(&out.stdout).contains(BPF_LINKER_VERSION)
    {
        return Ok(());
    }
    println!("setup: building bpf-linker {BPF_LINKER_VERSION} against LLVM 22 (about a minute)");
    super::run(
        Command::new(env!("CARGO"))
            .args([
                "install",
                "bpf-linker",
                "--locked",
                "--version",
                BPF_LINKER_VERSION,
            ])
            .args(["--no-default-features", "--features", "llvm-22"])
            .env("LLVM_PREFIX", "/usr/lib/llvm-22"),
    )
}

/// The Prometheus server the agent tests start: Debian 13's package, whose 2.53 has the native
/// histograms that Debian 12's 2.42 lacks (Debian builds it without the OTLP receiver).
fn prometheus() -> anyhow::Result<()> {
    debian13_package(
        "prometheus",
        PROMETHEUS_VERSION,
        PROMETHEUS_DIR,
        "usr/bin/prometheus",
    )
}

/// The OTLP receiver the agent's OTLP tests push to: Debian 13's VictoriaMetrics, which
/// ingests OTLP/HTTP metrics and answers Prometheus's query API (Debian's Prometheus has its
/// OTLP receiver disabled).
fn victoria_metrics() -> anyhow::Result<()> {
    debian13_package(
        "victoria-metrics",
        VICTORIA_METRICS_VERSION,
        VICTORIA_METRICS_DIR,
        "usr/bin/victoria-metrics",
    )
}

/// Unpacks Debian 13's `package` at `version` under `dir`, unless `dir/binary` is there. It is
/// unpacked, not installed: apt fetches and verifies it (signed release, checksums) with a
/// sources list and package lists of its own, so the system's apt configuration and packages
/// stay Debian 12's.
fn debian13_package(package: &str, version: &str, dir: &str, binary: &str) -> anyhow::Result<()> {
    let binary = std::path::Path::new(dir).join(binary);
    if binary.is_file() {
        return Ok(());
    }
    if !super::is_root() {
        bail!(
            "{package} {version} for the agent tests is missing: run `cargo xtask setup` as root"
        );
    }
    println!("setup: fetching Debian 13's {package} {version} into {dir}");
    let work =
        std::env::temp_dir().join(format!("futexscope-setup-{package}-{}", std::process::id()));
    std::fs::create_dir_all(work.join("lists/partial"))?;
    let sources = work.join("trixie.list");
    std::fs::write(
        &sources,
        "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main\n",
    )?;
    let apt = |verb: &[&str]| {
        let mut cmd = Command::new("apt-get");
        cmd.arg("-q")
            .arg(format!("-oDir::Etc::SourceList={}", sources.display()))
            .arg("-oDir::Etc::SourceParts=-")
            .arg(format!(
                "-oDir::State::Lists={}",
                work.join("lists").display()
            ))
            .arg("-oAPT::Sandbox::User=root")
            .arg("-oAcquire::Languages=none")
            .args(verb);
        cmd
    };
    super::run(&mut apt(&["update"]))?;
    // `download` writes into the working directory, which `super::run` would set to the
    // workspace.
    let download = format!("{package}={version}");
    let status = apt(&["download", &download]).current_dir(&work).status()?;
    if !status.success() {
        bail!("`apt-get download {download}` from Debian 13 failed ({status})");
    }
    let deb = std::fs::read_dir(&work)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .context("apt-get download left no .deb")?;
    // Unpacked beside, then renamed: an interrupted run leaves no half-written binary.
    let unpacked = work.join("unpacked");
    super::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked))?;
    let _ = std::fs::remove_dir_all(dir);
    if let Some(parent) = std::path::Path::new(dir).parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::rename(&unpacked, dir)
        .or_else(|_| super::run(Command::new("cp").arg("-a").arg(&unpacked).arg(dir)))?;
    let _ = std::fs::remove_dir_all(&work);
    if !binary.is_file() {
        bail!("{} is not in Debian's {package} package", binary.display());
    }
    Ok(())
}

/// The Debian 13 version of Prometheus the agent tests run.
const PROMETHEUS_VERSION: &str = "2.53.3+ds1-2";

/// Where [`prometheus`] unpacks it; the tests read the same path.
const PROMETHEUS_DIR: &str = "/opt/futexscope-test/prometheus-2.53";

/// The Debian 13 version of VictoriaMetrics the OTLP tests push to.
const VICTORIA_METRICS_VERSION: &str = "1.112.0+ds1-2";

/// Where [`victoria_metrics`] unpacks it; the tests read the same path.
const VICTORIA_METRICS_DIR: &str = "/opt/futexscope-test/victoria-metrics-1.112";

fn which(program: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| std::path::Path::new(dir).join(program))
        .find(|p| p.is_file())
}
