//! A workload whose futexscope marker counts are known in advance, for checking what a tracer
//! (bpftrace, perf, futexscope) sees of the semaphore:
//!
//! ```text
//! cargo run -p futexscope-semaphore --example marker-workload -- [TIMEOUTS] [WAKEUPS] [UNCONTENDED]
//! ```
//!
//! 1. UNCONTENDED acquire/release pairs and failing `try_acquire`s: no marker may fire.
//! 2. TIMEOUTS timed acquires on an empty semaphore, each giving up after 20 ms: each one waits
//!    once on the futex and then fires `timed_out`.
//! 3. WAKEUPS rounds in which a thread is seen asleep in `acquire` before one permit is
//!    released: each round is one wait, one wake (waking one thread) and one `acquired`.
//!
//! It prints what it did as `name=value` lines, and the marker counts that follow from it.

use futexscope_semaphore::{AcquireError, Semaphore};
use std::{
    sync::atomic::{AtomicI32, Ordering},
    thread,
    time::Duration,
};

/// How long each timed acquire waits before giving up.
const TIMEOUT: Duration = Duration::from_millis(20);

fn main() {
    let mut args = std::env::args().skip(1).map(|a| {
        a.parse::<u32>().unwrap_or_else(|_| {
            eprintln!("error: `{a}` is not a count; usage: marker-workload [TIMEOUTS] [WAKEUPS] [UNCONTENDED]");
            std::process::exit(2)
        })
    });
    let timeouts = args.next().unwrap_or(5);
    let wakeups = args.next().unwrap_or(5);
    let uncontended = args.next().unwrap_or(1000);

    let uncontended_ops = run_uncontended(uncontended);
    let timed_out = run_timeouts(timeouts);
    let woken_acquires = run_wakeups(wakeups);

    println!("uncontended_ops={uncontended_ops}");
    println!("timed_out={timed_out}");
    println!("woken_acquires={woken_acquires}");
    println!("expected_wait_begin={}", timed_out + woken_acquires);
    println!("expected_wait_end={}", timed_out + woken_acquires);
    println!("expected_wake_begin={woken_acquires}");
    println!("expected_wake_end={woken_acquires}");
    println!("expected_acquired={woken_acquires}");
    println!("expected_timed_out={timed_out}");
}

/// Acquire/release pairs that never wait, and try_acquires that fail without waiting.
fn run_uncontended(rounds: u32) -> u32 {
    let sem = Semaphore::new(1);
    for _ in 0..rounds {
        drop(sem.acquire(1).expect("one permit is free"));
        let held = sem.acquire(1).expect("one permit is free");
        assert!(sem.try_acquire(1).is_err(), "the only permit is held");
        drop(held);
    }
    2 * rounds
}

/// Timed acquires on an empty semaphore; returns how many timed out.
fn run_timeouts(rounds: u32) -> u32 {
    let sem = Semaphore::new(0);
    let mut timed_out = 0;
    for _ in 0..rounds {
        match sem.try_acquire_for(1, TIMEOUT) {
            Err(AcquireError::TimedOut) => timed_out += 1,
            other => panic!("a timed acquire on an empty semaphore returned {other:?}"),
        }
    }
    timed_out
}

/// Rounds of: a thread sleeps in `acquire(1)`, this thread sees it asleep, releases one
/// permit, and the sleeper takes it. Returns the number of rounds.
fn run_wakeups(rounds: u32) -> u32 {
    let sem = Semaphore::new(0);
    for _ in 0..rounds {
        let sleeper_tid = AtomicI32::new(0);
        thread::scope(|s| {
            let sleeper = s.spawn(|| {
                // SAFETY: gettid has no preconditions and cannot fail.
                let tid = unsafe { libc::gettid() };
                // Relaxed: the value is only polled; no other data rides on it.
                sleeper_tid.store(tid, Ordering::Relaxed);
                sem.acquire(1).expect("a permit is released").forget();
            });
            wait_until_asleep(&sem, &sleeper_tid);
            sem.release(1).expect("room for one permit");
            sleeper.join().expect("the sleeper does not panic");
        });
    }
    rounds
}

/// Returns once the thread whose id `tid` holds is registered as a waiter of `sem` and asleep
/// (state `S` in `/proc/self/task/TID/stat`: the only way it can sleep there is in the futex
/// wait).
fn wait_until_asleep(sem: &Semaphore, tid: &AtomicI32) {
    loop {
        // Relaxed: see the store.
        let id = tid.load(Ordering::Relaxed);
        if id != 0 && sem.waiters() == 1 && thread_state(id) == Some('S') {
            return;
        }
        thread::sleep(Duration::from_millis(1));
    }
}

/// The scheduler state letter of thread `tid` of this process.
fn thread_state(tid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces: the state follows the last ')'.
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}
