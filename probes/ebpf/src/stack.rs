//! `--stacks`: a copy of the user stack of each futex wait that slept and each wake that woke
//! a thread, into the `STACKS` ring buffer (layout in `futexscope_probes_common::stack`).
//!
//! Captured at `sys_exit`, when the outcome is known: the thread sat in the kernel since the
//! call began, so its user registers and the return addresses on its stack are still those of
//! the call. The record is reserved in the ring buffer and the stack read straight into it (one
//! copy); a full ring buffer is counted in `DROPS`.

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::generated::bpf_probe_read_user,
    macros::map,
    maps::RingBuf,
};
use futexscope_probes_common::{
    abi::EAGAIN,
    event::EventKind,
    maps::{DropReason, FutexKey},
    stack::{STACK_FALLBACK_BYTES, STACK_WINDOW_BYTES, StackRecord},
};

use crate::maps::{count_drop, read_global};

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

/// Puts the stack of `call` (its registers from `regs`) in the ring buffer, or counts the drop.
#[inline(always)]
pub(crate) fn capture(call: &StackCall, regs: impl FnOnce() -> Option<UserRegs>) {
    let Some(regs) = regs() else {
        return;
    };
    // The first record after a drain wakes the tracer at once: it reads the process's memory
    // map while the process still lives (one wakeup per drain, not per record).
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
        (*record).copied = copy_stack(&raw mut (*record).stack, regs.sp);
    }
    let flags = if waiting == 0 || waiting >= STACKS_WAKEUP_BYTES {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    entry.submit(u64::from(flags));
}

/// Fill level of `STACKS` from which a record wakes the tracer: a quarter of the default size,
/// as for `EVENTS`, so that a burst is drained before the buffer fills.
const STACKS_WAKEUP_BYTES: u64 =
    futexscope_probes_common::stack::DEFAULT_STACK_RING_BYTES as u64 / 4;

/// Copies the user stack from `sp` into `dst`: the whole window, else each fallback size in
/// turn (a failed read copies nothing, and near the top of a stack the window runs off its
/// mapping). Returns the bytes copied, 0 if none.
///
/// # Safety
/// `dst` must point at a writable `[u8; STACK_WINDOW_BYTES]`.
#[inline(always)]
unsafe fn copy_stack(dst: *mut [u8; STACK_WINDOW_BYTES], sp: u64) -> u32 {
    let dst = dst.cast::<core::ffi::c_void>();
    let src = sp as *const core::ffi::c_void;
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
