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
/// Hash map [`WordUser`] → the word's address in that process: the processes that use each
/// shared ([`key_kind::INODE`]) futex, filled by the non-private operations that name it.
pub const WORD_USERS: &str = "WORD_USERS";

/// Global (set at load): CLOCK_REALTIME minus CLOCK_MONOTONIC in ns, used to convert
/// CLOCK_REALTIME deadlines to the monotonic clock.
pub const REALTIME_OFFSET_NS: &str = "REALTIME_OFFSET_NS";
/// Global (set at load): byte offset of `tgid` in the kernel's `struct task_struct`, read from
/// BTF; 0 turns fork following off.
pub const TASK_TGID_OFFSET: &str = "TASK_TGID_OFFSET";
/// Global (set at load): the [`KeyOffsets`] of the kernel's structures, read from BTF, that
/// shared futexes are keyed with; `valid == 0` keys every futex by process.
pub const KEY_OFFSETS: &str = "KEY_OFFSETS";
/// Global (set at load): a thread that was woken and waits again on the same word within this
/// many ns, with no futex call in between, lost the race (for code without markers).
pub const LOST_RACE_WINDOW_NS: &str = "LOST_RACE_WINDOW_NS";

/// Global (set at load): the ring buffer fill level, in bytes, from which a record wakes the
/// tracer. Below it records wake nobody and the tracer drains on its own timer.
pub const WAKEUP_BYTES: &str = "WAKEUP_BYTES";

/// Global (set at load): nonzero traces every process on the host (the agent's default), so the
/// syscall hooks skip the [`TRACED_TGIDS`] lookup.
pub const TRACE_ALL: &str = "TRACE_ALL";
/// Global (set at load): nonzero stops tracing a process that execs into a name not in
/// [`TRACED_COMMS`]: with the agent's `--comm` alone, a named process's children are traced from
/// their fork until they run another program.
pub const UNTRACE_OTHER_EXECS: &str = "UNTRACE_OTHER_EXECS";
/// Global (set at load): the id of a cgroup (v2) whose processes, and those of the cgroups
/// below it, are traced besides [`TRACED_TGIDS`]; 0 = none.
pub const TRACED_CGROUP: &str = "TRACED_CGROUP";
/// Global (set at load): the level of [`TRACED_CGROUP`] in the cgroup hierarchy (the root is
/// level 0) as far as the tracer can tell: its depth below the root of the tracer's cgroup
/// namespace. The real level is that or up to [`CGROUP_LEVELS_SEARCHED`] - 1 deeper (the
/// namespace's root lies that far below the real root); the programs compare the ancestors of
/// the current task's cgroup (`bpf_get_current_ancestor_cgroup_id`) at each of those levels.
pub const TRACED_CGROUP_LEVEL: &str = "TRACED_CGROUP_LEVEL";
/// How many cgroup levels from [`TRACED_CGROUP_LEVEL`] down the programs search for
/// [`TRACED_CGROUP`]: a cgroup namespace's root may lie at most this many levels minus one
/// below the real root.
pub const CGROUP_LEVELS_SEARCHED: u32 = 16;
/// Global (set at load): nonzero stops the programs from writing [`EVENTS`] records (the agent
/// reads only the totals).
pub const NO_RECORDS: &str = "NO_RECORDS";
/// Hash set of process names (`comm`, 16 bytes, zero-padded): a process whose `exec` gives it
/// one of these names is added to [`TRACED_TGIDS`] (the `process_exec` program).
pub const TRACED_COMMS: &str = "TRACED_COMMS";
/// LRU hash map process id → the name (`comm`, 16 bytes) of the thread that first used a futex
/// word of that process; kept only with [`NO_RECORDS`] (the agent), which has no fork/exec
/// records to learn the names of processes that exit before it looks.
pub const PROCESS_COMMS: &str = "PROCESS_COMMS";
/// Capacity of [`PROCESS_COMMS`].
pub const MAX_PROCESS_COMMS: u32 = 8192;
/// Capacity of [`TRACED_COMMS`].
pub const MAX_TRACED_COMMS: u32 = 64;

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

/// Number of buckets of the log2 histogram of the caller's drift (bucket `i` counts values in
/// `[2^i, 2^(i+1))` ns, bucket 0 also counts 0).
pub const LOG2_BUCKETS: usize = 40;

/// Buckets per power of two of seconds in the wait-time and drift histograms, as a power of
/// two: 3, Prometheus's native histogram schema 3 (OpenTelemetry exponential scale 3).
pub const TIME_SCHEMA: u32 = 3;
/// Buckets per power of two: 8, each `2^(1/8)` (1.0905) times wider than the one below.
pub const TIME_SUB_BUCKETS: usize = 1 << TIME_SCHEMA;
/// The zero bucket (bucket 0) holds the values up to `2^TIME_ZERO_LOG2_SECONDS` s (59.6 ns).
pub const TIME_ZERO_LOG2_SECONDS: i32 = -24;
/// The largest value (ns) of the zero bucket: `floor(10^9 · 2^-24)`.
pub const TIME_ZERO_NS: u64 = 59;
/// Bucket `i ≥ 1` of a time histogram is bucket `i - TIME_NATIVE_OFFSET` of a Prometheus
/// native histogram of schema 3 in seconds: `(2^((k-1)/8), 2^(k/8)]` s with
/// `k = i - TIME_NATIVE_OFFSET`. Bucket 1 follows the zero bucket: `k = -8 · 24 + 1`.
pub const TIME_NATIVE_OFFSET: i32 = 192;
/// Number of buckets of a time histogram (see [`time_bucket`]): 466, the zero bucket and every
/// schema-3 bucket up to the one that holds `u64::MAX` ns (`2^34.125` s); no value is clamped.
pub const TIME_BUCKETS: usize = 466;

/// `floor(10^9 · 2^((265 + k) / 8))` for `k` in 0..8: the boundaries of the schema-3 buckets
/// in seconds, as ns, scaled into one octave of the 64-bit mantissa `[2^63, 2^64)`
/// ([`time_bucket`]). Checked against exact integer arithmetic in the tests.
const TIME_THRESHOLDS: [u64; TIME_SUB_BUCKETS] = [
    0x81ff_a7a9_549c_a6e3,
    0x8dc3_b896_0164_a7d9,
    0x9a98_6705_4d51_2391,
    0xa896_5f74_bf06_5071,
    0xb7d8_8a12_d0dd_9ea0,
    0xc87c_3e7d_03cd_bec3,
    0xdaa1_7c2c_d195_55db,
    0xee6b_2800_0000_0000,
];

/// Why a record or a map update was lost; index into [`DROPS`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// The ring buffer had no room for an event record.
    RingBufferFull = 0,
    /// A statistics map was full: a new futex word or thread could not be recorded.
    MapFull = 1,
    /// A non-private futex operation was keyed by (process, address) although its memory may
    /// be shared, because its mapping could not be looked up (`bpf_find_vma` busy or failed,
    /// no BTF offsets, or the raw-tracepoint hooks): a wake from another process on that word
    /// is not paired with its waits.
    SharedKeyFallback = 2,
    /// The stack ring buffer (`crate::stack::STACKS`) had no room for a stack record.
    StackRingFull = 3,
}

/// Number of [`DropReason`] slots.
pub const DROP_REASONS: u32 = 4;

/// [`FutexKey::kind`] values: how the kernel's `get_futex_key` tells the word apart.
pub mod key_kind {
    /// Process-local: a private operation, or a non-private one on private memory (anonymous,
    /// or a writable private file mapping). Keyed by (process, address).
    pub const PROCESS: u32 = 0;
    /// Shared memory: a `MAP_SHARED` mapping (of a file, shmem, `/dev/shm`, SysV shm or
    /// `MAP_SHARED|MAP_ANONYMOUS`) or a read-only file mapping, used by a non-private
    /// operation. Keyed by (device, inode, byte offset in the file), whichever process and
    /// address use it.
    pub const INODE: u32 = 1;
}

/// Identifies one futex word as the kernel does: by process and address, or by file.
///
/// | `kind` | `tgid` | `uaddr` | `dev` | `ino` |
/// |---|---|---|---|---|
/// | [`key_kind::PROCESS`] | process id | address | 0 | 0 |
/// | [`key_kind::INODE`] | 0 | byte offset of the word in the file | `s_dev` of the file system (kernel encoding: major << 20 \| minor) | inode number |
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FutexKey {
    /// Process id (tgid) owning the word ([`key_kind::PROCESS`]), else 0.
    pub tgid: u32,
    /// A [`key_kind`] value (0, process, is what this padding field always held before).
    pub kind: u32,
    /// User address of the 32-bit futex word ([`key_kind::PROCESS`]), or its byte offset in
    /// the mapped file ([`key_kind::INODE`]).
    pub uaddr: u64,
    /// Device of the file's file system ([`key_kind::INODE`]), else 0.
    pub dev: u32,
    /// Explicit padding so the key has no uninitialised bytes.
    pub pad: u32,
    /// Inode number of the file ([`key_kind::INODE`]), else 0.
    pub ino: u64,
}

impl FutexKey {
    /// The word at `uaddr` in process `tgid`.
    pub const fn process(tgid: u32, uaddr: u64) -> FutexKey {
        FutexKey {
            tgid,
            kind: key_kind::PROCESS,
            uaddr,
            dev: 0,
            pad: 0,
            ino: 0,
        }
    }

    /// The word at byte `offset` of inode `ino` on device `dev`.
    pub const fn inode(dev: u32, ino: u64, offset: u64) -> FutexKey {
        FutexKey {
            tgid: 0,
            kind: key_kind::INODE,
            uaddr: offset,
            dev,
            pad: 0,
            ino,
        }
    }
}

/// Key of [`WORD_USERS`]: a process that used a shared futex.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct WordUser {
    /// The futex ([`key_kind::INODE`]).
    pub key: FutexKey,
    /// The process.
    pub tgid: u32,
    /// Explicit padding.
    pub pad: u32,
}

/// Byte offsets in the kernel's structures that a shared futex's key is read from, found in
/// the kernel's BTF at load (layouts differ between releases: `vm_start` and `vm_flags` sit in
/// anonymous unions since 6.3/6.4). Passed as the [`KEY_OFFSETS`] global.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct KeyOffsets {
    /// 1 if every offset below was found; 0 keys every futex by process.
    pub valid: u32,
    /// `vm_area_struct.vm_start`.
    pub vma_start: u32,
    /// `vm_area_struct.vm_pgoff`.
    pub vma_pgoff: u32,
    /// `vm_area_struct.vm_flags`.
    pub vma_flags: u32,
    /// `vm_area_struct.vm_file`.
    pub vma_file: u32,
    /// `file.f_mapping`.
    pub file_mapping: u32,
    /// `address_space.host`.
    pub mapping_host: u32,
    /// `inode.i_ino`.
    pub inode_ino: u32,
    /// `inode.i_sb`.
    pub inode_sb: u32,
    /// `super_block.s_dev`.
    pub sb_dev: u32,
    /// `vm_area_struct.vm_end` (`--stacks` bounds its copy of a stack by it).
    pub vma_end: u32,
}

/// `VM_WRITE` in `vm_area_struct.vm_flags`.
pub const VM_WRITE: u64 = 0x2;
/// `VM_MAYSHARE` in `vm_area_struct.vm_flags`: the mapping was made `MAP_SHARED` (the `s` of
/// `/proc/PID/maps`; unlike `VM_SHARED` it stays set for a file opened read-only).
pub const VM_MAYSHARE: u64 = 0x80;

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
    /// Histogram of wait time, Prometheus native schema 3 in seconds ([`time_bucket`]).
    pub wait_hist: [u64; TIME_BUCKETS],
    /// Histogram of timeout drift (return time minus deadline, 0 if earlier), as `wait_hist`
    /// ([`time_bucket`]).
    pub drift_hist: [u64; TIME_BUCKETS],
    /// Waits that returned 0 (woken, or a PI lock taken).
    pub wakeups: u64,
    /// Threads that exited while waiting on this word.
    pub died_waiting: u64,
    /// `timed_out` markers for waits on this word.
    pub caller_timeouts: u64,
    /// log2 histogram of the drift the caller saw (`timed_out`'s now minus its deadline) in ns.
    pub caller_drift_hist: [u64; LOG2_BUCKETS],
    /// Sum of the wait times in `wait_hist`, in ns.
    pub wait_sum_ns: u64,
    /// Longest wait time in `wait_hist`, in ns.
    pub wait_max_ns: u64,
    /// Sum of the drifts in `drift_hist`, in ns.
    pub drift_sum_ns: u64,
    /// Largest drift in `drift_hist`, in ns.
    pub drift_max_ns: u64,
    /// Timed-out waits that returned before their deadline (only possible through the
    /// CLOCK_REALTIME conversion); booked in `drift_hist` as drift 0.
    pub drift_early: u64,
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
        wait_hist: [0; TIME_BUCKETS],
        drift_hist: [0; TIME_BUCKETS],
        wakeups: 0,
        died_waiting: 0,
        caller_timeouts: 0,
        caller_drift_hist: [0; LOG2_BUCKETS],
        wait_sum_ns: 0,
        wait_max_ns: 0,
        drift_sum_ns: 0,
        drift_max_ns: 0,
        drift_early: 0,
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
    /// The key of each word in `words`: (process, address), or the file for a non-private
    /// operation on shared memory.
    pub keys: [FutexKey; WAITV_TRACKED_WORDS],
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
        keys: [FutexKey::process(0, 0); WAITV_TRACKED_WORDS],
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
    if bucket >= LOG2_BUCKETS {
        LOG2_BUCKETS - 1
    } else {
        bucket
    }
}

/// The bucket of `value` (ns) in a time histogram: bucket 0 holds 0 to 59 ns (up to 2^-24 s),
/// bucket `i ≥ 1` exactly the values of Prometheus native-histogram bucket
/// `i - TIME_NATIVE_OFFSET` of schema 3 in seconds, `(2^((k-1)/8), 2^(k/8)]` s: eight buckets per
/// power of two of seconds, each open below and closed above, at most `2^(1/8) - 1` (9.05 %) of
/// its lower bound wide. Every u64 has its bucket (the last holds `u64::MAX`).
///
/// Exact, with no floating point and no division: `value ≤ 10^9 · 2^(k/8)` compares integers.
/// With `2^n ≤ value < 2^(n+1)`, the mantissa `m = value << (63 - n)` lies in `[2^63, 2^64)`
/// and is compared with the eight boundaries that fall in an octave ([`TIME_THRESHOLDS`],
/// each the floor of the exact boundary, so `m ≤ floor(b) ⇔ m ≤ b` for the integer `m`); the
/// bucket is `8n - 47 +` the number of boundaries below `m`. One leading-zeros count, a shift
/// and eight comparisons with constants, so the eBPF programs use it as is.
pub const fn time_bucket(value: u64) -> usize {
    if value <= TIME_ZERO_NS {
        return 0;
    }
    let n = 63 - value.leading_zeros();
    let m = value << (63 - n);
    let t = &TIME_THRESHOLDS;
    // Written out rather than looped so the eBPF build has no loop to unroll or verify.
    let above = (m > t[0]) as usize
        + (m > t[1]) as usize
        + (m > t[2]) as usize
        + (m > t[3]) as usize
        + (m > t[4]) as usize
        + (m > t[5]) as usize
        + (m > t[6]) as usize
        + (m > t[7]) as usize;
    // value ≥ 60 ns: n ≥ 5, and for n = 5 every boundary of the octave (32.5 to 59.6 ns) is
    // below it, so this is at least 1; at most 8 · 63 + 8 - 47 = TIME_BUCKETS - 1.
    8 * n as usize + above - 47
}

/// The lower (open) bound of time-histogram bucket `i` in ns, which is the largest value of
/// bucket `i - 1`: `floor(10^9 · 2^((i - 193) / 8))` for `i ≥ 1`, saturated at `u64::MAX`
/// (`bound(TIME_BUCKETS)`); 0 for bucket 0, which also holds 0.
pub const fn time_bucket_bound(i: usize) -> u64 {
    if i == 0 {
        return 0;
    }
    // The upper bound of native bucket k = i - 193 is 10^9 · 2^(k/8) ns; with k = 8a + r,
    // r in 1..=8, that is 10^9 · 2^(33 + r/8) · 2^(a - 33), and floor(x / 2^s) equals
    // floor(x) >> s.
    let k = i as i64 - 1 - TIME_NATIVE_OFFSET as i64;
    let a = (k - 1).div_euclid(8);
    let r = (k - 8 * a) as usize;
    if a > 33 {
        return u64::MAX;
    }
    let shift = (33 - a) as u32;
    if shift >= 64 {
        0
    } else {
        TIME_THRESHOLDS[r - 1] >> shift
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: `FutexKey` is `repr(C)`, made only of integers, and has no padding (explicit
    // `pad` field; size asserted below), so every bit pattern is valid and it can be copied as
    // bytes.
    unsafe impl aya::Pod for super::FutexKey {}
    // SAFETY: `WordUser` is `repr(C)`: a `FutexKey` then two u32, no padding (asserted below).
    unsafe impl aya::Pod for super::WordUser {}
    // SAFETY: `KeyOffsets` is `repr(C)` and made only of u32, so it has no padding.
    unsafe impl aya::Pod for super::KeyOffsets {}
    // SAFETY: `FutexStats` is `repr(C)` and made only of 8-byte integers and arrays of them,
    // so it has no padding and every bit pattern is valid.
    unsafe impl aya::Pod for super::FutexStats {}
    // SAFETY: `ThreadState` is `repr(C)`: six u32 then only u64s, arrays of them and
    // `FutexKey`s (8-aligned, no padding), so it has no padding and every bit pattern is valid.
    unsafe impl aya::Pod for super::ThreadState {}
    // SAFETY: `MarkerArg` is `repr(C)`: four u32 then one u64, no padding, any bit pattern.
    unsafe impl aya::Pod for super::MarkerArg {}
    // SAFETY: `MarkerSite` is `repr(C)`: two u32 then 8-aligned `MarkerArg`s, no padding.
    unsafe impl aya::Pod for super::MarkerSite {}
}

const _: () = assert!(core::mem::size_of::<FutexKey>() == 4 + 4 + 8 + 4 + 4 + 8);
const _: () = assert!(core::mem::size_of::<WordUser>() == 32 + 8);
const _: () = assert!(core::mem::size_of::<KeyOffsets>() == 11 * 4);
const _: () = assert!(
    core::mem::size_of::<ThreadState>()
        == 6 * 4 + 8 * (2 + 2 * WAITV_TRACKED_WORDS + 5) + 32 * WAITV_TRACKED_WORDS
);
const _: () = assert!(core::mem::size_of::<MarkerArg>() == 24);
const _: () = assert!(time_bucket_bound(TIME_BUCKETS) == u64::MAX);
const _: () = assert!(time_bucket(u64::MAX) == TIME_BUCKETS - 1);
const _: () = assert!(time_bucket(TIME_ZERO_NS + 1) == 1);
const _: () = assert!(time_bucket_bound(1) == TIME_ZERO_NS);
const _: () = assert!(time_bucket(1_000_000_000) == TIME_NATIVE_OFFSET as usize);
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
        assert_eq!(log2_bucket(u64::MAX), LOG2_BUCKETS - 1);
    }

    /// Checks `v` is in the bucket whose bounds contain it, that the bucket of `v + 1` is not
    /// lower, and that a bucket above 1 µs is at most 9.1 % of its lower bound wide, plus 1 ns
    /// (the bounds are floors of values `2^(1/8)` apart), so its midpoint is within 1/20 of `v`.
    fn check_time_bucket(v: u64) {
        let i = time_bucket(v);
        assert!(i < TIME_BUCKETS);
        if v < u64::MAX {
            assert!(time_bucket(v + 1) >= i, "bucket of {v} + 1 went down");
        }
        let (low, high) = (time_bucket_bound(i), time_bucket_bound(i + 1));
        assert!(
            (low < v || (i == 0 && v == 0)) && v <= high,
            "{v} outside bucket {i} ({low}, {high}]"
        );
        if low >= 1000 && high < u64::MAX {
            assert!(
                1000 * u128::from(high - low) <= 91 * u128::from(low) + 1000,
                "bucket {i} ({low}, {high}] too wide"
            );
            let mid = low + (high - low) / 2;
            assert!(
                20 * u128::from(v.abs_diff(mid)) <= u128::from(v),
                "midpoint {mid} too far from {v}"
            );
        }
    }

    /// A sweep of the whole range: every value up to 5000, each power of two and its
    /// neighbours, each bound and its neighbours, and pseudo-random values of every magnitude.
    #[test]
    fn time_buckets_contain_their_values() {
        for v in 0..5000u64 {
            check_time_bucket(v);
        }
        for e in 0..64 {
            let p = 1u64 << e;
            for v in [p - 1, p, p + 1, p + p / 3, p + p / 2 + 7] {
                check_time_bucket(v);
            }
        }
        for i in 1..TIME_BUCKETS {
            let b = time_bucket_bound(i);
            for v in [b - 1, b, b + 1] {
                check_time_bucket(v);
            }
            assert_eq!(time_bucket(b), i - 1, "bound {b} of bucket {i}");
            assert_eq!(time_bucket(b + 1), i, "bound {b} + 1 of bucket {i}");
        }
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..200_000 {
            // xorshift64, shifted down by a pseudo-random amount.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            check_time_bucket(x >> (x % 64));
        }
        check_time_bucket(u64::MAX);
    }

    /// Each threshold is `floor(10^9 · 2^((265 + k)/8))`: the largest `d` with
    /// `d^8 ≤ 10^72 · 2^(265 + k)`, in exact integer arithmetic.
    #[test]
    fn time_thresholds_are_the_exact_floors() {
        use num_bigint::BigUint;
        for (k, &d) in TIME_THRESHOLDS.iter().enumerate() {
            let bound = BigUint::from(10u32).pow(72) << (265 + k);
            assert!(BigUint::from(d).pow(8) <= bound, "threshold {k} too high");
            assert!(BigUint::from(d + 1).pow(8) > bound, "threshold {k} too low");
        }
    }

    /// The buckets agree with `ceil(8 · log2(value / 10^9))`, computed in floating point, for
    /// values not within floating-point error of a boundary.
    #[test]
    fn time_buckets_are_schema_3_in_seconds() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut checked = 0;
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let v = (x >> (x % 58)).max(TIME_ZERO_NS + 1);
            let position = 8.0 * (v as f64 / 1e9).log2();
            if (position - position.round()).abs() < 1e-6 {
                continue;
            }
            let k = position.ceil() as i32;
            assert_eq!(time_bucket(v) as i32 - TIME_NATIVE_OFFSET, k, "{v} ns");
            checked += 1;
        }
        assert!(checked > 190_000);
    }

    #[test]
    fn time_bucket_edges() {
        assert_eq!(time_bucket(0), 0);
        assert_eq!(time_bucket(59), 0, "59 ns <= 2^-24 s");
        assert_eq!(time_bucket(60), 1);
        assert_eq!(time_bucket_bound(2), 64, "2^(-191/8) s is 64.99 ns");
        assert_eq!(time_bucket(64), 1);
        assert_eq!(time_bucket(65), 2);
        // 1 s is the upper bound of native bucket 0.
        let one = TIME_NATIVE_OFFSET as usize;
        assert_eq!(time_bucket(1_000_000_000), one);
        assert_eq!(time_bucket(1_000_000_001), one + 1);
        // Every eighth bound is a power of two of seconds: exact in ns from 2^-9 s up.
        for e in -9i32..=34 {
            let i = (TIME_NATIVE_OFFSET + 8 * e) as usize;
            let ns = if e < 0 {
                1_000_000_000u64 >> -e
            } else {
                1_000_000_000u64 << e
            };
            assert_eq!(time_bucket_bound(i + 1), ns, "2^{e} s");
            assert_eq!(time_bucket(ns), i, "2^{e} s");
            assert_eq!(time_bucket(ns + 1), i + 1, "2^{e} s + 1 ns");
        }
        assert_eq!(time_bucket(u64::MAX), TIME_BUCKETS - 1);
        assert_eq!(
            time_bucket_bound(TIME_BUCKETS - 1),
            17_179_869_184_000_000_000
        );
    }
}
