//! What a futex call does, decoded from its syscall number and arguments: wait or wake, its
//! words, value, flags and deadline.

use aya_ebpf::helpers::bpf_probe_read_user;
use futexscope_probes_common::{
    abi::{
        CLOCK_MONOTONIC, CLOCK_REALTIME, FUTEX_CLOCK_REALTIME, FUTEX_CMD_MASK, FUTEX_CMP_REQUEUE,
        FUTEX_CMP_REQUEUE_PI, FUTEX_LOCK_PI, FUTEX_LOCK_PI2, FUTEX_PRIVATE_FLAG, FUTEX_REQUEUE,
        FUTEX_UNLOCK_PI, FUTEX_WAIT, FUTEX_WAIT_BITSET, FUTEX_WAIT_REQUEUE_PI, FUTEX_WAKE,
        FUTEX_WAKE_BITSET, FUTEX_WAKE_OP, FUTEX2_PRIVATE, FutexWaitv, syscalls,
    },
    maps::{WAITV_TRACKED_WORDS, active},
};

use crate::maps::{REALTIME_OFFSET_NS, read_global};

const NS_PER_SEC: u64 = 1_000_000_000;

/// User `struct timespec`.
#[repr(C)]
#[derive(Clone, Copy)]
struct Timespec {
    sec: i64,
    nsec: i64,
}

/// What one futex syscall does, decoded from its arguments.
pub(super) struct Call {
    pub(super) kind: u32,
    pub(super) op: u32,
    pub(super) val: u64,
    /// User pointer to the timeout, 0 if none.
    pub(super) timeout: u64,
    /// Whether the timeout is relative (plain FUTEX_WAIT).
    pub(super) relative: bool,
    pub(super) clock: u32,
    /// Whether a 0 result means "woken by a wake" (not "PI lock taken").
    pub(super) wakeable: bool,
    pub(super) words: [u64; WAITV_TRACKED_WORDS],
    pub(super) word_count: u32,
    /// Bit `i` set: word `i` is named by a non-private operation (keyed by its memory, see
    /// `super::key`).
    pub(super) shared: u32,
}

/// All tracked words of a call whose flags say "not private" (`private_flag` is
/// `FUTEX_PRIVATE_FLAG` or `FUTEX2_PRIVATE`, the same bit).
fn shared_if_not(flags: u32, private_flag: u32) -> u32 {
    if flags & private_flag == 0 {
        (1 << WAITV_TRACKED_WORDS) - 1
    } else {
        0
    }
}

fn read_waitv(array: u64, index: u64) -> Result<FutexWaitv, i64> {
    let entry = (array + index * core::mem::size_of::<FutexWaitv>() as u64) as *const FutexWaitv;
    // SAFETY: reading user memory through the checked helper; a bad pointer fails cleanly.
    unsafe { bpf_probe_read_user(entry) }.map_err(i64::from)
}

/// Decodes a futex syscall; `None` if it neither waits nor wakes (FUTEX_FD, TRYLOCK_PI…).
/// Inlined: the BTF of a function returning `Option<Call>` is not valid kernel BTF.
#[inline(always)]
pub(super) fn decode(id: i64, args: &[u64; 6]) -> Option<Call> {
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
        shared: 0,
    };
    if id == i64::from(syscalls::FUTEX) {
        let op = args[1] as u32;
        let cmd = op & FUTEX_CMD_MASK;
        call.op = op;
        call.val = u64::from(args[2] as u32);
        call.shared = shared_if_not(op, FUTEX_PRIVATE_FLAG);
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
        call.shared = shared_if_not(call.op, FUTEX2_PRIVATE);
        call.timeout = args[4];
        call.clock = args[5] as u32;
    } else if id == i64::from(syscalls::FUTEX_WAKE) {
        // futex_wake(uaddr, mask, nr, flags).
        call.kind = active::WAKE;
        call.val = args[2];
        call.op = args[3] as u32;
        call.shared = shared_if_not(call.op, FUTEX2_PRIVATE);
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
                if entry.flags & FUTEX2_PRIVATE == 0 {
                    call.shared |= 1 << i;
                }
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
        let (first, second) = (read_waitv(args[0], 0).ok()?, read_waitv(args[0], 1).ok()?);
        call.words[0] = first.uaddr;
        call.words[1] = second.uaddr;
        call.shared = shared_if_not(first.flags, FUTEX2_PRIVATE) & 1
            | shared_if_not(second.flags, FUTEX2_PRIVATE) & 2;
        call.word_count = 2;
    } else {
        return None;
    }
    Some(call)
}

/// The absolute monotonic deadline of a wait starting at `now`, 0 if untimed or unreadable.
pub(super) fn deadline_of(call: &Call, now: u64) -> u64 {
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
