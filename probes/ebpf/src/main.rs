//! futexscope's eBPF programs. First step: count wait-type `futex(2)` calls of the traced
//! processes per futex word, from the raw `sys_enter` tracepoint (which needs no tracefs).
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::{BPF_NOEXIST, pt_regs},
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_kernel},
    macros::{map, raw_tracepoint},
    maps::HashMap,
    programs::RawTracePointContext,
};
use futexscope_probes_common::maps::{FutexKey, FutexStats};

static ZERO_STATS: FutexStats = FutexStats::ZERO;

/// x86_64 syscall number of `futex`.
const SYS_FUTEX: i64 = 202;
const FUTEX_CMD_MASK: u64 = !(128 | 256);
const FUTEX_WAIT: u64 = 0;
const FUTEX_WAIT_BITSET: u64 = 9;

#[map(name = "TRACED_TGIDS")]
static TRACED_TGIDS: HashMap<u32, u8> = HashMap::with_max_entries(1024, 0);

#[map(name = "FUTEX_STATS")]
static FUTEX_STATS: HashMap<FutexKey, FutexStats> = HashMap::with_max_entries(16384, 0);

#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn futex_enter(ctx: RawTracePointContext) -> i32 {
    let _ = try_futex_enter(&ctx);
    0
}

fn try_futex_enter(ctx: &RawTracePointContext) -> Result<(), i64> {
    let id: i64 = ctx.arg(1);
    if id != SYS_FUTEX {
        return Ok(());
    }
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // SAFETY: a map lookup returns a pointer into the map or None; we only test for presence.
    if unsafe { TRACED_TGIDS.get(tgid) }.is_none() {
        return Ok(());
    }
    let regs: *const pt_regs = ctx.arg(0);
    // SAFETY: `regs` is the tracepoint's `struct pt_regs *`; bpf_probe_read_kernel checks the
    // read and fails cleanly on a bad pointer.
    let (uaddr, op) = unsafe {
        (
            bpf_probe_read_kernel(&(*regs).rdi)?,
            bpf_probe_read_kernel(&(*regs).rsi)?,
        )
    };
    let cmd = op & FUTEX_CMD_MASK;
    if cmd != FUTEX_WAIT && cmd != FUTEX_WAIT_BITSET {
        return Ok(());
    }
    let key = FutexKey {
        tgid,
        pad: 0,
        uaddr,
    };
    // FutexStats is too large for the 512-byte BPF stack: insert zeros from a static, then
    // update in place.
    if FUTEX_STATS.get_ptr_mut(key).is_none() {
        #[expect(
            clippy::needless_borrows_for_generic_args,
            reason = "passed by value it would be copied to the 512-byte BPF stack"
        )]
        FUTEX_STATS.insert(key, &ZERO_STATS, u64::from(BPF_NOEXIST))?;
    }
    let stats = FUTEX_STATS.get_ptr_mut(key).ok_or(0)?;
    // SAFETY: `stats` points at this key's value inside the map, valid for the program's run.
    // The increment is not atomic yet: concurrent waits on one word may lose counts.
    unsafe { (*stats).waits += 1 };
    Ok(())
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
