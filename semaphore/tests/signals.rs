//! Signal storm: a handler installed without `SA_RESTART` fires again and again at threads
//! blocked in the semaphore. Their futex waits return `EINTR`; they must keep waiting (untimed),
//! not give up before their deadline (timed), and lose no permit.
//!
//! This file is its own test binary: the handler is process-wide.
#![cfg(not(loom))] // loom builds run only `tests/loom.rs`

use futexscope_semaphore::{AcquireError, Semaphore};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

static HANDLED: AtomicU64 = AtomicU64::new(0);

extern "C" fn count_signal(_: libc::c_int) {
    HANDLED.fetch_add(1, Ordering::Relaxed);
}

fn install_handler_without_restart() {
    // SAFETY: a zeroed `sigaction` is a valid value (empty mask, no flags) that we fill in.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = count_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    action.sa_flags = 0; // no SA_RESTART: interrupted waits return EINTR
    // SAFETY:
    // - `action.sa_mask` is a valid, writable sigset_t.
    // - `action` is fully initialised; the handler only touches an atomic (async-signal-safe).
    let ret = unsafe {
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGUSR1, &action, std::ptr::null_mut())
    };
    assert_eq!(ret, 0, "`sigaction(SIGUSR1)` failed");
}

#[test]
fn signal_storm_neither_ends_waits_early_nor_loses_permits() {
    install_handler_without_restart();
    let storm = Duration::from_millis(600);
    let timed_timeout = Duration::from_millis(300);
    let sem = Semaphore::new(0);
    let returned = AtomicU32::new(0);
    // Threads to signal. None is joined before the storm ends, so every pthread_t stays valid.
    let targets = Mutex::new(Vec::new());
    let register = || targets.lock().unwrap().push(pthread_self());
    thread::scope(|s| {
        let mut threads = Vec::new();
        for n in [1, 1, 1, 2, 3] {
            let (sem, returned, register) = (&sem, &returned, &register);
            threads.push(s.spawn(move || {
                register();
                sem.acquire(n).unwrap().forget();
                returned.fetch_add(1, Ordering::SeqCst);
            }));
        }
        // The untimed waiters never leave, so this cannot miss them.
        while sem.waiters() < 5 {
            thread::sleep(Duration::from_millis(1));
        }
        let mut timed = Vec::new();
        for n in [1, 2] {
            let (sem, register) = (&sem, &register);
            timed.push(s.spawn(move || {
                register();
                let start = Instant::now();
                let result = sem.try_acquire_for(n, timed_timeout).map(|p| p.permits());
                (result, start.elapsed())
            }));
        }
        let start = Instant::now();
        let mut sent = 0u64;
        while start.elapsed() < storm {
            for &target in targets.lock().unwrap().iter() {
                // SAFETY: the thread is not joined yet, so its pthread_t is valid; a thread
                // that already returned just gets an error (ignored).
                unsafe { libc::pthread_kill(target, libc::SIGUSR1) };
                sent += 1;
            }
            thread::sleep(Duration::from_micros(200));
        }
        assert!(
            HANDLED.load(Ordering::Relaxed) > 100,
            "the storm did not reach the threads"
        );
        assert_eq!(
            returned.load(Ordering::SeqCst),
            0,
            "an untimed acquire returned without permits"
        );
        for t in timed {
            let (result, elapsed) = t.join().unwrap();
            assert_eq!(result, Err(AcquireError::TimedOut));
            assert!(
                elapsed >= timed_timeout,
                "timed acquire gave up after {elapsed:?}"
            );
        }
        assert_eq!((sem.available(), sem.waiters()), (0, 5));
        sem.release(1 + 1 + 1 + 2 + 3).unwrap();
        for t in threads {
            t.join().unwrap();
        }
        assert!(sent > 0);
    });
    assert_eq!(returned.load(Ordering::SeqCst), 5);
    assert_eq!((sem.available(), sem.waiters()), (0, 0));
}

fn pthread_self() -> libc::pthread_t {
    // SAFETY: always safe to call.
    unsafe { libc::pthread_self() }
}
