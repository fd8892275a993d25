//! The futex syscall hooks: `futex_enter` / `futex_exit` on the BTF tracepoints `sys_enter` /
//! `sys_exit`, and their raw-tracepoint twins `futex_enter_raw` / `futex_exit_raw` for kernels
//! without BTF (or that refuse it). Each books the futex calls of traced processes:
//! [`decode`] reads what a call does, [`enter`] books its start, [`exit`] its end.
//!
//! The syscall numbers come from `futexscope_probes_common::abi::syscalls`, whose table follows
//! `bpf_target_arch`; the registers are read by their x86_64 names (`rdi`…, `orig_rax`), so
//! another architecture needs its own reads here as well as its table there.

mod decode;
mod enter;
mod exit;
mod key;

use aya_ebpf::{
    EbpfContext,
    bindings::pt_regs,
    helpers::bpf_probe_read_kernel,
    macros::{btf_tracepoint, raw_tracepoint, tracepoint},
    programs::{BtfTracePointContext, RawTracePointContext, TracePointContext},
};
use aya_log_ebpf::warn;
use futexscope_probes_common::abi::syscalls;

use self::{enter::try_futex_enter, exit::try_futex_exit};
use crate::{
    maps::MAP_FULL,
    stack::{self, UserRegs},
};

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
    warn_if_full(&ctx, try_futex_enter::<true>(id, args));
    0
}

#[btf_tracepoint(function = "sys_exit")]
pub fn futex_exit(ctx: BtfTracePointContext) -> i32 {
    // `sys_exit`'s arguments are `(struct pt_regs *regs, long ret)`.
    let (regs, ret): (*const pt_regs, i64) = (ctx.arg(0), ctx.arg(1));
    // SAFETY: `regs` is a BTF pointer to the registers saved at entry: the verifier turns the
    // load into a checked one.
    let id = unsafe { (*regs).orig_rax } as i64;
    let user_regs = || {
        // SAFETY: as above, checked BTF loads of the saved user registers.
        let regs = unsafe { &*regs };
        Some(UserRegs {
            ip: regs.rip,
            sp: regs.rsp,
            bp: regs.rbp,
        })
    };
    let _ = try_futex_exit(id, ret, user_regs, stack::stack_end);
    0
}

#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn futex_enter_raw(ctx: RawTracePointContext) -> i32 {
    let id: i64 = ctx.arg(1);
    // No BTF task pointer here for `bpf_find_vma`: non-private operations are keyed by
    // process and counted.
    warn_if_full(
        &ctx,
        try_futex_enter::<false>(id, || syscall_args(ctx.arg(0))),
    );
    0
}

#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn futex_exit_raw(ctx: RawTracePointContext) -> i32 {
    let regs: *const pt_regs = ctx.arg(0);
    // SAFETY: `regs` is the tracepoint's `struct pt_regs *`; the helper checks the read.
    if let Ok(id) = unsafe { bpf_probe_read_kernel(&raw const (*regs).orig_rax) } {
        // No BTF task pointer for `bpf_find_vma` here: stack copies are not bounded by the
        // stack's end (a window running off it is retried smaller).
        let _ = try_futex_exit(id as i64, ctx.arg(1), || user_regs(regs), |_| None);
    }
    0
}

// The per-syscall tracepoints (`syscalls:sys_enter_futex`, `…_futex_waitv`, `…_futex_wait`,
// `…_futex_wake`, `…_futex_requeue` and their `sys_exit_` twins; one program attached to each):
// they run only for futex calls, so other system calls run no program at all. Their records
// (tracefs `format` files) hold `int __syscall_nr` at byte 8, then the six arguments as 8-byte
// slots from byte 16 (enter) or `long ret` at byte 16 (exit). No user stacks here.

/// Offset of `__syscall_nr` in a `syscalls:` tracepoint record.
const TP_SYSCALL_NR: usize = 8;
/// Offset of the arguments (enter) or the result (exit) in a `syscalls:` tracepoint record.
const TP_ARGS: usize = 16;

#[tracepoint]
pub fn futex_enter_tp(ctx: TracePointContext) -> i32 {
    // SAFETY: every `syscalls:sys_enter_*` record has `int __syscall_nr` at this offset; the
    // read is checked.
    let Ok(id) = (unsafe { ctx.read_at::<i32>(TP_SYSCALL_NR) }) else {
        return 0;
    };
    // SAFETY: the six 8-byte argument slots follow at `TP_ARGS`; the read is checked.
    let args = || unsafe { ctx.read_at::<[u64; 6]>(TP_ARGS) }.map_err(i64::from);
    warn_if_full(&ctx, try_futex_enter::<true>(i64::from(id), args));
    0
}

#[tracepoint]
pub fn futex_exit_tp(ctx: TracePointContext) -> i32 {
    // SAFETY: every `syscalls:sys_exit_*` record has `int __syscall_nr` then `long ret` at
    // these offsets; the reads are checked.
    let read = unsafe {
        (
            ctx.read_at::<i32>(TP_SYSCALL_NR),
            ctx.read_at::<i64>(TP_ARGS),
        )
    };
    let (Ok(id), Ok(ret)) = read else {
        return 0;
    };
    let _ = try_futex_exit(i64::from(id), ret, || None, |_| None);
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

/// Whether syscall `id` is one of the futex calls.
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

/// The user instruction, stack and frame pointers saved at entry, read through helpers (raw
/// tracepoints).
fn user_regs(regs: *const pt_regs) -> Option<UserRegs> {
    // SAFETY (each read): `regs` is the tracepoint's `struct pt_regs *`; bpf_probe_read_kernel
    // checks the read and fails cleanly on a bad pointer.
    let ip = unsafe { bpf_probe_read_kernel(&raw const (*regs).rip) }.ok()?;
    // SAFETY: as above.
    let sp = unsafe { bpf_probe_read_kernel(&raw const (*regs).rsp) }.ok()?;
    // SAFETY: as above.
    let bp = unsafe { bpf_probe_read_kernel(&raw const (*regs).rbp) }.ok()?;
    Some(UserRegs { ip, sp, bp })
}
