//! Wrappers of the BPF helpers that have no preconditions: time and CPU.

use aya_ebpf::helpers::{bpf_get_smp_processor_id, bpf_ktime_get_ns};

/// The monotonic clock (CLOCK_MONOTONIC) in ns: the clock of every time in a record.
pub(crate) fn now_ns() -> u64 {
    // SAFETY: the helper has no preconditions.
    unsafe { bpf_ktime_get_ns() }
}

/// The CPU this program runs on.
pub(crate) fn current_cpu() -> u32 {
    // SAFETY: the helper has no preconditions.
    unsafe { bpf_get_smp_processor_id() }
}
