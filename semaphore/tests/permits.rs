//! Owned permits (`Arc<Semaphore>`), splitting and merging guards, `forget_permits` and
//! releasers built from a count: the conveniences tokio's and Qt's semaphores offer.
#![cfg(not(loom))] // loom builds run only `tests/loom.rs`

mod common;

use futexscope_semaphore::{AcquireError, MAX_PERMITS, Semaphore};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// An owned permit moves into a `'static` thread and gives its permits back there.
#[test]
fn owned_permits_move_into_static_threads() {
    let sem = Arc::new(Semaphore::new(3));
    let permit = Arc::clone(&sem).acquire_owned(2).unwrap();
    assert_eq!((permit.permits(), sem.available()), (2, 1));
    assert!(Arc::ptr_eq(permit.semaphore(), &sem));
    thread::spawn(move || drop(permit)).join().unwrap();
    assert_eq!(sem.available(), 3);

    // A 'static waiter, woken by a release on this thread.
    let taken = Arc::clone(&sem).acquire_owned(3).unwrap();
    let waiter = {
        let sem = Arc::clone(&sem);
        thread::spawn(move || sem.acquire_owned(2).map(|p| p.permits()))
    };
    drop(taken);
    assert_eq!(waiter.join().unwrap(), Ok(2));
    assert_eq!((sem.available(), sem.waiters()), (3, 0));
    // The semaphore outlives every handle but the permit's.
    let last = Arc::clone(&sem).acquire_owned(1).unwrap();
    drop(sem);
    drop(last);
}

#[test]
fn owned_try_and_timed_acquires() {
    let sem = Arc::new(Semaphore::new(2));
    let a = Arc::clone(&sem).try_acquire_owned(2).unwrap();
    assert_eq!(
        Arc::clone(&sem).try_acquire_owned(1).unwrap_err(),
        AcquireError::NoPermits
    );
    assert_eq!(
        Arc::clone(&sem)
            .try_acquire_for_owned(1, Duration::from_millis(1))
            .unwrap_err(),
        AcquireError::TimedOut
    );
    assert_eq!(
        Arc::clone(&sem)
            .try_acquire_until_owned(1, Instant::now())
            .unwrap_err(),
        AcquireError::TimedOut
    );
    a.release().unwrap();
    let b = Arc::clone(&sem)
        .try_acquire_for_owned(1, Duration::from_secs(60))
        .unwrap();
    let c = Arc::clone(&sem)
        .try_acquire_until_owned(1, Instant::now() + Duration::from_secs(60))
        .unwrap();
    assert_eq!(sem.available(), 0);
    b.forget();
    drop(c);
    assert_eq!(sem.available(), 1);
    assert_eq!(
        Arc::clone(&sem).acquire_owned(MAX_PERMITS + 1).unwrap_err(),
        AcquireError::TooManyPermits {
            requested: MAX_PERMITS + 1
        }
    );
}

#[test]
fn split_and_merge_borrowed_permits() {
    let sem = Semaphore::new(5);
    let mut whole = sem.acquire(5).unwrap();
    assert!(whole.split(6).is_none(), "split more than held");
    assert_eq!(whole.permits(), 5);
    let part = whole.split(2).unwrap();
    assert_eq!((whole.permits(), part.permits()), (3, 2));
    drop(part);
    assert_eq!(sem.available(), 2);
    let zero = whole.split(0).unwrap();
    assert_eq!(zero.permits(), 0);
    let other = sem.acquire(2).unwrap();
    whole.merge(other);
    whole.merge(zero);
    assert_eq!((whole.permits(), sem.available()), (5, 0));
    drop(whole);
    assert_eq!(sem.available(), 5);
}

#[test]
fn split_and_merge_owned_permits() {
    let sem = Arc::new(Semaphore::new(4));
    let mut whole = Arc::clone(&sem).acquire_owned(4).unwrap();
    assert!(whole.split(5).is_none());
    let part = whole.split(1).unwrap();
    let moved = thread::spawn(move || part.permits()).join().unwrap();
    assert_eq!((moved, sem.available(), whole.permits()), (1, 1, 3));
    whole.merge(Arc::clone(&sem).acquire_owned(1).unwrap());
    assert_eq!((whole.permits(), sem.available()), (4, 0));
    drop(whole);
    assert_eq!(sem.available(), 4);
}

#[test]
#[should_panic(expected = "two different semaphores")]
fn merging_permits_of_two_semaphores_panics() {
    let (a, b) = (Semaphore::new(1), Semaphore::new(1));
    let mut pa = a.acquire(1).unwrap();
    pa.merge(b.acquire(1).unwrap());
}

#[test]
#[should_panic(expected = "two different semaphores")]
fn merging_owned_permits_of_two_semaphores_panics() {
    let (a, b) = (Arc::new(Semaphore::new(1)), Arc::new(Semaphore::new(1)));
    let mut pa = a.acquire_owned(1).unwrap();
    pa.merge(b.acquire_owned(1).unwrap());
}

#[test]
fn forget_permits_takes_only_what_is_there() {
    let sem = Semaphore::new(5);
    assert_eq!(sem.forget_permits(0), 0);
    assert_eq!(sem.forget_permits(2), 2);
    assert_eq!(sem.available(), 3);
    let held = sem.acquire(1).unwrap();
    assert_eq!(sem.forget_permits(10), 2);
    assert_eq!((sem.available(), sem.forget_permits(1)), (0, 0));
    drop(held);
    assert_eq!((sem.available(), sem.waiters()), (1, 0));
}

#[test]
fn releasers_give_back_a_count_on_drop() {
    let sem = Semaphore::new(4);
    sem.acquire(3).unwrap().forget();
    {
        let releaser = sem.releaser(3);
        assert_eq!((releaser.permits(), sem.available()), (3, 1));
    }
    assert_eq!(sem.available(), 4);
    // A releaser wakes a waiter like any release.
    sem.acquire(4).unwrap().forget();
    common::within(&sem, || {
        thread::scope(|s| {
            let waiter = s.spawn(|| sem.acquire(2).unwrap().forget());
            common::wait_for_waiters(&sem, 1);
            drop(sem.releaser(2));
            waiter.join().unwrap();
        });
    });
    let sem = Arc::new(sem);
    drop(Arc::clone(&sem).releaser_owned(1));
    // Cancelling a releaser: forget it.
    Arc::clone(&sem).releaser_owned(7).forget();
    sem.releaser(0).forget();
    assert_eq!((sem.available(), sem.waiters()), (1, 0));
}
