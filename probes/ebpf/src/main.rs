//! futexscope's eBPF programs.
//!
//! - `futex_enter` / `futex_exit` (BTF tracepoints `sys_enter` / `sys_exit`, which need no
//!   tracefs): every wait-type and wake-type call of `futex`, `futex_waitv`, futex2
//!   `futex_wait`, `futex_wake` and `futex_requeue` made by a traced process. On a kernel
//!   without BTF (or one that refuses these) the tracer loads `futex_enter_raw` /
//!   `futex_exit_raw` instead: the same on raw tracepoints, which read the registers through a
//!   helper call.
//! - `process_fork` (raw tracepoint `sched_process_fork`): children of traced processes are
//!   traced too.
//! - `thread_exit` (raw tracepoint `sched_process_exit`): a thread that dies inside a wait is
//!   taken off its words.
//! - `futexscope_marker` (uprobe, one attachment per marker site): the semaphore's markers.
//!
//! Totals go to `FUTEX_STATS` with atomic updates, so they stay exact when ring-buffer records
//! are dropped; records go to `EVENTS`; every lost record or map entry is counted in `DROPS`.
//! The definitions of every counter are in `docs/probes.md`.
#![no_std]
#![no_main]
// The bpf target has no `core::sync::atomic` read-modify-write operations; the intrinsics
// compile to BPF_ATOMIC instructions.
#![feature(core_intrinsics)]
#![expect(
    internal_features,
    reason = "atomic intrinsics are the only atomics on the bpf target"
)]

use core::intrinsics::{AtomicOrdering::Relaxed, atomic_cxchg, atomic_xadd};

use aya_ebpf::{
    EbpfContext,
    bindings::{
        BPF_ANY, BPF_NOEXIST, BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP, pt_regs,
    },
    helpers::{
        bpf_get_attach_cookie, bpf_get_current_pid_tgid, bpf_get_smp_processor_id,
        bpf_ktime_get_ns, bpf_probe_read_kernel, bpf_probe_read_user,
    },
    macros::{btf_tracepoint, map, raw_tracepoint, uprobe},
    maps::{Array, HashMap, PerCpuArray, RingBuf},
    programs::{BtfTracePointContext, ProbeContext, RawTracePointContext},
};
use aya_log_ebpf::warn;
use futexscope_probes_common::{
    abi::{
        CLOCK_MONOTONIC, CLOCK_REALTIME, EAGAIN, EINTR, ERESTART_RESTARTBLOCK, ERESTARTNOHAND,
        ERESTARTNOINTR, ERESTARTSYS, ETIMEDOUT, FUTEX_CLOCK_REALTIME, FUTEX_CMD_MASK,
        FUTEX_CMP_REQUEUE, FUTEX_CMP_REQUEUE_PI, FUTEX_LOCK_PI, FUTEX_LOCK_PI2, FUTEX_REQUEUE,
        FUTEX_UNLOCK_PI, FUTEX_WAIT, FUTEX_WAIT_BITSET, FUTEX_WAIT_REQUEUE_PI, FUTEX_WAKE,
        FUTEX_WAKE_BITSET, FUTEX_WAKE_OP, FutexWaitv, syscalls,
    },
    event::{Event, EventKind, NO_CLOCK, spurious},
    maps::{
        DEFAULT_LOST_RACE_WINDOW_NS, DEFAULT_RING_BUFFER_BYTES, DROP_REASONS, DropReason, FutexKey,
        FutexStats, HIST_BUCKETS, MAX_FUTEX_WORDS, MAX_MARKER_ARGS, MAX_MARKER_SITES, MAX_THREADS,
        MAX_TRACED_TGIDS, MarkerSite, ThreadState, WAITV_TRACKED_WORDS, active, arg_kind,
        log2_bucket,
    },
    markers::Marker,
};

/// CLOCK_REALTIME minus CLOCK_MONOTONIC in ns, set by the tracer at load.
#[unsafe(no_mangle)]
static REALTIME_OFFSET_NS: i64 = 0;
/// Offset of `tgid` in `struct task_struct`, set by the tracer at load from BTF; 0 = unknown.
#[unsafe(no_mangle)]
static TASK_TGID_OFFSET: u32 = 0;
/// Re-wait window for lost races on words the markers have not named, set by the tracer at
/// load.
#[unsafe(no_mangle)]
static LOST_RACE_WINDOW_NS: u64 = DEFAULT_LOST_RACE_WINDOW_NS;

/// Ring buffer fill level, in bytes, from which a record wakes the tracer; set by the tracer at
/// load (a quarter of the buffer).
#[unsafe(no_mangle)]
static WAKEUP_BYTES: u64 = DEFAULT_RING_BUFFER_BYTES as u64 / 4;

#[map(name = "TRACED_TGIDS")]
static TRACED_TGIDS: HashMap<u32, u8> = HashMap::with_max_entries(MAX_TRACED_TGIDS, 0);

#[map(name = "FUTEX_STATS")]
static FUTEX_STATS: HashMap<FutexKey, FutexStats> = HashMap::with_max_entries(MAX_FUTEX_WORDS, 0);

#[map(name = "THREAD_STATE")]
static THREAD_STATE: HashMap<u32, ThreadState> = HashMap::with_max_entries(MAX_THREADS, 0);

#[map(name = "MARKER_SITES")]
static MARKER_SITES: Array<MarkerSite> = Array::with_max_entries(MAX_MARKER_SITES, 0);

#[map(name = "EVENTS")]
static EVENTS: RingBuf = RingBuf::with_byte_size(DEFAULT_RING_BUFFER_BYTES, 0);

#[map(name = "DROPS")]
static DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(DROP_REASONS, 0);

static ZERO_STATS: FutexStats = FutexStats::ZERO;
static ZERO_THREAD: ThreadState = ThreadState::ZERO;

const NS_PER_SEC: u64 = 1_000_000_000;

/// User `struct timespec`.
#[repr(C)]
#[derive(Clone, Copy)]
struct Timespec {
    sec: i64,
    nsec: i64,
}

/// What one futex syscall does, decoded from its arguments.
struct Call {
    kind: u32,
    op: u32,
    val: u64,
    /// User pointer to the timeout, 0 if none.
    timeout: u64,
    /// Whether the timeout is relative (plain FUTEX_WAIT).
    relative: bool,
    clock: u32,
    /// Whether a 0 result means "woken by a wake" (not "PI lock taken").
    wakeable: bool,
    words: [u64; WAITV_TRACKED_WORDS],
    word_count: u32,
}

/// Error result of the `try_*` functions meaning "a map is full" (the rest are helper errors,
/// which only a bad user pointer causes and which are not worth a log line).
const MAP_FULL: i64 = -28;

// The syscall hooks run at every system call on the machine, so the syscall number is the
// first thing they check. With BTF the registers are read in place; on raw tracepoints each
// read is a helper call.

#[btf_tracepoint(function = "sys_enter")]
pub fn futex_enter(ctx: BtfTracePointContext) -> i32 {
    // `sys_enter`'s arguments are `(struct pt_regs *regs, long id)`.
    let (regs, id): (*const pt_regs, i64) = (ctx.arg(0), ctx.arg(1));
    let args = || {
        // SAFETY: `regs` is a BTF pointer to the user registers saved at entry: the verifier
        // turns the loads into checked ones.
        let regs = unsafe { &*regs };
        Ok([regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8, regs.r9])
    };
    warn_if_full(&ctx, try_futex_enter(id, args));
    0
}

#[btf_tracepoint(function = "sys_exit")]
pub fn futex_exit(ctx: BtfTracePointContext) -> i32 {
    // `sys_exit`'s arguments are `(struct pt_regs *regs, long ret)`.
    let (regs, ret): (*const pt_regs, i64) = (ctx.arg(0), ctx.arg(1));
    // SAFETY: `regs` is a BTF pointer to the registers saved at entry: the verifier turns the
    // load into a checked one.
    let id = unsafe { (*regs).orig_rax } as i64;
    let _ = try_futex_exit(id, ret);
    0
}

#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn futex_enter_raw(ctx: RawTracePointContext) -> i32 {
    let id: i64 = ctx.arg(1);
    warn_if_full(&ctx, try_futex_enter(id, || syscall_args(ctx.arg(0))));
    0
}

#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn futex_exit_raw(ctx: RawTracePointContext) -> i32 {
    let regs: *const pt_regs = ctx.arg(0);
    // SAFETY: `regs` is the tracepoint's `struct pt_regs *`; the helper checks the read.
    if let Ok(id) = unsafe { bpf_probe_read_kernel(&raw const (*regs).orig_rax) } {
        let _ = try_futex_exit(id as i64, ctx.arg(1));
    }
    0
}

/// Logs (with `--verbose`) that a thread could not be booked because the per-thread map is full.
fn warn_if_full<C: EbpfContext>(ctx: &C, entered: Result<(), i64>) {
    if entered == Err(MAP_FULL) {
        warn!(
            ctx,
            "futexscope: the per-thread map is full: waits of new threads are not counted"
        );
    }
}

#[raw_tracepoint(tracepoint = "sched_process_fork")]
pub fn process_fork(ctx: RawTracePointContext) -> i32 {
    if try_process_fork(&ctx) == Err(MAP_FULL) {
        warn!(
            &ctx,
            "futexscope: the traced-process map is full: a child is not traced"
        );
    }
    0
}

#[raw_tracepoint(tracepoint = "sched_process_exit")]
pub fn thread_exit(_ctx: RawTracePointContext) -> i32 {
    let _ = try_thread_exit();
    0
}

#[uprobe]
pub fn futexscope_marker(ctx: ProbeContext) -> u32 {
    match try_marker(&ctx) {
        Err(MAP_FULL) => warn!(
            &ctx,
            "futexscope: the per-thread map is full: a marker is not counted"
        ),
        Ok(MarkerCheck::OutOfOrder(word)) => {
            warn!(
                &ctx,
                "futexscope: marker out of order: wait_end on {:x} without a futex wait on it",
                word
            )
        }
        _ => {}
    }
    0
}

/// What [`try_marker`] noticed about the marker sequence.
enum MarkerCheck {
    InOrder,
    /// A `wait_end` for a word this thread made no futex wait on.
    OutOfOrder(u64),
}

fn is_futex_syscall(id: i64) -> bool {
    matches!(
        id,
        x if x == i64::from(syscalls::FUTEX)
            || x == i64::from(syscalls::FUTEX_WAITV)
            || x == i64::from(syscalls::FUTEX_WAKE)
            || x == i64::from(syscalls::FUTEX_WAIT)
            || x == i64::from(syscalls::FUTEX_REQUEUE)
    )
}

fn now_ns() -> u64 {
    // SAFETY: the helper has no preconditions.
    unsafe { bpf_ktime_get_ns() }
}

fn current_cpu() -> u32 {
    // SAFETY: the helper has no preconditions.
    unsafe { bpf_get_smp_processor_id() }
}

fn is_traced(tgid: u32) -> bool {
    TRACED_TGIDS.get_ptr(tgid).is_some()
}

fn read_global<T: Copy>(global: &T) -> T {
    // SAFETY: a plain read of a global the loader may have rewritten; volatile so the compiler
    // does not fold the initial value in.
    unsafe { core::ptr::read_volatile(global) }
}

/// The syscall's six arguments from the user registers at entry, read through a helper (raw
/// tracepoints).
fn syscall_args(regs: *const pt_regs) -> Result<[u64; 6], i64> {
    // `struct pt_regs` holds r10, r9, r8, rax, rcx, rdx, rsi, rdi one after another: one read
    // of those eight slots instead of a helper call per argument.
    // SAFETY: `regs` is the tracepoint's `struct pt_regs *`; bpf_probe_read_kernel checks the
    // read and fails cleanly on a bad pointer.
    let [r10, r9, r8, _rax, _rcx, rdx, rsi, rdi] =
        unsafe { bpf_probe_read_kernel((&raw const (*regs).r10).cast::<[u64; 8]>()) }
            .map_err(i64::from)?;
    Ok([rdi, rsi, rdx, r10, r8, r9])
}

fn read_waitv(array: u64, index: u64) -> Result<FutexWaitv, i64> {
    let entry = (array + index * core::mem::size_of::<FutexWaitv>() as u64) as *const FutexWaitv;
    // SAFETY: reading user memory through the checked helper; a bad pointer fails cleanly.
    unsafe { bpf_probe_read_user(entry) }.map_err(i64::from)
}

/// Decodes a futex syscall; `None` if it neither waits nor wakes (FUTEX_FD, TRYLOCK_PI…).
/// Inlined: the BTF of a function returning `Option<Call>` is not valid kernel BTF.
#[inline(always)]
fn decode(id: i64, args: &[u64; 6]) -> Option<Call> {
    let mut call = Call {
        kind: active::NONE,
        op: 0,
        val: 0,
        timeout: 0,
        relative: false,
        clock: CLOCK_MONOTONIC,
        wakeable: true,
        words: [args[0], 0, 0, 0],
        word_count: 1,
    };
    if id == i64::from(syscalls::FUTEX) {
        let op = args[1] as u32;
        let cmd = op & FUTEX_CMD_MASK;
        call.op = op;
        call.val = u64::from(args[2] as u32);
        if op & FUTEX_CLOCK_REALTIME != 0 {
            call.clock = CLOCK_REALTIME;
        }
        match cmd {
            FUTEX_WAIT => {
                call.kind = active::WAIT;
                call.timeout = args[3];
                call.relative = true;
                call.clock = CLOCK_MONOTONIC;
            }
            FUTEX_WAIT_BITSET | FUTEX_WAIT_REQUEUE_PI => {
                call.kind = active::WAIT;
                call.timeout = args[3];
            }
            FUTEX_LOCK_PI | FUTEX_LOCK_PI2 => {
                call.kind = active::WAIT;
                call.timeout = args[3];
                call.wakeable = false;
                if cmd == FUTEX_LOCK_PI {
                    // FUTEX_LOCK_PI deadlines are always on CLOCK_REALTIME.
                    call.clock = CLOCK_REALTIME;
                }
            }
            FUTEX_WAKE | FUTEX_WAKE_BITSET | FUTEX_UNLOCK_PI => call.kind = active::WAKE,
            FUTEX_REQUEUE | FUTEX_CMP_REQUEUE | FUTEX_WAKE_OP | FUTEX_CMP_REQUEUE_PI => {
                call.kind = active::WAKE;
                call.words[1] = args[4];
                call.word_count = 2;
            }
            _ => return None,
        }
    } else if id == i64::from(syscalls::FUTEX_WAIT) {
        // futex_wait(uaddr, val, mask, flags, timeout, clockid): absolute deadline.
        call.kind = active::WAIT;
        call.val = args[1];
        call.op = args[3] as u32;
        call.timeout = args[4];
        call.clock = args[5] as u32;
    } else if id == i64::from(syscalls::FUTEX_WAKE) {
        // futex_wake(uaddr, mask, nr, flags).
        call.kind = active::WAKE;
        call.val = args[2];
        call.op = args[3] as u32;
    } else if id == i64::from(syscalls::FUTEX_WAITV) {
        // futex_waitv(waiters, nr_futexes, flags, timeout, clockid): absolute deadline.
        call.kind = active::WAIT;
        call.op = args[2] as u32;
        call.timeout = args[3];
        call.clock = args[4] as u32;
        let count = args[1];
        let mut tracked = 0u32;
        for i in 0..WAITV_TRACKED_WORDS {
            if (i as u64) < count {
                let entry = read_waitv(args[0], i as u64).ok()?;
                call.words[i] = entry.uaddr;
                if i == 0 {
                    call.val = entry.val;
                }
                tracked += 1;
            }
        }
        if tracked == 0 {
            return None;
        }
        call.word_count = tracked;
    } else if id == i64::from(syscalls::FUTEX_REQUEUE) {
        // futex_requeue(waiters[2], flags, nr_wake, nr_requeue).
        call.kind = active::WAKE;
        call.op = args[1] as u32;
        call.val = args[2];
        call.words[0] = read_waitv(args[0], 0).ok()?.uaddr;
        call.words[1] = read_waitv(args[0], 1).ok()?.uaddr;
        call.word_count = 2;
    } else {
        return None;
    }
    Some(call)
}

fn count_drop(reason: DropReason) {
    if let Some(slot) = DROPS.get_ptr_mut(reason as u32) {
        // SAFETY: `slot` points at this CPU's u64 in the map, valid for this run; atomic
        // because another program on this CPU may interrupt this one.
        unsafe { add(slot, 1) };
    }
}

/// Adds `value` to the u64 at `counter`. Relaxed: the counters are independent tallies read
/// after the fact; no other memory is published through them.
///
/// # Safety
/// `counter` must point at a live, 8-aligned u64 in a map value.
unsafe fn add(counter: *mut u64, value: u64) {
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
unsafe fn add_i64(counter: *mut i64, value: i64) -> i64 {
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
unsafe fn load(counter: *const u64) -> u64 {
    // SAFETY: as in `add`. An aligned 8-byte BPF load is single-copy atomic (and the bpf
    // backend has no atomic-load instruction to select).
    unsafe { core::ptr::read_volatile(counter) }
}

/// Counts `value` in its log2 bucket of `hist`.
///
/// # Safety
/// `hist` must point at a live histogram in a map value.
unsafe fn hist_add(hist: *mut [u64; HIST_BUCKETS], value: u64) {
    let bucket = log2_bucket(value);
    if bucket < HIST_BUCKETS {
        // SAFETY: `bucket` is within the histogram, which the caller guarantees is live.
        unsafe { add(hist.cast::<u64>().add(bucket), 1) };
    }
}

/// The statistics of `(tgid, uaddr)`, created at zero if new; `None` (counted) if the map is
/// full.
fn word_stats(tgid: u32, uaddr: u64) -> Option<*mut FutexStats> {
    let key = FutexKey {
        tgid,
        pad: 0,
        uaddr,
    };
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
    }
    stats
}

/// This thread's state, created if new; `None` (counted) if the map is full.
fn thread_state(tid: u32) -> Option<*mut ThreadState> {
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

/// The absolute monotonic deadline of a wait starting at `now`, 0 if untimed or unreadable.
fn deadline_of(call: &Call, now: u64) -> u64 {
    if call.timeout == 0 {
        return 0;
    }
    // SAFETY: reading the user timespec through the checked helper; a bad pointer fails.
    let Ok(ts) = (unsafe { bpf_probe_read_user(call.timeout as *const Timespec) }) else {
        return 0;
    };
    if ts.sec < 0 || ts.nsec < 0 {
        return 0;
    }
    let ns = (ts.sec as u64)
        .wrapping_mul(NS_PER_SEC)
        .wrapping_add(ts.nsec as u64);
    if call.relative {
        now.wrapping_add(ns)
    } else if call.clock == CLOCK_REALTIME {
        (ns as i64).wrapping_sub(read_global(&REALTIME_OFFSET_NS)) as u64
    } else {
        ns
    }
}

/// Books the start of system call `id` if it is a futex call of a traced process; `args`
/// reads its six arguments.
fn try_futex_enter(id: i64, args: impl FnOnce() -> Result<[u64; 6], i64>) -> Result<(), i64> {
    if !is_futex_syscall(id) {
        return Ok(());
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if !is_traced(tgid) {
        return Ok(());
    }
    let tid = pid_tgid as u32;
    let args = args()?;
    let Some(call) = decode(id, &args) else {
        return Ok(());
    };
    let now = now_ns();
    let state = thread_state(tid).ok_or(MAP_FULL)?;
    // SAFETY: `state` points at this thread's value in the map; only this thread writes it
    // (the marker program runs in the same thread, never concurrently with this one).
    let state = unsafe { &mut *state };
    state.active = call.kind;
    state.syscall = id as u32;
    state.op = call.op;
    state.val = call.val;
    state.start_ns = now;
    state.word_count = call.word_count;
    state.words = call.words;
    state.spurious = 0;
    if call.kind == active::WAKE {
        state.last_woken_word = 0;
        for i in 0..2 {
            if (i as u32) < call.word_count
                && let Some(stats) = word_stats(tgid, call.words[i])
            {
                // SAFETY: `stats` points at the word's value in the map.
                unsafe { add(&raw mut (*stats).wake_calls, 1) };
            }
        }
        return Ok(());
    }
    state.deadline_ns = deadline_of(&call, now);
    state.clock = if state.deadline_ns == 0 {
        NO_CLOCK
    } else {
        call.clock
    };
    let first_stats = word_stats(tgid, call.words[0]);
    // PI lock waits are not classified: a 0 result means "lock taken", not a wakeup.
    if call.wakeable
        && let Some(stats) = first_stats
        // SAFETY: `stats` points at the word's value in the map.
        && is_lost_race(state, call.words[0], unsafe { &*stats }, now)
    {
        state.spurious = spurious::LOST_RACE;
        // SAFETY: as above.
        unsafe { add(&raw mut (*stats).lost_race, 1) };
    }
    state.last_woken_word = 0;
    state.marker_woken_word = 0;
    state.marker_word = call.words[0];
    for i in 0..WAITV_TRACKED_WORDS {
        if (i as u32) >= call.word_count {
            break;
        }
        let stats = if i == 0 {
            first_stats
        } else {
            word_stats(tgid, call.words[i])
        };
        let Some(stats) = stats else {
            continue;
        };
        // SAFETY: `stats` points at the word's value in the map, valid for this run; its
        // fields are 8-aligned u64/i64, updated only atomically.
        unsafe {
            add(&raw mut (*stats).waits, 1);
            // Each increment returns a distinct count, so the largest reaches max_waiters.
            let now_waiting = add_i64(&raw mut (*stats).waiters_now, 1);
            raise_max(&raw mut (*stats).max_waiters, now_waiting);
            state.wake_seq[i] = load(&raw const (*stats).wake_calls);
        }
    }
    Ok(())
}

/// Whether a wait on `word` (its statistics `stats`) starting at `now` follows a wakeup whose
/// waiter lost the race: it was woken on the same word and, instead of getting what it waited
/// for, waits again. On a semaphore's word (see [`is_marker_word`]) that is exact: no
/// `acquired` marker since the wakeup. On any other word the new wait must come within the
/// lost-race window of the wakeup (a condition variable's next wait, much later, is no race).
fn is_lost_race(state: &ThreadState, word: u64, stats: &FutexStats, now: u64) -> bool {
    if is_marker_word(stats) {
        state.marker_woken_word == word
    } else {
        state.last_woken_word == word
            && now.wrapping_sub(state.last_woken_ns) <= read_global(&LOST_RACE_WINDOW_NS)
    }
}

/// Whether the markers have booked anything on the word (a satisfied wakeup, a caller's
/// timeout, tokens asked): then it is a futexscope semaphore's word, whose waiters announce
/// with `acquired` that they got what they waited for.
fn is_marker_word(stats: &FutexStats) -> bool {
    // SAFETY: the fields are live, 8-aligned u64s in a map value.
    unsafe {
        load(&raw const stats.woken_satisfied)
            | load(&raw const stats.caller_timeouts)
            | load(&raw const stats.tokens_asked)
            != 0
    }
}

/// Raises the i64 at `max` to `value` if it is lower.
///
/// # Safety
/// `max` must point at a live, 8-aligned i64 in a map value.
unsafe fn raise_max(max: *mut i64, value: i64) {
    // SAFETY (both blocks): the caller guarantees a live aligned i64. Relaxed: a standalone
    // maximum; the compare-exchange alone makes concurrent raises agree.
    // An aligned 8-byte BPF load is single-copy atomic.
    let mut current = unsafe { core::ptr::read_volatile(max) };
    // Bounded for the verifier; each failed exchange means another CPU raised it meanwhile.
    for _ in 0..8 {
        if current >= value {
            return;
        }
        // SAFETY: see above.
        let (seen, exchanged) =
            unsafe { atomic_cxchg::<i64, { Relaxed }, { Relaxed }>(max, current, value) };
        if exchanged {
            return;
        }
        current = seen;
    }
}

fn is_interrupted(ret: i64) -> bool {
    ret == -EINTR
        || ret == -ERESTARTSYS
        || ret == -ERESTARTNOINTR
        || ret == -ERESTARTNOHAND
        || ret == -ERESTART_RESTARTBLOCK
}

/// Books the end of system call `id` with result `ret` if its start was booked.
fn try_futex_exit(id: i64, ret: i64) -> Result<(), i64> {
    if !is_futex_syscall(id) {
        return Ok(());
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    let tgid = (pid_tgid >> 32) as u32;
    let Some(state) = THREAD_STATE.get_ptr_mut(tid) else {
        return Ok(());
    };
    // SAFETY: this thread's own value in the map (see `try_futex_enter`).
    let state = unsafe { &mut *state };
    if state.active == active::NONE || state.syscall as i64 != id {
        return Ok(());
    }
    let now = now_ns();
    let kind = state.active;
    state.active = active::NONE;
    if kind == active::WAKE {
        if ret > 0
            && let Some(stats) = word_stats(tgid, state.words[0])
        {
            // SAFETY: `stats` points at the word's value in the map.
            unsafe { add(&raw mut (*stats).woken, ret as u64) };
        }
        emit_call(EventKind::Wake, state, tid, tgid, now, ret);
        return Ok(());
    }
    finish_wait(state, tgid, now, ret);
    emit_call(EventKind::Wait, state, tid, tgid, now, ret);
    Ok(())
}

/// Books the end of the wait in `state` with result `ret` at `now`.
fn finish_wait(state: &mut ThreadState, tgid: u32, now: u64, ret: i64) {
    // The word the outcome belongs to: the one futex_waitv reports woken, else the first. Its
    // statistics are kept from the loop, so no word is looked up twice.
    let mut primary = 0usize;
    let mut primary_stats = None;
    for i in 0..WAITV_TRACKED_WORDS {
        if (i as u32) >= state.word_count {
            break;
        }
        let stats = word_stats(tgid, state.words[i]);
        if let Some(stats) = stats {
            // SAFETY: `stats` points at the word's value in the map.
            unsafe { add((&raw mut (*stats).waiters_now).cast(), (-1i64) as u64) };
        }
        if i == 0 || (state.syscall == syscalls::FUTEX_WAITV && ret == i as i64) {
            primary = i;
            primary_stats = stats;
        }
    }
    let word = state.words[primary & (WAITV_TRACKED_WORDS - 1)];
    let Some(stats) = primary_stats else {
        return;
    };
    let wakeable = !is_pi_lock(state);
    // SAFETY: `stats` points at the word's value in the map; every field is updated atomically.
    unsafe {
        let waited = now.wrapping_sub(state.start_ns);
        hist_add(&raw mut (*stats).wait_hist, waited);
        if ret == -ETIMEDOUT {
            add(&raw mut (*stats).timeouts, 1);
            if state.deadline_ns != 0 {
                let drift = now.saturating_sub(state.deadline_ns);
                hist_add(&raw mut (*stats).drift_hist, drift);
            }
        } else if is_interrupted(ret) {
            add(&raw mut (*stats).eintr, 1);
            state.spurious |= spurious::INTERRUPTED;
        } else if ret == -EAGAIN {
            add(&raw mut (*stats).eagain, 1);
            state.spurious |= spurious::VALUE_CHANGED;
        } else if ret >= 0 {
            add(&raw mut (*stats).wakeups, 1);
            if wakeable {
                let wake_calls = load(&raw const (*stats).wake_calls);
                if wake_calls == state.wake_seq[primary & (WAITV_TRACKED_WORDS - 1)] {
                    add(&raw mut (*stats).no_waker, 1);
                    state.spurious |= spurious::NO_WAKER;
                }
                state.last_woken_word = word;
                state.last_woken_ns = now;
                if ret == 0 {
                    // Until an `acquired` marker clears it, the next wait on this word is a
                    // lost race (see `is_lost_race`); the `wait_end` marker records the same.
                    state.marker_woken_word = word;
                }
            }
        }
    }
}

fn is_pi_lock(state: &ThreadState) -> bool {
    let cmd = state.op & FUTEX_CMD_MASK;
    state.syscall == syscalls::FUTEX && (cmd == FUTEX_LOCK_PI || cmd == FUTEX_LOCK_PI2)
}

/// Puts a record of the call in `state` in the ring buffer (or counts the drop).
fn emit_call(kind: EventKind, state: &ThreadState, tid: u32, tgid: u32, now: u64, ret: i64) {
    let Some(mut entry) = EVENTS.reserve::<Event>(0) else {
        count_drop(DropReason::RingBufferFull);
        return;
    };
    let event = entry.as_mut_ptr();
    // SAFETY: `event` points at a reserved, exclusively owned slot of `Event` size; every field
    // is written before submit.
    unsafe {
        (*event).kind = kind as u32;
        (*event).tid = tid;
        (*event).tgid = tgid;
        (*event).cpu = current_cpu();
        (*event).ts_ns = now;
        (*event).start_ns = state.start_ns;
        (*event).uaddr = state.words[0];
        (*event).uaddr2 = if kind == EventKind::Wake {
            state.words[1]
        } else {
            0
        };
        (*event).op = state.op;
        (*event).syscall = state.syscall;
        (*event).ret = ret;
        (*event).deadline_ns = if kind == EventKind::Wake {
            0
        } else {
            state.deadline_ns
        };
        (*event).args = [
            state.val,
            state.words[1],
            state.words[2],
            state.words[3],
            0,
            0,
        ];
        (*event).spurious = if kind == EventKind::Wake {
            0
        } else {
            state.spurious
        };
        (*event).clock = if kind == EventKind::Wake {
            NO_CLOCK
        } else {
            state.clock
        };
    }
    entry.submit(wakeup_flag());
}

/// How a record is submitted: waking the tracer only once the buffer holds [`WAKEUP_BYTES`].
/// Below that the tracer drains on its own timer, so a traced program does not pay for waking
/// it (and losing a CPU to it) at every futex call; above it the tracer is woken at once, so a
/// burst cannot fill the buffer while it sleeps.
fn wakeup_flag() -> u64 {
    if EVENTS.query(u64::from(BPF_RB_AVAIL_DATA)) >= read_global(&WAKEUP_BYTES) {
        u64::from(BPF_RB_FORCE_WAKEUP)
    } else {
        u64::from(BPF_RB_NO_WAKEUP)
    }
}

fn emit(event: &Event) {
    if EVENTS.output::<Event>(event, wakeup_flag()).is_err() {
        count_drop(DropReason::RingBufferFull);
    }
}

fn blank_event(kind: EventKind, tid: u32, tgid: u32, now: u64) -> Event {
    Event {
        kind: kind as u32,
        tid,
        tgid,
        cpu: current_cpu(),
        ts_ns: now,
        ..Event::ZERO
    }
}

fn try_process_fork(ctx: &RawTracePointContext) -> Result<(), i64> {
    let tgid_offset = read_global(&TASK_TGID_OFFSET);
    if tgid_offset == 0 {
        return Ok(());
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let parent = (pid_tgid >> 32) as u32;
    if !is_traced(parent) {
        return Ok(());
    }
    let child_task: u64 = ctx.arg(1);
    // SAFETY: `child_task` is the tracepoint's `struct task_struct *`; the offset comes from
    // the kernel's BTF; the helper checks the read.
    let child =
        unsafe { bpf_probe_read_kernel((child_task + u64::from(tgid_offset)) as *const u32) }
            .map_err(i64::from)?;
    if child == parent {
        return Ok(()); // a new thread, already covered by its process
    }
    if TRACED_TGIDS.insert(child, 1, u64::from(BPF_ANY)).is_err() {
        count_drop(DropReason::MapFull);
        return Err(MAP_FULL);
    }
    let mut event = blank_event(EventKind::Fork, pid_tgid as u32, parent, now_ns());
    event.args[0] = u64::from(child);
    emit(&event);
    Ok(())
}

fn try_thread_exit() -> Result<(), i64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    let tgid = (pid_tgid >> 32) as u32;
    let Some(state) = THREAD_STATE.get_ptr_mut(tid) else {
        return Ok(());
    };
    // SAFETY: this thread's own value in the map.
    let state = unsafe { &mut *state };
    if state.active == active::WAIT {
        let now = now_ns();
        for i in 0..WAITV_TRACKED_WORDS {
            if (i as u32) >= state.word_count {
                break;
            }
            if let Some(stats) = word_stats(tgid, state.words[i]) {
                // SAFETY: `stats` points at the word's value in the map.
                unsafe {
                    add((&raw mut (*stats).waiters_now).cast(), (-1i64) as u64);
                    add(&raw mut (*stats).died_waiting, 1);
                }
            }
        }
        emit_call(EventKind::DiedWaiting, state, tid, tgid, now, 0);
    }
    let _ = THREAD_STATE.remove(tid);
    Ok(())
}

/// 8-byte slots of the probed `struct pt_regs` of the target architecture.
const PT_REGS_SLOTS: usize = core::mem::size_of::<pt_regs>() / 8;

/// The probed registers, copied out of the context: plain loads at fixed offsets, cheaper than
/// a helper call per marker argument.
fn probed_registers(ctx: &ProbeContext) -> [u64; PT_REGS_SLOTS] {
    // SAFETY: a uprobe's context is the probed `struct pt_regs`, `PT_REGS_SLOTS` aligned u64s
    // that the program may read at fixed offsets (the verifier checks each load).
    unsafe { core::ptr::read(ctx.as_ptr().cast::<[u64; PT_REGS_SLOTS]>()) }
}

/// Reads argument `index` of the marker site `site` from the probed registers `regs`.
fn marker_arg(regs: &[u64; PT_REGS_SLOTS], site: &MarkerSite, index: usize) -> u64 {
    let spec = &site.args[index];
    let raw = match spec.kind {
        arg_kind::CONSTANT => spec.value,
        arg_kind::REGISTER | arg_kind::MEMORY => {
            let Some(&reg) = regs.get((spec.reg_offset / 8) as usize) else {
                return 0;
            };
            if spec.kind == arg_kind::REGISTER {
                reg
            } else {
                // SAFETY: user memory read through the checked helper.
                unsafe { bpf_probe_read_user(reg.wrapping_add(spec.value) as *const u64) }
                    .unwrap_or(0)
            }
        }
        _ => return 0,
    };
    let shift = 64 - 8 * (spec.size & 15).clamp(1, 8);
    if spec.signed != 0 {
        (((raw << shift) as i64) >> shift) as u64
    } else {
        (raw << shift) >> shift
    }
}

fn try_marker(ctx: &ProbeContext) -> Result<MarkerCheck, i64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if !is_traced(tgid) {
        return Ok(MarkerCheck::InOrder);
    }
    let tid = pid_tgid as u32;
    // SAFETY: the helper reads this attachment's cookie from the program context.
    let cookie = unsafe { bpf_get_attach_cookie(ctx.as_ptr()) };
    let site_index = (cookie >> 32) as u32;
    let site = MARKER_SITES.get(site_index).ok_or(0)?;
    let Some(marker) = Marker::from_id(cookie as u32) else {
        return Ok(MarkerCheck::InOrder);
    };
    let now = now_ns();
    let mut event = blank_event(EventKind::Marker, tid, tgid, now);
    event.op = marker as u32;
    let regs = probed_registers(ctx);
    for i in 0..MAX_MARKER_ARGS {
        if (i as u32) < site.arg_count {
            event.args[i] = marker_arg(&regs, site, i);
        }
    }
    let args = event.args;
    let state = thread_state(tid).ok_or(MAP_FULL)?;
    // SAFETY: this thread's own value in the map.
    let state = unsafe { &mut *state };
    let mut check = MarkerCheck::InOrder;
    match marker {
        Marker::WaitBegin => {
            // wait_begin(sem, word, expected, wanted, deadline_ns, state). The futex wait
            // that follows books the lost race, if any, and the word for later markers.
            let word = args[1];
            event.uaddr = word;
            event.deadline_ns = args[4];
            if let Some(stats) = word_stats(tgid, word) {
                // SAFETY: `stats` points at the word's value in the map.
                unsafe { add(&raw mut (*stats).tokens_asked, args[3]) };
            }
        }
        Marker::WaitEnd => {
            // wait_end(sem, word, result, wanted)
            event.uaddr = args[1];
            if state.marker_word != args[1] {
                check = MarkerCheck::OutOfOrder(args[1]);
            }
            if args[2] as i64 == 0 {
                state.marker_woken_word = args[1];
            }
        }
        Marker::Acquired => {
            if state.marker_woken_word != 0
                && let Some(stats) = word_stats(tgid, state.marker_woken_word)
            {
                // SAFETY: `stats` points at the word's value in the map.
                unsafe { add(&raw mut (*stats).woken_satisfied, 1) };
            }
            event.uaddr = state.marker_word;
            state.marker_woken_word = 0;
        }
        Marker::TimedOut => {
            // timed_out(sem, wanted, deadline_ns, now_ns)
            event.uaddr = state.marker_word;
            event.deadline_ns = args[2];
            if state.marker_word != 0
                && let Some(stats) = word_stats(tgid, state.marker_word)
            {
                let drift = args[3].saturating_sub(args[2]);
                // SAFETY: `stats` points at the word's value in the map.
                unsafe {
                    add(&raw mut (*stats).caller_timeouts, 1);
                    hist_add(&raw mut (*stats).caller_drift_hist, drift);
                }
            }
            state.marker_woken_word = 0;
        }
        Marker::WakeBegin | Marker::WakeEnd => event.uaddr = args[1],
    }
    emit(&event);
    Ok(check)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
