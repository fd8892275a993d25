//! The start of a futex call: booked in the thread's state; for a wait, also the waiter counts
//! of its words and whether it follows a lost race.

use aya_ebpf::helpers::bpf_get_current_pid_tgid;
use futexscope_probes_common::{
    event::{NO_CLOCK, spurious},
    maps::{DropReason, FutexKey, FutexStats, ThreadState, WAITV_TRACKED_WORDS, active, key_kind},
};

use super::{
    decode::{Call, deadline_of, decode},
    is_futex_syscall,
    key::shared_key,
};
use crate::{
    atomic::{add, add_i64, load, raise_max},
    helpers::now_ns,
    maps::{
        LOST_RACE_WINDOW_NS, MAP_FULL, count_drop, is_traced, note_user, read_global, thread_state,
        word_stats,
    },
};

/// Books the start of system call `id` if it is a futex call of a traced process; `args`
/// reads its six arguments. `FIND_VMA`: key the words of non-private operations by their
/// memory (`bpf_find_vma`, BTF tracepoints only); without it they are keyed by process and
/// counted as fallbacks.
pub(super) fn try_futex_enter<const FIND_VMA: bool>(
    id: i64,
    args: impl FnOnce() -> Result<[u64; 6], i64>,
) -> Result<(), i64> {
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
    set_keys::<FIND_VMA>(state, &call, tgid);
    if call.kind == active::WAKE {
        state.last_woken_word = 0;
        for i in 0..2 {
            if (i as u32) < call.word_count
                && let Some(stats) = word_stats(&state.keys[i])
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
    let first_stats = word_stats(&state.keys[0]);
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
            word_stats(&state.keys[i])
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

/// Keys the words of `call` (see `super::key`) into `state.keys`: by (process, address), or for
/// a non-private operation by the memory that holds the word; a shared futex also records its
/// user.
#[inline(always)]
fn set_keys<const FIND_VMA: bool>(state: &mut ThreadState, call: &Call, tgid: u32) {
    for i in 0..WAITV_TRACKED_WORDS {
        if (i as u32) >= call.word_count {
            break;
        }
        let uaddr = call.words[i];
        let key = if call.shared & (1 << i) == 0 {
            FutexKey::process(tgid, uaddr)
        } else if FIND_VMA {
            shared_key(tgid, uaddr)
        } else {
            count_drop(DropReason::SharedKeyFallback);
            FutexKey::process(tgid, uaddr)
        };
        if key.kind == key_kind::INODE {
            note_user(&key, tgid, uaddr);
        }
        state.keys[i] = key;
    }
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
