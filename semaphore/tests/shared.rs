//! `SharedSemaphore` across processes: a release in one process wakes a waiter in another
//! (after `fork`, and through `shm_open` mappings at different addresses), `open` refuses
//! what is not a semaphore of this layout version, and what a process that dies leaves behind.
//!
//! The children are forked from the multithreaded test harness, so they make only
//! async-signal-safe calls (the futex semaphore's, `clock_gettime`, `shm_open`, `mmap`,
//! `munmap`, `nanosleep`), no allocation, and leave with `_exit`; their exit status says which
//! check failed. Every test runs under the hang guard.
#![cfg(all(target_os = "linux", not(feature = "portable"), not(loom)))]

mod common;

use futexscope_semaphore::{AcquireError, OpenError, SharedSemaphore};
use std::ffi::CString;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// How long a child's timed acquire waits. A hang bound, not a timing check: the tests only
/// assert that the acquire returned before it, after the release.
const CHILD_WAIT: Duration = Duration::from_secs(10);

/// What the processes share: the semaphore, and when the releaser released.
#[repr(C)]
struct Shared {
    sem: MaybeUninit<SharedSemaphore>,
    /// CLOCK_MONOTONIC ns right before the release (0: not yet).
    released_at_ns: AtomicU64,
}

/// A fresh anonymous `MAP_SHARED` mapping holding a `Shared` whose semaphore holds `permits`.
/// Never unmapped: each test maps a few dozen bytes once.
fn map_shared(permits: u32) -> &'static Shared {
    // SAFETY: a new anonymous mapping; every argument is valid, the result checked below.
    let memory = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size_of::<Shared>(),
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(memory, libc::MAP_FAILED, "mmap failed");
    let shared = memory.cast::<Shared>();
    // SAFETY: the mapping is new, page-aligned, large enough and never unmapped, so a
    // `&'static mut` to it is the only reference; zero bytes are a valid `Shared` (an
    // uninitialized semaphore and a zero counter).
    let shared = unsafe { &mut *shared };
    SharedSemaphore::init(&mut shared.sem, permits).unwrap();
    shared
}

impl Shared {
    fn sem(&self) -> &SharedSemaphore {
        // SAFETY: `map_shared` initialized it, and the mapping is never unmapped.
        unsafe { SharedSemaphore::open(self.sem.as_ptr()) }.unwrap()
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.sem().fmt(f)
    }
}

fn monotonic_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid, writable timespec.
    let ret = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    assert_eq!(ret, 0);
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

/// Runs `child` in a forked child process, which exits with its result; returns the pid.
fn fork(child: impl FnOnce() -> i32) -> libc::pid_t {
    // SAFETY: the child runs only `child`, which the callers keep async-signal-safe, then
    // `_exit`s without running the parent's destructors.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let status = child();
        // SAFETY: ends the child at once.
        unsafe { libc::_exit(status) }
    }
    pid
}

/// Waits for the child `pid` and returns its exit status (panics if a signal ended it).
fn exit_status(pid: libc::pid_t) -> i32 {
    let mut status = 0;
    // SAFETY: `pid` is our child; `status` is a valid, writable int.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(libc::WIFEXITED(status), "child did not exit: {status:#x}");
    libc::WEXITSTATUS(status)
}

/// Waits until `sem` counts `n` waiters (in any process), at most the hang limit.
fn wait_for_waiters(sem: &SharedSemaphore, n: u32) {
    let start = Instant::now();
    while sem.waiters() != n {
        if start.elapsed() > common::hang_limit() {
            common::hung(&format!("waiting for {n} registered waiters"), sem);
        }
        thread::sleep(Duration::from_micros(200));
    }
}

/// The child side of a timed acquire across processes: 0 if it got the permit after the
/// release and before its deadline, else a code naming what went wrong.
fn timed_acquire_in_child(sem: &SharedSemaphore, released_at_ns: &AtomicU64) -> i32 {
    let deadline = Instant::now() + CHILD_WAIT;
    let result = sem.try_acquire_until(1, deadline);
    let returned_ns = monotonic_ns();
    let before_deadline = Instant::now() < deadline;
    let released_ns = released_at_ns.load(Ordering::SeqCst);
    match result {
        Err(AcquireError::TimedOut) => 10, // the wake-up was lost: it ran into its deadline
        Err(_) => 11,
        Ok(permit) => {
            permit.forget();
            if released_ns == 0 || returned_ns < released_ns {
                12 // it returned before the release
            } else if !before_deadline {
                13
            } else {
                0
            }
        }
    }
}

/// The parent side: once the child waits, lets it sleep 100 ms, then releases one permit.
fn release_into_wait(sem: &SharedSemaphore, released_at_ns: &AtomicU64) {
    wait_for_waiters(sem, 1);
    thread::sleep(Duration::from_millis(100));
    released_at_ns.store(monotonic_ns(), Ordering::SeqCst);
    sem.release(1).unwrap();
}

#[test]
fn a_child_timed_acquire_gets_a_permit_released_during_its_wait() {
    let shared = map_shared(0);
    common::within(shared, || {
        let pid = fork(|| timed_acquire_in_child(shared.sem(), &shared.released_at_ns));
        release_into_wait(shared.sem(), &shared.released_at_ns);
        assert_eq!(
            exit_status(pid),
            0,
            "child (10: timed out, 11: error, 12: returned before the release, 13: at its deadline)"
        );
        let sem = shared.sem();
        assert_eq!((sem.available(), sem.waiters()), (0, 0));
    });
}

#[test]
fn a_release_in_the_child_wakes_a_multi_permit_waiter_in_the_parent() {
    let shared = map_shared(1);
    common::within(shared, || {
        let sem = shared.sem();
        thread::scope(|s| {
            let waiter = s.spawn(|| sem.acquire(3).unwrap().forget());
            wait_for_waiters(sem, 1);
            // Past its 1 ms fairness point (when a multi waiter wakes once by its own timer
            // and reserves), it sleeps until a wake reaches it.
            thread::sleep(Duration::from_millis(100));
            let pid = fork(|| {
                // Releases 1, then 1: only the second lets the parent's acquire(3) through.
                if sem.release(1).is_err() || sem.release(1).is_err() {
                    1
                } else {
                    0
                }
            });
            assert_eq!(exit_status(pid), 0);
            waiter.join().unwrap();
        });
        assert_eq!((sem.available(), sem.waiters()), (0, 0));
    });
}

/// A POSIX shared memory object of one `SharedSemaphore` (plus the release time), unlinked
/// on drop.
struct ShmObject {
    name: CString,
}

impl ShmObject {
    fn create(tag: &str) -> ShmObject {
        let name =
            CString::new(format!("/futexscope-shared-{tag}-{}", std::process::id())).unwrap();
        // SAFETY: `name` is a valid C string; the result is checked.
        let fd = unsafe {
            libc::shm_open(
                name.as_ptr(),
                libc::O_CREAT | libc::O_EXCL | libc::O_RDWR,
                0o600,
            )
        };
        assert!(fd >= 0, "shm_open: {}", std::io::Error::last_os_error());
        // SAFETY: `fd` is the object just opened.
        let ret = unsafe { libc::ftruncate(fd, size_of::<Shared>() as libc::off_t) };
        assert_eq!(ret, 0);
        // SAFETY: closing our own descriptor; mappings keep the object.
        unsafe { libc::close(fd) };
        ShmObject { name }
    }

    /// Maps the object anew (async-signal-safe: `shm_open`, `mmap`, `close`); null on failure.
    fn map(&self) -> *mut Shared {
        // SAFETY: `name` is a valid C string.
        let fd = unsafe { libc::shm_open(self.name.as_ptr(), libc::O_RDWR, 0) };
        if fd < 0 {
            return std::ptr::null_mut();
        }
        // SAFETY: a new shared mapping of the object's whole size; the result is checked.
        let memory = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size_of::<Shared>(),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        // SAFETY: the mapping keeps the object; the descriptor is ours.
        unsafe { libc::close(fd) };
        if memory == libc::MAP_FAILED {
            return std::ptr::null_mut();
        }
        memory.cast()
    }
}

impl Drop for ShmObject {
    fn drop(&mut self) {
        // SAFETY: `name` is a valid C string.
        unsafe { libc::shm_unlink(self.name.as_ptr()) };
    }
}

/// Initializes the semaphore in the mapping `shared` (fresh, zero-filled by `ftruncate`).
fn init_mapping(shared: *mut Shared, permits: u32) -> &'static Shared {
    assert!(!shared.is_null(), "mapping the shm object failed");
    // SAFETY: a fresh mapping of the zero-filled object, never unmapped by the parent and
    // used by nobody yet; zero bytes are a valid `Shared`.
    let shared = unsafe { &mut *shared };
    SharedSemaphore::init(&mut shared.sem, permits).unwrap();
    shared
}

#[test]
fn processes_mapping_one_shm_object_at_different_addresses_share_the_semaphore() {
    let object = ShmObject::create("processes");
    let parent_map = object.map();
    let parent = init_mapping(parent_map, 0);
    // The parent's address, for the child to compare with its own mapping and unmap.
    let parent_addr = parent_map as usize;
    common::within(parent, || {
        let parent_map = parent_addr as *mut Shared;
        let pid = fork(|| {
            // A second mapping: the parent's is still mapped here, so the kernel must place
            // this one elsewhere. Then the inherited one goes, so only the new one is used.
            let child_map = object.map();
            if child_map.is_null() {
                return 20;
            }
            if child_map == parent_map {
                return 21;
            }
            // SAFETY: unmaps the inherited mapping, which this child no longer touches.
            unsafe { libc::munmap(parent_map.cast(), size_of::<Shared>()) };
            // SAFETY: the object holds the parent's semaphore; the mapping stays until `_exit`.
            let Ok(sem) = (unsafe { SharedSemaphore::open((&raw const (*child_map).sem).cast()) })
            else {
                return 22;
            };
            // SAFETY: as above, the counter lies in the same live mapping.
            let released_at_ns = unsafe { &(*child_map).released_at_ns };
            match timed_acquire_in_child(sem, released_at_ns) {
                0 => {
                    if sem.release(2).is_err() {
                        23
                    } else {
                        0
                    }
                }
                failed => failed,
            }
        });
        release_into_wait(parent.sem(), &parent.released_at_ns);
        assert_eq!(
            exit_status(pid),
            0,
            "child (10: timed out, 11: error, 12: returned before the release, 13: at its \
             deadline, 20-23: mapping, opening or releasing)"
        );
        assert_eq!(
            parent.sem().available(),
            2,
            "the child's release through its mapping"
        );
    });
}

#[test]
fn two_mappings_in_one_process_are_one_semaphore() {
    let object = ShmObject::create("mappings");
    let a = init_mapping(object.map(), 0);
    let b_map = object.map();
    assert!(!b_map.is_null());
    assert_ne!(b_map.cast_const(), std::ptr::from_ref(a));
    // SAFETY: a second mapping of the object that holds `a`'s semaphore, never unmapped.
    let b = unsafe { SharedSemaphore::open((&raw const (*b_map).sem).cast()) }.unwrap();
    common::within(a, || {
        thread::scope(|s| {
            let waiter = s.spawn(|| b.acquire(1).unwrap().forget());
            wait_for_waiters(a.sem(), 1);
            thread::sleep(Duration::from_millis(100)); // asleep in the kernel by now
            a.sem().release(1).unwrap();
            waiter.join().unwrap();
        });
        assert_eq!((b.available(), b.waiters()), (0, 0));
    });
}

/// `open` on a test's own allocation: the available permits, or why it refused.
fn open_owned(sem: *const SharedSemaphore) -> Result<u32, OpenError> {
    // SAFETY: callers pass the start of a live allocation of one `SharedSemaphore` that they
    // own and change only through its methods while this runs, or a null or misaligned
    // pointer, which `open` refuses before reading anything.
    unsafe { SharedSemaphore::open(sem) }.map(SharedSemaphore::available)
}

#[test]
fn open_refuses_what_is_not_a_semaphore_of_this_version() {
    let slot = Box::into_raw(Box::new(MaybeUninit::<SharedSemaphore>::zeroed()));
    let sem = slot.cast::<SharedSemaphore>();
    assert_eq!(
        open_owned(sem).unwrap_err(),
        OpenError::NotInitialized { found: 0 }
    );
    // SAFETY: `slot` is live and no other reference to it exists.
    SharedSemaphore::init(unsafe { &mut *slot }, 3).unwrap();
    assert_eq!(open_owned(sem), Ok(3));
    // A build with another layout would have written another version.
    // SAFETY: bytes 4..8 of the live allocation (the `version` field); no reference to it
    // exists now.
    unsafe { sem.cast::<u32>().add(1).write(SharedSemaphore::VERSION + 1) };
    let error = open_owned(sem).unwrap_err();
    assert_eq!(
        error,
        OpenError::VersionMismatch {
            found: SharedSemaphore::VERSION + 1,
            expected: SharedSemaphore::VERSION
        }
    );
    assert!(
        error.to_string().contains("layout version 2")
            && error.to_string().contains("uses version 1"),
        "{error}"
    );
    let misaligned = sem.cast::<u8>().wrapping_add(4).cast::<SharedSemaphore>();
    assert!(matches!(
        open_owned(misaligned),
        Err(OpenError::Misaligned { .. })
    ));
    assert_eq!(
        open_owned(std::ptr::null()),
        Err(OpenError::Misaligned { address: 0 })
    );
    assert_eq!(
        // SAFETY: as for the first `init`.
        SharedSemaphore::init(unsafe { &mut *slot }, u32::MAX).unwrap_err(),
        AcquireError::TooManyPermits {
            requested: u32::MAX
        }
    );
    // SAFETY: `slot` came from `Box::into_raw` and nothing refers to it any more.
    drop(unsafe { Box::from_raw(slot) });
}

#[test]
fn permits_of_a_process_that_dies_are_lost_until_someone_releases_them() {
    let shared = map_shared(3);
    common::within(shared, || {
        let sem = shared.sem();
        let pid = fork(|| match sem.acquire(2) {
            Ok(permit) => {
                permit.forget(); // as if killed while holding them
                0
            }
            Err(_) => 1,
        });
        assert_eq!(exit_status(pid), 0);
        assert_eq!(
            sem.available(),
            1,
            "like glibc's sem_t, nobody gives them back"
        );
        sem.release(2).unwrap(); // a parent that knows what the child held
        assert_eq!(sem.available(), 3);
    });
}

/// Starts a child blocked in `acquire(n)` and kills it once the semaphore counts `waiters`.
fn kill_a_waiting_child(sem: &SharedSemaphore, n: u32, waiters: u32) {
    let pid = fork(|| match sem.acquire(n) {
        Ok(_) => 1,
        Err(_) => 2,
    });
    wait_for_waiters(sem, waiters);
    // SAFETY: `pid` is our child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    let mut status = 0;
    // SAFETY: as above; `status` is a valid, writable int.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(libc::WIFSIGNALED(status), "the child returned: {status:#x}");
}

#[test]
fn a_waiter_that_dies_stays_counted_but_costs_no_wake_up() {
    let shared = map_shared(0);
    common::within(shared, || {
        let sem = shared.sem();
        kill_a_waiting_child(sem, 1, 1);
        assert_eq!(sem.waiters(), 1, "the dead waiter stays registered");
        thread::scope(|s| {
            let live = s.spawn(|| sem.acquire(1).unwrap().forget());
            wait_for_waiters(sem, 2);
            // One permit, two registered single waiters, one of them dead: the one wake goes
            // to the live sleeper (the dead one left the kernel's queue).
            sem.release(1).unwrap();
            live.join().unwrap();
        });
        assert_eq!((sem.available(), sem.waiters()), (0, 1));
        // SAFETY: no thread of any process uses the semaphore now.
        unsafe { sem.forget_waiters() };
        assert_eq!(sem.waiters(), 0);
    });
}

#[test]
fn a_dead_reservation_holder_blocks_acquires_until_forgotten() {
    let shared = map_shared(1);
    common::within(shared, || {
        let sem = shared.sem();
        let pid = fork(|| match sem.acquire(2) {
            Ok(_) => 1,
            Err(_) => 2,
        });
        wait_for_waiters(sem, 1);
        // After 1 ms the child's starving acquire(2) reserves the permits: then a
        // `try_acquire(1)` fails although one is available.
        let start = Instant::now();
        while let Ok(permit) = sem.try_acquire(1) {
            drop(permit);
            if start.elapsed() > common::hang_limit() {
                common::hung("waiting for the child to reserve", sem);
            }
            thread::sleep(Duration::from_micros(200));
        }
        // SAFETY: `pid` is our child.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
        let mut status = 0;
        // SAFETY: as above; `status` is a valid, writable int.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(libc::WIFSIGNALED(status), "{status:#x}");
        assert_eq!(sem.available(), 1);
        assert_eq!(
            sem.try_acquire(1).unwrap_err(),
            AcquireError::NoPermits,
            "the dead holder's reservation stays"
        );
        assert_eq!(
            sem.try_acquire_for(1, Duration::from_millis(10))
                .unwrap_err(),
            AcquireError::TimedOut
        );
        // SAFETY: no thread of any process uses the semaphore now.
        unsafe { sem.forget_waiters() };
        sem.try_acquire(1).unwrap().forget();
        assert_eq!((sem.available(), sem.waiters()), (0, 0));
    });
}
