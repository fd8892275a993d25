//! The portable implementation: a `Mutex` around the counts and a `Condvar` to sleep on. Used
//! where futexes do not exist, and on Linux with the `portable` feature.
//!
//! Ordering comes from the mutex: every change happens under it, so a release's writes
//! happen-before the acquire that takes its permits. A release wakes every waiter
//! (`notify_all`), because a `Condvar` cannot wake "the ones that can use 3 permits".

use std::cell::Cell;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

thread_local! {
    /// Whether this thread is inside a portable semaphore operation (from just before it
    /// locks a semaphore's mutex until just after it unlocks it, sleeps in `acquire`
    /// included). A call that finds it set was made by a signal handler that interrupted this
    /// thread there: locking again could deadlock on the mutex this thread holds. A `const`
    /// `Cell<bool>` has no lazy initialisation and no destructor, so reading it is a plain
    /// thread-local load, safe in a handler.
    static INSIDE: Cell<bool> = const { Cell::new(false) };
}

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

    fn lock(&self) -> Locked<'_> {
        if INSIDE.get() {
            refuse_reentry();
        }
        // Set before locking and cleared after unlocking (in `Locked::drop`): a handler that
        // runs in between finds it set whenever the mutex may be held.
        INSIDE.set(true);
        // No code panics while holding the lock, and the counts are consistent after every
        // statement, so a poisoned lock still holds valid counts.
        Locked(Some(
            self.counts.lock().unwrap_or_else(PoisonError::into_inner),
        ))
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
            // `INSIDE` stays set while sleeping: the condvar re-locks the mutex before it
            // returns, and a handler cannot tell when.
            let guard = counts
                .0
                .take()
                .expect("a `Locked` holds its guard until dropped");
            counts.0 = Some(match remaining {
                None => self
                    .permits_added
                    .wait(guard)
                    .unwrap_or_else(PoisonError::into_inner),
                Some(remaining) => {
                    let waited = self.permits_added.wait_timeout(guard, remaining);
                    waited.unwrap_or_else(PoisonError::into_inner).0
                }
            });
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

    /// Sets the waiter count to 0, for a child after `fork`.
    ///
    /// # Panics
    /// If the mutex is held (by a thread of the parent, which does not exist here).
    pub(crate) fn forget_waiters(&self) {
        let mut counts = match self.counts.try_lock() {
            Ok(counts) => counts,
            Err(std::sync::TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => panic!(
                "the portable semaphore's mutex was held when the process forked; the semaphore \
                 is unusable in the child"
            ),
        };
        counts.waiters = 0;
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

/// The locked counts; unlocks, then clears `INSIDE`, when dropped.
struct Locked<'a>(Option<MutexGuard<'a, Counts>>);

impl std::ops::Deref for Locked<'_> {
    type Target = Counts;

    fn deref(&self) -> &Counts {
        self.0
            .as_ref()
            .expect("a `Locked` holds its guard until dropped")
    }
}

impl std::ops::DerefMut for Locked<'_> {
    fn deref_mut(&mut self) -> &mut Counts {
        self.0
            .as_mut()
            .expect("a `Locked` holds its guard until dropped")
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        drop(self.0.take());
        INSIDE.set(false);
    }
}

/// Ends the process: a signal handler called into a portable semaphore while it interrupted
/// this thread inside one, where locking could deadlock for good. Only async-signal-safe
/// calls (`write`, `abort`).
#[cold]
fn refuse_reentry() -> ! {
    const MESSAGE: &[u8] = b"futexscope-semaphore: a semaphore operation was called from a signal \
handler that interrupted this thread inside the portable (Mutex + Condvar) semaphore; the \
portable build is not async-signal-safe (it would deadlock). Use the futex build, whose \
`release` is, or release from a thread. Aborting.\n";
    #[cfg(unix)]
    // SAFETY: `MESSAGE` is a valid buffer of `MESSAGE.len()` bytes; writing to fd 2 has no
    // other precondition (if it is closed, `write` just fails, and we abort anyway).
    unsafe {
        libc::write(2, MESSAGE.as_ptr().cast(), MESSAGE.len());
    }
    std::process::abort()
}
