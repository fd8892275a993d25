//! `cargo xtask kernel-matrix`: boots Debian's kernels under QEMU (software emulation, TCG) with
//! `futexscope` in a busybox initramfs, runs `futexscope kernel-report` in each, and prints the
//! matrix and each kernel's differences from the host's.
//!
//! Everything it needs comes from Debian's archive through the host's own apt configuration:
//! qemu-system-x86 is installed when missing; the kernel images and busybox-static are only
//! downloaded (`apt-get download`) into `target/kernel-matrix/cache/` and unpacked there with
//! `dpkg-deb`, never installed. Bookworm carries both the 6.1 kernels and, in
//! bookworm-security, the 6.12 ones, so no other suite (such as backports) is added.

use std::{
    fs,
    io::Read,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};

/// The Debian kernels of the matrix: a label and the shape of the package name. Each is the
/// generic `amd64` flavour (the `rt` one is the same configuration with PREEMPT_RT), so 6.12
/// against 6.12-rt isolates PREEMPT_RT.
const KERNELS: &[GuestKernel] = &[
    GuestKernel {
        label: "6.1",
        prefix: "linux-image-6.1.0-",
        suffix: "-amd64",
    },
    GuestKernel {
        label: "6.12",
        prefix: "linux-image-6.12.",
        suffix: "+deb12-amd64",
    },
    GuestKernel {
        label: "6.12-rt",
        prefix: "linux-image-6.12.",
        suffix: "+deb12-rt-amd64",
    },
];

/// How long one guest may run (boot, the whole battery under emulation, power-off).
const GUEST_TIMEOUT: Duration = Duration::from_secs(420);

/// Marks the report on the guest's data port.
const BEGIN_MARK: &str = "==futexscope-report-begin==";
/// Marks the end of the report, followed by `kernel-report`'s exit status.
const END_MARK: &str = "==futexscope-report-end==";

/// A Debian kernel package family.
struct GuestKernel {
    /// The column name in the matrix.
    label: &'static str,
    /// Package name before the version number.
    prefix: &'static str,
    /// Package name after the version number.
    suffix: &'static str,
}

/// Runs the whole matrix. `quick` runs the short battery (for a fast check of the machinery).
pub fn run(quick: bool) -> anyhow::Result<()> {
    if !super::is_root() {
        bail!(
            "`cargo xtask kernel-matrix` installs qemu and loads eBPF on the host: run it as root"
        );
    }
    let out_dir = super::workspace_root().join("target/kernel-matrix");
    let cache = out_dir.join("cache");
    fs::create_dir_all(&cache).with_context(|| format!("cannot create {}", cache.display()))?;
    let out_dir = out_dir.canonicalize()?;
    let cache = cache.canonicalize()?;

    super::setup::run()?;
    ensure_qemu()?;
    super::cargo(&["build", "--release", "-p", "futexscope"])?;
    let futexscope = out_dir.join("../release/futexscope").canonicalize()?;

    if !downloadable("busybox-static") {
        println!("kernel-matrix: apt does not know busybox-static yet; refreshing its lists");
        apt_update()?;
    }
    let busybox = unpack_busybox(&cache)?;
    let initramfs = out_dir.join("initramfs.cpio");
    build_initramfs(&initramfs, &busybox, &futexscope, quick)?;

    let host_json = out_dir.join("host.json");
    println!("kernel-matrix: running the battery on the host kernel");
    let mut host_run = Command::new(&futexscope);
    host_run.arg("kernel-report").arg("--json").arg(&host_json);
    if quick {
        host_run.arg("--quick");
    }
    super::run(&mut host_run)?;
    let mut reports = vec![("host".to_string(), host_json.clone())];

    let mut failures = Vec::new();
    for kernel in KERNELS {
        let result = package_name(kernel)
            .and_then(|package| unpack_kernel(&cache, &package))
            .and_then(|vmlinuz| boot(kernel.label, &vmlinuz, &initramfs, &out_dir));
        match result {
            Ok(json) => reports.push((kernel.label.to_string(), json)),
            Err(err) => {
                eprintln!("kernel-matrix: {}: {err:#}", kernel.label);
                failures.push(kernel.label);
            }
        }
    }

    let paths: Vec<&Path> = reports.iter().map(|(_, p)| p.as_path()).collect();
    println!(
        "\nkernel-matrix: every fact and figure, host first ({})",
        labels(&reports)
    );
    super::run(
        Command::new(&futexscope)
            .arg("kernel-diff")
            .arg("--all")
            .args(&paths),
    )?;
    for (label, path) in &reports[1..] {
        println!("\nkernel-matrix: {label} against the host");
        super::run(
            Command::new(&futexscope)
                .arg("kernel-diff")
                .arg(&host_json)
                .arg(path),
        )?;
    }
    // Both emulated by the same QEMU: their timing figures are comparable with each other.
    let guest = |label: &str| reports.iter().find(|(l, _)| l == label).map(|(_, p)| p);
    if let (Some(plain), Some(rt)) = (guest("6.12"), guest("6.12-rt")) {
        println!("\nkernel-matrix: 6.12-rt against 6.12 (both emulated alike)");
        super::run(
            Command::new(&futexscope)
                .arg("kernel-diff")
                .arg(plain)
                .arg(rt),
        )?;
    }
    if !failures.is_empty() {
        bail!(
            "no report from {} (see the messages above)",
            failures.join(", ")
        );
    }
    println!("\nkernel-matrix: reports are in {}", out_dir.display());
    Ok(())
}

fn labels(reports: &[(String, PathBuf)]) -> String {
    reports
        .iter()
        .map(|(l, _)| l.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Installs qemu-system-x86 when `qemu-system-x86_64` is missing.
fn ensure_qemu() -> anyhow::Result<()> {
    if Command::new("qemu-system-x86_64")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
    {
        return Ok(());
    }
    println!("kernel-matrix: installing Debian's qemu-system-x86 (qemu-system-x86_64 is missing)");
    apt_update()?;
    super::run(
        Command::new("apt-get")
            .args([
                "install",
                "-y",
                "-q",
                "--no-install-recommends",
                "qemu-system-x86",
            ])
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

fn apt_update() -> anyhow::Result<()> {
    super::run(Command::new("apt-get").args(["update", "-q"]))
}

/// The newest package of `kernel`'s family that apt knows, refreshing apt's lists once when
/// it knows none (a fresh machine).
fn package_name(kernel: &GuestKernel) -> anyhow::Result<String> {
    if let Some(name) = newest_package(kernel)? {
        return Ok(name);
    }
    println!(
        "kernel-matrix: apt knows no {}*{} package; refreshing its lists",
        kernel.prefix, kernel.suffix
    );
    apt_update()?;
    newest_package(kernel)?.with_context(|| {
        format!(
            "Debian's archive offers no {}<version>{} package: check /etc/apt/sources.list has bookworm and bookworm-security",
            kernel.prefix, kernel.suffix
        )
    })
}

fn newest_package(kernel: &GuestKernel) -> anyhow::Result<Option<String>> {
    let out = Command::new("apt-cache")
        .args(["pkgnames", kernel.prefix])
        .output()
        .context("cannot run `apt-cache`")?;
    let names = String::from_utf8_lossy(&out.stdout);
    let mut best: Option<(u32, String)> = None;
    for name in names.lines() {
        let Some(number) = name
            .strip_prefix(kernel.prefix)
            .and_then(|rest| rest.strip_suffix(kernel.suffix))
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if best.as_ref().is_none_or(|(b, _)| number > *b) && downloadable(name) {
            best = Some((number, name.to_string()));
        }
    }
    Ok(best.map(|(_, name)| name))
}

fn downloadable(package: &str) -> bool {
    Command::new("apt-cache")
        .args(["show", "--no-all-versions", package])
        .output()
        .is_ok_and(|out| {
            out.status.success() && String::from_utf8_lossy(&out.stdout).contains("\nFilename:")
        })
}

/// Downloads `package`'s .deb into `cache` unless it is there already; returns its path.
fn download(cache: &Path, package: &str) -> anyhow::Result<PathBuf> {
    let find = || -> anyhow::Result<Option<PathBuf>> {
        for entry in fs::read_dir(cache)? {
            let path = entry?.path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            if name.starts_with(&format!("{package}_")) && name.ends_with(".deb") {
                return Ok(Some(path));
            }
        }
        Ok(None)
    };
    if let Some(path) = find()? {
        return Ok(path);
    }
    println!(
        "kernel-matrix: downloading {package} (not installed: unpacked under {})",
        cache.display()
    );
    // `apt-get download` saves into its working directory; root downloads need no sandbox
    // user (the cache belongs to root, so apt's `_apt` user could not write there).
    let status = Command::new("apt-get")
        .args(["download", "-q", "-o", "APT::Sandbox::User=root", package])
        .current_dir(cache)
        .status()
        .context("cannot run `apt-get`")?;
    if !status.success() {
        bail!("`apt-get download {package}` failed ({status})");
    }
    find()?.with_context(|| {
        format!(
            "`apt-get download {package}` left no .deb in {}",
            cache.display()
        )
    })
}

/// Unpacks `package`'s `./boot` into `cache/<package>/` and returns the kernel image.
fn unpack_kernel(cache: &Path, package: &str) -> anyhow::Result<PathBuf> {
    let dir = cache.join(package);
    let vmlinuz = find_vmlinuz(&dir);
    if let Some(path) = vmlinuz {
        return Ok(path);
    }
    let deb = download(cache, package)?;
    unpack(&deb, &dir, "./boot/")?;
    find_vmlinuz(&dir).with_context(|| format!("{} holds no boot/vmlinuz-*", deb.display()))
}

fn find_vmlinuz(dir: &Path) -> Option<PathBuf> {
    fs::read_dir(dir.join("boot"))
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("vmlinuz-"))
        })
}

/// Extracts the members of `deb` under `member` into `dir` (`dpkg-deb --fsys-tarfile | tar`).
fn unpack(deb: &Path, dir: &Path, member: &str) -> anyhow::Result<()> {
    fs::create_dir_all(dir)?;
    let mut dpkg = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(deb)
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot run `dpkg-deb`")?;
    let tar_in = dpkg.stdout.take().context("dpkg-deb's stdout")?;
    let status = Command::new("tar")
        .args(["-x", "-C"])
        .arg(dir)
        .args(["--wildcards", &format!("{member}*")])
        .stdin(tar_in)
        .status()
        .context("cannot run `tar`")?;
    let dpkg_status = dpkg.wait()?;
    if !status.success() || !dpkg_status.success() {
        bail!("cannot unpack {} into {}", deb.display(), dir.display());
    }
    Ok(())
}

/// The static busybox from Debian's busybox-static package.
fn unpack_busybox(cache: &Path) -> anyhow::Result<PathBuf> {
    let dir = cache.join("busybox-static");
    let busybox = dir.join("bin/busybox");
    if !busybox.exists() {
        let deb = download(cache, "busybox-static")?;
        unpack(&deb, &dir, "./bin/")?;
    }
    Ok(busybox)
}

/// The guest's `/init`: mounts what the probes use, runs the battery, copies the report to
/// the second serial port between markers, powers off.
fn init_script(quick: bool) -> String {
    let quick = if quick { " --quick" } else { "" };
    format!(
        r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
mount -t bpf bpf /sys/fs/bpf 2>/dev/null
echo "guest: $(uname -r), $(nproc) CPUs; running futexscope kernel-report{quick}"
/bin/futexscope kernel-report --json /tmp/report.json{quick}
status=$?
{{ echo "{BEGIN_MARK}"; cat /tmp/report.json; echo; echo "{END_MARK} $status"; }} > /dev/ttyS1
poweroff -f
"#
    )
}

/// Writes a newc cpio archive with busybox, `/init`, futexscope and the libraries it loads.
fn build_initramfs(
    out: &Path,
    busybox: &Path,
    futexscope: &Path,
    quick: bool,
) -> anyhow::Result<()> {
    let mut cpio = Cpio::default();
    for dir in ["bin", "dev", "proc", "sys", "tmp", "sys/fs/bpf"] {
        cpio.dir(dir);
    }
    cpio.file("init", 0o755, init_script(quick).as_bytes());
    cpio.file("bin/busybox", 0o755, &fs::read(busybox)?);
    cpio.file("bin/futexscope", 0o755, &fs::read(futexscope)?);
    for lib in shared_libraries(futexscope)? {
        let inside = lib
            .to_str()
            .context("non-UTF-8 library path")?
            .trim_start_matches('/');
        let mut parent = String::new();
        for part in Path::new(inside).parent().into_iter().flat_map(Path::iter) {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(part.to_str().context("non-UTF-8 library path")?);
            cpio.dir(&parent);
        }
        // The library is stored as a regular file at the path the loader asks for, whatever
        // symlinks lead to it on the host.
        let bytes = fs::read(&lib).with_context(|| format!("cannot read {}", lib.display()))?;
        cpio.file(inside, 0o755, &bytes);
    }
    fs::write(out, cpio.finish()).with_context(|| format!("cannot write {}", out.display()))
}

/// The absolute paths `ldd` reports for `binary`, the dynamic loader included.
fn shared_libraries(binary: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .context("cannot run `ldd`")?;
    if !out.status.success() {
        bail!(
            "`ldd {}` failed: {}",
            binary.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let libs = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            // `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)` or `/lib64/ld-linux-x86-64.so.2 (0x…)`
            let path = line.split("=>").last()?.split_whitespace().next()?;
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect();
    Ok(libs)
}

/// A newc-format cpio archive being written (the format the kernel unpacks as initramfs).
#[derive(Default)]
struct Cpio {
    bytes: Vec<u8>,
    next_inode: u32,
    dirs: Vec<String>,
}

impl Cpio {
    fn dir(&mut self, path: &str) {
        if !self.dirs.iter().any(|d| d == path) {
            self.dirs.push(path.to_string());
            self.entry(path, 0o040_755, &[]);
        }
    }

    fn file(&mut self, path: &str, permissions: u32, data: &[u8]) {
        self.entry(path, 0o100_000 | permissions, data);
    }

    fn entry(&mut self, path: &str, mode: u32, data: &[u8]) {
        self.next_inode += 1;
        let nlink = if mode & 0o040_000 != 0 { 2 } else { 1 };
        let size = u32::try_from(data.len()).expect("initramfs members are smaller than 4 GiB");
        let name_size = u32::try_from(path.len() + 1).expect("short path");
        let fields = [
            self.next_inode,
            mode,
            0,
            0,
            nlink,
            0,
            size,
            0,
            0,
            0,
            0,
            name_size,
            0,
        ];
        self.bytes.extend_from_slice(b"070701");
        for field in fields {
            self.bytes
                .extend_from_slice(format!("{field:08x}").as_bytes());
        }
        self.bytes.extend_from_slice(path.as_bytes());
        self.bytes.push(0);
        self.pad();
        self.bytes.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.bytes.len().is_multiple_of(4) {
            self.bytes.push(0);
        }
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, &[]);
        self.bytes
    }
}

/// Boots `vmlinuz` with the initramfs, waits (bounded) for it to power off, and saves the
/// report it wrote as `<label>.json` in `out_dir`.
fn boot(label: &str, vmlinuz: &Path, initramfs: &Path, out_dir: &Path) -> anyhow::Result<PathBuf> {
    let console_log = out_dir.join(format!("{label}.console.log"));
    let data_port = out_dir.join(format!("{label}.serial"));
    let _ = fs::remove_file(&data_port);
    println!(
        "kernel-matrix: booting {} under qemu-system-x86_64 (TCG, 2 vCPUs; console in {})",
        vmlinuz.display(),
        console_log.display()
    );
    let started = Instant::now();
    let mut qemu = Command::new("qemu-system-x86_64")
        .args([
            "-accel",
            "tcg",
            "-smp",
            "2",
            "-m",
            "1024",
            "-nodefaults",
            "-display",
            "none",
        ])
        .args(["-no-reboot", "-serial"])
        .arg(format!("file:{}", console_log.display()))
        .arg("-serial")
        .arg(format!("file:{}", data_port.display()))
        .arg("-kernel")
        .arg(vmlinuz)
        .arg("-initrd")
        .arg(initramfs)
        .args(["-append", "console=ttyS0 panic=-1 quiet"])
        .stdin(Stdio::null())
        .spawn()
        .context("cannot start `qemu-system-x86_64`")?;
    loop {
        if let Some(status) = qemu.try_wait()? {
            if !status.success() {
                bail!(
                    "qemu exited with {status}; console in {}",
                    console_log.display()
                );
            }
            break;
        }
        if started.elapsed() > GUEST_TIMEOUT {
            qemu.kill()?;
            qemu.wait()?;
            bail!(
                "the guest did not power off within {} s; console in {}",
                GUEST_TIMEOUT.as_secs(),
                console_log.display()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    println!(
        "kernel-matrix: {label} done in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    let mut text = String::new();
    fs::File::open(&data_port)
        .with_context(|| format!("the guest wrote nothing to {}", data_port.display()))?
        .read_to_string(&mut text)?;
    let report = extract_report(&text).with_context(|| {
        format!(
            "no complete report from the guest; console in {}",
            console_log.display()
        )
    })?;
    let json = out_dir.join(format!("{label}.json"));
    fs::write(&json, report)?;
    Ok(json)
}

/// The report between the markers, if the guest finished it with exit status 0.
fn extract_report(text: &str) -> anyhow::Result<String> {
    let text = text.replace('\r', "");
    let start = text.find(BEGIN_MARK).context("no begin marker")? + BEGIN_MARK.len();
    let end = text.find(END_MARK).context("no end marker")?;
    let status = text[end + END_MARK.len()..]
        .split_whitespace()
        .next()
        .unwrap_or("?");
    if status != "0" {
        bail!("`futexscope kernel-report` exited with status {status} in the guest");
    }
    Ok(text[start..end].trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_is_taken_between_the_markers() {
        let text = format!("noise\r\n{BEGIN_MARK}\r\n{{\"a\": 1}}\r\n{END_MARK} 0\r\n");
        assert_eq!(extract_report(&text).unwrap(), "{\"a\": 1}");
        let failed = format!("{BEGIN_MARK}\n{{}}\n{END_MARK} 3\n");
        assert!(extract_report(&failed).is_err());
        assert!(extract_report("nothing").is_err());
    }

    #[test]
    fn cpio_entries_are_aligned_and_terminated() {
        let mut cpio = Cpio::default();
        cpio.dir("bin");
        cpio.file("bin/x", 0o755, b"hello");
        let bytes = cpio.finish();
        assert_eq!(bytes.len() % 4, 0);
        assert!(bytes.starts_with(b"070701"));
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains("bin/x\0"));
        assert!(text.contains("TRAILER!!!\0"));
    }
}
