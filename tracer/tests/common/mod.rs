//! Helpers shared by the tracer's integration tests.

/// Whether this process may load eBPF programs. When it may not: in CI (`CI=true`) this
/// panics, since a skipped eBPF test in CI is a failure; elsewhere it prints why and returns
/// false so the test skips.
pub fn ebpf_allowed() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let bpf = std::path::Path::new("/sys/kernel/btf/vmlinux").exists();
    if root && bpf {
        return true;
    }
    let why = if root {
        "the kernel has no BTF/BPF support"
    } else {
        "not running as root"
    };
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("eBPF test cannot run in CI: {why}");
    }
    eprintln!("SKIPPED eBPF test: {why} (run as root, e.g. `sudo -E cargo xtask test`)");
    false
}
