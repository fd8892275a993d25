//! Atomic updates of the counters in map values, which programs on several CPUs (and a program
//! interrupting another on the same CPU) update at once.
//!
//! The bpf target has no `core::sync::atomic` read-modify-write operations; the intrinsics
//! compile to BPF_ATOMIC instructions.

use core::intrinsics::{AtomicOrdering::Relaxed, atomic_cxchg, atomic_xadd};

use futexscope_probes_common::maps::{TIME_BUCKETS, time_bucket};

/// Adds `value` to the u64 at `counter`. Relaxed: the counters are independent tallies read
/// after the fact; no other memory is published through them.
///
/// # Safety
/// `counter` must point at a live, 8-aligned u64 in a map value.
pub(crate) unsafe fn add(counter: *mut u64, value: u64) {
    // SAFETY: the caller guarantees a live aligned u64, shared between CPUs only through
    // atomic operations.
    unsafe { atomic_xadd::<u64, u64, { Relaxed }>(counter, value) };
}

/// Adds `value` to the i64 at `counter` and returns the new value. Relaxed as in [`add`].
///
/// A compare-exchange loop, not a fetch-add: the BPF backend of LLVM 22 emits a fetch-add whose
/// result is used as a plain add (no `BPF_FETCH`), so its "result" would be garbage.
///
/// # Safety
/// `counter` must point at a live, 8-aligned i64 in a map value.
pub(crate) unsafe fn add_i64(counter: *mut i64, value: i64) -> i64 {
    // SAFETY (all blocks): as in `add`. An aligned 8-byte BPF load is single-copy atomic.
    let mut current = unsafe { core::ptr::read_volatile(counter) };
    // Bounded for the verifier; each failure means another CPU changed the counter meanwhile.
    for _ in 0..32 {
        let new = current.wrapping_add(value);
        // SAFETY: see above.
        let (seen, exchanged) =
            unsafe { atomic_cxchg::<i64, { Relaxed }, { Relaxed }>(counter, current, new) };
        if exchanged {
            return new;
        }
        current = seen;
    }
    // Still contended: add without learning the exact new value (the count stays exact).
    // SAFETY: see above.
    unsafe { atomic_xadd::<i64, i64, { Relaxed }>(counter, value) };
    // SAFETY: see above.
    unsafe { core::ptr::read_volatile(counter) }
}

/// Reads the u64 at `counter` atomically. Relaxed as in [`add`].
///
/// # Safety
/// `counter` must point at a live, 8-aligned u64 in a map value.
pub(crate) unsafe fn load(counter: *const u64) -> u64 {
    // SAFETY: as in `add`. An aligned 8-byte BPF load is single-copy atomic (and the bpf
    // backend has no atomic-load instruction to select).
    unsafe { core::ptr::read_volatile(counter) }
}

/// Counts one value in `bucket` of `hist` (a bucket out of range is ignored; the check also
/// bounds the access for the verifier).
///
/// # Safety
/// `hist` must point at a live histogram in a map value.
pub(crate) unsafe fn hist_add<const N: usize>(hist: *mut [u64; N], bucket: usize) {
    if bucket < N {
        // SAFETY: `bucket` is within the histogram, which the caller guarantees is live.
        unsafe { add(hist.cast::<u64>().add(bucket), 1) };
    }
}

/// Books the time `value` (ns): its bucket of the log-linear `hist`, the `sum` and the `max`.
/// The maximum is raised first, so a reader that sees the count mostly sees the maximum too.
///
/// # Safety
/// The three pointers must point at live fields of one map value.
pub(crate) unsafe fn time_add(
    hist: *mut [u64; TIME_BUCKETS],
    sum: *mut u64,
    max: *mut u64,
    value: u64,
) {
    // SAFETY: the caller guarantees live, aligned fields.
    unsafe {
        raise_max(max, value);
        add(sum, value);
        hist_add(hist, time_bucket(value));
    }
}

/// Raises the integer at `max` to `value` if it is lower.
///
/// # Safety
/// `max` must point at a live, 8-aligned `T` (a u64 or an i64) in a map value.
pub(crate) unsafe fn raise_max<T: Copy + PartialOrd>(max: *mut T, value: T) {
    // SAFETY (both blocks): the caller guarantees a live aligned i64 or u64. Relaxed: a
    // standalone maximum; the compare-exchange alone makes concurrent raises agree.
    // An aligned 8-byte BPF load is single-copy atomic.
    let mut current = unsafe { core::ptr::read_volatile(max) };
    // Bounded for the verifier; each failed exchange means another CPU raised it meanwhile.
    for _ in 0..8 {
        if current >= value {
            return;
        }
        // SAFETY: see above.
        let (seen, exchanged) =
            unsafe { atomic_cxchg::<T, { Relaxed }, { Relaxed }>(max, current, value) };
        if exchanged {
            return;
        }
        current = seen;
    }
}
