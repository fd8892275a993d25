//! Stress: many threads, random request sizes, untimed, timed and non-blocking acquires on one
//! small semaphore. Checks that permits are conserved at quiescence, that no waiter stays
//! registered, and that no wake-up is lost (a lost wake-up leaves a thread asleep while its
//! permits sit unused: the run then cannot finish, and the watchdog reports it).
//!
//! Quick by default (a few seconds); `FUTEXSCOPE_THOROUGH=1` runs for a minute per scenario.
#![cfg(not(loom))] // loom builds run only `tests/loom.rs`

mod common;

use futexscope_semaphore::{AcquireError, Semaphore};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

fn run_time() -> Duration {
    if std::env::var_os("FUTEXSCOPE_THOROUGH").is_some_and(|v| v != "0") {
        Duration::from_secs(60)
    } else {
        Duration::from_millis(1500)
    }
}

/// A small, seeded generator: each thread its own, so runs differ only by scheduling.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Default)]
struct Tally {
    acquired: AtomicU64,
    timed_out: AtomicU64,
    refused: AtomicU64,
}

/// `threads` workers on a semaphore of `permits`, each request for 1..=`max_request` permits.
fn stress(permits: u32, threads: u64, max_request: u32) {
    let sem = Semaphore::new(permits);
    let stop = AtomicBool::new(false);
    let tally = Tally::default();
    let done = AtomicU64::new(0);
    thread::scope(|s| {
        for id in 0..threads {
            let (sem, stop, tally, done) = (&sem, &stop, &tally, &done);
            s.spawn(move || {
                let mut rng =
                    XorShift(0x9e37_79b9_7f4a_7c15 ^ (id + 1).wrapping_mul(0x2545_f491_4f6c_dd1d));
                while !stop.load(Ordering::Relaxed) {
                    let n = 1 + rng.below(u64::from(max_request)) as u32;
                    let result = match rng.below(4) {
                        0 | 1 => sem.acquire(n),
                        2 => sem.try_acquire_for(n, Duration::from_micros(rng.below(2000))),
                        _ => sem.try_acquire(n),
                    };
                    match result {
                        Ok(permit) => {
                            tally.acquired.fetch_add(1, Ordering::Relaxed);
                            if rng.below(8) == 0 {
                                thread::yield_now();
                            }
                            if rng.below(2) == 0 {
                                drop(permit);
                            } else {
                                // The other way to give permits back: forget, then release.
                                let taken = permit.permits();
                                permit.forget();
                                sem.release(taken).unwrap();
                            }
                        }
                        Err(AcquireError::TimedOut) => {
                            tally.timed_out.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(AcquireError::NoPermits) => {
                            tally.refused.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(other) => panic!("unexpected error: {other}"),
                    }
                }
                done.fetch_add(1, Ordering::SeqCst);
            });
        }
        // While running: permits enough for any request, sitting unused while a thread waits,
        // for seconds on end, means a lost wake-up.
        let end = Instant::now() + run_time();
        let mut idle_since: Option<Instant> = None;
        while Instant::now() < end {
            if sem.available() >= max_request && sem.waiters() > 0 {
                let since = *idle_since.get_or_insert_with(Instant::now);
                if since.elapsed() > common::hang_limit() {
                    common::hung(
                        "lost wake-up while running: permits enough for any request unused",
                        &sem,
                    );
                }
            } else {
                idle_since = None;
            }
            thread::sleep(Duration::from_millis(1));
        }
        stop.store(true, Ordering::Relaxed);
        // Every worker holds at most `max_request` <= `permits`, so once they stop starting new
        // requests, each pending one can be served. A thread still asleep after the watchdog
        // time with permits available lost its wake-up.
        let watchdog = Instant::now();
        while done.load(Ordering::SeqCst) < threads {
            if watchdog.elapsed() > common::hang_limit() {
                common::hung(
                    &format!(
                        "lost wake-up: {} of {threads} workers still blocked",
                        threads - done.load(Ordering::SeqCst)
                    ),
                    &sem,
                );
            }
            thread::sleep(Duration::from_millis(5));
        }
    });
    assert_eq!(sem.available(), permits, "permits not conserved");
    assert_eq!(sem.waiters(), 0, "a waiter stayed registered");
    let acquired = tally.acquired.load(Ordering::Relaxed);
    assert!(
        acquired > threads,
        "too little progress to mean anything: {acquired} acquires"
    );
    eprintln!(
        "permits {permits}, threads {threads}, requests 1..={max_request}: {acquired} acquired, {} timed out, {} refused",
        tally.timed_out.load(Ordering::Relaxed),
        tally.refused.load(Ordering::Relaxed),
    );
}

#[test]
fn single_permit_requests() {
    stress(2, 8, 1);
}

#[test]
fn mixed_requests_on_a_tight_semaphore() {
    stress(4, 8, 4);
}

#[test]
fn mixed_requests_many_threads() {
    stress(6, 24, 6);
}
