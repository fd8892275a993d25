//! A semaphore shared between processes: the futex semaphore (`futex_semaphore.rs`, the same
//! algorithm and state word) with non-private futex operations, behind a fixed `repr(C)`
//! layout with a magic number and a version, constructed in place in memory the caller maps
//! `MAP_SHARED` and opened by other processes at any address.
//!
//! | offset | size | field          | meaning                                              |
//! |--------|------|----------------|------------------------------------------------------|
//! | 0      | 4    | `magic`        | [`SharedSemaphore::MAGIC`] once initialized, stored last (Release) |
//! | 4      | 4    | `version`      | [`SharedSemaphore::VERSION`] of the layout below     |
//! | 8      | 8    | `state`        | the state word (`state.rs`)                          |
//! | 16     | 4+4  | `single_wake`  | futex word of single-permit waiters; unused woken count (0) |
//! | 24     | 4+4  | `multi_wake`   | futex word of multi-permit waiters; unused woken count (0)  |
//! | 32     | 4+4  | `spin_budget`  | spin length and probe counter (tuning hints)          |
//!
//! 40 bytes, aligned to 8, native endianness. No pointer and no Rust-owned heap data inside:
//! the bytes mean the same in every process at every address. The layout changes only with a
//! new version, which `open` refuses to confuse with this one.

use crate::futex_semaphore::RawSemaphore;
use crate::{
    AcquireError, MAX_PERMITS, Permit, PermitSource, ReleaseError, Timeout, check_request, sealed,
};
use std::fmt;
use std::mem::MaybeUninit;
use std::time::{Duration, Instant};

#[cfg(not(loom))]
use std::sync::atomic::{AtomicU32, Ordering};

#[cfg(loom)]
use loom::sync::atomic::{AtomicU32, Ordering};

/// A counting semaphore that several processes use through memory they share: the same API,
/// markers and guarantees as [`Semaphore`](crate::Semaphore) (see the crate documentation),
/// with non-private futexes, so a release in one process wakes a waiter in another.
///
/// Create it with [`SharedSemaphore::init`] in memory mapped `MAP_SHARED` (an anonymous shared
/// mapping inherited across `fork`, or a `shm_open` or file mapping), and reach it from other
/// processes with [`SharedSemaphore::open`], at whatever address they map it. It is never
/// dropped: it lives as long as the memory, and unmapping the memory ends it.
///
/// ```
/// use futexscope_semaphore::SharedSemaphore;
/// use std::mem::MaybeUninit;
///
/// // SAFETY: an anonymous shared mapping of the semaphore's size, checked for failure.
/// let memory = unsafe {
///     libc::mmap(
///         std::ptr::null_mut(),
///         size_of::<SharedSemaphore>(),
///         libc::PROT_READ | libc::PROT_WRITE,
///         libc::MAP_SHARED | libc::MAP_ANONYMOUS,
///         -1,
///         0,
///     )
/// };
/// assert_ne!(memory, libc::MAP_FAILED);
/// // SAFETY: the mapping is ours alone, writable, and lives until the end of the example.
/// let slot = unsafe { &mut *memory.cast::<MaybeUninit<SharedSemaphore>>() };
/// let sem = SharedSemaphore::init(slot, 1)?;
/// // Another process (after `fork`, or mapping the same object elsewhere) would call:
/// // SAFETY: the memory holds the semaphore `init` made and stays mapped while used.
/// let same = unsafe { SharedSemaphore::open(memory.cast()) }?;
/// drop(same.acquire(1)?);
/// assert_eq!(sem.available(), 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Processes that die
/// Like glibc's `sem_t`, it does not know which process holds which permits: permits taken
/// by a process that dies without releasing them are lost (another process that knows, such
/// as a parent that reaps the child, can release them for it). A process that dies while
/// waiting stays counted as a waiter (harmless: releases never rely on that count to skip a
/// wake), unless it held the reservation of a starving multi-permit request, which then blocks
/// every other acquire until its deadline; [`SharedSemaphore::forget_waiters`] repairs both
/// once no process uses the semaphore. `docs/semaphore.md`, "Shared between processes", has
/// the details.
#[repr(C)]
pub struct SharedSemaphore {
    magic: AtomicU32,
    version: u32,
    raw: RawSemaphore<true>,
}

// The layout table above, checked (loom's atomics and futex model are larger).
#[cfg(not(loom))]
const _: () = {
    assert!(std::mem::offset_of!(SharedSemaphore, magic) == 0);
    assert!(std::mem::offset_of!(SharedSemaphore, version) == 4);
    assert!(
        std::mem::offset_of!(SharedSemaphore, raw) == crate::futex_semaphore::SHARED_HEADER_BYTES
    );
    assert!(size_of::<SharedSemaphore>() == 40);
    assert!(align_of::<SharedSemaphore>() == 8);
};

impl sealed::Sealed for SharedSemaphore {}

impl PermitSource for SharedSemaphore {
    #[inline]
    fn release_permits(&self, n: u32) -> Result<(), ReleaseError> {
        self.release(n)
    }
}

// Every method that reaches the futex code is `#[inline]`, so that its code, and the marker
// notes in it, are generated only in programs that call it. (A note of code the linker drops
// is dropped with it in any case: see `markers.rs`.)
impl SharedSemaphore {
    /// The most permits a semaphore can hold, and the most one call can acquire or release.
    pub const MAX_PERMITS: u32 = MAX_PERMITS;
    /// The first four bytes of an initialized shared semaphore: `"FXSM"` in native order.
    pub const MAGIC: u32 = u32::from_ne_bytes(*b"FXSM");
    /// The layout version this build reads and writes.
    pub const VERSION: u32 = 1;

    /// Constructs a semaphore holding `permits` permits in `slot`, and returns it.
    ///
    /// For other processes to use it, `slot` must lie in memory mapped `MAP_SHARED`; they open
    /// it with [`SharedSemaphore::open`] once this returns (the magic number, stored last,
    /// tells them whether it has). Initializing memory that processes are using as a
    /// semaphore breaks it for them: do it once, before any of them opens it.
    ///
    /// # Errors
    /// [`AcquireError::TooManyPermits`] if `permits` exceeds [`SharedSemaphore::MAX_PERMITS`];
    /// `slot` is then left untouched.
    pub fn init(
        slot: &mut MaybeUninit<SharedSemaphore>,
        permits: u32,
    ) -> Result<&SharedSemaphore, AcquireError> {
        check_request(permits)?;
        let sem = slot.write(SharedSemaphore {
            magic: AtomicU32::new(0),
            version: Self::VERSION,
            raw: RawSemaphore::new(permits),
        });
        // Release: pairs with the Acquire load in `open`, so a process that sees the magic
        // also sees the version and the state written above.
        sem.magic.store(Self::MAGIC, Ordering::Release);
        Ok(sem)
    }

    /// The semaphore that [`SharedSemaphore::init`] constructed at `ptr`, in this process's
    /// mapping of the shared memory (any address: nothing in it depends on where it lies).
    ///
    /// # Errors
    /// [`OpenError::Misaligned`] if `ptr` is not 8-byte aligned; [`OpenError::NotInitialized`]
    /// if the memory does not start with [`SharedSemaphore::MAGIC`] (not initialized, or not
    /// yet); [`OpenError::VersionMismatch`] if it was made by a build with another layout.
    ///
    /// Not in loom builds, whose models run in one process.
    ///
    /// # Safety
    /// - `ptr` is valid for reads and writes of `size_of::<SharedSemaphore>()` bytes for the
    ///   lifetime `'a` (mapped, and not unmapped while the reference is used).
    /// - For `'a`, those bytes are changed only through `SharedSemaphore` methods (in any
    ///   process): not re-initialized, not written any other way.
    #[cfg(not(loom))]
    pub unsafe fn open<'a>(ptr: *const SharedSemaphore) -> Result<&'a SharedSemaphore, OpenError> {
        if ptr.is_null() || !ptr.is_aligned() {
            return Err(OpenError::Misaligned {
                address: ptr as usize,
            });
        }
        // SAFETY: `ptr` is aligned (checked above) and valid for reads and writes of the whole
        // semaphore (the caller's contract), so of its first 4 bytes, which are only ever
        // accessed atomically (the `magic` field); any bit pattern is a valid `u32`.
        let magic = unsafe { AtomicU32::from_ptr(ptr.cast::<u32>().cast_mut()) };
        // Acquire: pairs with the Release store in `init`: seeing the magic, we see the
        // version and state it wrote.
        let found = magic.load(Ordering::Acquire);
        if found != Self::MAGIC {
            return Err(OpenError::NotInitialized { found });
        }
        // SAFETY: `init` wrote a whole `SharedSemaphore` here before the magic we saw (and
        // its write happens-before this point, by the Acquire above); the caller vouches that
        // the memory stays valid and is changed only through its methods for `'a`.
        let sem = unsafe { &*ptr };
        if sem.version != Self::VERSION {
            return Err(OpenError::VersionMismatch {
                found: sem.version,
                expected: Self::VERSION,
            });
        }
        Ok(sem)
    }

    /// Takes `n` permits, waiting as long as it takes for them.
    ///
    /// # Errors
    /// As [`Semaphore::acquire`](crate::Semaphore::acquire).
    #[inline]
    pub fn acquire(&self, n: u32) -> Result<Permit<'_, SharedSemaphore>, AcquireError> {
        self.acquire_within(n, Timeout::Never)
    }

    /// Takes `n` permits if they are available now; never blocks.
    ///
    /// # Errors
    /// As [`Semaphore::try_acquire`](crate::Semaphore::try_acquire).
    #[inline]
    pub fn try_acquire(&self, n: u32) -> Result<Permit<'_, SharedSemaphore>, AcquireError> {
        check_request(n)?;
        if n == 0 || self.raw.try_acquire(n) {
            Ok(self.releaser(n))
        } else {
            Err(AcquireError::NoPermits)
        }
    }

    /// Takes `n` permits, waiting at most `timeout` for them.
    ///
    /// # Errors
    /// As [`Semaphore::try_acquire_for`](crate::Semaphore::try_acquire_for).
    #[inline]
    pub fn try_acquire_for(
        &self,
        n: u32,
        timeout: Duration,
    ) -> Result<Permit<'_, SharedSemaphore>, AcquireError> {
        self.acquire_within(n, Timeout::After(timeout))
    }

    /// Takes `n` permits, waiting until `deadline` at most (CLOCK_MONOTONIC, the same clock
    /// in every process).
    ///
    /// # Errors
    /// As [`Semaphore::try_acquire_until`](crate::Semaphore::try_acquire_until).
    #[inline]
    pub fn try_acquire_until(
        &self,
        n: u32,
        deadline: Instant,
    ) -> Result<Permit<'_, SharedSemaphore>, AcquireError> {
        self.acquire_within(n, Timeout::At(deadline))
    }

    #[inline]
    fn acquire_within(
        &self,
        n: u32,
        timeout: Timeout,
    ) -> Result<Permit<'_, SharedSemaphore>, AcquireError> {
        check_request(n)?;
        if n > 0 && !self.raw.try_acquire(n) {
            self.raw.acquire_slow(n, timeout)?;
        }
        Ok(self.releaser(n))
    }

    /// Gives `n` permits to the semaphore and wakes waiters, in any process, that can use
    /// them.
    ///
    /// # Errors
    /// As [`Semaphore::release`](crate::Semaphore::release).
    #[inline]
    pub fn release(&self, n: u32) -> Result<(), ReleaseError> {
        if n == 0 {
            return Ok(());
        }
        self.raw.release(n)
    }

    /// Takes away up to `n` of the permits available now; returns how many it took
    /// ([`Semaphore::forget_permits`](crate::Semaphore::forget_permits)).
    #[inline]
    pub fn forget_permits(&self, n: u32) -> u32 {
        if n == 0 {
            return 0;
        }
        self.raw.forget(n)
    }

    /// A guard that releases `n` permits on drop, taking nothing now
    /// ([`Semaphore::releaser`](crate::Semaphore::releaser)).
    pub fn releaser(&self, n: u32) -> Permit<'_, SharedSemaphore> {
        Permit {
            semaphore: self,
            permits: n,
        }
    }

    /// Permits available now. Only a snapshot.
    #[inline]
    pub fn available(&self) -> u32 {
        self.raw.available()
    }

    /// Threads registered as waiting now, in every process (including any that died while
    /// waiting). Only a snapshot.
    #[inline]
    pub fn waiters(&self) -> u32 {
        self.raw.waiters()
    }

    /// Forgets every waiter registered on the semaphore, and a reservation, keeping the
    /// permits: to repair a semaphore after a process died while waiting on it (its
    /// registration stays counted, and a reservation it held blocks every other acquire).
    ///
    /// # Safety
    /// No thread in any process may be using the semaphore (waiting in it, or inside any call
    /// on it): a live waiter forgotten may never be woken.
    #[inline]
    pub unsafe fn forget_waiters(&self) {
        self.raw.forget_waiters();
    }
}

impl fmt::Debug for SharedSemaphore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedSemaphore")
            .field("available", &self.available())
            .field("waiters", &self.waiters())
            .finish()
    }
}

/// Why [`SharedSemaphore::open`] found no semaphore it can use.
#[cfg(not(loom))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenError {
    /// The pointer is null or not aligned to 8 bytes.
    Misaligned {
        /// The address given.
        address: usize,
    },
    /// The memory does not start with [`SharedSemaphore::MAGIC`]: no semaphore was
    /// initialized there, or its initialization has not finished.
    NotInitialized {
        /// The first four bytes found, as a native-endian `u32`.
        found: u32,
    },
    /// A semaphore of another layout version (made by another build of this crate).
    VersionMismatch {
        /// The version in the memory.
        found: u32,
        /// The version this build uses, [`SharedSemaphore::VERSION`].
        expected: u32,
    },
}

#[cfg(not(loom))]
impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenError::Misaligned { address } => write!(
                f,
                "no shared semaphore at {address:#x}: the address is not aligned to 8 bytes"
            ),
            OpenError::NotInitialized { found } => write!(
                f,
                "no shared semaphore here: the memory starts with {found:#010x}, not the magic \
                 number {:#010x} that `SharedSemaphore::init` writes",
                SharedSemaphore::MAGIC
            ),
            OpenError::VersionMismatch { found, expected } => write!(
                f,
                "the shared semaphore has layout version {found}, but this build of \
                 futexscope-semaphore uses version {expected}: every process must use a build \
                 with the same layout version"
            ),
        }
    }
}

#[cfg(not(loom))]
impl std::error::Error for OpenError {}
