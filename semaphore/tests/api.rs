//! The behaviours Qt's `tst_qsemaphore` checks (counts, try-acquire, timeouts, many threads,
//! multi-permit releases, RAII), plus overflow, zero and oversized requests.
#![cfg(not(loom))] // loom builds run only `tests/loom.rs`

mod common;

use common::wait_for_waiters;
use futexscope_semaphore::{AcquireError, MAX_PERMITS, ReleaseError, Semaphore};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// Qt `acquire` (a), (b): threads hammering a small semaphore all finish.
#[test]
fn threads_take_turns() {
    let sem = Semaphore::new(1);
    common::within(&sem, || {
        thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| {
                    for _ in 0..100 {
                        drop(sem.acquire(1).unwrap());
                    }
                });
            }
        });
    });
    assert_eq!(sem.available(), 1);

    let sem = Semaphore::new(4);
    common::within(&sem, || {
        thread::scope(|s| {
            for n in [2, 3] {
                let sem = &sem;
                s.spawn(move || {
                    for _ in 0..100 {
                        let permit = sem.acquire(n).unwrap();
                        assert_eq!(permit.permits(), n);
                    }
                });
            }
        });
    });
    assert_eq!((sem.available(), sem.waiters()), (4, 0));
}

/// Qt `acquire` (c): the counting sequence on one thread.
#[test]
fn counts_up_and_down() {
    let sem = Semaphore::new(0);
    assert_eq!(sem.available(), 0);
    for (release, expected) in [(1, 1), (1, 2), (10, 12), (10, 22)] {
        sem.release(release).unwrap();
        assert_eq!(sem.available(), expected);
    }
    for (acquire, expected) in [(1, 21), (1, 20), (10, 10), (10, 0)] {
        sem.acquire(acquire).unwrap().forget();
        assert_eq!(sem.available(), expected);
    }
}

/// Qt `tryAcquire`, without and with a zero timeout.
#[test]
fn try_acquire_sequence() {
    let zero = Duration::ZERO;
    let sem = Semaphore::new(1);
    assert_eq!(sem.try_acquire(2).unwrap_err(), AcquireError::NoPermits);
    assert_eq!(
        sem.try_acquire_for(2, zero).unwrap_err(),
        AcquireError::TimedOut
    );
    sem.release(1).unwrap();
    assert_eq!(sem.try_acquire(3).unwrap_err(), AcquireError::NoPermits);
    sem.release(10).unwrap();
    assert!(sem.try_acquire(100).is_err());
    assert!(sem.try_acquire_for(100, zero).is_err());
    assert_eq!(sem.available(), 12);
    sem.release(10).unwrap();
    assert!(sem.try_acquire(100).is_err());
    assert_eq!(sem.available(), 22);
    sem.try_acquire(1).unwrap().forget();
    assert_eq!(sem.available(), 21);
    sem.try_acquire_for(1, zero).unwrap().forget();
    assert_eq!(sem.available(), 20);
    sem.try_acquire(10).unwrap().forget();
    sem.try_acquire_for(10, zero).unwrap().forget();
    assert_eq!(sem.available(), 0);
    for n in [1, 10] {
        assert_eq!(sem.try_acquire(n).unwrap_err(), AcquireError::NoPermits);
        assert_eq!(
            sem.try_acquire_for(n, zero).unwrap_err(),
            AcquireError::TimedOut
        );
        assert_eq!(
            sem.try_acquire_until(n, Instant::now()).unwrap_err(),
            AcquireError::TimedOut
        );
    }
    assert_eq!((sem.available(), sem.waiters()), (0, 0));
}

/// Qt `tryAcquireWithTimeout`: failures take at least the timeout and leave the count;
/// successes need no wait (only "never early" is asserted: durations on a shared machine vary).
#[test]
fn timed_failures_wait_out_their_timeout() {
    let timeout = Duration::from_millis(50);
    let sem = Semaphore::new(1);
    for (n, available) in [(2, 1), (3, 2), (100, 12)] {
        if available > sem.available() {
            sem.release(available - sem.available()).unwrap();
        }
        let start = Instant::now();
        assert_eq!(
            sem.try_acquire_for(n, timeout).unwrap_err(),
            AcquireError::TimedOut
        );
        assert!(
            start.elapsed() >= timeout,
            "timed out early: {:?}",
            start.elapsed()
        );
        assert_eq!((sem.available(), sem.waiters()), (available, 0));
    }
    sem.try_acquire_for(12, timeout).unwrap().forget();
    let start = Instant::now();
    assert!(sem.try_acquire_for(1, timeout).is_err());
    assert!(start.elapsed() >= timeout);
    let deadline = Instant::now() + timeout;
    assert!(sem.try_acquire_until(1, deadline).is_err());
    assert!(Instant::now() >= deadline);
    assert_eq!((sem.available(), sem.waiters()), (0, 0));
}

/// Qt `tryAcquireWithTimeoutStarvation`: a timed acquire of 2 gives up (instead of hanging)
/// while a consumer keeps taking and returning the only permit.
#[test]
fn timed_acquire_gives_up_while_others_churn() {
    let sem = Semaphore::new(1);
    let stop = AtomicU32::new(0);
    common::within(&sem, || {
        thread::scope(|s| {
            s.spawn(|| {
                while stop.load(Ordering::Relaxed) == 0 {
                    if let Ok(permit) = sem.try_acquire_for(1, Duration::from_millis(100)) {
                        drop(permit);
                    }
                }
            });
            let start = Instant::now();
            assert_eq!(
                sem.try_acquire_for(2, Duration::from_millis(200))
                    .unwrap_err(),
                AcquireError::TimedOut
            );
            assert!(start.elapsed() >= Duration::from_millis(200));
            stop.store(1, Ordering::Relaxed);
        });
    });
    assert_eq!((sem.available(), sem.waiters()), (1, 0));
}

/// Qt `tryAcquireWithTimeoutForever`: `Duration::MAX` waits like `acquire`, without panicking.
#[test]
fn duration_max_waits_forever() {
    let sem = Semaphore::new(11);
    sem.try_acquire_for(1, Duration::MAX).unwrap().forget();
    sem.try_acquire_for(10, Duration::MAX).unwrap().forget();
    let delay = Duration::from_millis(100);
    common::within(&sem, || {
        thread::scope(|s| {
            let start = Instant::now();
            s.spawn(|| {
                thread::sleep(delay);
                sem.release(2).unwrap();
            });
            sem.try_acquire_for(1, Duration::MAX).unwrap().forget();
            assert!(start.elapsed() >= delay);
        });
    });
    assert_eq!(sem.available(), 1);
    let far = Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600);
    sem.try_acquire_until(1, far).unwrap().forget();
}

/// Qt `multiRelease`: one `release(4)` wakes all 4 single-permit waiters.
#[test]
fn one_release_wakes_every_waiter_it_can() {
    let sem = Semaphore::new(0);
    common::within(&sem, || {
        thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| sem.acquire(1).unwrap().forget());
            }
            wait_for_waiters(&sem, 4);
            sem.release(4).unwrap();
        });
    });
    assert_eq!((sem.available(), sem.waiters()), (0, 0));
}

/// A multi-permit waiter wakes when a release satisfies it, with single waiters asleep too.
#[test]
fn release_wakes_multi_waiter_among_singles() {
    let sem = Semaphore::new(0);
    common::within(&sem, || {
        thread::scope(|s| {
            let big = s.spawn(|| sem.acquire(3).unwrap().forget());
            for _ in 0..2 {
                s.spawn(|| sem.acquire(1).unwrap().forget());
            }
            wait_for_waiters(&sem, 3);
            // Both singles can go and the big one cannot yet; unless the big one has waited long
            // enough to reserve the permits (eventual fairness), when the singles wait for it.
            sem.release(2).unwrap();
            sem.release(3).unwrap();
            big.join().unwrap();
        });
    });
    assert_eq!((sem.available(), sem.waiters()), (0, 0));
}

/// Qt `multiAcquireRelease`: one release travels through a chain of acquire/release threads.
#[test]
fn one_release_travels_through_a_chain() {
    let sem = Semaphore::new(0);
    common::within(&sem, || {
        thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| drop(sem.acquire(1).unwrap()));
            }
            wait_for_waiters(&sem, 4);
            sem.release(1).unwrap();
        });
    });
    assert_eq!((sem.available(), sem.waiters()), (1, 0));
}

/// Qt `raii`: guards give back exactly what they hold unless forgotten.
#[test]
fn permits_give_back_on_drop_unless_forgotten() {
    let sem = Semaphore::new(49);
    {
        let a = sem.acquire(3).unwrap();
        let b = sem.try_acquire(4).unwrap();
        assert_eq!((a.permits(), b.permits(), sem.available()), (3, 4, 42));
        b.forget();
    }
    assert_eq!(sem.available(), 45);
    let c = sem.acquire(6).unwrap();
    let moved = c;
    assert_eq!(sem.available(), 39);
    moved.release().unwrap();
    sem.release(4).unwrap();
    assert_eq!(sem.available(), 49);
}

/// Qt `stdCompat`: the std-style timed calls.
#[test]
fn std_style_timed_calls() {
    let sem = Semaphore::new(1);
    sem.try_acquire(1).unwrap().forget();
    assert!(sem.try_acquire_for(1, Duration::from_millis(10)).is_err());
    assert!(
        sem.try_acquire_until(1, Instant::now() + Duration::from_millis(10))
            .is_err()
    );
    sem.release(2).unwrap();
    sem.try_acquire(1).unwrap().forget();
    sem.try_acquire_for(1, Duration::from_millis(5))
        .unwrap()
        .forget();
    assert!(
        sem.try_acquire_until(1, Instant::now() + Duration::from_millis(5))
            .is_err()
    );
    sem.release(3).unwrap();
    sem.try_acquire(1).unwrap().forget();
    sem.try_acquire_for(1, Duration::from_secs(5))
        .unwrap()
        .forget();
    sem.try_acquire_until(1, Instant::now() + Duration::from_secs(5))
        .unwrap()
        .forget();
    assert_eq!(sem.available(), 0);
}

/// Overflow: refused, nothing changes, nobody is woken; up to the limit is fine.
#[test]
fn release_past_max_is_refused_and_changes_nothing() {
    let sem = Semaphore::new(5);
    assert_eq!(
        sem.release(MAX_PERMITS).unwrap_err(),
        ReleaseError {
            available: 5,
            released: MAX_PERMITS
        }
    );
    assert_eq!(
        sem.release(u32::MAX).unwrap_err(),
        ReleaseError {
            available: 5,
            released: u32::MAX
        }
    );
    assert_eq!(sem.available(), 5);
    sem.release(MAX_PERMITS - 5).unwrap();
    assert_eq!(sem.available(), MAX_PERMITS);
    assert!(sem.release(1).is_err());
    sem.acquire(MAX_PERMITS).unwrap().forget();
    assert_eq!(sem.available(), 0);

    // A refused release changes nothing: a waiter for every permit keeps waiting.
    let sem = Semaphore::new(0);
    let woke = AtomicU32::new(0);
    common::within(&sem, || {
        thread::scope(|s| {
            s.spawn(|| {
                sem.acquire(MAX_PERMITS).unwrap().forget();
                woke.store(1, Ordering::SeqCst);
            });
            wait_for_waiters(&sem, 1);
            sem.release(MAX_PERMITS - 1).unwrap();
            assert_eq!(
                sem.release(2).unwrap_err(),
                ReleaseError {
                    available: MAX_PERMITS - 1,
                    released: 2
                }
            );
            assert_eq!((sem.available(), sem.waiters()), (MAX_PERMITS - 1, 1));
            assert_eq!(woke.load(Ordering::SeqCst), 0);
            sem.release(1).unwrap();
        });
    });
    assert_eq!(woke.load(Ordering::SeqCst), 1);
    assert_eq!((sem.available(), sem.waiters()), (0, 0));
}

/// A permit whose return would overflow panics on drop rather than losing the error.
#[test]
#[should_panic(expected = "dropping a `Permit`: releasing 1 permits")]
fn dropping_a_permit_that_would_overflow_panics() {
    let sem = Semaphore::new(MAX_PERMITS);
    let permit = sem.acquire(1).unwrap();
    sem.release(1).unwrap();
    drop(permit);
}

/// Asking for more than can ever exist fails at once, on every call.
#[test]
fn oversized_requests_fail_at_once() {
    let sem = Semaphore::new(3);
    let too_many = AcquireError::TooManyPermits {
        requested: MAX_PERMITS + 1,
    };
    assert_eq!(sem.acquire(MAX_PERMITS + 1).unwrap_err(), too_many);
    assert_eq!(sem.try_acquire(MAX_PERMITS + 1).unwrap_err(), too_many);
    assert_eq!(
        sem.try_acquire_for(MAX_PERMITS + 1, Duration::MAX)
            .unwrap_err(),
        too_many
    );
    assert_eq!(
        sem.try_acquire_until(MAX_PERMITS + 1, Instant::now())
            .unwrap_err(),
        too_many
    );
    assert_eq!(Semaphore::try_new(MAX_PERMITS + 1).unwrap_err(), too_many);
    assert_eq!(
        Semaphore::try_new(MAX_PERMITS).unwrap().available(),
        MAX_PERMITS
    );
    assert_eq!((sem.available(), sem.waiters()), (3, 0));
}

#[test]
#[should_panic(expected = "more than `Semaphore::MAX_PERMITS`")]
fn new_rejects_too_many_permits() {
    let _ = Semaphore::new(std::hint::black_box(MAX_PERMITS + 1));
}

/// Zero-permit calls succeed at once, even on an empty semaphore, and change nothing.
#[test]
fn zero_permits_never_block() {
    let sem = Semaphore::new(0);
    assert_eq!(sem.acquire(0).unwrap().permits(), 0);
    drop(sem.try_acquire(0).unwrap());
    drop(sem.try_acquire_for(0, Duration::MAX).unwrap());
    drop(sem.try_acquire_until(0, Instant::now()).unwrap());
    sem.release(0).unwrap();
    let full = Semaphore::new(MAX_PERMITS);
    full.release(0).unwrap();
    assert_eq!(
        (sem.available(), sem.waiters(), full.available()),
        (0, 0, MAX_PERMITS)
    );
}

/// A semaphore can be a `static`.
#[test]
fn works_as_a_static() {
    static SEM: Semaphore = Semaphore::new(2);
    let permit = SEM.acquire(2).unwrap();
    assert!(SEM.try_acquire(1).is_err());
    drop(permit);
    assert_eq!(SEM.available(), 2);
    assert!(format!("{SEM:?}").contains("available: 2"));
}
