//! `fork` while threads wait: the child inherits their registrations (phantom waiters, as
//! with `sem_t`); `Semaphore::forget_waiters_after_fork` makes the semaphore work again.
//!
//! Its own test binary: forking a multithreaded test harness is safe only because the child
//! makes no allocation and leaves with `_exit`.
#![cfg(not(loom))] // loom builds run only `tests/loom.rs`

mod common;

use futexscope_semaphore::Semaphore;
use std::thread;

static SEM: Semaphore = Semaphore::new(0);

/// Child side: async-signal-safe calls only (the futex build's operations are), no
/// allocation, no unwinding; the exit status says which check failed.
fn child() -> ! {
    let status = if SEM.waiters() != 2 {
        1 // the phantoms are not visible
    } else {
        // SAFETY: this child has one thread, and it is not inside any call on `SEM`.
        unsafe { SEM.forget_waiters_after_fork() };
        if SEM.waiters() != 0 || SEM.available() != 0 {
            2
        } else if SEM.release(3).is_err() {
            3
        } else {
            match SEM.try_acquire(3) {
                Ok(permit) if SEM.available() == 0 => {
                    drop(permit);
                    if SEM.available() == 3 { 0 } else { 4 }
                }
                _ => 5,
            }
        }
    };
    // SAFETY: `_exit` ends the child at once, running no destructor or atexit handler of
    // the parent's state.
    unsafe { libc::_exit(status) }
}

#[test]
fn child_forgets_phantom_waiters() {
    common::within(&SEM, || {
        thread::scope(|s| {
            s.spawn(|| SEM.acquire(1).unwrap().forget());
            s.spawn(|| SEM.acquire(2).unwrap().forget());
            common::wait_for_waiters(&SEM, 2);
            // SAFETY: the child only runs `child`, which is async-signal-safe (see there).
            let pid = unsafe { libc::fork() };
            assert!(pid >= 0, "fork failed");
            if pid == 0 {
                child();
            }
            let mut status = 0;
            // SAFETY: `pid` is our child; `status` is a valid, writable int.
            let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
            assert_eq!(waited, pid);
            assert!(libc::WIFEXITED(status), "child did not exit: {status:#x}");
            assert_eq!(
                libc::WEXITSTATUS(status),
                0,
                "child check failed (see the status codes in `child`)"
            );
            // The parent's waiters are real: serve them.
            SEM.release(3).unwrap();
        });
    });
    assert_eq!((SEM.available(), SEM.waiters()), (0, 0));
}
