//! User call stacks of futex calls (`futexscope --stacks`): the records the `futex_exit`
//! programs put in the [`STACKS`] ring buffer, one per wait that slept and per wake that woke
//! a thread, while the tracer has turned capture on with the [`STACK_CAPTURE`] global.
//!
//! A record holds the user registers at the call (`ip`, `sp`, `bp`) and a copy of the top of
//! the user stack from `sp` upward; the tracer unwinds it with the DWARF call-frame information
//! of the process's files. It is linked to the `Wait` or `Wake` [`crate::event::Event`] of the
//! same call by `(tid, ts_ns)`: both carry the same thread and return time.
//!
//! Fields are only appended; the window size is part of the layout.

use crate::maps::FutexKey;

/// Ring buffer of [`StackRecord`]s (one page while capture is off).
pub const STACKS: &str = "STACKS";
/// Global (set at load): 1 captures stacks, 0 (the default) leaves the programs as they are
/// without stacks but for one load and branch.
pub const STACK_CAPTURE: &str = "STACK_CAPTURE";

/// Bytes of user stack a record holds: perf's default `--call-graph dwarf` size, enough for
/// the frames of a lock wait in glibc, libstdc++ and Rust's std plus the caller's frames.
pub const STACK_WINDOW_BYTES: usize = 8192;
/// Smaller copies tried in turn when the full window fails to read (a failed read copies
/// nothing: near the top of the main thread's stack the window runs off the mapping).
pub const STACK_FALLBACK_BYTES: [usize; 2] = [4096, 1024];
/// Default byte size of the [`STACKS`] ring buffer while capture is on: 1024 records.
pub const DEFAULT_STACK_RING_BYTES: u32 = 8 << 20;
/// Global (set at load): the fill level of [`STACKS`], in bytes, from which a record wakes the
/// tracer.
pub const STACK_WAKEUP_BYTES: &str = "STACK_WAKEUP_BYTES";
/// A CPU wakes the tracer for a stack record (below [`STACK_WAKEUP_BYTES`]) at most once per
/// this many ns: 10 ms, so the tracer reads a new process's memory map while it lives.
pub const STACK_WAKEUP_PERIOD_NS: u64 = 10_000_000;

/// One captured user stack.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct StackRecord {
    /// `EventKind::Wait` or `EventKind::Wake`.
    pub kind: u32,
    /// Thread id.
    pub tid: u32,
    /// Process id.
    pub tgid: u32,
    /// Bytes of `stack` copied from `sp` upward: the window, a fallback size, or 0 if none
    /// could be read.
    pub copied: u32,
    /// When the call returned (CLOCK_MONOTONIC ns): with `tid`, the link to its `Event`.
    pub ts_ns: u64,
    /// When the call began.
    pub start_ns: u64,
    /// The futex word (the first one of a multi-word call).
    pub uaddr: u64,
    /// The call's result: a wake's number of woken threads; a wait's 0 or -errno.
    pub ret: i64,
    /// User instruction pointer (the instruction after the `syscall`).
    pub ip: u64,
    /// User stack pointer.
    pub sp: u64,
    /// User frame pointer register (rbp), whatever the code keeps in it.
    pub bp: u64,
    /// The futex word's key, as the statistics map has it (a shared futex's is the same in
    /// every process).
    pub key: FutexKey,
    /// The user stack from `sp`, `copied` bytes valid.
    pub stack: [u8; STACK_WINDOW_BYTES],
}

#[cfg(feature = "user")]
// SAFETY: `StackRecord` is `repr(C)`: four u32, then u64/i64 fields, a `FutexKey` (integers
// with explicit padding), then a byte array whose length is a multiple of 8: no padding
// (checked below), and every bit pattern is valid.
unsafe impl aya::Pod for StackRecord {}

const _: () = assert!(
    core::mem::size_of::<StackRecord>()
        == 4 * 4 + 8 * 7 + core::mem::size_of::<FutexKey>() + STACK_WINDOW_BYTES
);
