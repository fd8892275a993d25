//! The end of a futex call: a wake's count of woken threads, a wait's outcome (woken, timed out,
//! interrupted, value changed), its wait time and deadline drift, and the record of either.

use aya_ebpf::helpers::bpf_get_current_pid_tgid;
use futexscope_probes_common::{
    abi::{
        EAGAIN, EINTR, ERESTART_RESTARTBLOCK, ERESTARTNOHAND, ERESTARTNOINTR, ERESTARTSYS,
        ETIMEDOUT, FUTEX_CMD_MASK, FUTEX_LOCK_PI, FUTEX_LOCK_PI2, syscalls,
    },
    event::{EventKind, spurious},
    maps::{ThreadState, WAITV_TRACKED_WORDS, active},
};

use super::is_futex_syscall;
use crate::{
    atomic::{add, load, time_add},
    emit::emit_call,
    helpers::now_ns,
    maps::{THREAD_STATE, word_stats},
    stack::{self, StackCall, UserRegs},
};

/// Books the end of system call `id` with result `ret` if its start was booked; with
/// `--stacks`, captures the user stack (registers from `regs`, the end of the stack's mapping
/// from `stack_end`) of a wait that slept or a wake that woke. Inlined into each program: as
/// one shared subprogram, LLVM's BPF backend reads an argument register after a helper call
/// has clobbered it, which the verifier rejects.
#[inline(always)]
pub(super) fn try_futex_exit(
    id: i64,
    ret: i64,
    regs: impl FnOnce() -> Option<UserRegs>,
    stack_end: impl FnOnce(u64) -> Option<u64>,
) -> Result<(), i64> {
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
            && let Some(stats) = word_stats(&state.keys[0])
        {
            // SAFETY: `stats` points at the word's value in the map.
            unsafe { add(&raw mut (*stats).woken, ret as u64) };
        }
        emit_call(EventKind::Wake, state, tid, tgid, now, ret);
    } else {
        finish_wait(state, now, ret);
        emit_call(EventKind::Wait, state, tid, tgid, now, ret);
    }
    let kind = if kind == active::WAKE {
        EventKind::Wake
    } else {
        EventKind::Wait
    };
    if stack::wanted(kind, ret) {
        let call = StackCall {
            kind,
            tid,
            tgid,
            start_ns: state.start_ns,
            ts_ns: now,
            uaddr: state.words[0],
            key: state.keys[0],
            ret,
        };
        stack::capture(&call, regs, stack_end);
    }
    Ok(())
}

fn is_interrupted(ret: i64) -> bool {
    ret == -EINTR
        || ret == -ERESTARTSYS
        || ret == -ERESTARTNOINTR
        || ret == -ERESTARTNOHAND
        || ret == -ERESTART_RESTARTBLOCK
}

/// Books the end of the wait in `state` with result `ret` at `now`.
fn finish_wait(state: &mut ThreadState, now: u64, ret: i64) {
    // The word the outcome belongs to: the one futex_waitv reports woken, else the first. Its
    // statistics are kept from the loop, so no word is looked up twice.
    let mut primary = 0usize;
    let mut primary_stats = None;
    for i in 0..WAITV_TRACKED_WORDS {
        if (i as u32) >= state.word_count {
            break;
        }
        let stats = word_stats(&state.keys[i]);
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
        time_add(
            &raw mut (*stats).wait_hist,
            &raw mut (*stats).wait_sum_ns,
            &raw mut (*stats).wait_max_ns,
            waited,
        );
        if ret == -ETIMEDOUT {
            add(&raw mut (*stats).timeouts, 1);
            if state.deadline_ns != 0 {
                // Early only through the CLOCK_REALTIME conversion: counted, booked as 0.
                if now < state.deadline_ns {
                    add(&raw mut (*stats).drift_early, 1);
                }
                let drift = now.saturating_sub(state.deadline_ns);
                time_add(
                    &raw mut (*stats).drift_hist,
                    &raw mut (*stats).drift_sum_ns,
                    &raw mut (*stats).drift_max_ns,
                    drift,
                );
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
