//! Loom models of the futex algorithm: every interleaving (up to the preemption bound) of the
//! state word, the two wake words and a futex model that may also wake spuriously.
//!
//! Run (from the workspace root; a separate target dir keeps the loom build apart):
//! `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 CARGO_TARGET_DIR=target/loom \
//!  cargo test --release -p futexscope-semaphore --test loom`
//!
//! A lost wake-up shows as loom's deadlock report, a data race on the payload as loom's
//! causality error, a miscount as a failed assertion.
//!
//! `SharedSemaphore` is the same generic code (`RawSemaphore<true>`, `FutexWord<true>`) with
//! non-private futex operations and no woken count, so its releases never skip a wake; the
//! `shared_*` models run it through the same futex model (one process: loom cannot model the
//! kernel keying a shared futex by page).
#![cfg(loom)]

use futexscope_semaphore::{AcquireError, Semaphore, SharedSemaphore};
use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::sync::atomic::{AtomicU32, Ordering};
use loom::thread;
use std::mem::MaybeUninit;
use std::time::Duration;

/// What the models need of a semaphore, `Semaphore` or `SharedSemaphore`.
trait ModelSemaphore: Send + Sync + Sized + 'static {
    /// A semaphore holding `permits`.
    fn with_permits(permits: u32) -> Self;
    /// Acquires `n` permits and keeps them.
    fn take(&self, n: u32);
    /// Acquires `n` permits within `timeout` and keeps them, or says why not.
    fn take_within(&self, n: u32, timeout: Duration) -> Result<(), AcquireError>;
    /// Releases `n` permits.
    fn give(&self, n: u32);
    /// Permits available.
    fn available(&self) -> u32;
    /// Registered waiters.
    fn waiters(&self) -> u32;
}

impl ModelSemaphore for Semaphore {
    fn with_permits(permits: u32) -> Self {
        Semaphore::new(permits)
    }
    fn take(&self, n: u32) {
        self.acquire(n).unwrap().forget();
    }
    fn take_within(&self, n: u32, timeout: Duration) -> Result<(), AcquireError> {
        self.try_acquire_for(n, timeout)
            .map(|permit| permit.forget())
    }
    fn give(&self, n: u32) {
        self.release(n).unwrap();
    }
    fn available(&self) -> u32 {
        Semaphore::available(self)
    }
    fn waiters(&self) -> u32 {
        Semaphore::waiters(self)
    }
}

impl ModelSemaphore for SharedSemaphore {
    fn with_permits(permits: u32) -> Self {
        let mut slot = MaybeUninit::uninit();
        SharedSemaphore::init(&mut slot, permits).unwrap();
        // SAFETY: `init` succeeded, so it wrote a whole semaphore into `slot`. Moving it is
        // fine here: the model is one process, and no other reference to it exists yet.
        unsafe { slot.assume_init() }
    }
    fn take(&self, n: u32) {
        self.acquire(n).unwrap().forget();
    }
    fn take_within(&self, n: u32, timeout: Duration) -> Result<(), AcquireError> {
        self.try_acquire_for(n, timeout)
            .map(|permit| permit.forget())
    }
    fn give(&self, n: u32) {
        self.release(n).unwrap();
    }
    fn available(&self) -> u32 {
        SharedSemaphore::available(self)
    }
    fn waiters(&self) -> u32 {
        SharedSemaphore::waiters(self)
    }
}

/// Runs `body` under loom and checks the semaphore (of either instantiation) is quiescent
/// with `expected` permits.
fn model<S: ModelSemaphore>(body: impl Fn() -> (Arc<S>, u32) + Sync + Send + 'static) {
    loom::model(move || {
        let (sem, expected) = body();
        assert_eq!(sem.available(), expected, "permits not conserved");
        assert_eq!(sem.waiters(), 0, "a waiter stayed registered");
    });
}

#[test]
fn release_wakes_a_single_waiter_and_carries_data() {
    release_wakes_a_waiter_and_carries_data::<Semaphore>();
}

#[test]
fn shared_release_wakes_a_single_waiter_and_carries_data() {
    release_wakes_a_waiter_and_carries_data::<SharedSemaphore>();
}

fn release_wakes_a_waiter_and_carries_data<S: ModelSemaphore>() {
    model(|| {
        let sem = Arc::new(S::with_permits(0));
        let data = Arc::new(UnsafeCell::new(0u32));
        let consumer = {
            let (sem, data) = (sem.clone(), data.clone());
            thread::spawn(move || {
                sem.take(1);
                // SAFETY: the producer wrote before releasing; the acquire orders this read
                // after that write (loom reports a race if it does not).
                assert_eq!(unsafe { data.with(|p| *p) }, 42);
            })
        };
        // SAFETY: the consumer reads only after acquiring, which happens after this write.
        unsafe { data.with_mut(|p| *p = 42) };
        sem.give(1);
        consumer.join().unwrap();
        (sem, 0)
    });
}

#[test]
fn two_releases_reach_two_single_waiters() {
    model(|| {
        let sem = Arc::new(Semaphore::new(0));
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let sem = sem.clone();
                thread::spawn(move || sem.acquire(1).unwrap().forget())
            })
            .collect();
        let releaser = {
            let sem = sem.clone();
            thread::spawn(move || sem.release(1).unwrap())
        };
        sem.release(1).unwrap();
        releaser.join().unwrap();
        waiters.into_iter().for_each(|w| w.join().unwrap());
        (sem, 0)
    });
}

#[test]
fn single_and_multi_waiters_both_served() {
    model(|| {
        let sem = Arc::new(Semaphore::new(0));
        let multi = {
            let sem = sem.clone();
            thread::spawn(move || sem.acquire(2).unwrap().forget())
        };
        let single = {
            let sem = sem.clone();
            thread::spawn(move || sem.acquire(1).unwrap().forget())
        };
        sem.release(1).unwrap();
        sem.release(2).unwrap();
        multi.join().unwrap();
        single.join().unwrap();
        (sem, 0)
    });
}

#[test]
fn spurious_wakes_lose_nothing() {
    model(|| {
        let sem = Arc::new(Semaphore::new(0));
        let multi = {
            let sem = sem.clone();
            thread::spawn(move || sem.acquire(2).unwrap().forget())
        };
        let noise = {
            let sem = sem.clone();
            thread::spawn(move || sem.wake_spuriously())
        };
        sem.release(1).unwrap();
        sem.release(1).unwrap();
        multi.join().unwrap();
        noise.join().unwrap();
        (sem, 0)
    });
}

#[test]
fn permits_travel_through_acquire_release_chains() {
    model(|| {
        let sem = Arc::new(Semaphore::new(0));
        let workers: Vec<_> = [1, 2]
            .into_iter()
            .map(|n| {
                let sem = sem.clone();
                thread::spawn(move || drop(sem.acquire(n).unwrap()))
            })
            .collect();
        sem.release(2).unwrap();
        workers.into_iter().for_each(|w| w.join().unwrap());
        (sem, 2)
    });
}

#[test]
fn timed_out_waiter_neither_keeps_nor_strands_permits() {
    model(|| {
        let sem = Arc::new(Semaphore::new(0));
        let timed_took = Arc::new(AtomicU32::new(0));
        let timed = {
            let (sem, timed_took) = (sem.clone(), timed_took.clone());
            thread::spawn(
                move || match sem.try_acquire_for(1, Duration::from_secs(1)) {
                    Ok(permit) => {
                        permit.forget();
                        timed_took.store(1, Ordering::Relaxed);
                    }
                    Err(error) => assert_eq!(error, AcquireError::TimedOut),
                },
            )
        };
        let untimed = {
            let sem = sem.clone();
            thread::spawn(move || sem.acquire(1).unwrap().forget())
        };
        sem.release(2).unwrap();
        timed.join().unwrap();
        untimed.join().unwrap();
        let left = 1 - timed_took.load(Ordering::Relaxed);
        (sem, left)
    });
}

#[test]
fn barging_acquirer_cannot_strand_a_woken_waiter() {
    model(|| {
        let sem = Arc::new(Semaphore::new(0));
        let waiter = {
            let sem = sem.clone();
            thread::spawn(move || sem.acquire(1).unwrap().forget())
        };
        let barger = {
            let sem = sem.clone();
            thread::spawn(move || {
                // Takes the permit if it gets there first, then gives it back.
                if let Ok(permit) = sem.try_acquire(1) {
                    drop(permit);
                }
            })
        };
        sem.release(1).unwrap();
        waiter.join().unwrap();
        barger.join().unwrap();
        (sem, 0)
    });
}

#[test]
fn timed_multi_waiter_and_single_waiter_share_a_release() {
    model(|| {
        let sem = Arc::new(Semaphore::new(0));
        let timed_multi = {
            let sem = sem.clone();
            thread::spawn(
                move || match sem.try_acquire_for(2, Duration::from_secs(1)) {
                    Ok(permit) => {
                        permit.forget();
                        2
                    }
                    Err(_) => 0,
                },
            )
        };
        let single = {
            let sem = sem.clone();
            thread::spawn(move || sem.acquire(1).unwrap().forget())
        };
        sem.release(3).unwrap();
        let multi_took = timed_multi.join().unwrap();
        single.join().unwrap();
        (sem, 2 - multi_took)
    });
}

#[test]
fn one_release_of_two_wakes_two_single_sleepers() {
    release_of_two_wakes_two_single_sleepers::<Semaphore>();
}

#[test]
fn shared_one_release_of_two_wakes_two_single_sleepers() {
    release_of_two_wakes_two_single_sleepers::<SharedSemaphore>();
}

fn release_of_two_wakes_two_single_sleepers<S: ModelSemaphore>() {
    model(|| {
        let sem = Arc::new(S::with_permits(0));
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let sem = sem.clone();
                thread::spawn(move || sem.take(1))
            })
            .collect();
        // One call: a release that wakes one single waiter however many permits it gives
        // leaves the other asleep (loom reports the deadlock).
        sem.give(2);
        waiters.into_iter().for_each(|w| w.join().unwrap());
        (sem, 0)
    });
}

#[test]
fn two_permits_wake_a_two_permit_sleeper() {
    model(|| {
        let sem = Arc::new(Semaphore::new(1));
        let multi = {
            let sem = sem.clone();
            thread::spawn(move || sem.acquire(2).unwrap().forget())
        };
        // 1 there + 1 released = exactly 2: a wake policy that waits for 3 strands it.
        sem.release(1).unwrap();
        multi.join().unwrap();
        (sem, 0)
    });
}

#[test]
fn timed_single_sleepers_share_a_release_of_two() {
    timed_sleepers_share_a_release_of_two::<Semaphore>();
}

#[test]
fn shared_timed_single_sleepers_share_a_release_of_two() {
    timed_sleepers_share_a_release_of_two::<SharedSemaphore>();
}

fn timed_sleepers_share_a_release_of_two<S: ModelSemaphore>() {
    model(|| {
        let sem = Arc::new(S::with_permits(0));
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let sem = sem.clone();
                thread::spawn(move || match sem.take_within(1, Duration::from_secs(1)) {
                    Ok(()) => 1,
                    Err(error) => {
                        assert_eq!(error, AcquireError::TimedOut);
                        0
                    }
                })
            })
            .collect();
        sem.give(2);
        let took: u32 = waiters.into_iter().map(|w| w.join().unwrap()).sum();
        (sem, 2 - took)
    });
}

#[test]
fn expired_deadlines_race_a_release_without_registering() {
    model(|| {
        let sem = Arc::new(Semaphore::new(0));
        let zero = {
            let sem = sem.clone();
            thread::spawn(move || match sem.try_acquire_for(1, Duration::ZERO) {
                Ok(permit) => {
                    permit.forget();
                    1
                }
                Err(error) => {
                    assert_eq!(error, AcquireError::TimedOut);
                    0
                }
            })
        };
        sem.release(1).unwrap();
        let took = zero.join().unwrap();
        (sem, 1 - took)
    });
}

#[test]
fn waiter_limit_refuses_without_changing_anything() {
    // Loom builds allow 2 waiters of a kind (65,535 otherwise).
    model(|| {
        let sem = Arc::new(Semaphore::new(0));
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let sem = sem.clone();
                thread::spawn(move || match sem.acquire(1) {
                    Ok(permit) => {
                        permit.forget();
                        1
                    }
                    Err(error) => {
                        assert_eq!(error, AcquireError::TooManyWaiters);
                        0
                    }
                })
            })
            .collect();
        sem.release(3).unwrap();
        let took: u32 = waiters.into_iter().map(|w| w.join().unwrap()).sum();
        assert!(took >= 2, "a registered waiter was refused");
        (sem, 3 - took)
    });
}

#[test]
fn starving_multi_waiter_gets_in() {
    // Loom has no clock: a multi waiter may reserve after its first wake. Then the small
    // thread cannot take, the releases accumulate for the holder, and everyone finishes.
    model(|| {
        let sem = Arc::new(Semaphore::new(1));
        let small = {
            let sem = sem.clone();
            thread::spawn(move || {
                for _ in 0..2 {
                    drop(sem.acquire(1).unwrap());
                }
            })
        };
        let big = {
            let sem = sem.clone();
            thread::spawn(move || drop(sem.acquire(2).unwrap()))
        };
        sem.release(1).unwrap();
        small.join().unwrap();
        big.join().unwrap();
        (sem, 2)
    });
}

#[test]
fn reservation_holder_timing_out_wakes_single_sleepers() {
    // The timed multi waiter reserves after a spurious wake, then times out (loom's timed
    // waits time out at once); the release it made wait must then reach the single sleeper.
    model(|| {
        let sem = Arc::new(Semaphore::new(0));
        let big = {
            let sem = sem.clone();
            thread::spawn(move || {
                let result = sem.try_acquire_for(2, Duration::from_secs(1));
                assert_eq!(result.unwrap_err(), AcquireError::TimedOut);
            })
        };
        let single = {
            let sem = sem.clone();
            thread::spawn(move || sem.acquire(1).unwrap().forget())
        };
        sem.wake_spuriously();
        sem.release(1).unwrap();
        big.join().unwrap();
        single.join().unwrap();
        (sem, 0)
    });
}
