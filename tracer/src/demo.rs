//! The built-in demo workload (`futexscope demo` traces it): threads contending on futexscope
//! semaphores in four ways, each on its own `static` semaphore so the live view names them.
//!
//! - `POOL` (4 permits): workers take 1 to 3 permits at a time — multi-token acquires.
//! - `SCARCE` (rarely released): timed acquires that mostly time out.
//! - `STORM`: untimed waiters interrupted by a storm of signals (`EINTR`), released now and then.
//! - `SLOTS` / `ITEMS`: a bounded producer/consumer queue.
//!
//! It runs until SIGINT or SIGTERM, then releases every waiter and prints its own counts.

use std::{
    collections::VecDeque,
    sync::{
        Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::Duration,
};

use futexscope_semaphore::{AcquireError, Semaphore};

/// Multi-token acquires: 4 permits, workers take 1–3.
pub static POOL: Semaphore = Semaphore::new(4);
/// Timed acquires that mostly time out.
pub static SCARCE: Semaphore = Semaphore::new(0);
/// Untimed waiters under a signal storm.
pub static STORM: Semaphore = Semaphore::new(0);
/// Free slots of the producer/consumer queue.
pub static SLOTS: Semaphore = Semaphore::new(QUEUE_CAPACITY);
/// Filled slots of the producer/consumer queue.
pub static ITEMS: Semaphore = Semaphore::new(0);

const QUEUE_CAPACITY: u32 = 8;
const POOL_WORKERS: usize = 3;
const STORM_WAITERS: usize = 2;
const CONSUMERS: usize = 2;

static STOP: AtomicBool = AtomicBool::new(false);
/// Set by the storm thread once it has sent its last signal: only then may a storm waiter
/// exit (a signal to an exited thread would be undefined behaviour).
static STORM_DONE: AtomicBool = AtomicBool::new(false);
static QUEUE: Mutex<VecDeque<u64>> = Mutex::new(VecDeque::new());

/// What the demo did, by its own count.
#[derive(Debug, Default)]
pub struct DemoCounts {
    /// Permits taken from `POOL`, all acquires added up.
    pub pool_permits: AtomicU64,
    /// Timed acquires on `SCARCE` that timed out.
    pub scarce_timeouts: AtomicU64,
    /// Timed acquires on `SCARCE` that got a permit.
    pub scarce_acquired: AtomicU64,
    /// Signals sent to the `STORM` waiters.
    pub storm_signals: AtomicU64,
    /// Permits the `STORM` waiters obtained.
    pub storm_acquired: AtomicU64,
    /// Items the consumers took off the queue.
    pub items_consumed: AtomicU64,
}

extern "C" fn on_stop(_signal: libc::c_int) {
    // Relaxed: the flag carries no data; every thread only needs to see it eventually.
    STOP.store(true, Ordering::Relaxed);
}

extern "C" fn on_storm_signal(_signal: libc::c_int) {}

/// Installs `handler` for `signal` without `SA_RESTART`, so blocked system calls see `EINTR`.
fn install(signal: libc::c_int, handler: extern "C" fn(libc::c_int)) {
    // SAFETY: a zeroed sigaction is valid; the handlers only touch an atomic (or nothing),
    // which is async-signal-safe; `sa_mask` is initialised by sigemptyset.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = handler as *const () as usize;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(signal, &action, std::ptr::null_mut());
    }
}

fn stopping() -> bool {
    STOP.load(Ordering::Relaxed)
}

/// A small xorshift generator: the demo needs variety, not quality.
fn next_random(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// Runs the demo until SIGINT or SIGTERM; returns its counts.
pub fn run() -> DemoCounts {
    install(libc::SIGINT, on_stop);
    install(libc::SIGTERM, on_stop);
    install(libc::SIGUSR1, on_storm_signal);
    let counts = DemoCounts::default();
    let storm_threads: Mutex<Vec<libc::pthread_t>> = Mutex::new(Vec::new());
    thread::scope(|scope| {
        for worker in 0..POOL_WORKERS {
            let counts = &counts;
            scope.spawn(move || {
                let mut seed = 0x9e37_79b9_7f4a_7c15 ^ worker as u64;
                while !stopping() {
                    let wanted = 1 + (next_random(&mut seed) % 3) as u32;
                    let permit = POOL.acquire(wanted).expect("at most 3 of 4 permits");
                    counts
                        .pool_permits
                        .fetch_add(u64::from(wanted), Ordering::Relaxed);
                    thread::sleep(Duration::from_micros(300));
                    drop(permit);
                }
            });
        }
        scope.spawn(|| {
            while !stopping() {
                match SCARCE.try_acquire_for(1, Duration::from_millis(5)) {
                    Ok(permit) => {
                        counts.scarce_acquired.fetch_add(1, Ordering::Relaxed);
                        permit.forget();
                    }
                    Err(AcquireError::TimedOut) => {
                        counts.scarce_timeouts.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(other) => panic!("timed acquire on SCARCE: {other}"),
                }
            }
        });
        scope.spawn(|| {
            while !stopping() {
                thread::sleep(Duration::from_millis(40));
                SCARCE.release(1).expect("far below the maximum");
            }
        });
        for _ in 0..STORM_WAITERS {
            let (counts, storm_threads) = (&counts, &storm_threads);
            scope.spawn(move || {
                // SAFETY: pthread_self has no preconditions.
                storm_threads
                    .lock()
                    .expect("not poisoned")
                    .push(unsafe { libc::pthread_self() });
                loop {
                    STORM.acquire(1).expect("one permit").forget();
                    // Relaxed: the storm thread sets the flag before its final release, and
                    // a release happens-before the acquire that gets its permit.
                    if STORM_DONE.load(Ordering::Relaxed) {
                        break;
                    }
                    counts.storm_acquired.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        scope.spawn(|| {
            let mut rounds = 0u64;
            while !stopping() {
                thread::sleep(Duration::from_micros(500));
                for &thread in storm_threads.lock().expect("not poisoned").iter() {
                    // SAFETY: the storm waiters live until the scope ends, after this loop
                    // stops; SIGUSR1 has a do-nothing handler installed.
                    unsafe { libc::pthread_kill(thread, libc::SIGUSR1) };
                    counts.storm_signals.fetch_add(1, Ordering::Relaxed);
                }
                rounds += 1;
                if rounds.is_multiple_of(50) {
                    STORM.release(1).expect("far below the maximum");
                }
            }
            // Relaxed: published to the waiters by the release below (see the waiters).
            STORM_DONE.store(true, Ordering::Relaxed);
            STORM
                .release(STORM_WAITERS as u32)
                .expect("far below the maximum");
        });
        scope.spawn(|| {
            let mut item = 0;
            while !stopping() {
                SLOTS.acquire(1).expect("one permit").forget();
                QUEUE.lock().expect("not poisoned").push_back(item);
                item += 1;
                ITEMS.release(1).expect("at most the queue capacity");
                if item.is_multiple_of(16) {
                    // Bursts: consumers drain the queue, then wait for more.
                    thread::sleep(Duration::from_millis(2));
                }
            }
        });
        for _ in 0..CONSUMERS {
            let counts = &counts;
            scope.spawn(move || {
                loop {
                    ITEMS.acquire(1).expect("one permit").forget();
                    let Some(_) = QUEUE.lock().expect("not poisoned").pop_front() else {
                        break;
                    };
                    counts.items_consumed.fetch_add(1, Ordering::Relaxed);
                    SLOTS.release(1).expect("at most the queue capacity");
                    thread::sleep(Duration::from_micros(200));
                }
            });
        }
        // Stop: wait for the signal, then release everyone who may be blocked.
        while !stopping() {
            thread::sleep(Duration::from_millis(10));
        }
        SLOTS.release(1).expect("far below the maximum");
        // An empty pop tells a consumer to stop; wait for the producer to finish first.
        thread::sleep(Duration::from_millis(20));
        QUEUE.lock().expect("not poisoned").clear();
        ITEMS
            .release(CONSUMERS as u32 + QUEUE_CAPACITY)
            .expect("far below the maximum");
    });
    counts
}

impl std::fmt::Display for DemoCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        writeln!(
            f,
            "demo: POOL: {} permits acquired",
            get(&self.pool_permits)
        )?;
        writeln!(
            f,
            "demo: SCARCE: {} timeouts, {} acquired",
            get(&self.scarce_timeouts),
            get(&self.scarce_acquired)
        )?;
        writeln!(
            f,
            "demo: STORM: {} signals, {} acquired",
            get(&self.storm_signals),
            get(&self.storm_acquired)
        )?;
        write!(
            f,
            "demo: SLOTS/ITEMS: {} items consumed",
            get(&self.items_consumed)
        )
    }
}
