//! Records into the `EVENTS` ring buffer; a record that finds no room is counted in `DROPS`.

use aya_ebpf::bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP};
use futexscope_probes_common::{
    event::{Event, EventKind, NO_CLOCK},
    maps::{DropReason, ThreadState, key_kind},
};

use crate::{
    helpers::current_cpu,
    maps::{EVENTS, NO_RECORDS, WAKEUP_BYTES, count_drop, read_global},
};

/// Puts a record of the call in `state` in the ring buffer (or counts the drop). Inlined: six
/// arguments are more than a BPF function call can pass.
#[inline(always)]
pub(crate) fn emit_call(
    kind: EventKind,
    state: &ThreadState,
    tid: u32,
    tgid: u32,
    now: u64,
    ret: i64,
) {
    if read_global(&NO_RECORDS) != 0 {
        return;
    }
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
        let key = &state.keys[0];
        (*event).key_kind = key.kind;
        (*event).key_dev = key.dev;
        (*event).key_ino = key.ino;
        (*event).key_offset = if key.kind == key_kind::INODE {
            key.uaddr
        } else {
            0
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

pub(crate) fn emit(event: &Event) {
    if read_global(&NO_RECORDS) != 0 {
        return;
    }
    if EVENTS.output::<Event>(event, wakeup_flag()).is_err() {
        count_drop(DropReason::RingBufferFull);
    }
}

pub(crate) fn blank_event(kind: EventKind, tid: u32, tgid: u32, now: u64) -> Event {
    Event {
        kind: kind as u32,
        tid,
        tgid,
        cpu: current_cpu(),
        ts_ns: now,
        ..Event::ZERO
    }
}
