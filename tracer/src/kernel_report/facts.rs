//! Facts about the running kernel, each found by asking the kernel itself: system calls are
//! detected by calling them with arguments they reject harmlessly (`ENOSYS` means absent).

use std::{path::Path, sync::atomic::AtomicU32};

use serde::{Deserialize, Serialize};

use super::sys;

/// Facts compared exactly between kernels.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Facts {
    /// `uname -r`.
    pub kernel_release: String,
    /// `uname -v` (build flags such as PREEMPT_RT show here).
    pub kernel_version: String,
    /// Whether the kernel is PREEMPT_RT (`/sys/kernel/realtime` or the version string).
    pub preempt_rt: bool,
    /// CPUs this process may run on.
    pub cpus: usize,
    /// `model name` from /proc/cpuinfo.
    pub cpu_model: String,
    /// Whether the CPU is QEMU's software-emulated one (TCG): timing figures are then the
    /// emulator's, not a machine's.
    pub emulated: bool,
    /// `futex_waitv(2)` exists (Linux 5.16).
    pub futex_waitv: bool,
    /// futex2 `futex_wake(2)` exists (Linux 6.7).
    pub futex2_wake: bool,
    /// futex2 `futex_wait(2)` exists (Linux 6.7).
    pub futex2_wait: bool,
    /// futex2 `futex_requeue(2)` exists (Linux 6.7).
    pub futex2_requeue: bool,
    /// FUTEX_WAKE_OP is accepted.
    pub futex_wake_op: bool,
    /// The default timer slack of a thread, from PR_GET_TIMERSLACK.
    pub default_timer_slack_ns: u64,
    /// The BPF hooks futexscope uses.
    pub bpf: BpfFacts,
}

/// Which BPF facilities the kernel offers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BpfFacts {
    /// The `bpf(2)` system call exists.
    pub bpf_syscall: bool,
    /// Kernel BTF is exported (`/sys/kernel/btf/vmlinux`).
    pub btf: bool,
    /// The uprobe perf event source exists (`/sys/bus/event_source/devices/uprobe`).
    pub uprobes: bool,
    /// The kprobe perf event source exists.
    pub kprobes: bool,
    /// futexscope's probes (raw tracepoints on sys_enter/sys_exit) loaded and attached.
    pub probes_loaded: bool,
    /// Why they did not, when they did not.
    pub probes_error: Option<String>,
}

/// Collects the facts; `probes_error` is why the probes did not load, if they did not.
pub fn collect(probes_error: Option<String>) -> Facts {
    let (release, version) = uname();
    let preempt_rt = std::fs::read_to_string("/sys/kernel/realtime").is_ok_and(|s| s.trim() == "1")
        || version.contains("PREEMPT_RT");
    let cpu_model = cpu_model();
    Facts {
        kernel_release: release,
        kernel_version: version,
        preempt_rt,
        cpus: sys::allowed_cpus().len(),
        emulated: cpu_model.starts_with("QEMU Virtual CPU"),
        cpu_model,
        futex_waitv: sys::futex_waitv_present(),
        futex2_wake: sys::futex2_wake_present(),
        futex2_wait: sys::futex2_wait_present(),
        futex2_requeue: sys::futex2_requeue_present(),
        futex_wake_op: futex_wake_op_accepted(),
        default_timer_slack_ns: sys::timer_slack(),
        bpf: BpfFacts {
            bpf_syscall: sys::bpf_syscall_present(),
            btf: Path::new("/sys/kernel/btf/vmlinux").exists(),
            uprobes: Path::new("/sys/bus/event_source/devices/uprobe").exists(),
            kprobes: Path::new("/sys/bus/event_source/devices/kprobe").exists(),
            probes_loaded: probes_error.is_none(),
            probes_error,
        },
    }
}

fn uname() -> (String, String) {
    // SAFETY: an all-zero utsname is a valid out-value.
    let mut name: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `name` is a valid out-pointer; uname cannot fail with one.
    unsafe { libc::uname(&mut name) };
    let text = |field: &[libc::c_char]| {
        let bytes: Vec<u8> = field
            .iter()
            .take_while(|&&c| c != 0)
            .map(|&c| c as u8)
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    };
    (text(&name.release), text(&name.version))
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .and_then(|r| r.split_once(':'))
                    .map(|(_, m)| m.trim().to_string())
            })
        })
        .unwrap_or_default()
}

/// FUTEX_WAKE_OP adding 0 to a private word and waking nobody: returns 0 when accepted.
pub fn futex_wake_op_accepted() -> bool {
    let (first, second) = (AtomicU32::new(0), AtomicU32::new(0));
    // FUTEX_OP(FUTEX_OP_ADD, 0, FUTEX_OP_CMP_EQ, 0): add 0, compare with 0.
    let add_zero = 1u32 << 28;
    // nr_wake = 0, and nr_wake2 = 0 travels in the (null) timeout argument.
    sys::futex(
        &first,
        libc::FUTEX_WAKE_OP,
        0,
        None,
        Some(&second),
        add_zero,
    ) == Ok(0)
}
