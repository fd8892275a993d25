//! A futex-based counting semaphore for Linux, in the spirit of Qt's `QSemaphore`, with USDT
//! markers on its slow paths so futexscope (or bpftrace, or perf) can see it wait and wake.
//!
//! ```
//! use futexscope_semaphore::Semaphore;
//! use std::time::Duration;
//!
//! static SLOTS: Semaphore = Semaphore::new(2);
//!
//! let first = SLOTS.acquire(1)?; // a guard: gives the permit back on drop
//! assert_eq!(SLOTS.available(), 1);
//! assert!(SLOTS.try_acquire(2).is_err()); // only 1 left
//! assert!(SLOTS.try_acquire_for(2, Duration::from_millis(1)).is_err());
//! drop(first);
//! SLOTS.acquire(2)?.forget(); // keep both taken
//! SLOTS.release(2)?;
//! assert_eq!(SLOTS.available(), 2);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Errors, not surprises
//! Asking for more than [`Semaphore::MAX_PERMITS`] at once fails at once with
//! [`AcquireError::TooManyPermits`]; a release that would push the count past it fails with
//! [`ReleaseError`] and changes nothing. Requests for 0 permits succeed at once without any
//! atomic operation or system call. Every check stays in release builds.
//!
//! # Lifetime
//! Every acquire and release borrows the semaphore for the whole call, system calls included,
//! and a [`Permit`] borrows it until dropped, so safe code cannot destroy a semaphore that a
//! thread waits on or still has to wake:
//!
//! ```compile_fail,E0505
//! use futexscope_semaphore::Semaphore;
//!
//! let sem = Semaphore::new(0);
//! std::thread::scope(|s| {
//!     s.spawn(|| sem.acquire(1).map(|permit| permit.forget()));
//!     drop(sem); // error: cannot move out of `sem` while a waiting thread borrows it
//! });
//! ```
//!
//! # Memory ordering
//! Releasing permits *happens-before* any acquire that obtains them: whatever a thread wrote
//! before `release(n)` (or before dropping a [`Permit`]) is visible to the thread whose
//! `acquire` returns those permits. Failed acquires and [`Semaphore::available`] give no
//! ordering. The futex implementation gets this from a Release compare-and-swap in `release`
//! paired with an Acquire compare-and-swap in `acquire`; the portable one from its mutex.
//! `docs/semaphore.md` justifies every atomic ordering used.
//!
//! # Waiting
//! A blocked acquire keeps waiting through signals (`EINTR`), spurious wake-ups and lost races;
//! a timed acquire measures one absolute CLOCK_MONOTONIC deadline fixed when it starts, so
//! none of these lengthen or shorten the wait, and setting the wall clock changes nothing. A
//! timed acquire never fails before its deadline. CLOCK_MONOTONIC does not advance while the
//! machine is suspended.
//!
//! Before sleeping, an acquire spins briefly (an adaptive budget, at most about 64 µs, that
//! shrinks to nothing where spinning does not pay): a hand-off between threads on two CPUs then
//! needs no system call. Permits go to whichever thread takes them first: a thread that arrives
//! while others sleep may take them ("barging"), so there is no FIFO order.
//!
//! So that a steady stream of small requests cannot starve a large one, a request for 2 or
//! more permits that has waited 1 ms *reserves* the permits (eventual fairness, as in
//! parking_lot): until it has taken them or reached its deadline, nobody else takes any
//! (`try_acquire` fails although [`Semaphore::available`] may show enough). A request that can
//! never be satisfied therefore holds up everyone else until its deadline; make requests that
//! may be unsatisfiable with `try_acquire_for`. The portable build has no reservation.
//!
//! # Signal handlers and `fork`
//! In the futex build, [`Semaphore::release`] (and dropping a permit), `try_acquire`,
//! `available`, `waiters` and `forget_permits` are async-signal-safe. The portable build's are
//! not: called from a handler that interrupted the same thread inside a semaphore call, they
//! abort with a message instead of deadlocking. After `fork`, see
//! [`Semaphore::forget_waiters_after_fork`].
//!
//! # Between processes
//! A [`Semaphore`] uses private futexes: placed in memory shared between processes it loses
//! wake-ups across them. [`SharedSemaphore`] (futex build only) is the same semaphore with a
//! fixed `repr(C)` layout and non-private futexes, constructed in place in memory mapped
//! `MAP_SHARED` and opened by other processes at any address.
//!
//! # Implementations
//! On Linux the semaphore waits on futexes (`FUTEX_WAIT_BITSET`, `FUTEX_WAKE`, both private
//! except in [`SharedSemaphore`]; Linux 2.6.25 or later). Elsewhere, or with the `portable`
//! feature, it is a `Mutex` plus a `Condvar`, with the same API and behaviour, minus the
//! markers and [`SharedSemaphore`].

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[cfg(all(target_os = "linux", not(feature = "portable")))]
mod futex;
#[cfg(all(target_os = "linux", not(feature = "portable")))]
mod futex_semaphore;
#[cfg(all(target_os = "linux", not(feature = "portable")))]
use futex_semaphore::RawSemaphore;

#[cfg(any(not(target_os = "linux"), feature = "portable"))]
mod portable;
#[cfg(any(not(target_os = "linux"), feature = "portable"))]
use portable::RawSemaphore;

mod markers;
#[cfg(all(target_os = "linux", not(feature = "portable")))]
mod shared;
#[cfg(all(target_os = "linux", not(feature = "portable")))]
mod state;

#[cfg(all(target_os = "linux", not(feature = "portable")))]
pub use shared::SharedSemaphore;
// Loom builds model one process: they have `SharedSemaphore::init` and the semaphore's
// operations, not `open` (which reads the header through a raw pointer).
#[cfg(all(target_os = "linux", not(feature = "portable"), not(loom)))]
pub use shared::OpenError;

mod sealed {
    /// Keeps [`PermitSource`](super::PermitSource) to this crate's semaphores.
    pub trait Sealed {}
}

/// A semaphore whose permits a [`Permit`] holds: [`Semaphore`], and in the futex build
/// `SharedSemaphore`. Sealed: no other type can implement it.
pub trait PermitSource: sealed::Sealed {
    /// Gives `n` permits back: the semaphore's own `release`.
    ///
    /// # Errors
    /// As [`Semaphore::release`].
    fn release_permits(&self, n: u32) -> Result<(), ReleaseError>;
}

impl sealed::Sealed for Semaphore {}

impl PermitSource for Semaphore {
    #[inline]
    fn release_permits(&self, n: u32) -> Result<(), ReleaseError> {
        self.release(n)
    }
}

/// The most permits a semaphore can hold, and the most one call can acquire or release:
/// `i32::MAX`, like glibc's `SEM_VALUE_MAX`.
pub const MAX_PERMITS: u32 = i32::MAX as u32;

/// How long an acquire may wait.
#[derive(Clone, Copy, Debug)]
enum Timeout {
    /// Until permits are there.
    Never,
    /// For this long from the call.
    After(Duration),
    /// Until this instant.
    At(Instant),
}

/// A counting semaphore: a number of permits that threads take with `acquire` and give back
/// with `release` (or by dropping a [`Permit`]).
///
/// See the [crate documentation](crate) for the guarantees (errors, lifetime, memory ordering,
/// waiting).
#[repr(transparent)]
pub struct Semaphore {
    raw: RawSemaphore,
}

impl Semaphore {
    /// The most permits a semaphore can hold, and the most one call can acquire or release.
    pub const MAX_PERMITS: u32 = MAX_PERMITS;

    /// A semaphore holding `permits` permits. Usable in a `static`.
    ///
    /// # Panics
    /// If `permits` exceeds [`Semaphore::MAX_PERMITS`] (at compile time in a `static`); use
    /// [`Semaphore::try_new`] to get an error instead.
    #[cfg(not(loom))]
    #[track_caller]
    pub const fn new(permits: u32) -> Semaphore {
        assert!(
            permits <= MAX_PERMITS,
            "`Semaphore::new` called with more than `Semaphore::MAX_PERMITS` permits"
        );
        Semaphore {
            raw: RawSemaphore::new(permits),
        }
    }

    /// A semaphore holding `permits` permits (not `const` under loom, whose atomics are not).
    ///
    /// # Panics
    /// If `permits` exceeds [`Semaphore::MAX_PERMITS`].
    #[cfg(loom)]
    #[track_caller]
    pub fn new(permits: u32) -> Semaphore {
        assert!(
            permits <= MAX_PERMITS,
            "`Semaphore::new` called with more than `Semaphore::MAX_PERMITS` permits"
        );
        Semaphore {
            raw: RawSemaphore::new(permits),
        }
    }

    /// A semaphore holding `permits` permits, or an error if that exceeds
    /// [`Semaphore::MAX_PERMITS`].
    pub fn try_new(permits: u32) -> Result<Semaphore, AcquireError> {
        if permits > MAX_PERMITS {
            return Err(AcquireError::TooManyPermits { requested: permits });
        }
        Ok(Semaphore::new(permits))
    }

    /// Takes `n` permits, waiting as long as it takes for them.
    ///
    /// # Errors
    /// [`AcquireError::TooManyPermits`] at once if `n` exceeds [`Semaphore::MAX_PERMITS`];
    /// [`AcquireError::TooManyWaiters`] if 65,535 threads already wait for the same kind of
    /// request (1 permit, or more than 1).
    #[inline]
    pub fn acquire(&self, n: u32) -> Result<Permit<'_>, AcquireError> {
        self.acquire_within(n, Timeout::Never)
    }

    /// Takes `n` permits if they are available now; never blocks.
    ///
    /// # Errors
    /// [`AcquireError::NoPermits`] if fewer than `n` are available;
    /// [`AcquireError::TooManyPermits`] if `n` exceeds [`Semaphore::MAX_PERMITS`].
    #[inline]
    pub fn try_acquire(&self, n: u32) -> Result<Permit<'_>, AcquireError> {
        check_request(n)?;
        if n == 0 || self.raw.try_acquire(n) {
            Ok(Permit {
                semaphore: self,
                permits: n,
            })
        } else {
            Err(AcquireError::NoPermits)
        }
    }

    /// Takes `n` permits, waiting at most `timeout` for them. A zero timeout never sleeps;
    /// a timeout too long to represent (such as `Duration::MAX`) waits forever.
    ///
    /// # Errors
    /// [`AcquireError::TimedOut`], never before `timeout` has passed; otherwise as
    /// [`Semaphore::acquire`].
    pub fn try_acquire_for(&self, n: u32, timeout: Duration) -> Result<Permit<'_>, AcquireError> {
        self.acquire_within(n, Timeout::After(timeout))
    }

    /// Takes `n` permits, waiting until `deadline` at most. A deadline in the past never sleeps.
    ///
    /// # Errors
    /// [`AcquireError::TimedOut`], never before `deadline`; otherwise as
    /// [`Semaphore::acquire`].
    pub fn try_acquire_until(&self, n: u32, deadline: Instant) -> Result<Permit<'_>, AcquireError> {
        self.acquire_within(n, Timeout::At(deadline))
    }

    #[inline]
    fn acquire_within(&self, n: u32, timeout: Timeout) -> Result<Permit<'_>, AcquireError> {
        check_request(n)?;
        if n > 0 && !self.raw.try_acquire(n) {
            self.raw.acquire_slow(n, timeout)?;
        }
        Ok(Permit {
            semaphore: self,
            permits: n,
        })
    }

    /// Gives `n` permits to the semaphore and wakes waiters that can use them.
    ///
    /// # Errors
    /// [`ReleaseError`] if the count would exceed [`Semaphore::MAX_PERMITS`]; the semaphore is
    /// then unchanged and nobody is woken.
    #[inline]
    pub fn release(&self, n: u32) -> Result<(), ReleaseError> {
        if n == 0 {
            return Ok(());
        }
        self.raw.release(n)
    }

    /// Takes away up to `n` of the permits available now, without waiting, and returns how
    /// many it took: the semaphore's capacity shrinks by that many (tokio's `forget_permits`).
    /// Unlike an acquire it also takes permits reserved for a starving waiter (see
    /// "Waiting" in the crate documentation), which then waits for more.
    pub fn forget_permits(&self, n: u32) -> u32 {
        if n == 0 {
            return 0;
        }
        self.raw.forget(n)
    }

    /// A guard for `n` permits this code holds without a [`Permit`] (taken and forgotten, or
    /// never released yet): dropping it releases them, like Qt's `QSemaphoreReleaser(sem, n)`.
    /// Nothing is taken now.
    ///
    /// ```
    /// # use futexscope_semaphore::Semaphore;
    /// let sem = Semaphore::new(3);
    /// sem.acquire(2)?.forget();
    /// {
    ///     let _give_back = sem.releaser(2); // released at the end of the scope, even on panic
    ///     assert_eq!(sem.available(), 1);
    /// }
    /// assert_eq!(sem.available(), 3);
    /// # Ok::<(), futexscope_semaphore::AcquireError>(())
    /// ```
    pub fn releaser(&self, n: u32) -> Permit<'_> {
        Permit {
            semaphore: self,
            permits: n,
        }
    }

    /// [`Semaphore::acquire`] for a semaphore in an [`Arc`]: the permit owns a reference to
    /// it, so it can move into a `'static` thread (tokio's `acquire_many_owned`).
    ///
    /// # Errors
    /// As [`Semaphore::acquire`].
    pub fn acquire_owned(self: Arc<Self>, n: u32) -> Result<OwnedPermit, AcquireError> {
        self.acquire(n)?.forget();
        Ok(OwnedPermit {
            semaphore: self,
            permits: n,
        })
    }

    /// [`Semaphore::try_acquire`] for a semaphore in an [`Arc`] (tokio's
    /// `try_acquire_many_owned`).
    ///
    /// # Errors
    /// As [`Semaphore::try_acquire`].
    pub fn try_acquire_owned(self: Arc<Self>, n: u32) -> Result<OwnedPermit, AcquireError> {
        self.try_acquire(n)?.forget();
        Ok(OwnedPermit {
            semaphore: self,
            permits: n,
        })
    }

    /// [`Semaphore::try_acquire_for`] for a semaphore in an [`Arc`].
    ///
    /// # Errors
    /// As [`Semaphore::try_acquire_for`].
    pub fn try_acquire_for_owned(
        self: Arc<Self>,
        n: u32,
        timeout: Duration,
    ) -> Result<OwnedPermit, AcquireError> {
        self.try_acquire_for(n, timeout)?.forget();
        Ok(OwnedPermit {
            semaphore: self,
            permits: n,
        })
    }

    /// [`Semaphore::try_acquire_until`] for a semaphore in an [`Arc`].
    ///
    /// # Errors
    /// As [`Semaphore::try_acquire_until`].
    pub fn try_acquire_until_owned(
        self: Arc<Self>,
        n: u32,
        deadline: Instant,
    ) -> Result<OwnedPermit, AcquireError> {
        self.try_acquire_until(n, deadline)?.forget();
        Ok(OwnedPermit {
            semaphore: self,
            permits: n,
        })
    }

    /// [`Semaphore::releaser`] for a semaphore in an [`Arc`].
    pub fn releaser_owned(self: Arc<Self>, n: u32) -> OwnedPermit {
        OwnedPermit {
            semaphore: self,
            permits: n,
        }
    }

    /// Permits available now. Only a snapshot: other threads may change it at once.
    pub fn available(&self) -> u32 {
        self.raw.available()
    }

    /// Threads waiting for permits now. Only a snapshot; 0 once every thread using the
    /// semaphore is done.
    pub fn waiters(&self) -> u32 {
        self.raw.waiters()
    }

    /// Forgets every waiter registered on the semaphore, for the child of a `fork`: only the
    /// forking thread exists in the child, so threads that were waiting in the parent are
    /// phantoms there (still counted by [`Semaphore::waiters`], and a phantom multi waiter
    /// may hold the reservation that keeps every other acquire waiting). Permits are kept.
    ///
    /// # Safety
    /// No thread may be using the semaphore (waiting in it, or inside any call on it): call it
    /// in the child right after `fork`, before it starts threads. Otherwise a live waiter is
    /// forgotten and may never be woken.
    ///
    /// # Panics
    /// Portable build: if the semaphore's mutex was held at the fork (by a thread that does
    /// not exist in the child); the semaphore is then unusable in the child.
    pub unsafe fn forget_waiters_after_fork(&self) {
        self.raw.forget_waiters();
    }

    /// Wakes every sleeping waiter without releasing anything: a spurious wake-up, for loom
    /// models of the algorithm.
    #[cfg(loom)]
    pub fn wake_spuriously(&self) {
        self.raw.wake_spuriously();
    }
}

impl fmt::Debug for Semaphore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Semaphore")
            .field("available", &self.available())
            .field("waiters", &self.waiters())
            .finish()
    }
}

pub(crate) fn check_request(n: u32) -> Result<(), AcquireError> {
    if n > MAX_PERMITS {
        return Err(AcquireError::TooManyPermits { requested: n });
    }
    Ok(())
}

/// Permits taken from a [`Semaphore`] (or a `SharedSemaphore`: `S`); dropping it gives them
/// back.
///
/// # Panics
/// Dropping panics if giving the permits back would push the count past
/// [`Semaphore::MAX_PERMITS`] (only possible when other code released permits it never took);
/// [`Permit::release`] returns that error instead.
#[must_use = "dropping a permit gives its permits back at once"]
pub struct Permit<'a, S: PermitSource = Semaphore> {
    semaphore: &'a S,
    permits: u32,
}

impl<S: PermitSource> Permit<'_, S> {
    /// How many permits this guard holds.
    pub fn permits(&self) -> u32 {
        self.permits
    }

    /// Keeps the permits taken: they are not given back (a later [`Semaphore::release`] can).
    pub fn forget(mut self) {
        self.permits = 0;
    }

    /// Gives the permits back now.
    ///
    /// # Errors
    /// [`ReleaseError`] as [`Semaphore::release`]; the permits are then neither given back
    /// nor held.
    pub fn release(mut self) -> Result<(), ReleaseError> {
        let permits = std::mem::take(&mut self.permits);
        self.semaphore.release_permits(permits)
    }
}

impl<'a, S: PermitSource> Permit<'a, S> {
    /// Splits `n` of this guard's permits off into a guard of their own, or returns `None`
    /// (and changes nothing) if it holds fewer than `n`.
    pub fn split(&mut self, n: u32) -> Option<Permit<'a, S>> {
        self.permits = self.permits.checked_sub(n)?;
        Some(Permit {
            semaphore: self.semaphore,
            permits: n,
        })
    }

    /// Adds the permits of `other` to this guard.
    ///
    /// # Panics
    /// If `other` holds permits of another semaphore, or the sum would exceed
    /// [`Semaphore::MAX_PERMITS`] (then neither guard changes before the panic unwinds).
    pub fn merge(&mut self, mut other: Permit<'a, S>) {
        assert!(
            std::ptr::eq(self.semaphore, other.semaphore),
            "merging permits of two different semaphores"
        );
        self.permits = merged(self.permits, other.permits);
        other.permits = 0;
    }
}

impl<S: PermitSource> Drop for Permit<'_, S> {
    fn drop(&mut self) {
        if let Err(error) = self.semaphore.release_permits(self.permits)
            && !std::thread::panicking()
        {
            panic!("dropping a `Permit`: {error}");
        }
    }
}

impl<S: PermitSource> fmt::Debug for Permit<'_, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("permits", &self.permits)
            .finish_non_exhaustive()
    }
}

/// Permits taken from a [`Semaphore`] in an [`Arc`]; dropping it gives them back. Unlike
/// [`Permit`] it borrows nothing, so it can move into a `'static` thread or task.
///
/// # Panics
/// Dropping panics as [`Permit`]'s does.
#[must_use = "dropping a permit gives its permits back at once"]
pub struct OwnedPermit {
    semaphore: Arc<Semaphore>,
    permits: u32,
}

impl OwnedPermit {
    /// How many permits this guard holds.
    pub fn permits(&self) -> u32 {
        self.permits
    }

    /// The semaphore the permits belong to.
    pub fn semaphore(&self) -> &Arc<Semaphore> {
        &self.semaphore
    }

    /// Keeps the permits taken: they are not given back (a later [`Semaphore::release`] can).
    pub fn forget(mut self) {
        self.permits = 0;
    }

    /// Gives the permits back now.
    ///
    /// # Errors
    /// [`ReleaseError`] as [`Semaphore::release`]; the permits are then neither given back
    /// nor held.
    pub fn release(mut self) -> Result<(), ReleaseError> {
        let permits = std::mem::take(&mut self.permits);
        self.semaphore.release(permits)
    }

    /// Splits `n` of this guard's permits off into a guard of their own, or returns `None`
    /// (and changes nothing) if it holds fewer than `n`.
    pub fn split(&mut self, n: u32) -> Option<OwnedPermit> {
        self.permits = self.permits.checked_sub(n)?;
        Some(OwnedPermit {
            semaphore: Arc::clone(&self.semaphore),
            permits: n,
        })
    }

    /// Adds the permits of `other` to this guard.
    ///
    /// # Panics
    /// As [`Permit::merge`].
    pub fn merge(&mut self, mut other: OwnedPermit) {
        assert!(
            Arc::ptr_eq(&self.semaphore, &other.semaphore),
            "merging permits of two different semaphores"
        );
        self.permits = merged(self.permits, other.permits);
        other.permits = 0;
    }
}

impl Drop for OwnedPermit {
    fn drop(&mut self) {
        if let Err(error) = self.semaphore.release(self.permits)
            && !std::thread::panicking()
        {
            panic!("dropping an `OwnedPermit`: {error}");
        }
    }
}

impl fmt::Debug for OwnedPermit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnedPermit")
            .field("permits", &self.permits)
            .finish_non_exhaustive()
    }
}

/// The permits of two merged guards.
///
/// # Panics
/// Past [`MAX_PERMITS`]: no guard can hold more than a semaphore can.
fn merged(a: u32, b: u32) -> u32 {
    a.checked_add(b)
        .filter(|&sum| sum <= MAX_PERMITS)
        .expect("merged permits exceed `Semaphore::MAX_PERMITS`")
}

/// Why an acquire returned without permits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AcquireError {
    /// More than [`Semaphore::MAX_PERMITS`] requested: no semaphore can ever hold that many.
    TooManyPermits {
        /// The permits asked for.
        requested: u32,
    },
    /// `try_acquire` found fewer permits than requested.
    NoPermits,
    /// A timed acquire reached its deadline without getting the permits.
    TimedOut,
    /// 65,535 threads already wait for the same kind of request on this semaphore.
    TooManyWaiters,
}

impl fmt::Display for AcquireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AcquireError::TooManyPermits { requested } => write!(
                f,
                "cannot acquire {requested} permits: a semaphore holds at most `Semaphore::MAX_PERMITS` ({MAX_PERMITS})"
            ),
            AcquireError::NoPermits => f.write_str("not enough permits available; wait with `acquire` or retry later"),
            AcquireError::TimedOut => f.write_str("timed out waiting for permits"),
            AcquireError::TooManyWaiters => f.write_str(
                "too many threads already wait on this semaphore (65535 per request kind); retry later or use fewer threads",
            ),
        }
    }
}

impl std::error::Error for AcquireError {}

/// A release that would have pushed the count past [`Semaphore::MAX_PERMITS`]; the semaphore
/// was left unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReleaseError {
    /// Permits available when the release was refused.
    pub available: u32,
    /// Permits the release tried to add.
    pub released: u32,
}

impl fmt::Display for ReleaseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "releasing {} permits onto {} available would exceed `Semaphore::MAX_PERMITS` ({MAX_PERMITS}); nothing was released",
            self.released, self.available
        )
    }
}

impl std::error::Error for ReleaseError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds() {
        fn send_sync_unpin<T: Send + Sync + Unpin>() {}
        send_sync_unpin::<Semaphore>();
        send_sync_unpin::<Permit<'_>>();
        send_sync_unpin::<OwnedPermit>();
        send_sync_unpin::<AcquireError>();
        send_sync_unpin::<ReleaseError>();
    }

    #[test]
    fn messages_name_the_limit() {
        let error = AcquireError::TooManyPermits {
            requested: u32::MAX,
        };
        assert!(
            error
                .to_string()
                .contains("`Semaphore::MAX_PERMITS` (2147483647)")
        );
        let error = ReleaseError {
            available: 5,
            released: MAX_PERMITS,
        };
        assert!(error.to_string().contains("nothing was released"));
    }
}
