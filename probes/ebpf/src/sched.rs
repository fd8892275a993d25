//! The scheduler hooks: `process_fork` (`sched_process_fork`) traces the children of traced
//! processes too; `process_exec` (`sched_process_exec`, attached only when names are asked
//! for) traces a process that execs into a traced name; `thread_exit` (`sched_process_exit`) takes a thread that dies inside a wait
//! off its words.

use aya_ebpf::{
    bindings::BPF_ANY,
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_probe_read_kernel},
    macros::raw_tracepoint,
    programs::RawTracePointContext,
};
use aya_log_ebpf::warn;
use futexscope_probes_common::{
    event::EventKind,
    maps::{DropReason, WAITV_TRACKED_WORDS, active},
};

use crate::{
    atomic::add,
    emit::{blank_event, emit, emit_call},
    helpers::now_ns,
    maps::{
        MAP_FULL, TASK_TGID_OFFSET, THREAD_STATE, TRACED_COMMS, TRACED_TGIDS, UNTRACE_OTHER_EXECS,
        count_drop, is_traced, read_global, word_stats,
    },
};

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

#[raw_tracepoint(tracepoint = "sched_process_exec")]
pub fn process_exec(_ctx: RawTracePointContext) -> i32 {
    let _ = try_process_exec();
    0
}

#[raw_tracepoint(tracepoint = "sched_process_exit")]
pub fn thread_exit(_ctx: RawTracePointContext) -> i32 {
    let _ = try_thread_exit();
    0
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

/// Traces a process whose `exec` gave it one of the names in `TRACED_COMMS`; with
/// `UNTRACE_OTHER_EXECS`, stops tracing one that runs a program of another name.
fn try_process_exec() -> Result<(), i64> {
    let comm = bpf_get_current_comm()?;
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if TRACED_COMMS.get_ptr(comm).is_none() {
        if read_global(&UNTRACE_OTHER_EXECS) != 0 {
            // Not traced already is fine: nothing to remove.
            let _ = TRACED_TGIDS.remove(tgid);
        }
        return Ok(());
    }
    if TRACED_TGIDS.insert(tgid, 1, u64::from(BPF_ANY)).is_err() {
        count_drop(DropReason::MapFull);
        return Err(MAP_FULL);
    }
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
            if let Some(stats) = word_stats(&state.keys[i]) {
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
