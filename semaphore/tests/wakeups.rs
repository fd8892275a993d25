//! Quiescent rounds: threads go to sleep in the semaphore, then one thread releases exactly
//! the permits they need, and nothing else happens. Every sleeper must return. With no other
//! traffic to wake them by chance, a release that wakes too few (a lost wake-up) leaves a
//! thread asleep for good, and the hang guard fails the test by name with the semaphore's
//! state. Each scenario runs many rounds, so the release races the sleepers' registration,
//! spinning and futex wait in many ways.
#![cfg(not(loom))] // loom builds run only `tests/loom.rs`

mod common;

use common::{hang_limit, hung, wait_for_waiters};
use futexscope_semaphore::Semaphore;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

fn rounds() -> u32 {
    if std::env::var_os("FUTEXSCOPE_THOROUGH").is_some_and(|v| v != "0") {
        2000
    } else {
        60
    }
}

/// When the releases of a round start.
#[derive(Clone, Copy)]
enum Start {
    /// At once: the releases race the sleepers' registration.
    Racing,
    /// Once every sleeper is registered.
    Settled,
    /// 5 ms after that: multi sleepers have passed their fairness point (1 ms) and wait for
    /// wakes alone (one holding the reservation), with no timer of their own left.
    Late,
}

impl Start {
    fn of_round(i: u32) -> Start {
        [Start::Settled, Start::Racing, Start::Late][(i % 3) as usize]
    }
}

/// One round: a thread per entry of `requests` acquires that many permits from an empty
/// semaphore (untimed, or timed with a far deadline if `timed`). At `start`, the permits they
/// need are released in the pieces `releases` gives, by this thread only. Fails if any
/// sleeper is still asleep after the hang limit.
fn round(requests: &[u32], releases: &[u32], start: Start, timed: bool) {
    assert_eq!(
        requests.iter().sum::<u32>(),
        releases.iter().sum::<u32>(),
        "a round releases exactly what its sleepers need"
    );
    let sem = Arc::new(Semaphore::new(0));
    let done = Arc::new(AtomicU32::new(0));
    for &n in requests {
        let (sem, done) = (Arc::clone(&sem), Arc::clone(&done));
        // Not scoped: a sleeper that never wakes must not keep the test from failing.
        thread::spawn(move || {
            if timed {
                sem.try_acquire_for(n, Duration::from_secs(3600))
                    .expect("a timed sleeper timed out after an hour")
                    .forget();
            } else {
                sem.acquire(n).unwrap().forget();
            }
            done.fetch_add(1, Ordering::SeqCst);
        });
    }
    let sleepers = u32::try_from(requests.len()).unwrap();
    match start {
        Start::Racing => {}
        Start::Settled => wait_for_waiters(&sem, sleepers),
        Start::Late => {
            wait_for_waiters(&sem, sleepers);
            thread::sleep(Duration::from_millis(5));
        }
    }
    for &r in releases {
        sem.release(r).unwrap();
    }
    let start = Instant::now();
    while done.load(Ordering::SeqCst) < sleepers {
        if start.elapsed() > hang_limit() {
            hung(
                &format!(
                    "lost wake-up: {} of {sleepers} sleepers (requests {requests:?}) still asleep \
                     after releases {releases:?}",
                    sleepers - done.load(Ordering::SeqCst)
                ),
                &*sem,
            );
        }
        thread::sleep(Duration::from_micros(100));
    }
    assert_eq!(
        (sem.available(), sem.waiters()),
        (0, 0),
        "permits or registrations left over"
    );
}

fn repeat(requests: &[u32], releases: &[u32]) {
    for i in 0..rounds() {
        round(requests, releases, Start::of_round(i), false);
    }
}

/// One `release(n)` must wake `n` single-permit sleepers, not one.
#[test]
fn one_release_of_n_wakes_n_single_sleepers() {
    repeat(&[1, 1], &[2]);
    repeat(&[1, 1, 1, 1], &[4]);
}

/// Releases of one permit each, back to back, each wake one more sleeper (the skipped-wake
/// accounting must not skip a sleeper that was never woken).
#[test]
fn back_to_back_single_releases_wake_every_sleeper() {
    repeat(&[1, 1, 1], &[1, 1, 1]);
}

/// A multi-permit sleeper is woken as soon as 2 permits are there, in one release or two.
#[test]
fn two_permits_wake_a_two_permit_sleeper() {
    repeat(&[2], &[2]);
    repeat(&[2], &[1, 1]);
}

/// Several multi-permit sleepers, woken by one release covering all of them.
#[test]
fn one_release_wakes_every_multi_sleeper() {
    repeat(&[2, 3], &[5]);
    repeat(&[2, 2, 4], &[8]);
}

/// Both kinds at once: single and multi sleepers share the released permits.
#[test]
fn mixed_sleepers_share_one_release() {
    repeat(&[1, 1, 2], &[4]);
    repeat(&[1, 3, 1, 2], &[3, 4]);
}

/// Timed sleepers (deadline far away) are woken like untimed ones.
#[test]
fn timed_sleepers_are_woken_too() {
    for i in 0..rounds() {
        round(&[1, 1, 2], &[4], Start::of_round(i), true);
        round(&[1, 1], &[1, 1], Start::of_round(i), true);
    }
}

/// Eventual fairness (futex build only; the portable one has none): 4 threads keep taking
/// and returning 1 of 4 permits, each holding it 200 µs, so all 4 are rarely free at once.
/// Without the reservation an `acquire(4)` starves (20 of 20 one-second attempts failed
/// before it existed); with it, it gets in once it has waited 1 ms and the holders drain.
/// Asserted is only that it gets in before the hang limit.
#[cfg(not(feature = "portable"))]
#[test]
fn large_request_gets_in_under_a_stream_of_small_ones() {
    use std::sync::atomic::AtomicBool;
    let sem = Semaphore::new(4);
    let stop = AtomicBool::new(false);
    common::within(&sem, || {
        thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    while !stop.load(Ordering::Relaxed) {
                        let permit = sem.acquire(1).unwrap();
                        let start = Instant::now();
                        while start.elapsed() < Duration::from_micros(200) {
                            std::hint::spin_loop();
                        }
                        drop(permit);
                    }
                });
            }
            thread::sleep(Duration::from_millis(20));
            for _ in 0..5 {
                sem.acquire(4).unwrap().release().unwrap();
            }
            stop.store(true, Ordering::Relaxed);
        });
    });
    assert_eq!((sem.available(), sem.waiters()), (4, 0));
}

/// The fairness timer (futex build only): a multi waiter that no release wakes still reserves
/// the permits once it has waited 1 ms. Observable because a reservation makes
/// `try_acquire(1)` fail although a permit is available; giving a polled permit back leaves
/// fewer than 2 free, which wakes no multi waiter, so only the timer can get it there.
#[cfg(not(feature = "portable"))]
#[test]
fn unwoken_multi_waiter_reserves_by_itself() {
    let sem = Semaphore::new(1);
    common::within(&sem, || {
        thread::scope(|s| {
            let big = s.spawn(|| sem.acquire(2).unwrap().forget());
            wait_for_waiters(&sem, 1);
            common::wait_until("the multi waiter's reservation", &sem, |sem| {
                match sem.try_acquire(1) {
                    Ok(permit) => {
                        drop(permit);
                        thread::sleep(Duration::from_millis(1));
                        false
                    }
                    Err(_) => sem.available() == 1,
                }
            });
            sem.release(1).unwrap();
            big.join().unwrap();
        });
    });
    assert_eq!((sem.available(), sem.waiters()), (0, 0));
}
