//! USDT markers (stapsdt notes, provider `futexscope`) placed around the semaphore's futex
//! calls. The table of names and arguments is `futexscope_probes_common::markers`.
//!
//! Skeleton: the bodies are filled in by the markers work (issue 4).
#![allow(dead_code, unused_variables)]

/// Before a futex wait. `deadline_ns` is absolute CLOCK_MONOTONIC, 0 = none.
#[inline(always)]
pub(crate) fn wait_begin(
    sem: usize,
    word: usize,
    expected: u32,
    wanted: u32,
    deadline_ns: u64,
    waiters: u32,
) {
}

/// After a futex wait. `result`: 0 = woken, else -errno.
#[inline(always)]
pub(crate) fn wait_end(sem: usize, word: usize, result: i32, wanted: u32) {}

/// Before a futex wake of `count` threads.
#[inline(always)]
pub(crate) fn wake_begin(sem: usize, word: usize, count: u32, waiters: u32) {}

/// After a futex wake. `result`: threads woken, or -errno.
#[inline(always)]
pub(crate) fn wake_end(sem: usize, word: usize, result: i32, count: u32) {}

/// Tokens obtained by an acquire that had to wait `waits` times.
#[inline(always)]
pub(crate) fn acquired(sem: usize, tokens: u32, waits: u32) {}

/// A timed acquire gave up at its deadline.
#[inline(always)]
pub(crate) fn timed_out(sem: usize, wanted: u32, deadline_ns: u64, now_ns: u64) {}
