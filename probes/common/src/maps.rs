//! Names and layouts of the maps the eBPF programs keep. Totals live here, so they stay exact
//! even when per-event records are dropped from the ring buffer.
//!
//! This is a first layout; the probes' owner extends it (append fields, never reorder).

/// Ring buffer of [`crate::event::Event`] records.
pub const EVENTS: &str = "EVENTS";
/// Per-CPU array, one slot per [`DropReason`]: records that could not be emitted.
pub const DROPS: &str = "DROPS";
/// Hash set of traced process ids (tgid → 1).
pub const TRACED_TGIDS: &str = "TRACED_TGIDS";
/// Hash map [`FutexKey`] → [`FutexStats`].
pub const FUTEX_STATS: &str = "FUTEX_STATS";

/// Number of log2 buckets in the histograms (bucket `i` counts values in `[2^i, 2^(i+1))` ns,
/// bucket 0 also counts 0).
pub const HIST_BUCKETS: usize = 40;

/// Why a record or a map update was lost; index into [`DROPS`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// The ring buffer had no room for an event record.
    RingBufferFull = 0,
    /// A statistics map was full: a new futex word or thread could not be recorded.
    MapFull = 1,
}

/// Number of [`DropReason`] slots.
pub const DROP_REASONS: u32 = 2;

/// Identifies one futex word of one process.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FutexKey {
    /// Process id (tgid) owning the word.
    pub tgid: u32,
    /// Explicit padding so the key has no uninitialised bytes.
    pub pad: u32,
    /// User address of the 32-bit futex word.
    pub uaddr: u64,
}

/// Totals for one futex word, updated atomically by the eBPF programs.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FutexStats {
    /// Threads inside a wait on this word right now.
    pub waiters_now: i64,
    /// Largest `waiters_now` seen.
    pub max_waiters: i64,
    /// Wait calls on this word.
    pub waits: u64,
    /// Wake calls that named this word.
    pub wake_calls: u64,
    /// Threads the kernel reported woken on this word.
    pub woken: u64,
    /// Tokens asked for by waits on this word (from the markers).
    pub tokens_asked: u64,
    /// Waits that returned `ETIMEDOUT`.
    pub timeouts: u64,
    /// Waits that returned `EINTR`.
    pub eintr: u64,
    /// Waits that returned `EAGAIN` (value changed before sleeping).
    pub eagain: u64,
    /// Woken, then waited again without obtaining what it waited for.
    pub lost_race: u64,
    /// Woken with no wake issued on the word since the wait began.
    pub no_waker: u64,
    /// Woken threads that then got what they waited for.
    pub woken_satisfied: u64,
    /// log2 histogram of wait time in ns.
    pub wait_hist: [u64; HIST_BUCKETS],
    /// log2 histogram of timeout drift (return time minus deadline) in ns.
    pub drift_hist: [u64; HIST_BUCKETS],
}

impl FutexStats {
    /// All counters zero.
    pub const ZERO: FutexStats = FutexStats {
        waiters_now: 0,
        max_waiters: 0,
        waits: 0,
        wake_calls: 0,
        woken: 0,
        tokens_asked: 0,
        timeouts: 0,
        eintr: 0,
        eagain: 0,
        lost_race: 0,
        no_waker: 0,
        woken_satisfied: 0,
        wait_hist: [0; HIST_BUCKETS],
        drift_hist: [0; HIST_BUCKETS],
    };
}

/// The log2 bucket of `value` (0 and 1 go to bucket 0), clamped to the last bucket.
pub const fn log2_bucket(value: u64) -> usize {
    if value <= 1 {
        return 0;
    }
    let bucket = (63 - value.leading_zeros()) as usize;
    if bucket >= HIST_BUCKETS {
        HIST_BUCKETS - 1
    } else {
        bucket
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: `FutexKey` is `repr(C)`, made only of integers, and has no padding (explicit
    // `pad` field), so every bit pattern is valid and it can be copied as bytes.
    unsafe impl aya::Pod for super::FutexKey {}
    // SAFETY: `FutexStats` is `repr(C)` and made only of 8-byte integers and arrays of them,
    // so it has no padding and every bit pattern is valid.
    unsafe impl aya::Pod for super::FutexStats {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log2_bucket_edges() {
        assert_eq!(log2_bucket(0), 0);
        assert_eq!(log2_bucket(1), 0);
        assert_eq!(log2_bucket(2), 1);
        assert_eq!(log2_bucket(3), 1);
        assert_eq!(log2_bucket(1024), 10);
        assert_eq!(log2_bucket(u64::MAX), HIST_BUCKETS - 1);
    }
}
