//! The marker uprobe `futexscope_marker`, attached once per marker site of the semaphore (the
//! attach cookie names the marker and the site): decodes the marker's arguments, records it,
//! and books what it says about the futex words (tokens asked, satisfied wakeups, the caller's
//! timeouts).

use aya_ebpf::{
    EbpfContext,
    bindings::pt_regs,
    helpers::{bpf_get_attach_cookie, bpf_get_current_pid_tgid, bpf_probe_read_user},
    macros::uprobe,
    programs::ProbeContext,
};
use aya_log_ebpf::warn;
use futexscope_probes_common::{
    event::EventKind,
    maps::{FutexKey, MAX_MARKER_ARGS, MarkerSite, arg_kind, log2_bucket},
    markers::Marker,
};

use crate::{
    atomic::{add, hist_add},
    emit::{blank_event, emit},
    helpers::now_ns,
    maps::{MAP_FULL, MARKER_SITES, is_traced, thread_state, word_stats},
};

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

// The markers book on (process, address): the semaphore's futex operations are private, so
// that is the key its waits and wakes have too.
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
            if let Some(stats) = word_stats(&FutexKey::process(tgid, word)) {
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
                && let Some(stats) = word_stats(&FutexKey::process(tgid, state.marker_woken_word))
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
                && let Some(stats) = word_stats(&FutexKey::process(tgid, state.marker_word))
            {
                let drift = args[3].saturating_sub(args[2]);
                // SAFETY: `stats` points at the word's value in the map.
                unsafe {
                    add(&raw mut (*stats).caller_timeouts, 1);
                    hist_add(&raw mut (*stats).caller_drift_hist, log2_bucket(drift));
                }
            }
            state.marker_woken_word = 0;
        }
        Marker::WakeBegin | Marker::WakeEnd => event.uaddr = args[1],
    }
    emit(&event);
    Ok(check)
}
