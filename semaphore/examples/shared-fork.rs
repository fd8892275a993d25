//! One `SharedSemaphore` used by two processes: the parent and a forked child take turns
//! sleeping in `acquire(1)` while the other releases, so both wait on and wake the same
//! (non-private) futex. `test/integration-test/tests/semaphore_shared.rs` traces it with
//! futexscope and expects that futex as one row with both pids.
//!
//! ```text
//! cargo run -p futexscope-semaphore --example shared-fork -- [ROUNDS]
//! ```

#[cfg(not(feature = "portable"))]
use futexscope_semaphore::SharedSemaphore;
#[cfg(not(feature = "portable"))]
use std::{mem::MaybeUninit, thread, time::Duration};

/// Waits until `sem` counts a waiter (the other process), sleeps a little more so that it is
/// asleep in the kernel, releases one permit to it, and waits until it has taken it (so this
/// process's next `acquire` cannot take it first).
#[cfg(not(feature = "portable"))]
fn release_to_sleeper(sem: &SharedSemaphore) {
    while sem.waiters() == 0 {
        thread::sleep(Duration::from_millis(1));
    }
    thread::sleep(Duration::from_millis(20));
    sem.release(1).expect("room for one permit");
    while sem.waiters() != 0 || sem.available() != 0 {
        thread::sleep(Duration::from_millis(1));
    }
}

/// The portable build has no `SharedSemaphore`.
#[cfg(feature = "portable")]
fn main() {
    eprintln!("shared-fork needs the futex build: the portable build has no SharedSemaphore");
    std::process::exit(2);
}

#[cfg(not(feature = "portable"))]
fn main() {
    // Runs the private semaphore's slow paths once, so that their code (and its marker notes)
    // is linked in: the stapsdt parser rejects a binary whose notes point into code the linker
    // discarded.
    let private = futexscope_semaphore::Semaphore::new(0);
    assert!(
        private
            .try_acquire_for(1, Duration::from_millis(1))
            .is_err()
    );
    private.release(1).expect("room for one permit");
    let rounds: u32 = std::env::args()
        .nth(1)
        .map_or(5, |a| a.parse().expect("ROUNDS is a count"));
    // SAFETY: a new anonymous shared mapping; the result is checked.
    let memory = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size_of::<SharedSemaphore>(),
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(memory, libc::MAP_FAILED, "mmap failed");
    // SAFETY: the mapping is new, ours alone, and never unmapped.
    let slot = unsafe { &mut *memory.cast::<MaybeUninit<SharedSemaphore>>() };
    let sem = SharedSemaphore::init(slot, 0).expect("0 permits is allowed");
    println!(
        "shared-fork: semaphore {:#x}",
        std::ptr::from_ref(sem) as usize
    );
    // SAFETY: this program has one thread, so the child may do anything the parent may.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    for _ in 0..rounds {
        if pid == 0 {
            sem.acquire(1).expect("a permit").forget();
            release_to_sleeper(sem);
        } else {
            release_to_sleeper(sem);
            sem.acquire(1).expect("a permit").forget();
        }
    }
    if pid == 0 {
        return;
    }
    let mut status = 0;
    // SAFETY: `pid` is our child; `status` is a valid, writable int.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "child failed: {status:#x}"
    );
    println!(
        "shared-fork: {rounds} rounds, parent {} and child {pid}",
        std::process::id()
    );
}
