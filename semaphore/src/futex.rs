//! The only place that talks to the kernel: a 32-bit futex word with `wait` and `wake`, and the
//! CLOCK_MONOTONIC clock that futex deadlines are measured on.
//!
//! Under `cfg(loom)` the same interface is a model built from loom's `Mutex` and `Condvar`, so
//! loom can check the semaphore's algorithm; the model can also wake sleepers spuriously.

#[cfg(not(loom))]
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};

#[cfg(loom)]
use loom::sync::atomic::{AtomicI32, AtomicU32, Ordering};

/// How a futex wait ended. Every other kernel answer is a bug and panics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WaitOutcome {
    /// A wake on this word (not necessarily meant for this waiter).
    Woken,
    /// The word no longer held the expected value (`EAGAIN`).
    ValueChanged,
    /// A signal handler ran (`EINTR`).
    Interrupted,
    /// The absolute deadline passed (`ETIMEDOUT`).
    TimedOut,
}

/// A 32-bit word that threads sleep on. The semaphore uses it as a wake-up counter: a waker
/// bumps it and then wakes, so a waiter that read the old value never sleeps through the wake.
///
/// It also counts the threads its wakes woke that have not yet returned from their wait, so a
/// waker can tell when every registered waiter already has a wake on its way
/// ([`FutexWord::woken_at_least`]) and spare the system call.
///
/// `SHARED` chooses the kind of futex: `false` for private futex operations
/// (`FUTEX_PRIVATE_FLAG`: the kernel keys the word by process and address, which is cheaper),
/// `true` for non-private ones (keyed by the memory's file and offset, or by page for anonymous
/// shared memory), which wait and wake across processes that map the word `MAP_SHARED`, at any
/// address. A shared word keeps no woken count (its `woken` field stays 0; see
/// [`FutexWord::woken_at_least`]). `repr(C)`: a shared word lives at a fixed offset of
/// `SharedSemaphore`.
#[repr(C)]
pub(crate) struct FutexWord<const SHARED: bool = false> {
    value: AtomicU32,
    /// Threads woken by [`FutexWord::wake`] that have not yet returned from
    /// [`FutexWord::wait`]. Never more than the true number: a wake adds the kernel's count
    /// only after the kernel woke them, and each woken wait subtracts one when it returns, so
    /// the count can only lag below the truth (even below 0) for a moment.
    woken: AtomicI32,
    #[cfg(loom)]
    model: model::Queue,
}

impl<const SHARED: bool> FutexWord<SHARED> {
    /// The futex operation flag of this kind of word: `FUTEX_PRIVATE_FLAG`, or none.
    #[cfg(not(loom))]
    const PRIVATE_FLAG: i32 = if SHARED { 0 } else { libc::FUTEX_PRIVATE_FLAG };

    /// A word holding 0.
    #[cfg(not(loom))]
    pub(crate) const fn new() -> FutexWord<SHARED> {
        FutexWord {
            value: AtomicU32::new(0),
            woken: AtomicI32::new(0),
        }
    }

    /// A word holding 0.
    #[cfg(loom)]
    pub(crate) fn new() -> FutexWord<SHARED> {
        FutexWord {
            value: AtomicU32::new(0),
            woken: AtomicI32::new(0),
            model: model::Queue::new(),
        }
    }

    /// Sleeps while the word holds `expected`, until woken, interrupted or, if given, the
    /// absolute CLOCK_MONOTONIC `deadline_ns` passes.
    ///
    /// The `wait_begin` and `wait_end` markers around the call also report the semaphore `sem`,
    /// the tokens it `wanted` and its `state` word when it decided to sleep.
    pub(crate) fn wait(
        &self,
        expected: u32,
        deadline_ns: Option<u64>,
        sem: usize,
        wanted: u32,
        state: u64,
    ) -> WaitOutcome {
        // 0 stands for "no deadline": CLOCK_MONOTONIC is far past 0 when any acquire runs.
        let outcome = self.sleep(expected, deadline_ns.unwrap_or(0), sem, wanted, state);
        if !SHARED && outcome == WaitOutcome::Woken {
            // The kernel reports "woken" exactly for the threads a FUTEX_WAKE unqueued and
            // counted, whatever else happened meanwhile. Acquire: see `woken_at_least`.
            self.woken.fetch_sub(1, Ordering::Acquire);
        }
        outcome
    }

    /// Wakes up to `count` threads sleeping on the word; returns how many the kernel woke.
    ///
    /// The `wake_begin` and `wake_end` markers around the call also report the semaphore `sem`
    /// and the `waiters` it had registered.
    pub(crate) fn wake(&self, count: i32, sem: usize, waiters: u32) -> i32 {
        let woken = self.wake_sleepers(count, sem, waiters);
        if !SHARED {
            // Relaxed: only the count matters here; the ordering `woken_at_least` relies on
            // comes from its own read-modify-write.
            self.woken.fetch_add(woken, Ordering::Relaxed);
        }
        woken
    }

    /// Whether at least `waiters` threads were woken by this word's wakes and have not yet
    /// returned from their wait. Then each of them will see, once it returns, every memory
    /// change the caller made before this call (its release of permits), so waking more is
    /// futile.
    ///
    /// A read-modify-write, not a load, with Release: a woken waiter's Acquire decrement comes
    /// after it in the word's modification order (the count never exceeds the truth, so a count
    /// of at least `waiters` was read before those waiters' decrements) and reads from it or
    /// from a later read-modify-write of its release sequence, so it synchronizes with this
    /// call. A plain load would need a store-load (SeqCst) argument instead.
    ///
    /// Always `false` for a shared word: a process killed between the kernel's wake and its
    /// decrement would leave the count above the truth for good, and releases would then skip
    /// wakes that live sleepers need. Shared semaphores always make the wake call instead.
    pub(crate) fn woken_at_least(&self, waiters: u32) -> bool {
        !SHARED && i64::from(self.woken.fetch_add(0, Ordering::Release)) >= i64::from(waiters)
    }

    /// Forgets the woken threads still counted: for a child process after `fork`, where they
    /// do not exist. Only with no thread using the word.
    pub(crate) fn forget_woken(&self) {
        // Relaxed: no other thread uses the word (the caller's contract).
        self.woken.store(0, Ordering::Relaxed);
    }

    /// Reads the word; a waiter passes the value to [`FutexWord::wait`].
    pub(crate) fn load(&self, order: Ordering) -> u32 {
        self.value.load(order)
    }

    /// Changes the word so that every waiter that read an older value fails its wait.
    pub(crate) fn bump(&self, order: Ordering) {
        self.value.fetch_add(1, order);
    }
}

#[cfg(not(loom))]
impl<const SHARED: bool> FutexWord<SHARED> {
    /// [`FutexWord::wait`] as one `FUTEX_WAIT_BITSET` (private unless `SHARED`) with its markers;
    /// `deadline_ns` is 0 for none.
    ///
    /// Always inlined into the semaphore's wait loop: the values only the markers report (`sem`,
    /// `deadline_ns`, `state`) are then read from whatever registers the loop already holds them
    /// in, instead of being moved into argument registers for a call.
    ///
    /// # Panics
    /// On any errno other than `EAGAIN`, `EINTR` and `ETIMEDOUT` (a bug or an unsupported kernel).
    #[inline(always)]
    fn sleep(
        &self,
        expected: u32,
        deadline_ns: u64,
        sem: usize,
        wanted: u32,
        state: u64,
    ) -> WaitOutcome {
        let deadline = (deadline_ns != 0).then(|| timespec_from_ns(deadline_ns));
        let timeout = deadline
            .as_ref()
            .map_or(std::ptr::null(), std::ptr::from_ref);
        let word = self.value.as_ptr();
        let op = (libc::FUTEX_WAIT_BITSET | Self::PRIVATE_FLAG) as u64;
        // The bitset carries `wanted` for the markers: every wake of the semaphore is a plain
        // FUTEX_WAKE, whose match-any mask wakes a waiter whatever its (non-zero) bitset.
        let bitset = u64::from(wanted);
        let expected = u64::from(expected);
        let sem = sem as u64;
        // Each variant below makes the same system call, which is sound because:
        // - `word` is a live, aligned 32-bit atomic for the whole call (we hold `&self`); the
        //   kernel only reads it.
        // - `timeout` is null or points to `deadline`, which lives until after the call.
        // - The bitset `wanted` is at least 1, so never the invalid 0.
        // - The marker operands are plain values the markers never change.
        #[cfg(all(feature = "markers", target_arch = "x86_64"))]
        // SAFETY: a FUTEX_WAIT_BITSET call with the arguments argued above.
        let ret = unsafe {
            futex_syscall!(
                [
                    "rdi" = word,
                    "rsi" = op,
                    "rdx" = expected,
                    "r10" = timeout,
                    "r9" = bitset,
                ],
                markers: [
                    crate::markers::stapsdt_note_asm!(
                        "wait_begin",
                        "8@{sem} 8@%rdi 8@%rdx 8@%r9 8@{deadline_ns} 8@{state}"
                    ),
                    "movl ${nr}, %eax",
                    "syscall",
                    crate::markers::stapsdt_note_on!("", "wait_end", "8@{sem} 8@%rdi -8@%rax 8@%r9"),
                ],
                values: [sem = sem, deadline_ns = deadline_ns, state = state],
            )
        };
        #[cfg(all(not(feature = "markers"), target_arch = "x86_64"))]
        let ret = {
            let _ = (sem, state);
            // SAFETY: a FUTEX_WAIT_BITSET call with the arguments argued above.
            unsafe {
                futex_syscall!([
                    "rdi" = word,
                    "rsi" = op,
                    "rdx" = expected,
                    "r10" = timeout,
                    "r9" = bitset,
                ])
            }
        };
        #[cfg(not(target_arch = "x86_64"))]
        let ret = {
            crate::markers::wait_begin(sem, word as u64, expected, bitset, deadline_ns, state);
            // SAFETY: a FUTEX_WAIT_BITSET call with the arguments argued above.
            let ret = negated_errno(unsafe {
                libc::syscall(libc::SYS_futex, word, op, expected, timeout, 0, bitset)
            });
            crate::markers::wait_end(sem, word as u64, ret, bitset);
            ret
        };
        match ret {
            0 => WaitOutcome::Woken,
            ret if ret == -i64::from(libc::EAGAIN) => WaitOutcome::ValueChanged,
            ret if ret == -i64::from(libc::EINTR) => WaitOutcome::Interrupted,
            ret if ret == -i64::from(libc::ETIMEDOUT) && deadline_ns != 0 => WaitOutcome::TimedOut,
            ret => futex_failed("FUTEX_WAIT_BITSET", ret),
        }
    }

    /// [`FutexWord::wake`] as one `FUTEX_WAKE` (private unless `SHARED`) with its markers.
    ///
    /// # Panics
    /// On any error: the word is borrowed, so it is valid, and a failing wake would strand
    /// sleepers.
    fn wake_sleepers(&self, count: i32, sem: usize, waiters: u32) -> i32 {
        let word = self.value.as_ptr();
        let op = (libc::FUTEX_WAKE | Self::PRIVATE_FLAG) as u64;
        let count = count.max(0) as u64;
        let (sem, waiters) = (sem as u64, u64::from(waiters));
        // Each variant below makes the same system call, which is sound because:
        // - `word` is a live, aligned 32-bit atomic for the whole call (we hold `&self`).
        // - FUTEX_WAKE reads no other argument.
        // - The marker operands are plain values the markers never change.
        #[cfg(all(feature = "markers", target_arch = "x86_64"))]
        // SAFETY: a FUTEX_WAKE call with the arguments argued above.
        let ret = unsafe {
            futex_syscall!(
                ["rdi" = word, "rsi" = op, "rdx" = count],
                markers: [
                    crate::markers::stapsdt_note_on!(
                        "movl ${nr}, %eax",
                        "wake_begin",
                        "8@{sem} 8@%rdi 8@%rdx 8@{waiters}"
                    ),
                    "syscall",
                    crate::markers::stapsdt_note_on!("", "wake_end", "8@{sem} 8@%rdi -8@%rax 8@%rdx"),
                ],
                values: [sem = sem, waiters = waiters],
            )
        };
        #[cfg(all(not(feature = "markers"), target_arch = "x86_64"))]
        let ret = {
            let _ = (sem, waiters);
            // SAFETY: a FUTEX_WAKE call with the arguments argued above.
            unsafe { futex_syscall!(["rdi" = word, "rsi" = op, "rdx" = count]) }
        };
        #[cfg(not(target_arch = "x86_64"))]
        let ret = {
            crate::markers::wake_begin(sem, word as u64, count, waiters);
            // SAFETY: a FUTEX_WAKE call with the arguments argued above.
            let ret = negated_errno(unsafe { libc::syscall(libc::SYS_futex, word, op, count) });
            crate::markers::wake_end(sem, word as u64, ret, count);
            ret
        };
        if ret < 0 {
            futex_failed("FUTEX_WAKE", ret);
        }
        i32::try_from(ret).expect("FUTEX_WAKE returned more threads than it was asked for")
    }
}

/// `syscall(SYS_futex, ...)` as one x86_64 `syscall` instruction, its arguments given as
/// `"register" = value` (`rdi`, `rsi`, `rdx`, `r10`, `r8`, `r9`); evaluates to the kernel's raw
/// answer (`i64`: a count, or a negated errno).
///
/// With `markers:` the asm block is the given lines, which load the system call number
/// (`{nr}`) into `eax`, execute `syscall`, and place markers around it. The markers name the
/// call's own registers (the word in `%rdi`, the value or count in `%rdx`, the result in
/// `%rax`) and, as `{name}`, the 64-bit `values` only they report: these are inputs in
/// registers the compiler picks, never `rcx` or `r11` (which `syscall` overwrites), so they
/// hold their values on both sides of the call and cost nothing when the compiler already
/// holds them in registers.
///
/// A marker placed on the number load or on the instruction after the call costs an untraced
/// process nothing: the build without markers executes the same instructions. A `nop` marker
/// costs the `nop`.
///
/// Unsafe: the caller vouches for the futex arguments.
#[cfg(all(not(loom), target_arch = "x86_64"))]
macro_rules! futex_syscall {
    ([$($register:tt = $argument:expr),+ $(,)?]) => {{
        let ret: i64;
        core::arch::asm!(
            "movl ${nr}, %eax",
            "syscall",
            nr = const libc::SYS_futex,
            out("rax") ret,
            $(in($register) $argument,)+
            out("rcx") _,
            out("r11") _,
            options(att_syntax, nostack),
        );
        ret
    }};
    (
        [$($register:tt = $argument:expr),+ $(,)?],
        markers: [$($line:expr),+ $(,)?],
        values: [$($name:ident = $value:expr),+ $(,)?] $(,)?
    ) => {{
        let ret: i64;
        core::arch::asm!(
            $($line,)+
            nr = const libc::SYS_futex,
            $($name = in(reg) { let value: u64 = $value; value },)+
            out("rax") ret,
            $(in($register) $argument,)+
            out("rcx") _,
            out("r11") _,
            options(att_syntax, nostack),
        );
        ret
    }};
}
#[cfg(all(not(loom), target_arch = "x86_64"))]
use futex_syscall;

/// What `libc::syscall` returned, as the kernel answered it: the result, or a negated errno.
#[cfg(all(not(loom), not(target_arch = "x86_64")))]
fn negated_errno(ret: libc::c_long) -> i64 {
    if ret == -1 {
        -i64::from(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    } else {
        i64::from(ret)
    }
}

#[cfg(not(loom))]
#[cold]
fn futex_failed(op: &str, negated_errno: i64) -> ! {
    let errno = i32::try_from(-negated_errno).unwrap_or(0);
    panic!(
        "futex `{op}` failed with errno {errno} ({}): the semaphore cannot wait or wake safely; \
         this kernel or sandbox does not support it, or the semaphore's memory is corrupt",
        std::io::Error::from_raw_os_error(errno)
    )
}

#[cfg(not(loom))]
fn timespec_from_ns(ns: u64) -> libc::timespec {
    const NS_PER_SEC: u64 = 1_000_000_000;
    libc::timespec {
        // u64::MAX / 1e9 is about 1.8e10 seconds: it always fits.
        tv_sec: (ns / NS_PER_SEC) as libc::time_t,
        tv_nsec: (ns % NS_PER_SEC) as libc::c_long,
    }
}

/// CLOCK_MONOTONIC now, in nanoseconds: the clock of futex deadlines and of `Instant`.
#[cfg(not(loom))]
pub(crate) fn monotonic_now_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    let ret = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    assert_eq!(ret, 0, "`clock_gettime(CLOCK_MONOTONIC)` failed");
    // Monotonic time is non-negative and far below u64::MAX nanoseconds.
    (now.tv_sec as u64) * 1_000_000_000 + now.tv_nsec as u64
}

/// Model time stands still at 0: loom needs deterministic runs, so a timed wait ends only by
/// the model's own timeout (see [`FutexWord::wait`]) or because its deadline is 0.
#[cfg(loom)]
pub(crate) fn monotonic_now_ns() -> u64 {
    0
}

#[cfg(loom)]
impl<const SHARED: bool> FutexWord<SHARED> {
    /// Model of `FUTEX_WAIT_BITSET`: compare and enqueue atomically with respect to
    /// [`FutexWord::wake`]. A timed wait whose value matches times out at once (the timer fired
    /// before any wake), so loom explores timeouts racing with releases.
    fn sleep(
        &self,
        expected: u32,
        deadline_ns: u64,
        _sem: usize,
        _wanted: u32,
        _state: u64,
    ) -> WaitOutcome {
        self.model.wait(
            || self.value.load(Ordering::Relaxed) == expected,
            deadline_ns != 0,
        )
    }

    /// Model of `FUTEX_WAKE`.
    fn wake_sleepers(&self, count: i32, _sem: usize, _waiters: u32) -> i32 {
        self.model.wake(count)
    }

    /// Makes every sleeper return without any change of state, as a signal (`EINTR`) does.
    pub(crate) fn wake_spuriously(&self) {
        self.model.wake_spuriously();
    }
}

#[cfg(loom)]
mod model {
    use super::WaitOutcome;
    use loom::sync::{Condvar, Mutex};

    /// The kernel's wait queue for one futex word.
    pub(super) struct Queue {
        state: Mutex<QueueState>,
        sleepers_changed: Condvar,
    }

    #[derive(Default)]
    struct QueueState {
        /// Threads asleep on the word.
        sleepers: usize,
        /// Wakes handed out and not yet taken by a sleeper.
        tickets: usize,
        /// Bumped by every spurious wake: sleepers that saw an older value leave.
        spurious: usize,
    }

    impl Queue {
        pub(super) fn new() -> Queue {
            Queue {
                state: Mutex::new(QueueState::default()),
                sleepers_changed: Condvar::new(),
            }
        }

        pub(super) fn wait(
            &self,
            value_matches: impl FnOnce() -> bool,
            timed: bool,
        ) -> WaitOutcome {
            let mut q = self.state.lock().unwrap();
            // The comparison happens under the queue lock, as the kernel's does under the hash
            // bucket lock: a waker that changed the word before locking is seen here.
            if !value_matches() {
                return WaitOutcome::ValueChanged;
            }
            if timed {
                return WaitOutcome::TimedOut;
            }
            let spurious = q.spurious;
            q.sleepers += 1;
            loop {
                q = self.sleepers_changed.wait(q).unwrap();
                if q.tickets > 0 {
                    q.tickets -= 1;
                    q.sleepers -= 1;
                    return WaitOutcome::Woken;
                }
                if q.spurious != spurious {
                    q.sleepers -= 1;
                    // As if a signal handler ran: the semaphore treats it like any wake
                    // that was not meant for it.
                    return WaitOutcome::Interrupted;
                }
            }
        }

        pub(super) fn wake(&self, count: i32) -> i32 {
            let mut q = self.state.lock().unwrap();
            let woken = (q.sleepers - q.tickets).min(usize::try_from(count).unwrap_or(0));
            q.tickets += woken;
            if woken > 0 {
                self.sleepers_changed.notify_all();
            }
            i32::try_from(woken).unwrap()
        }

        pub(super) fn wake_spuriously(&self) {
            let mut q = self.state.lock().unwrap();
            q.spurious += 1;
            self.sleepers_changed.notify_all();
        }
    }
}
