//! Which paths enter the kernel, checked with a seccomp filter that makes one thread's `futex`
//! calls on the semaphore fail with `ENOSYS`:
//! - uncontended acquire and release, zero-permit calls, failed `try_acquire`, expired
//!   deadlines and refused releases make no futex call (they succeed under the filter);
//! - a futex wait or wake that fails with an unexpected errno panics with a message naming the
//!   operation and the errno, instead of spinning or hanging.
//!
//! The filter is installed on a dedicated thread (seccomp filters are per thread), matches
//! only futex addresses inside the semaphore under test, and dies with the thread.
#![cfg(not(any(loom, feature = "portable")))]

use futexscope_semaphore::Semaphore;
use std::thread;
use std::time::{Duration, Instant};

/// Makes every `futex` call of the calling thread on an address inside `sem` fail with
/// `ENOSYS`, as a sandbox would; other futexes (the C library's, std's) keep working.
fn forbid_futex_on(sem: &Semaphore) {
    let start = std::ptr::from_ref(sem) as u64;
    let end = start + size_of::<Semaphore>() as u64;
    assert_eq!(
        start >> 32,
        (end - 1) >> 32,
        "the filter compares 32-bit halves"
    );
    let ld = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
    let jeq = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
    let jge = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
    let ret = (libc::BPF_RET | libc::BPF_K) as u16;
    let op = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    // seccomp_data: nr at offset 0, args[0] (the futex address) at 16, little-endian halves.
    let mut program = [
        op(ld, 0, 0, 0),
        op(jeq, 0, 6, libc::SYS_futex as u32),
        op(ld, 0, 0, 20),
        op(jeq, 0, 4, (start >> 32) as u32),
        op(ld, 0, 0, 16),
        op(jge, 0, 2, start as u32),
        op(jge, 1, 0, end as u32),
        op(ret, 0, 0, libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32),
        op(ret, 0, 0, libc::SECCOMP_RET_ALLOW),
    ];
    let fprog = libc::sock_fprog {
        len: program.len() as u16,
        filter: program.as_mut_ptr(),
    };
    // SAFETY: plain prctl calls; `fprog` points to a valid program that outlives the call (the
    // kernel copies it). Without TSYNC the filter applies to this thread only.
    let (no_new_privs, seccomp) = unsafe {
        (
            libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0),
            libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &fprog as *const libc::sock_fprog,
            ),
        )
    };
    assert_eq!(
        (no_new_privs, seccomp),
        (0, 0),
        "installing the seccomp filter failed"
    );
    // The filter works: a futex wake on the semaphore's first word now fails with ENOSYS.
    // SAFETY: FUTEX_WAKE only looks the address up; it is valid and aligned (we hold `sem`).
    let direct = unsafe {
        libc::syscall(
            libc::SYS_futex,
            start,
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            1,
        )
    };
    assert_eq!(
        (direct, std::io::Error::last_os_error().raw_os_error()),
        (-1, Some(libc::ENOSYS))
    );
}

/// Runs `body` on a fresh thread whose futex calls on `sem` fail; returns its panic message.
fn without_futex<T: Send>(sem: &Semaphore, body: impl FnOnce() -> T + Send) -> Result<T, String> {
    thread::scope(|s| {
        s.spawn(|| {
            forbid_futex_on(sem);
            body()
        })
        .join()
        .map_err(|panic| {
            panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default()
        })
    })
}

#[test]
fn uncontended_and_non_blocking_paths_make_no_futex_call() {
    let sem = Semaphore::new(3);
    without_futex(&sem, || {
        for _ in 0..10_000 {
            drop(sem.acquire(1).unwrap());
            drop(sem.try_acquire(3).unwrap());
            sem.try_acquire_for(2, Duration::from_secs(1))
                .unwrap()
                .forget();
            sem.release(2).unwrap();
        }
        drop(sem.acquire(0).unwrap());
        sem.release(0).unwrap();
        assert!(sem.try_acquire(4).is_err());
        assert!(sem.try_acquire_for(4, Duration::ZERO).is_err());
        assert!(sem.try_acquire_until(4, Instant::now()).is_err());
        assert!(sem.release(u32::MAX).is_err());
    })
    .unwrap();
    assert_eq!((sem.available(), sem.waiters()), (3, 0));
}

#[test]
fn a_failing_futex_wait_panics_naming_operation_and_errno() {
    let sem = Semaphore::new(0);
    let message = without_futex(&sem, || {
        sem.try_acquire_for(1, Duration::from_secs(5)).is_ok()
    })
    .unwrap_err();
    assert!(
        message.contains("futex `FUTEX_WAIT_BITSET` failed with errno 38"),
        "message: {message}"
    );
    // The panic unwound through the wait and took the waiter's registration with it.
    assert_eq!((sem.available(), sem.waiters()), (0, 0));
}

#[test]
fn a_failing_futex_wake_panics_naming_operation_and_errno() {
    let sem = Semaphore::new(0);
    thread::scope(|s| {
        let waiter = s.spawn(|| sem.acquire(1).map(|p| p.forget()));
        while sem.waiters() == 0 {
            thread::sleep(Duration::from_millis(1));
        }
        let message = without_futex(&sem, || sem.release(1)).unwrap_err();
        assert!(
            message.contains("futex `FUTEX_WAKE` failed with errno 38"),
            "message: {message}"
        );
        // The permit was published before the wake failed; a working release wakes the waiter,
        // which takes one of the two.
        sem.release(1).unwrap();
        waiter.join().unwrap().unwrap();
    });
    assert_eq!((sem.available(), sem.waiters()), (1, 0));
}
