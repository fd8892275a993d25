//! The portable implementation: a `Mutex` around the counts and a `Condvar` to sleep on. Used
//! where futexes do not exist, and on Linux with the `portable` feature.
//!
//! Ordering comes from the mutex: every change happens under it, so a release's writes
//! happen-before the acquire that takes its permits. A release wakes every waiter
//! (`notify_all`), because a `Condvar` cannot wake "the ones that can use 3 permits".

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use crate::{AcquireError, MAX_PERMITS, ReleaseError, Timeout};

/// The portable semaphore's shared state.
pub(crate) struct RawSemaphore {
    counts: Mutex<Counts>,
    permits_added: Condvar,
}

struct Counts {
    tokens: u32,
    waiters: u32,
}

impl RawSemaphore {
    /// A semaphore holding `permits` (at most `MAX_PERMITS`, checked by the caller).
    pub(crate) const fn new(permits: u32) -> RawSemaphore {
        RawSemaphore {
            counts: Mutex::new(Counts {
                tokens: permits,
                waiters: 0,
            }),
            permits_added: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Counts> {
        // No code panics while holding the lock, and the counts are consistent after every
        // statement, so a poisoned lock still holds valid counts.
        self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes `n` (1..=MAX_PERMITS) permits if they are available now; never blocks.
    pub(crate) fn try_acquire(&self, n: u32) -> bool {
        let mut counts = self.lock();
        let enough = counts.tokens >= n;
        if enough {
            counts.tokens -= n;
        }
        enough
    }

    /// Sleeps until `n` (1..=MAX_PERMITS) permits can be taken or the timeout passes.
    pub(crate) fn acquire_slow(&self, n: u32, timeout: Timeout) -> Result<(), AcquireError> {
        let deadline = match timeout {
            Timeout::Never => None,
            // Too far to represent: wait forever.
            Timeout::After(duration) => Instant::now().checked_add(duration),
            Timeout::At(instant) => Some(instant),
        };
        let mut counts = self.lock();
        loop {
            if counts.tokens >= n {
                counts.tokens -= n;
                return Ok(());
            }
            let remaining = match deadline {
                None => None,
                Some(deadline) => match deadline.checked_duration_since(Instant::now()) {
                    Some(remaining) if !remaining.is_zero() => Some(remaining),
                    _ => return Err(AcquireError::TimedOut),
                },
            };
            counts.waiters = counts
                .waiters
                .checked_add(1)
                .ok_or(AcquireError::TooManyWaiters)?;
            counts = match remaining {
                None => self
                    .permits_added
                    .wait(counts)
                    .unwrap_or_else(PoisonError::into_inner),
                Some(remaining) => {
                    let waited = self.permits_added.wait_timeout(counts, remaining);
                    waited.unwrap_or_else(PoisonError::into_inner).0
                }
            };
            counts.waiters -= 1;
        }
    }

    /// Adds `n` (1..=MAX_PERMITS) permits and wakes the waiters.
    pub(crate) fn release(&self, n: u32) -> Result<(), ReleaseError> {
        let mut counts = self.lock();
        let tokens = counts.tokens.checked_add(n).filter(|&t| t <= MAX_PERMITS);
        let Some(tokens) = tokens else {
            return Err(ReleaseError {
                available: counts.tokens,
                released: n,
            });
        };
        counts.tokens = tokens;
        if counts.waiters > 0 {
            // Notified while locked: the semaphore is borrowed for this whole call anyway.
            self.permits_added.notify_all();
        }
        Ok(())
    }

    /// Takes away up to `n` (at least 1) available permits; returns how many.
    pub(crate) fn forget(&self, n: u32) -> u32 {
        let mut counts = self.lock();
        let removed = counts.tokens.min(n);
        counts.tokens -= removed;
        removed
    }

    /// Permits available now (a snapshot).
    pub(crate) fn available(&self) -> u32 {
        self.lock().tokens
    }

    /// Threads registered as waiting now (a snapshot).
    pub(crate) fn waiters(&self) -> u32 {
        self.lock().waiters
    }
}
