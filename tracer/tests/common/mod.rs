//! Helpers shared by the integration tests (the tracer's, and by `#[path]` those of
//! `test/integration-test`).

/// Panics, naming what is missing, unless this process may load eBPF programs. Every test that
/// calls it is `#[ignore = "needs root"]`: a run without root lists it as ignored, and
/// `cargo xtask test` runs it as root (`-- --include-ignored`), where it must pass.
pub fn require_ebpf() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    assert!(
        root,
        "this test loads eBPF and needs root (or CAP_BPF and CAP_PERFMON): run it as root, \
         e.g. `sudo -E cargo xtask test`"
    );
    assert!(
        std::path::Path::new("/sys/kernel/btf/vmlinux").exists(),
        "this test loads eBPF: the kernel has no BTF/BPF support (no /sys/kernel/btf/vmlinux)"
    );
}

/// A copy of an executable that the `nobody` user can run, removed on drop. The checkout that
/// holds the original may sit in a directory only its owner can enter (a clone made in a
/// `mktemp -d` directory is mode 0700), where exec as `nobody` fails with EACCES.
#[allow(dead_code, reason = "only the tests that drop to `nobody` use it")]
pub struct NobodyCopy {
    dir: std::path::PathBuf,
    /// The copy, in a fresh world-readable directory under the system's temporary directory.
    pub path: std::path::PathBuf,
}

#[allow(dead_code, reason = "only the tests that drop to `nobody` use it")]
impl NobodyCopy {
    /// Copies `binary` into a new directory that everyone may enter, with mode 0755.
    pub fn of(binary: &str) -> NobodyCopy {
        use std::os::unix::fs::PermissionsExt;
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        // Relaxed: only a unique number per copy within this process.
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("futexscope-nobody-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create a directory for the copy");
        let open = std::fs::Permissions::from_mode(0o755);
        std::fs::set_permissions(&dir, open.clone()).expect("open the directory to everyone");
        let name = std::path::Path::new(binary)
            .file_name()
            .expect("a file name");
        let path = dir.join(name);
        std::fs::copy(binary, &path).expect("copy the executable");
        std::fs::set_permissions(&path, open).expect("make the copy executable by everyone");
        NobodyCopy { dir, path }
    }
}

impl Drop for NobodyCopy {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Compiles the C program `source` into `binary` with `cc` and `flags` (before `-o`); fails the
/// test if it does not compile.
#[allow(dead_code, reason = "only the tests that trace a C program use it")]
pub fn compile_c(source: &std::path::Path, binary: &std::path::Path, flags: &[&str]) {
    let status = std::process::Command::new("cc")
        .args(flags)
        .arg("-o")
        .arg(binary)
        .arg(source)
        .status()
        .expect("run cc");
    assert!(status.success(), "cc failed on {}", source.display());
}
