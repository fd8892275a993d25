//! `--stacks`: a copy of the user stack of each futex wait that slept and each wake that woke
//! a thread, into the `STACKS` ring buffer (layout in `futexscope_probes_common::stack`).
//!
//! Captured at `sys_exit`, when the outcome is known: the thread sat in the kernel since the
//! call began, so its user registers and the return addresses on its stack are still those of
//! the call. The record is reserved in the ring buffer and the stack read straight into it (one
//! copy); a full ring buffer is counted in `DROPS`.
//!
//! The copy is bounded by the end of the stack's mapping (`bpf_find_vma` on the BTF hooks):
//! `bpf_probe_read_user` copies nothing when the window runs off the mapping, as it does near
//! the top of a stack, and a failed read costs more than a good one.

use core::ffi::c_void;

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{
        bpf_find_vma, bpf_get_current_task_btf, bpf_probe_read_kernel,
        generated::bpf_probe_read_user,
    },
    macros::map,
    maps::{PerCpuArray, RingBuf},
};
use futexscope_probes_common::{
    abi::EAGAIN,
    event::EventKind,
    maps::{DropReason, FutexKey},
    stack::{
        DEFAULT_STACK_RING_BYTES, STACK_FALLBACK_BYTES, STACK_WAKEUP_PERIOD_NS, STACK_WINDOW_BYTES,
        StackRecord,
    },
};

use crate::maps::{KEY_OFFSETS, count_drop, read_global};

/// Whether the tracer turned stack capture on (set at load; 0 = off).
#[unsafe(no_mangle)]
static STACK_CAPTURE: u32 = 0;

/// One page until the tracer sizes it at load (with `--stacks`).
#[map(name = "STACKS")]
static STACKS: RingBuf = RingBuf::with_byte_size(4096, 0);

/// The user registers of a call: instruction, stack and frame pointer.
pub(crate) struct UserRegs {
    pub(crate) ip: u64,
    pub(crate) sp: u64,
    pub(crate) bp: u64,
}

/// The call a stack belongs to.
pub(crate) struct StackCall {
    pub(crate) kind: EventKind,
    pub(crate) tid: u32,
    pub(crate) tgid: u32,
    pub(crate) start_ns: u64,
    pub(crate) ts_ns: u64,
    pub(crate) uaddr: u64,
    pub(crate) key: FutexKey,
    pub(crate) ret: i64,
}

/// Whether capture is on and `call` is worth a stack: a wait that slept (anything but
/// `EAGAIN`, which returned before sleeping) or a wake that woke at least one thread.
#[inline(always)]
pub(crate) fn wanted(kind: EventKind, ret: i64) -> bool {
    if read_global(&STACK_CAPTURE) == 0 {
        return false;
    }
    match kind {
        EventKind::Wait => ret != -EAGAIN,
        EventKind::Wake => ret > 0,
        _ => false,
    }
}

/// The `bpf_find_vma` callback: stores the end of the mapping `vma` (which holds the stack
/// pointer) in `end`, left 0 if it cannot be read. Returns 0 (the helper ignores it).
#[inline(never)]
extern "C" fn mapping_end(_task: *mut c_void, vma: *mut c_void, end: *mut c_void) -> i64 {
    let offset = u64::from(read_global(&KEY_OFFSETS).vma_end);
    // SAFETY: the offset of `vm_end` in the kernel's `vm_area_struct`, from its BTF; the
    // helper checks the read.
    if let Ok(value) = unsafe { bpf_probe_read_kernel((vma as u64 + offset) as *const u64) } {
        // SAFETY: `end` is the `u64` on the stack of `stack_end`, which passed it to the helper
        // that calls this function.
        unsafe { *end.cast::<u64>() = value };
    }
    0
}

/// The end of the current thread's mapping that holds `sp` (the top of its stack), if it can
/// be found: with the kernel's offsets and the mmap lock not held for writing. BTF hooks only
/// (the task pointer must be a BTF one).
#[inline(always)]
pub(crate) fn stack_end(sp: u64) -> Option<u64> {
    if read_global(&KEY_OFFSETS).valid == 0 {
        return None;
    }
    let mut end = 0u64;
    // SAFETY: the task is the current one (a trusted BTF pointer); the callback is a
    // subprogram with the signature the helper calls; the context is on this stack and
    // outlives the call; flags must be 0.
    let ret = unsafe {
        bpf_find_vma(
            bpf_get_current_task_btf(),
            sp,
            mapping_end as *mut c_void,
            (&raw mut end).cast(),
            0,
        )
    };
    (ret == 0 && end > sp).then_some(end)
}

/// Puts the stack of `call` (its registers from `regs`, the end of its stack's mapping from
/// `stack_end` if known) in the ring buffer, or counts the drop.
#[inline(always)]
pub(crate) fn capture(
    call: &StackCall,
    regs: impl FnOnce() -> Option<UserRegs>,
    stack_end: impl FnOnce(u64) -> Option<u64>,
) {
    let Some(regs) = regs() else {
        return;
    };
    let end = stack_end(regs.sp);
    let waiting = STACKS.query(u64::from(BPF_RB_AVAIL_DATA));
    let Some(mut entry) = STACKS.reserve::<StackRecord>(0) else {
        count_drop(DropReason::StackRingFull);
        return;
    };
    let record = entry.as_mut_ptr();
    // SAFETY: `record` points at a reserved, exclusively owned slot of `StackRecord` size;
    // every header field is written before submit and `stack` is filled by the helper, which
    // zeroes it on failure (only `copied` bytes are read by the tracer).
    unsafe {
        (*record).kind = call.kind as u32;
        (*record).tid = call.tid;
        (*record).tgid = call.tgid;
        (*record).ts_ns = call.ts_ns;
        (*record).start_ns = call.start_ns;
        (*record).uaddr = call.uaddr;
        (*record).key = call.key;
        (*record).ret = call.ret;
        (*record).ip = regs.ip;
        (*record).sp = regs.sp;
        (*record).bp = regs.bp;
        (*record).copied = copy_stack(&raw mut (*record).stack, regs.sp, end);
    }
    entry.submit(u64::from(wakeup_flags(waiting, call.ts_ns)));
}

/// Fill level of `STACKS` from which a record wakes the tracer (a quarter of the buffer, so
/// that a burst is drained before it fills); set by the tracer at load.
#[unsafe(no_mangle)]
static STACK_WAKEUP_BYTES: u64 = DEFAULT_STACK_RING_BYTES as u64 / 4;

/// When this CPU last woke the tracer for a stack record (CLOCK_MONOTONIC ns).
#[map(name = "STACK_WOKEN_NS")]
static STACK_WOKEN_NS: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// How a stack record is submitted: waking the tracer once the buffer holds
/// [`STACK_WAKEUP_BYTES`], and otherwise at most once per [`STACK_WAKEUP_PERIOD_NS`] per CPU,
/// so that it reads a new process's memory map while the process still lives. A wakeup per
/// record (per drain, with a tracer that keeps up) cost the traced thread ~1.5 µs.
#[inline(always)]
fn wakeup_flags(waiting: u64, now: u64) -> u32 {
    if waiting >= read_global(&STACK_WAKEUP_BYTES) {
        return BPF_RB_FORCE_WAKEUP;
    }
    let Some(woken) = STACK_WOKEN_NS.get_ptr_mut(0) else {
        return BPF_RB_NO_WAKEUP;
    };
    // SAFETY: this CPU's slot of the per-CPU array; programs on one CPU do not run at once.
    unsafe {
        if now.wrapping_sub(*woken) < STACK_WAKEUP_PERIOD_NS {
            return BPF_RB_NO_WAKEUP;
        }
        *woken = now;
    }
    BPF_RB_FORCE_WAKEUP
}

/// Copies the user stack from `sp` into `dst`: the window or, with the end of the stack's
/// mapping known, up to that end if nearer; else, when the window fails to read (a failed read
/// copies nothing: near the top of a stack the window runs off its mapping), each fallback
/// size in turn. Returns the bytes copied, 0 if none.
///
/// # Safety
/// `dst` must point at a writable `[u8; STACK_WINDOW_BYTES]`.
#[inline(always)]
unsafe fn copy_stack(dst: *mut [u8; STACK_WINDOW_BYTES], sp: u64, end: Option<u64>) -> u32 {
    let dst = dst.cast::<c_void>();
    let src = sp as *const c_void;
    if let Some(end) = end {
        let len = end.wrapping_sub(sp).min(STACK_WINDOW_BYTES as u64) as u32;
        // SAFETY: `dst` has room for `len` ≤ the window bytes (caller); the helper checks the
        // user read and fails cleanly on a bad or unmapped address.
        if unsafe { bpf_probe_read_user(dst, len, src) } == 0 {
            return len;
        }
    }
    // SAFETY: `dst` has room for the window (caller); the helper checks the user read and
    // fails cleanly on a bad or unmapped address. Constant sizes, as the verifier requires.
    if unsafe { bpf_probe_read_user(dst, STACK_WINDOW_BYTES as u32, src) } == 0 {
        return STACK_WINDOW_BYTES as u32;
    }
    // SAFETY: as above; the fallbacks are smaller than the window.
    if unsafe { bpf_probe_read_user(dst, STACK_FALLBACK_BYTES[0] as u32, src) } == 0 {
        return STACK_FALLBACK_BYTES[0] as u32;
    }
    // SAFETY: as above.
    if unsafe { bpf_probe_read_user(dst, STACK_FALLBACK_BYTES[1] as u32, src) } == 0 {
        return STACK_FALLBACK_BYTES[1] as u32;
    }
    0
}
