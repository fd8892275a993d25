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
/// Hash map thread id → [`ThreadState`]: the futex call in flight and marker context.
pub const THREAD_STATE: &str = "THREAD_STATE";
/// Array of [`MarkerSite`], indexed by the site number in the upper half of a marker uprobe's
/// attach cookie.
pub const MARKER_SITES: &str = "MARKER_SITES";

/// Global (set at load): CLOCK_REALTIME minus CLOCK_MONOTONIC in ns, used to convert
/// CLOCK_REALTIME deadlines to the monotonic clock.
pub const REALTIME_OFFSET_NS: &str = "REALTIME_OFFSET_NS";
/// Global (set at load): byte offset of `tgid` in the kernel's `struct task_struct`, read from
/// BTF; 0 turns fork following off.
pub const TASK_TGID_OFFSET: &str = "TASK_TGID_OFFSET";
/// Global (set at load): a thread that was woken and waits again on the same word within this
/// many ns, with no futex call in between, lost the race (for code without markers).
pub const LOST_RACE_WINDOW_NS: &str = "LOST_RACE_WINDOW_NS";

/// Global (set at load): the ring buffer fill level, in bytes, from which a record wakes the
/// tracer. Below it records wake nobody and the tracer drains on its own timer.
pub const WAKEUP_BYTES: &str = "WAKEUP_BYTES";

/// Default for [`LOST_RACE_WINDOW_NS`]: 1 ms.
pub const DEFAULT_LOST_RACE_WINDOW_NS: u64 = 1_000_000;
/// Default byte size of the [`EVENTS`] ring buffer (a power of two, at least a page).
pub const DEFAULT_RING_BUFFER_BYTES: u32 = 1 << 20;
/// Capacity of [`MARKER_SITES`].
pub const MAX_MARKER_SITES: u32 = 256;
/// Capacity of [`TRACED_TGIDS`].
pub const MAX_TRACED_TGIDS: u32 = 4096;
/// Capacity of [`FUTEX_STATS`].
pub const MAX_FUTEX_WORDS: u32 = 16384;
/// Capacity of [`THREAD_STATE`].
pub const MAX_THREADS: u32 = 16384;

/// Words of one `futex_waitv` call that are tracked (the rest are ignored).
pub const WAITV_TRACKED_WORDS: usize = 4;

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
    /// The stack ring buffer (`crate::stack::STACKS`) had no room for a stack record.
    StackRingFull = 2,
}

/// Number of [`DropReason`] slots.
pub const DROP_REASONS: u32 = 3;

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
    /// Woken threads that then got what they waited for (from the markers).
    pub woken_satisfied: u64,
    /// log2 histogram of wait time in ns.
    pub wait_hist: [u64; HIST_BUCKETS],
    /// log2 histogram of timeout drift (return time minus deadline) in ns.
    pub drift_hist: [u64; HIST_BUCKETS],
    /// Waits that returned 0 (woken, or a PI lock taken).
    pub wakeups: u64,
    /// Threads that exited while waiting on this word.
    pub died_waiting: u64,
    /// `timed_out` markers for waits on this word.
    pub caller_timeouts: u64,
    /// log2 histogram of the drift the caller saw (`timed_out`'s now minus its deadline) in ns.
    pub caller_drift_hist: [u64; HIST_BUCKETS],
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
        wakeups: 0,
        died_waiting: 0,
        caller_timeouts: 0,
        caller_drift_hist: [0; HIST_BUCKETS],
    };
}

/// [`ThreadState::active`] values.
pub mod active {
    /// No futex call in flight.
    pub const NONE: u32 = 0;
    /// A wait-type call is in flight.
    pub const WAIT: u32 = 1;
    /// A wake-type call is in flight.
    pub const WAKE: u32 = 2;
}

/// Per-thread state: the futex call in flight, the last wakeup, and the marker context.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThreadState {
    /// An [`active`] value.
    pub active: u32,
    /// Syscall number of the call in flight.
    pub syscall: u32,
    /// Op (futex) or flags (futex2) of the call in flight.
    pub op: u32,
    /// Clock the deadline was given on (`CLOCK_MONOTONIC` = 1, `CLOCK_REALTIME` = 0), or
    /// [`crate::event::NO_CLOCK`] if untimed.
    pub clock: u32,
    /// Words in use in `words`.
    pub word_count: u32,
    /// [`crate::event::spurious`] flags decided when the call began.
    pub spurious: u32,
    /// Monotonic time in ns when the call began.
    pub start_ns: u64,
    /// Absolute monotonic deadline in ns, 0 if untimed.
    pub deadline_ns: u64,
    /// Futex words of the call (wait: the words waited on; wake: the words named).
    pub words: [u64; WAITV_TRACKED_WORDS],
    /// Each word's `wake_calls` when the wait began.
    pub wake_seq: [u64; WAITV_TRACKED_WORDS],
    /// The call's value argument (expected value or wake count).
    pub val: u64,
    /// Word of this thread's last wait that returned 0, or 0.
    pub last_woken_word: u64,
    /// When that wait returned.
    pub last_woken_ns: u64,
    /// Word of this thread's last wait that returned 0 (or `wait_end` marker with result 0),
    /// not yet followed by an `acquired` marker or another wait; or 0.
    pub marker_woken_word: u64,
    /// Word of this thread's last futex wait: the word its `acquired` and `timed_out` markers
    /// are booked on.
    pub marker_word: u64,
}

impl ThreadState {
    /// A thread with nothing in flight.
    pub const ZERO: ThreadState = ThreadState {
        active: active::NONE,
        syscall: 0,
        op: 0,
        clock: 0,
        word_count: 0,
        spurious: 0,
        start_ns: 0,
        deadline_ns: 0,
        words: [0; WAITV_TRACKED_WORDS],
        wake_seq: [0; WAITV_TRACKED_WORDS],
        val: 0,
        last_woken_word: 0,
        last_woken_ns: 0,
        marker_woken_word: 0,
        marker_word: 0,
    };
}

/// [`MarkerArg::kind`] values.
pub mod arg_kind {
    /// The argument is absent.
    pub const NONE: u32 = 0;
    /// The argument is the constant [`super::MarkerArg::value`].
    pub const CONSTANT: u32 = 1;
    /// The argument is in the register at `reg_offset` in `struct pt_regs`.
    pub const REGISTER: u32 = 2;
    /// The argument is in user memory at (register at `reg_offset`) + `value`.
    pub const MEMORY: u32 = 3;
}

/// Where one marker argument is found when the marker fires.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct MarkerArg {
    /// An [`arg_kind`] value.
    pub kind: u32,
    /// Size in bytes (1, 2, 4 or 8).
    pub size: u32,
    /// 1 if the value is signed (sign-extended to 64 bits), else 0.
    pub signed: u32,
    /// Byte offset of the register in x86_64 `struct pt_regs`.
    pub reg_offset: u32,
    /// The constant, or the memory displacement.
    pub value: u64,
}

impl MarkerArg {
    /// A `size`-byte value in the register at byte offset `reg_offset` of `struct pt_regs`.
    pub const fn register(reg_offset: u32, size: u32, signed: bool) -> MarkerArg {
        MarkerArg {
            kind: arg_kind::REGISTER,
            size,
            signed: signed as u32,
            reg_offset,
            value: 0,
        }
    }

    /// The constant `value`.
    pub const fn constant(value: u64) -> MarkerArg {
        MarkerArg {
            kind: arg_kind::CONSTANT,
            size: 8,
            signed: 0,
            reg_offset: 0,
            value,
        }
    }

    /// A `size`-byte value in user memory at (register at `reg_offset`) + `displacement`.
    pub const fn memory(reg_offset: u32, displacement: i64, size: u32, signed: bool) -> MarkerArg {
        MarkerArg {
            kind: arg_kind::MEMORY,
            size,
            signed: signed as u32,
            reg_offset,
            value: displacement as u64,
        }
    }
}

/// Most arguments a marker has.
pub const MAX_MARKER_ARGS: usize = 6;

/// One marker site (one stapsdt note) the marker program is attached to.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct MarkerSite {
    /// The [`crate::markers::Marker`] id.
    pub marker: u32,
    /// Arguments in use in `args`.
    pub arg_count: u32,
    /// Where each argument is.
    pub args: [MarkerArg; MAX_MARKER_ARGS],
}

/// The attach cookie of a marker uprobe: the marker id in the low 32 bits (so the cookie's low
/// half is the marker id), the site's index in [`MARKER_SITES`] in the high 32 bits.
pub const fn marker_cookie(marker: u32, site_index: u32) -> u64 {
    ((site_index as u64) << 32) | marker as u64
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
    // SAFETY: `ThreadState` is `repr(C)`: six u32 then only u64s and arrays of them, so it has
    // no padding and every bit pattern is valid.
    unsafe impl aya::Pod for super::ThreadState {}
    // SAFETY: `MarkerArg` is `repr(C)`: four u32 then one u64, no padding, any bit pattern.
    unsafe impl aya::Pod for super::MarkerArg {}
    // SAFETY: `MarkerSite` is `repr(C)`: two u32 then 8-aligned `MarkerArg`s, no padding.
    unsafe impl aya::Pod for super::MarkerSite {}
}

const _: () =
    assert!(core::mem::size_of::<ThreadState>() == 6 * 4 + 8 * (2 + 2 * WAITV_TRACKED_WORDS + 5));
const _: () = assert!(core::mem::size_of::<MarkerArg>() == 24);
const _: () = assert!(core::mem::size_of::<MarkerSite>() == 8 + 24 * MAX_MARKER_ARGS);

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
