//! "Never early": a timed acquire that fails has waited at least its timeout, measured on the
//! caller's own monotonic clock, even while spurious wake-ups keep interrupting it. Only this
//! lower bound is asserted; how late it returns depends on the machine.
#![cfg(not(loom))] // loom builds run only `tests/loom.rs`

mod common;

use futexscope_semaphore::{AcquireError, Semaphore};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// A thread that keeps releasing and taking back 2 permits: every release wakes a waiter that
/// wants 3 (it needs at least 2), which finds too few and waits again.
fn with_churn(sem: &Semaphore, body: impl FnOnce() + Send) {
    let stop = AtomicBool::new(false);
    common::within(sem, || {
        thread::scope(|s| {
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    sem.release(2).unwrap();
                    if let Ok(permit) = sem.try_acquire_for(2, Duration::from_secs(10)) {
                        permit.forget();
                    }
                }
            });
            body();
            stop.store(true, Ordering::Relaxed);
        })
    });
}

#[test]
fn timed_acquire_never_fails_early_under_spurious_wakeups() {
    let sem = Semaphore::new(0);
    with_churn(&sem, || {
        for millis in [1, 2, 5, 10, 20, 50, 100] {
            let timeout = Duration::from_millis(millis);
            let start = Instant::now();
            assert_eq!(
                sem.try_acquire_for(3, timeout).unwrap_err(),
                AcquireError::TimedOut
            );
            let elapsed = start.elapsed();
            assert!(
                elapsed >= timeout,
                "gave up after {elapsed:?}, before its {timeout:?} timeout"
            );

            let deadline = Instant::now() + timeout;
            assert_eq!(
                sem.try_acquire_until(3, deadline).unwrap_err(),
                AcquireError::TimedOut
            );
            let now = Instant::now();
            assert!(
                now >= deadline,
                "gave up {:?} before its deadline",
                deadline - now
            );
        }
    });
    assert_eq!(sem.waiters(), 0);
    assert!(sem.available() <= 2);
}

#[test]
fn many_timed_waiters_never_fail_early() {
    let sem = Semaphore::new(0);
    with_churn(&sem, || {
        thread::scope(|s| {
            for i in 0..6u32 {
                let sem = &sem;
                s.spawn(move || {
                    for round in 0..10u32 {
                        let timeout = Duration::from_micros(u64::from(500 * (i + 1) + 100 * round));
                        let start = Instant::now();
                        if sem.try_acquire_for(3 + i % 2, timeout).is_err() {
                            let elapsed = start.elapsed();
                            assert!(
                                elapsed >= timeout,
                                "gave up after {elapsed:?} < {timeout:?}"
                            );
                        }
                    }
                });
            }
        });
    });
    assert_eq!(sem.waiters(), 0);
}

#[test]
fn timed_acquire_succeeds_when_permits_arrive_in_time() {
    let sem = Semaphore::new(0);
    common::within(&sem, || {
        thread::scope(|s| {
            let waiter = s.spawn(|| {
                sem.try_acquire_for(3, Duration::from_secs(3600))
                    .map(|p| p.permits())
            });
            common::wait_for_waiters(&sem, 1);
            sem.release(1).unwrap();
            sem.release(2).unwrap();
            assert_eq!(waiter.join().unwrap(), Ok(3));
        })
    });
    assert_eq!((sem.available(), sem.waiters()), (3, 0));
}

#[test]
fn past_deadlines_and_zero_timeouts_never_sleep() {
    let sem = Semaphore::new(1);
    let past = Instant::now();
    thread::sleep(Duration::from_millis(2));
    assert_eq!(
        sem.try_acquire_until(2, past).unwrap_err(),
        AcquireError::TimedOut
    );
    assert_eq!(
        sem.try_acquire_for(2, Duration::ZERO).unwrap_err(),
        AcquireError::TimedOut
    );
    // Available permits are still taken, whatever the deadline.
    sem.try_acquire_until(1, past).unwrap().forget();
    assert_eq!((sem.available(), sem.waiters()), (0, 0));
}
