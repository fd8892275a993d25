//! The kernel's futex ABI, in one place: `futex(2)` operations and flags, futex2 flags, the
//! clock ids a futex deadline may use, the results of an interrupted wait, `struct futex_waitv`,
//! and the syscall numbers of the futex calls.
//!
//! Values are from the kernel's UAPI headers (`include/uapi/linux/futex.h`,
//! `include/uapi/linux/time.h`, `include/uapi/asm-generic/errno*.h`) and, for the syscall
//! numbers, each architecture's syscall table. Everything but [`syscalls`] is the same on x86_64
//! and aarch64.

// futex(2) commands: `op & FUTEX_CMD_MASK`.

/// Waits if the word holds the expected value; relative timeout on CLOCK_MONOTONIC.
pub const FUTEX_WAIT: u32 = 0;
/// Wakes up to `val` waiters.
pub const FUTEX_WAKE: u32 = 1;
/// Wakes some waiters and moves the rest to a second word, unconditionally.
pub const FUTEX_REQUEUE: u32 = 3;
/// [`FUTEX_REQUEUE`] if the word still holds the expected value.
pub const FUTEX_CMP_REQUEUE: u32 = 4;
/// Changes a second word and wakes waiters of both.
pub const FUTEX_WAKE_OP: u32 = 5;
/// Takes a priority-inheritance lock; absolute deadline, always on CLOCK_REALTIME.
pub const FUTEX_LOCK_PI: u32 = 6;
/// Releases a priority-inheritance lock.
pub const FUTEX_UNLOCK_PI: u32 = 7;
/// [`FUTEX_WAIT`] with a bitset; absolute deadline.
pub const FUTEX_WAIT_BITSET: u32 = 9;
/// [`FUTEX_WAKE`] of the waiters whose bitset intersects the given one.
pub const FUTEX_WAKE_BITSET: u32 = 10;
/// Waits on a condition word to be requeued onto a PI lock.
pub const FUTEX_WAIT_REQUEUE_PI: u32 = 11;
/// [`FUTEX_CMP_REQUEUE`] onto a PI lock.
pub const FUTEX_CMP_REQUEUE_PI: u32 = 12;
/// [`FUTEX_LOCK_PI`] whose deadline is on CLOCK_MONOTONIC unless [`FUTEX_CLOCK_REALTIME`].
pub const FUTEX_LOCK_PI2: u32 = 13;

// futex(2) flags, or'ed into `op`.

/// The word is private to the process.
pub const FUTEX_PRIVATE_FLAG: u32 = 128;
/// The absolute deadline is on CLOCK_REALTIME (default CLOCK_MONOTONIC).
pub const FUTEX_CLOCK_REALTIME: u32 = 256;
/// The command bits of `op`: everything but the flags.
pub const FUTEX_CMD_MASK: u32 = !(FUTEX_PRIVATE_FLAG | FUTEX_CLOCK_REALTIME);

// futex2 flags (`futex_wait`, `futex_wake`, `futex_requeue`, `struct futex_waitv`).

/// The word is 32 bits wide (the only size the kernel accepts so far).
pub const FUTEX2_SIZE_U32: u32 = 0x02;
/// The word is private to the process.
pub const FUTEX2_PRIVATE: u32 = FUTEX_PRIVATE_FLAG;

// Clock ids (`clockid_t`).

/// Wall-clock time.
pub const CLOCK_REALTIME: u32 = 0;
/// Time since boot, excluding suspend.
pub const CLOCK_MONOTONIC: u32 = 1;

// Results of an interrupted wait, negated in a syscall's return value: EINTR and the restart
// codes the caller never sees (the exit tracepoint does).

/// Interrupted system call.
pub const EINTR: i64 = 4;
/// Try again: for a futex wait, the word did not hold the expected value.
pub const EAGAIN: i64 = 11;
/// The deadline passed.
pub const ETIMEDOUT: i64 = 110;
/// Kernel-internal: restart the call if the handler has SA_RESTART, else EINTR.
pub const ERESTARTSYS: i64 = 512;
/// Kernel-internal: always restart the call.
pub const ERESTARTNOINTR: i64 = 513;
/// Kernel-internal: restart the call if no handler ran, else EINTR.
pub const ERESTARTNOHAND: i64 = 514;
/// Kernel-internal: restart through `restart_syscall`.
pub const ERESTART_RESTARTBLOCK: i64 = 516;

/// User `struct futex_waitv`: one entry of a `futex_waitv` or `futex_requeue` vector.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FutexWaitv {
    /// Expected value.
    pub val: u64,
    /// Address of the word.
    pub uaddr: u64,
    /// `FUTEX2_*` flags.
    pub flags: u32,
    /// Must be zero.
    pub reserved: u32,
}

const _: () = assert!(core::mem::size_of::<FutexWaitv>() == 24);

/// Syscall numbers of the futex calls on the traced architecture.
///
/// The table is chosen by `target_arch` in userspace and by `bpf_target_arch` in the eBPF
/// programs, whose own `target_arch` is `bpf`: `tracer/build.rs` passes
/// `--cfg bpf_target_arch="…"` with the architecture the tracer is built for, and this crate's
/// build script defaults it to the host's when the eBPF crate is built directly (clippy, an
/// editor). aya-ebpf uses the same cfg to pick its `pt_regs`.
///
/// On an architecture without a table this module is empty and every user fails to compile with
/// "cannot find value". To add one, copy a table below under that architecture's cfg, with the
/// numbers from its syscall table (`arch/*/entry/syscalls/syscall*.tbl`, or
/// `scripts/syscall.tbl` for the asm-generic ones), and add its name to the `values(…)` of
/// `bpf_target_arch` in `build.rs`. The eBPF programs also read the syscall arguments from
/// x86_64 registers (`probes/ebpf/src/syscall/mod.rs`): a new architecture needs those too.
pub mod syscalls {
    #[cfg(any(target_arch = "x86_64", bpf_target_arch = "x86_64"))]
    pub use self::x86_64::*;

    #[cfg(any(target_arch = "aarch64", bpf_target_arch = "aarch64"))]
    pub use self::aarch64::*;

    /// x86_64 (`arch/x86/entry/syscalls/syscall_64.tbl`).
    #[cfg(any(target_arch = "x86_64", bpf_target_arch = "x86_64"))]
    mod x86_64 {
        /// `futex(2)`.
        pub const FUTEX: u32 = 202;
        /// `futex_waitv(2)` (Linux 5.16).
        pub const FUTEX_WAITV: u32 = 449;
        /// futex2 `futex_wake` (Linux 6.7).
        pub const FUTEX_WAKE: u32 = 454;
        /// futex2 `futex_wait` (Linux 6.7).
        pub const FUTEX_WAIT: u32 = 455;
        /// futex2 `futex_requeue` (Linux 6.7).
        pub const FUTEX_REQUEUE: u32 = 456;
    }

    /// aarch64, the asm-generic table (`include/uapi/asm-generic/unistd.h`, since Linux 6.11
    /// `scripts/syscall.tbl`). Since 5.1 every new syscall has the same number on every
    /// architecture, so only `futex` differs from x86_64.
    #[cfg(any(target_arch = "aarch64", bpf_target_arch = "aarch64"))]
    mod aarch64 {
        /// `futex(2)`.
        pub const FUTEX: u32 = 98;
        /// `futex_waitv(2)` (Linux 5.16).
        pub const FUTEX_WAITV: u32 = 449;
        /// futex2 `futex_wake` (Linux 6.7).
        pub const FUTEX_WAKE: u32 = 454;
        /// futex2 `futex_wait` (Linux 6.7).
        pub const FUTEX_WAIT: u32 = 455;
        /// futex2 `futex_requeue` (Linux 6.7).
        pub const FUTEX_REQUEUE: u32 = 456;
    }
}
