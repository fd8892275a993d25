//! futexscope's eBPF programs.
//!
//! - `futex_enter` / `futex_exit` (BTF tracepoints `sys_enter` / `sys_exit`, which need no
//!   tracefs): every wait-type and wake-type call of `futex`, `futex_waitv`, futex2
//!   `futex_wait`, `futex_wake` and `futex_requeue` made by a traced process. On a kernel
//!   without BTF (or one that refuses these) the tracer loads `futex_enter_raw` /
//!   `futex_exit_raw` instead: the same on raw tracepoints, which read the registers through a
//!   helper call. The agent can load `futex_enter_tp` / `futex_exit_tp` instead, attached to
//!   the per-syscall tracepoints `syscalls:sys_{enter,exit}_futex*`, which run only for futex
//!   calls. In [`syscall`].
//! - `process_exec` (raw tracepoint `sched_process_exec`): a process that execs into a name
//!   in `TRACED_COMMS` is traced (the agent's `--comm`). In [`sched`].
//! - `process_fork` (raw tracepoint `sched_process_fork`): children of traced processes are
//!   traced too. In [`sched`].
//! - `thread_exit` (raw tracepoint `sched_process_exit`): a thread that dies inside a wait is
//!   taken off its words. In [`sched`].
//! - `futexscope_marker` (uprobe, one attachment per marker site): the semaphore's markers. In
//!   [`marker`].
//!
//! With `--stacks`, `futex_exit` also copies the user stack of each wait that slept and each
//! wake that woke into `STACKS`. In [`stack`].
//!
//! Totals go to `FUTEX_STATS` with atomic updates ([`atomic`]), so they stay exact when
//! ring-buffer records are dropped; records go to `EVENTS` ([`emit`]); every lost record or map
//! entry is counted in `DROPS`. The maps and the globals the tracer sets at load are in
//! [`maps`]. The definitions of every counter are in `docs/probes.md`.
#![no_std]
#![no_main]
// The bpf target has no `core::sync::atomic` read-modify-write operations; the intrinsics
// compile to BPF_ATOMIC instructions.
#![feature(core_intrinsics)]
#![expect(
    internal_features,
    reason = "atomic intrinsics are the only atomics on the bpf target"
)]

mod atomic;
mod emit;
mod helpers;
mod maps;
mod marker;
mod sched;
mod stack;
mod syscall;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
