//! The maps and the load-time globals, which the tracer finds by name (the names are in
//! `futexscope_probes_common::maps`), and the helpers that look their entries up or create them.

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{bpf_get_current_ancestor_cgroup_id, bpf_get_current_comm},
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use futexscope_probes_common::maps::{
    CGROUP_LEVELS_SEARCHED, DEFAULT_LOST_RACE_WINDOW_NS, DEFAULT_RING_BUFFER_BYTES, DROP_REASONS,
    DropReason, FutexKey, FutexStats, KeyOffsets, MAX_FUTEX_WORDS, MAX_MARKER_SITES,
    MAX_PROCESS_COMMS, MAX_THREADS, MAX_TRACED_COMMS, MAX_TRACED_TGIDS, MarkerSite, ThreadState,
    WordUser,
};

use crate::atomic::add;

/// CLOCK_REALTIME minus CLOCK_MONOTONIC in ns, set by the tracer at load.
#[unsafe(no_mangle)]
pub(crate) static REALTIME_OFFSET_NS: i64 = 0;
/// Offset of `tgid` in `struct task_struct`, set by the tracer at load from BTF; 0 = unknown.
#[unsafe(no_mangle)]
pub(crate) static TASK_TGID_OFFSET: u32 = 0;
/// Offsets in the kernel's structures that shared futexes are keyed with, set by the tracer at
/// load from BTF; `valid == 0` keys every futex by process.
#[unsafe(no_mangle)]
pub(crate) static KEY_OFFSETS: KeyOffsets = KeyOffsets {
    valid: 0,
    vma_start: 0,
    vma_pgoff: 0,
    vma_flags: 0,
    vma_file: 0,
    file_mapping: 0,
    mapping_host: 0,
    inode_ino: 0,
    inode_sb: 0,
    sb_dev: 0,
    vma_end: 0,
};
/// Re-wait window for lost races on words the markers have not named, set by the tracer at
/// load.
#[unsafe(no_mangle)]
pub(crate) static LOST_RACE_WINDOW_NS: u64 = DEFAULT_LOST_RACE_WINDOW_NS;

/// Ring buffer fill level, in bytes, from which a record wakes the tracer; set by the tracer at
/// load (a quarter of the buffer).
#[unsafe(no_mangle)]
pub(crate) static WAKEUP_BYTES: u64 = DEFAULT_RING_BUFFER_BYTES as u64 / 4;

/// Nonzero: every process is traced (the agent), set by the tracer at load.
#[unsafe(no_mangle)]
pub(crate) static TRACE_ALL: u32 = 0;
/// Nonzero: a process that execs into a name not in `TRACED_COMMS` is no longer traced (the
/// agent's `--comm` alone), set by the tracer at load.
#[unsafe(no_mangle)]
pub(crate) static UNTRACE_OTHER_EXECS: u32 = 0;
/// Id of a cgroup whose processes are traced too (0 = none), set by the tracer at load.
#[unsafe(no_mangle)]
pub(crate) static TRACED_CGROUP: u64 = 0;
/// Level of `TRACED_CGROUP` in the hierarchy, set by the tracer at load.
#[unsafe(no_mangle)]
pub(crate) static TRACED_CGROUP_LEVEL: u32 = 0;
/// Nonzero: no `EVENTS` records are written (the agent reads only the totals).
#[unsafe(no_mangle)]
pub(crate) static NO_RECORDS: u32 = 0;

#[map(name = "TRACED_COMMS")]
pub(crate) static TRACED_COMMS: HashMap<[u8; 16], u8> =
    HashMap::with_max_entries(MAX_TRACED_COMMS, 0);

#[map(name = "PROCESS_COMMS")]
static PROCESS_COMMS: LruHashMap<u32, [u8; 16]> =
    LruHashMap::with_max_entries(MAX_PROCESS_COMMS, 0);

#[map(name = "TRACED_TGIDS")]
pub(crate) static TRACED_TGIDS: HashMap<u32, u8> = HashMap::with_max_entries(MAX_TRACED_TGIDS, 0);

#[map(name = "FUTEX_STATS")]
static FUTEX_STATS: HashMap<FutexKey, FutexStats> = HashMap::with_max_entries(MAX_FUTEX_WORDS, 0);

#[map(name = "WORD_USERS")]
static WORD_USERS: HashMap<WordUser, u64> = HashMap::with_max_entries(MAX_FUTEX_WORDS, 0);

#[map(name = "THREAD_STATE")]
pub(crate) static THREAD_STATE: HashMap<u32, ThreadState> =
    HashMap::with_max_entries(MAX_THREADS, 0);

#[map(name = "MARKER_SITES")]
pub(crate) static MARKER_SITES: Array<MarkerSite> = Array::with_max_entries(MAX_MARKER_SITES, 0);

#[map(name = "EVENTS")]
pub(crate) static EVENTS: RingBuf = RingBuf::with_byte_size(DEFAULT_RING_BUFFER_BYTES, 0);

#[map(name = "DROPS")]
static DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(DROP_REASONS, 0);

static ZERO_STATS: FutexStats = FutexStats::ZERO;
static ZERO_THREAD: ThreadState = ThreadState::ZERO;

/// Error result of the `try_*` functions meaning "a map is full" (the rest are helper errors,
/// which only a bad user pointer causes and which are not worth a log line).
pub(crate) const MAP_FULL: i64 = -28;

/// Whether process `tgid` is traced: every process with `TRACE_ALL` (one load, no lookup),
/// else those in `TRACED_TGIDS`, and those in `TRACED_CGROUP` or below it.
pub(crate) fn is_traced(tgid: u32) -> bool {
    if read_global(&TRACE_ALL) != 0 || TRACED_TGIDS.get_ptr(tgid).is_some() {
        return true;
    }
    let cgroup = read_global(&TRACED_CGROUP);
    cgroup != 0 && in_cgroup(cgroup, read_global(&TRACED_CGROUP_LEVEL))
}

/// Whether the current task's cgroup is `cgroup` or below it, `cgroup` lying at level
/// `min_level` or at most [`CGROUP_LEVELS_SEARCHED`] - 1 levels deeper. The tracer knows the
/// level only relative to the root it sees: inside a cgroup namespace that root is itself some
/// levels below the real one, so the ancestors are compared from that level down (on the host
/// the first comparison is the one that matches).
fn in_cgroup(cgroup: u64, min_level: u32) -> bool {
    for i in 0..CGROUP_LEVELS_SEARCHED {
        // SAFETY: the helper has no preconditions; a level deeper than the task's cgroup
        // gives 0.
        let ancestor = unsafe { bpf_get_current_ancestor_cgroup_id((min_level + i) as i32) };
        if ancestor == cgroup {
            return true;
        }
        if ancestor == 0 {
            // The task's cgroup lies above this level: no deeper ancestor either.
            return false;
        }
    }
    false
}

/// The value of a global the tracer may have set at load.
pub(crate) fn read_global<T: Copy>(global: &T) -> T {
    // SAFETY: a plain read of a global the loader may have rewritten; volatile so the compiler
    // does not fold the initial value in.
    unsafe { core::ptr::read_volatile(global) }
}

/// Counts one lost record or map entry under `reason` in `DROPS`.
pub(crate) fn count_drop(reason: DropReason) {
    if let Some(slot) = DROPS.get_ptr_mut(reason as u32) {
        // SAFETY: `slot` points at this CPU's u64 in the map, valid for this run; atomic
        // because another program on this CPU may interrupt this one.
        unsafe { add(slot, 1) };
    }
}

/// Records that process `tgid` uses the shared futex `key` at `uaddr` (the first address seen
/// is kept); a full map is counted. For the agent also keeps the process's name, as
/// [`word_stats`] does for process-local words (a process may use only shared ones).
pub(crate) fn note_user(key: &FutexKey, tgid: u32, uaddr: u64) {
    let user = WordUser {
        key: *key,
        tgid,
        pad: 0,
    };
    if WORD_USERS.get_ptr(user).is_some() {
        return;
    }
    // NOEXIST: another thread of the process may have just added it, which is fine.
    if WORD_USERS
        .insert(user, uaddr, u64::from(BPF_NOEXIST))
        .is_err()
        && WORD_USERS.get_ptr(user).is_none()
    {
        count_drop(DropReason::MapFull);
    } else if read_global(&NO_RECORDS) != 0 {
        note_comm(tgid);
    }
}

/// The statistics of the word `key`, created at zero if new; `None` (counted) if the map is
/// full.
pub(crate) fn word_stats(key: &FutexKey) -> Option<*mut FutexStats> {
    if let Some(stats) = FUTEX_STATS.get_ptr_mut(key) {
        return Some(stats);
    }
    // FutexStats is too large for the 512-byte stack: insert the static zero, then update in
    // place. NOEXIST: another CPU may have just created it, which is fine.
    #[expect(
        clippy::needless_borrows_for_generic_args,
        reason = "passed by value it would be copied to the 512-byte BPF stack"
    )]
    let _ = FUTEX_STATS.insert(key, &ZERO_STATS, u64::from(BPF_NOEXIST));
    let stats = FUTEX_STATS.get_ptr_mut(key);
    if stats.is_none() {
        count_drop(DropReason::MapFull);
    } else if read_global(&NO_RECORDS) != 0 {
        note_comm(key.tgid);
    }
    stats
}

/// Keeps the name of process `tgid` (the calling thread's, at its first word) in
/// `PROCESS_COMMS`, for the agent.
fn note_comm(tgid: u32) {
    if tgid != 0
        && let Ok(comm) = bpf_get_current_comm()
    {
        let _ = PROCESS_COMMS.insert(tgid, comm, u64::from(BPF_NOEXIST));
    }
}

/// This thread's state, created if new; `None` (counted) if the map is full.
pub(crate) fn thread_state(tid: u32) -> Option<*mut ThreadState> {
    if let Some(state) = THREAD_STATE.get_ptr_mut(tid) {
        return Some(state);
    }
    #[expect(
        clippy::needless_borrows_for_generic_args,
        reason = "passed by value it would be copied to the 512-byte BPF stack"
    )]
    let _ = THREAD_STATE.insert(tid, &ZERO_THREAD, u64::from(BPF_NOEXIST));
    let state = THREAD_STATE.get_ptr_mut(tid);
    if state.is_none() {
        count_drop(DropReason::MapFull);
    }
    state
}
