//! Signal storm: a handler installed without `SA_RESTART` fires again and again at threads
//! blocked in the semaphore. Their futex waits return `EINTR`; they must keep waiting (untimed),
//! not give up before their deadline (timed), and lose no permit.
//!
//! Also: `release` from a signal handler (async-signal-safe in the futex build; refused with a
//! clear message, instead of a deadlock, in the portable build).
//!
//! This file is its own test binary: the handlers are process-wide.
#![cfg(not(loom))] // loom builds run only `tests/loom.rs`

mod common;

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
        common::wait_until("5 registered waiters", &sem, |s| s.waiters() >= 5);
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
        assert!(
            sent >= HANDLED.load(Ordering::Relaxed),
            "more signals handled than sent"
        );
        sem.release(1 + 1 + 1 + 2 + 3).unwrap();
        common::wait_until("every untimed waiter served", &sem, |s| {
            returned.load(Ordering::SeqCst) == 5 && s.waiters() == 0
        });
        for t in threads {
            t.join().unwrap();
        }
    });
    assert_eq!(returned.load(Ordering::SeqCst), 5);
    assert_eq!((sem.available(), sem.waiters()), (0, 0));
}

fn pthread_self() -> libc::pthread_t {
    // SAFETY: always safe to call.
    unsafe { libc::pthread_self() }
}

/// The semaphore the SIGUSR2 handler releases one permit of.
static RELEASED_BY_HANDLER: Semaphore = Semaphore::new(0);

extern "C" fn release_one(_: libc::c_int) {
    // Panicking here would unwind out of a signal handler: report failure by not releasing.
    let _ = RELEASED_BY_HANDLER.release(1);
}

fn install_release_handler() {
    // SAFETY: a zeroed `sigaction` is a valid value (empty mask, no flags) that we fill in.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = release_one as extern "C" fn(libc::c_int) as libc::sighandler_t;
    action.sa_flags = 0;
    // SAFETY:
    // - `action.sa_mask` is a valid, writable sigset_t.
    // - `action` is fully initialised; the handler calls only `release`, which the futex
    //   build makes async-signal-safe (the portable build's refusal is what the portable
    //   test checks).
    let ret = unsafe {
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGUSR2, &action, std::ptr::null_mut())
    };
    assert_eq!(ret, 0, "`sigaction(SIGUSR2)` failed");
}

/// Futex build: a handler's `release` reaches a thread asleep in `acquire`, both when the
/// handler runs on that very thread (interrupting its futex wait) and on another one.
#[cfg(not(feature = "portable"))]
#[test]
fn release_from_a_signal_handler_wakes_sleepers() {
    install_release_handler();
    let sem = &RELEASED_BY_HANDLER;
    common::within(sem, || {
        let target = Mutex::new(None);
        let first_taken = AtomicU32::new(0);
        thread::scope(|s| {
            let sleeper = s.spawn(|| {
                *target.lock().unwrap() = Some(pthread_self());
                sem.acquire(1).unwrap().forget();
                first_taken.store(1, Ordering::SeqCst);
                sem.acquire(1).unwrap().forget();
            });
            common::wait_for_waiters(sem, 1);
            let target = target
                .lock()
                .unwrap()
                .expect("the sleeper registered itself");
            // SAFETY: the sleeper is not joined yet, so its pthread_t is valid.
            let ret = unsafe { libc::pthread_kill(target, libc::SIGUSR2) };
            assert_eq!(ret, 0);
            common::wait_until("the sleeper's second wait", sem, |s| {
                first_taken.load(Ordering::SeqCst) == 1 && s.waiters() == 1
            });
            // Now from a handler running on this thread, with the sleeper asleep.
            // SAFETY: raising a signal whose handler is installed above.
            assert_eq!(unsafe { libc::raise(libc::SIGUSR2) }, 0);
            sleeper.join().unwrap();
        });
    });
    assert_eq!(
        (
            RELEASED_BY_HANDLER.available(),
            RELEASED_BY_HANDLER.waiters()
        ),
        (0, 0)
    );
}

/// Portable build: a handler that interrupts a thread inside the semaphore (asleep in
/// `acquire`, where the condvar may hold the mutex) and calls `release` would deadlock; it
/// aborts the process with a message instead. Checked in a child process (this test binary
/// run again for this test alone).
#[cfg(feature = "portable")]
#[test]
fn portable_release_from_a_handler_inside_the_semaphore_aborts_clearly() {
    const CHILD: &str = "FUTEXSCOPE_SIGNAL_TEST_CHILD";
    if std::env::var_os(CHILD).is_some() {
        install_release_handler();
        let sem = &RELEASED_BY_HANDLER;
        let target = Mutex::new(None);
        thread::scope(|s| {
            s.spawn(|| {
                *target.lock().unwrap() = Some(pthread_self());
                sem.acquire(1).unwrap().forget();
            });
            common::wait_for_waiters(sem, 1);
            let target = target
                .lock()
                .unwrap()
                .expect("the sleeper registered itself");
            // SAFETY: the sleeper is not joined yet, so its pthread_t is valid.
            unsafe { libc::pthread_kill(target, libc::SIGUSR2) };
            thread::sleep(common::hang_limit());
        });
        return;
    }
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "portable_release_from_a_handler_inside_the_semaphore_aborts_clearly",
            "--nocapture",
        ])
        .env(CHILD, "1")
        .output()
        .expect("running this test binary again");
    let stderr = String::from_utf8_lossy(&output.stderr);
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        output.status.signal(),
        Some(libc::SIGABRT),
        "the child did not abort: {:?}, stderr: {stderr}",
        output.status
    );
    assert!(
        stderr.contains("not async-signal-safe"),
        "no clear message: {stderr}"
    );
}
