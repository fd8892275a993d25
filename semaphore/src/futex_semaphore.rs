//! The futex implementation: one 64-bit state word (see `state.rs`) changed by compare-and-swap,
//! and two 32-bit futex words that waiters sleep on, one per waiter kind.
//!
//! Protocol (the proofs are in `docs/semaphore.md`):
//! - acquire: take permits with one CAS if enough are there. Otherwise register as a waiter
//!   (CAS), then loop: read the kind's futex word, read the state, take permits and deregister
//!   in one CAS if enough are there, else sleep on the futex word expecting the value read.
//! - release: add permits with one CAS that also returns the waiter counts. If waiters were
//!   registered, bump the futex word of each kind that can now make progress and wake: single
//!   waiters up to the number of permits released, multi waiters all (when at least 2 permits
//!   are there). The wake is skipped when every registered waiter of that kind has already been
//!   woken and has yet to re-check the state (it will see the new permits).
//! - eventual fairness: a multi waiter that has waited `RESERVE_AFTER_NS` and been woken in
//!   vain sets the `reserved` flag; then nobody else takes permits (fast path, spinners and
//!   other waiters alike) and releases wake only multi waiters, until the holder takes its
//!   permits or times out. In the CAS that ends its wait it clears the flag, and then wakes
//!   the waiters the permits left can serve, as a release would.

use crate::futex::{FutexWord, WaitOutcome, monotonic_now_ns};
use crate::state::{State, WaiterKind};
use crate::{AcquireError, ReleaseError, Timeout, markers};

#[cfg(not(loom))]
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

#[cfg(loom)]
use loom::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// The futex semaphore's shared state. `SHARED` makes its futex operations non-private, for a
/// semaphore used by several processes (`SharedSemaphore`); the algorithm is the same.
///
/// `repr(C)`, with no pointer inside: a shared semaphore's fields sit at fixed offsets, the
/// same in every process and at every address (`docs/semaphore.md`, "Shared between
/// processes", has the table).
#[repr(C)]
pub(crate) struct RawSemaphore<const SHARED: bool = false> {
    state: AtomicU64,
    single_wake: FutexWord<SHARED>,
    multi_wake: FutexWord<SHARED>,
    spin_budget: SpinBudget,
}

impl<const SHARED: bool> RawSemaphore<SHARED> {
    /// A semaphore holding `permits` (at most `MAX_PERMITS`, checked by the caller).
    #[cfg(not(loom))]
    pub(crate) const fn new(permits: u32) -> RawSemaphore<SHARED> {
        RawSemaphore {
            state: AtomicU64::new(State::with_tokens(permits).0),
            single_wake: FutexWord::new(),
            multi_wake: FutexWord::new(),
            spin_budget: SpinBudget::new(),
        }
    }

    /// A semaphore holding `permits` (at most `MAX_PERMITS`, checked by the caller).
    #[cfg(loom)]
    pub(crate) fn new(permits: u32) -> RawSemaphore<SHARED> {
        RawSemaphore {
            state: AtomicU64::new(State::with_tokens(permits).0),
            single_wake: FutexWord::new(),
            multi_wake: FutexWord::new(),
            spin_budget: SpinBudget::new(),
        }
    }

    /// The semaphore's address for the markers: the `Semaphore` (which is this struct), or
    /// the `SharedSemaphore` whose header precedes this struct.
    fn addr(&self) -> usize {
        let offset = if SHARED { SHARED_HEADER_BYTES } else { 0 };
        (std::ptr::from_ref(self) as usize).wrapping_sub(offset)
    }

    fn wake_word(&self, kind: WaiterKind) -> &FutexWord<SHARED> {
        match kind {
            WaiterKind::Single => &self.single_wake,
            WaiterKind::Multi => &self.multi_wake,
        }
    }

    /// Takes `n` (1..=MAX_PERMITS) permits if they are available now; never blocks.
    #[inline]
    pub(crate) fn try_acquire(&self, n: u32) -> bool {
        // Relaxed: only a guess for the CAS below, which checks it.
        let mut current = self.state.load(Ordering::Relaxed);
        loop {
            let Some(next) = State(current).take(n) else {
                return false;
            };
            // Acquire on success: pairs with the Release CAS in `release`, so everything done
            // before the permits were released happens-before the acquirer's next step.
            // Relaxed on failure: the value is only the next guess.
            match self.state.compare_exchange_weak(
                current,
                next.0,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(actual) => current = actual,
            }
        }
    }

    /// The blocking path of every acquire: registers as a waiter and sleeps until `n`
    /// (1..=MAX_PERMITS) permits can be taken or the timeout passes.
    #[cold]
    pub(crate) fn acquire_slow(&self, n: u32, timeout: Timeout) -> Result<(), AcquireError> {
        let deadline_ns = deadline_ns(timeout);
        if passed(deadline_ns) {
            return Err(AcquireError::TimedOut);
        }
        if self.spin_then_take(n, deadline_ns) {
            return Ok(());
        }
        let kind = WaiterKind::for_request(n);
        if self.register_or_take(n, kind)? {
            return Ok(());
        }
        // Deregisters (and gives up a reservation) if a futex call panics, so the state stays
        // consistent.
        let mut registration = Registration {
            semaphore: self,
            kind,
            holds_reservation: false,
        };
        // Only multi waiters reserve, so only they read the clock for it.
        let fairness = match kind {
            WaiterKind::Single => Fairness::Never,
            WaiterKind::Multi => {
                Fairness::After(monotonic_now_ns().saturating_add(RESERVE_AFTER_NS))
            }
        };
        let word = self.wake_word(kind);
        // The first attempt is apart from the loop, so only an acquire that slept reaches the
        // `acquired` marker; and only one that slept may reserve.
        let first = self.attempt(n, &mut registration, false, deadline_ns, Fairness::Never);
        let (mut expected, mut state) = match first {
            Attempt::Sleep { expected, state } => (expected, state),
            Attempt::Taken => {
                std::mem::forget(registration);
                return Ok(());
            }
            Attempt::GaveUp => return Self::give_up(registration, n, deadline_ns),
        };
        // A multi waiter also wakes once at its fairness point, to reserve: releases that leave
        // fewer than 2 permits free would never wake it. After that it relies on wakes alone
        // (the holder's exit wakes multi waiters, so one of them takes the reservation over).
        // Loom models have no timer: there a multi waiter may reserve after any wake.
        let mut fairness_timer = match fairness {
            Fairness::After(at) if !cfg!(loom) => Some(at),
            _ => None,
        };
        loop {
            let wait_until = match fairness_timer {
                Some(at) if !registration.holds_reservation => {
                    Some(deadline_ns.map_or(at, |deadline| deadline.min(at)))
                }
                _ => deadline_ns,
            };
            let outcome = word.wait(expected, wait_until, self.addr(), n, state.0);
            // The kernel reports ETIMEDOUT only once the deadline it was given has passed;
            // that was the acquire's own deadline only if it came first.
            let timed_out = outcome == WaitOutcome::TimedOut && wait_until == deadline_ns;
            if outcome == WaitOutcome::TimedOut {
                fairness_timer = None;
            }
            match self.attempt(n, &mut registration, timed_out, deadline_ns, fairness) {
                Attempt::Sleep {
                    expected: now_expected,
                    state: now_state,
                } => (expected, state) = (now_expected, now_state),
                Attempt::Taken => {
                    std::mem::forget(registration);
                    markers::acquired(self.addr(), n);
                    return Ok(());
                }
                Attempt::GaveUp => return Self::give_up(registration, n, deadline_ns),
            }
        }
    }

    /// One look by a registered waiter: takes the permits and deregisters if they are there,
    /// deregisters if it `timed_out` or its deadline has passed, reserves the permits if
    /// `fairness` says it has waited long enough, or else says what to sleep on. A holder of
    /// the reservation that leaves (with or without permits) clears it and wakes the waiters
    /// the permits left can serve.
    #[inline(always)]
    fn attempt(
        &self,
        n: u32,
        registration: &mut Registration<'_, SHARED>,
        timed_out: bool,
        deadline_ns: Option<u64>,
        fairness: Fairness,
    ) -> Attempt {
        let kind = registration.kind;
        // Acquire: pairs with the Release `bump` in `wake_kind`. If this load sees a waker's
        // bump, that waker's state CAS happens-before the state load below, which then
        // sees its permits. If it does not, the futex wait that follows sees the bump (EAGAIN)
        // or is queued before the wake and woken by it.
        let expected = self.wake_word(kind).load(Ordering::Acquire);
        // Relaxed: a first guess for the CASes, which check it; the Acquire above (and, after
        // a wake, the Acquire decrement in `FutexWord::wait`) give the visibility the
        // protocol needs.
        let mut current = self.state.load(Ordering::Relaxed);
        let mut may_reserve = None;
        loop {
            let state = State(current);
            let holder = registration.holds_reservation;
            let taken = if holder {
                state.take_reserved(n)
            } else {
                state.take(n)
            };
            if let Some(next) = taken {
                let next = next.deregister(kind);
                // Acquire on success: pairs with the Release CAS in `release` (the permits
                // carry happens-before). Relaxed on failure: only the next guess.
                match self.state.compare_exchange_weak(
                    current,
                    next.0,
                    Ordering::Acquire,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        registration.holds_reservation = false;
                        if holder {
                            self.wake_after_reservation(next);
                        }
                        return Attempt::Taken;
                    }
                    Err(actual) => current = actual,
                }
                continue;
            }
            if timed_out || passed(deadline_ns) {
                let next = state.deregister(kind);
                let next = if holder { next.unreserve() } else { next };
                // Relaxed: giving up transfers no data; the CAS only has to see the latest
                // state, which every CAS does. A holder's wake below orders itself (its bump
                // is Release, sequenced after this CAS).
                match self.state.compare_exchange_weak(
                    current,
                    next.0,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        registration.holds_reservation = false;
                        if holder {
                            self.wake_after_reservation(next);
                        }
                        return Attempt::GaveUp;
                    }
                    Err(actual) => current = actual,
                }
                continue;
            }
            if !holder
                && let Some(reserved) = state.reserve()
                && *may_reserve.get_or_insert_with(|| fairness.due())
            {
                // Relaxed: reserving transfers no data. Releasers and takers see the flag by
                // the modification order of this one word.
                match self.state.compare_exchange_weak(
                    current,
                    reserved.0,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        registration.holds_reservation = true;
                        current = reserved.0;
                    }
                    Err(actual) => current = actual,
                }
                continue;
            }
            return Attempt::Sleep { expected, state };
        }
    }

    /// Wakes, after a reservation holder cleared the reservation into state `now`, the waiters
    /// the permits left can serve: releases made while the permits were reserved woke no
    /// single waiter, and multi waiters they woke went back to sleep.
    fn wake_after_reservation(&self, now: State) {
        let tokens = now.tokens();
        let singles = now.waiters(WaiterKind::Single);
        if singles > 0 && tokens > 0 {
            self.wake_kind(WaiterKind::Single, tokens.min(singles), singles);
        }
        // Multi waiters even when fewer than 2 permits are left: one that has waited past its
        // fairness point takes the reservation over, instead of waiting for a release that
        // happens to leave 2 free.
        let multis = now.waiters(WaiterKind::Multi);
        if multis > 0 {
            self.wake_kind(WaiterKind::Multi, i32::MAX as u32, multis);
        }
    }

    /// Ends a timed acquire that [`RawSemaphore::attempt`] deregistered at its deadline. Out of
    /// line, so the `timed_out` marker has one site although two paths reach it.
    #[cold]
    #[inline(never)]
    fn give_up(
        registration: Registration<'_, SHARED>,
        n: u32,
        deadline_ns: Option<u64>,
    ) -> Result<(), AcquireError> {
        let sem = registration.semaphore.addr();
        std::mem::forget(registration);
        markers::timed_out(sem, n, deadline_ns.unwrap_or(0), monotonic_now_ns());
        Err(AcquireError::TimedOut)
    }

    /// Spins briefly, taking the permits if they arrive meanwhile: a hand-off between threads
    /// running on two CPUs then costs no system call at all. Stops at once when threads are
    /// already asleep: they were first, and spinning would only let this thread barge past them.
    ///
    /// The spin budget adapts (see [`SpinBudget`]), so threads sharing one CPU, where spinning
    /// only delays the thread that would release, soon stop spinning.
    ///
    /// A timed acquire stops spinning at its deadline (checked every 64 iterations).
    ///
    /// A spin also stops, and the budget drops to 0, when 64 iterations took far longer than
    /// they can on a CPU of its own ([`SpinBudget::PREEMPTED_NS`]): the thread was descheduled
    /// while spinning, so the machine has more runnable threads than CPUs, and spinning burns
    /// time slices that the thread about to release may need.
    ///
    /// Never inlined, so profilers (and the marker cost measurement, `docs/markers.md`) can
    /// tell time spent spinning from the rest of the slow path.
    #[inline(never)]
    fn spin_then_take(&self, n: u32, deadline_ns: Option<u64>) -> bool {
        // Loom models do not spin: it would only multiply their interleavings.
        let budget = if cfg!(loom) {
            0
        } else {
            self.spin_budget.get()
        };
        if budget == 0 {
            return false;
        }
        // When the 64th iteration was reached (0: not yet): each later 64 iterations are
        // timed, to tell whether this thread lost its CPU while spinning.
        let mut lap_start_ns = 0;
        for spins in 1..=budget {
            std::hint::spin_loop();
            // Relaxed: only a hint; `try_acquire` takes the permits with the ordering it needs.
            let state = State(self.state.load(Ordering::Relaxed));
            if state.has_waiters() {
                return false;
            }
            if state.tokens() >= n && self.try_acquire(n) {
                // A success that spanned a preemption did not pay either: the permit came
                // while this thread was off its CPU.
                if lap_start_ns != 0
                    && monotonic_now_ns().saturating_sub(lap_start_ns) > SpinBudget::PREEMPTED_NS
                {
                    self.spin_budget.preempted();
                } else {
                    self.spin_budget.succeeded(spins);
                }
                return true;
            }
            if spins % SpinBudget::LAP == 0 {
                let now = monotonic_now_ns();
                if lap_start_ns != 0 && now.saturating_sub(lap_start_ns) > SpinBudget::PREEMPTED_NS
                {
                    // Descheduled mid-spin: the CPUs are oversubscribed, and a permit that
                    // turns up now would come from a thread the scheduler ran in this one's
                    // stead. Spinning does not pay here; sleep, and stop spinning for a while.
                    self.spin_budget.preempted();
                    return false;
                }
                lap_start_ns = now;
                if deadline_ns.is_some_and(|d| now >= d) {
                    return false;
                }
            }
        }
        self.spin_budget.failed(budget);
        false
    }

    /// Registers as a waiter of `kind`, or takes the permits if they turned up meanwhile
    /// (returns `true` then).
    fn register_or_take(&self, n: u32, kind: WaiterKind) -> Result<bool, AcquireError> {
        // Relaxed: a guess, checked by the CAS.
        let mut current = self.state.load(Ordering::Relaxed);
        loop {
            let state = State(current);
            let (next, took) = match state.take(n) {
                Some(next) => (next, true),
                None => (
                    state.register(kind).ok_or(AcquireError::TooManyWaiters)?,
                    false,
                ),
            };
            // Acquire on success: when it takes permits, pairs with the Release CAS in
            // `release`; registering needs no ordering (a releaser sees the registration by
            // the modification order of this one word). Relaxed on failure: a guess.
            match self.state.compare_exchange_weak(
                current,
                next.0,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(took),
                Err(actual) => current = actual,
            }
        }
    }

    /// Adds `n` (1..=MAX_PERMITS) permits and wakes waiters that can use them.
    #[inline]
    pub(crate) fn release(&self, n: u32) -> Result<(), ReleaseError> {
        // Relaxed: a guess, checked by the CAS.
        let mut current = self.state.load(Ordering::Relaxed);
        let old = loop {
            let state = State(current);
            let Some(next) = state.give(n) else {
                return Err(ReleaseError {
                    available: state.tokens(),
                    released: n,
                });
            };
            // Release on success: pairs with the Acquire CAS that takes these permits, so the
            // releaser's earlier writes are visible to the acquirer. Relaxed on failure: a guess.
            match self.state.compare_exchange_weak(
                current,
                next.0,
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => break state,
                Err(actual) => current = actual,
            }
        };
        if old.has_waiters() {
            self.wake(old, n);
        }
        Ok(())
    }

    /// Wakes the waiters registered in `old` (the state just before `released` permits were
    /// added) that can make progress.
    #[cold]
    fn wake(&self, old: State, released: u32) {
        // While the permits are reserved no single waiter may take them: the holder wakes
        // single waiters when it clears the reservation (`wake_after_reservation`).
        let singles = if old.reserved() {
            0
        } else {
            old.waiters(WaiterKind::Single)
        };
        // A multi waiter needs at least 2 permits; which of them can proceed is unknown, so all
        // are woken and re-check. Decided before the first wake, so the wake's system call
        // need not keep `old` and `released` alive.
        let multis = match old.waiters(WaiterKind::Multi) {
            multis if old.tokens() + released >= 2 => multis,
            _ => 0,
        };
        if singles > 0 {
            // Each woken single waiter can take one of the released permits.
            let count = released.min(singles);
            self.wake_kind(WaiterKind::Single, count, singles);
        }
        if multis > 0 {
            self.wake_kind(WaiterKind::Multi, i32::MAX as u32, multis);
        }
    }

    fn wake_kind(&self, kind: WaiterKind, count: u32, waiters: u32) {
        let word = self.wake_word(kind);
        // Release: pairs with the Acquire load of the word in `acquire_slow`, carrying the
        // state CAS of `release` (sequenced before) to a waiter that sees the new value.
        word.bump(Ordering::Release);
        // Every registered waiter of this kind already woken and yet to re-check the state:
        // each will see the permits just released, so a wake would find nobody to wake.
        if word.woken_at_least(waiters) {
            return;
        }
        let count = i32::try_from(count).unwrap_or(i32::MAX);
        word.wake(count, self.addr(), waiters);
    }

    /// Takes away up to `n` (at least 1) available permits, reserved or not; returns how many.
    pub(crate) fn forget(&self, n: u32) -> u32 {
        // Relaxed: a guess, checked by the CAS.
        let mut current = self.state.load(Ordering::Relaxed);
        loop {
            let (next, removed) = State(current).remove(n);
            if removed == 0 {
                return 0;
            }
            // Acquire on success: the permits' releases happen-before, as for any take
            // (pairs with the Release CAS in `release`). Relaxed on failure: a guess.
            match self.state.compare_exchange_weak(
                current,
                next.0,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return removed,
                Err(actual) => current = actual,
            }
        }
    }

    /// Clears the waiter counts and the reservation, keeping the permits, and resets the
    /// futex words' woken counts (phantom woken waiters would make releases skip their
    /// wakes). Only with no thread using the semaphore (`Semaphore::forget_waiters_after_fork`).
    pub(crate) fn forget_waiters(&self) {
        // Relaxed (all three): no other thread uses the semaphore (the caller's contract), so
        // there is nothing to order against.
        let mut current = self.state.load(Ordering::Relaxed);
        loop {
            let next = State::with_tokens(State(current).tokens());
            match self.state.compare_exchange_weak(
                current,
                next.0,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(actual) => current = actual,
            }
        }
        self.single_wake.forget_woken();
        self.multi_wake.forget_woken();
    }

    /// Permits available now (a snapshot).
    pub(crate) fn available(&self) -> u32 {
        // Relaxed: a snapshot for information; it orders nothing.
        State(self.state.load(Ordering::Relaxed)).tokens()
    }

    /// Threads registered as waiting now (a snapshot).
    pub(crate) fn waiters(&self) -> u32 {
        // Relaxed: a snapshot for information; it orders nothing.
        State(self.state.load(Ordering::Relaxed)).all_waiters()
    }

    /// Wakes every sleeper spuriously: for loom models only.
    #[cfg(loom)]
    pub(crate) fn wake_spuriously(&self) {
        self.single_wake.wake_spuriously();
        self.multi_wake.wake_spuriously();
    }
}

/// What a registered waiter found when it looked at the semaphore.
enum Attempt {
    /// It took its permits and deregistered.
    Taken,
    /// Its deadline had passed: it deregistered without permits.
    GaveUp,
    /// Too few permits: sleep on the futex word while it holds `expected`; `state` is the
    /// state word that showed too few.
    Sleep { expected: u32, state: State },
}

/// A waiter's registration while it waits; dropped only when a panic unwinds through
/// `acquire_slow` (every normal exit deregisters in the CAS that ends the wait, then forgets it).
struct Registration<'a, const SHARED: bool> {
    semaphore: &'a RawSemaphore<SHARED>,
    kind: WaiterKind,
    /// This waiter set the `reserved` flag and must clear it when it leaves.
    holds_reservation: bool,
}

impl<const SHARED: bool> Drop for Registration<'_, SHARED> {
    fn drop(&mut self) {
        // A loom model that failed (a deadlock report is a panic) is dead: touching its atomics
        // while unwinding would abort the whole test binary and hide which model failed.
        if cfg!(loom) && std::thread::panicking() {
            return;
        }
        let state = &self.semaphore.state;
        // Relaxed: leaving transfers no data; the CAS only has to see the latest state.
        let mut current = state.load(Ordering::Relaxed);
        loop {
            let next = State(current).deregister(self.kind);
            let next = if self.holds_reservation {
                next.unreserve()
            } else {
                next
            };
            match state.compare_exchange_weak(current, next.0, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => {
                    if self.holds_reservation {
                        self.semaphore.wake_after_reservation(next);
                    }
                    return;
                }
                Err(actual) => current = actual,
            }
        }
    }
}

/// The bytes of `SharedSemaphore` before its `RawSemaphore` (its magic and version), which
/// the markers subtract to report the shared semaphore's own address. `shared.rs` checks it
/// at compile time.
pub(crate) const SHARED_HEADER_BYTES: usize = 8;

/// How long a multi waiter waits before it reserves the permits (eventual fairness; see
/// `docs/semaphore.md`, "Eventual fairness"). Loom's clock stands still at 0, so in models
/// every multi waiter that slept once may reserve.
const RESERVE_AFTER_NS: u64 = if cfg!(loom) { 0 } else { 1_000_000 };

/// Whether a registered waiter may reserve the permits.
#[derive(Clone, Copy)]
enum Fairness {
    /// Not this waiter, or not yet (single waiters, and every first attempt).
    Never,
    /// Once CLOCK_MONOTONIC reaches this many nanoseconds.
    After(u64),
}

impl Fairness {
    fn due(self) -> bool {
        match self {
            Fairness::Never => false,
            Fairness::After(ns) => monotonic_now_ns() >= ns,
        }
    }
}

impl<const SHARED: bool> Drop for RawSemaphore<SHARED> {
    fn drop(&mut self) {
        // Relaxed: `&mut self` means no other thread can touch the word any more.
        let state = State(self.state.load(Ordering::Relaxed));
        // Unreachable in safe code (every waiter borrows the semaphore); a hard check for code
        // that frees it through raw pointers while a thread still sleeps on it.
        assert_eq!(
            state.all_waiters(),
            0,
            "semaphore dropped while threads wait on it"
        );
    }
}

/// How many times an acquire spins before it sleeps: a per-semaphore estimate that adapts to
/// whether spinning pays off. A spin that got the permits after `i` iterations sets the budget
/// to `2 * i` (at least [`SpinBudget::LEAST`]); one that did not halves it, down to 0. At 0, one
/// slow acquire in [`SpinBudget::PROBE_EVERY`] spins the full [`SpinBudget::MAX`] to find out
/// whether spinning pays again. `repr(C)`: part of a shared semaphore's fixed layout.
#[repr(C)]
struct SpinBudget {
    budget: AtomicU32,
    skipped: AtomicU32,
}

impl SpinBudget {
    /// About 64 µs of `PAUSE` on the reference machine (2-vCPU Zen 4), a little more than a
    /// futex hand-off to an idle CPU there (30-50 µs), so that a spinning thread outlasts its
    /// partner's wake-up and both can settle into spinning; spinning in vain costs at most
    /// about one more hand-off (the classic spin-then-block bound). `docs/bench-semaphore.md`
    /// has the measurements.
    const MAX: u32 = 2000;
    /// The least budget a successful spin leaves.
    const LEAST: u32 = 32;
    /// At budget 0, one slow acquire in this many probes. A probe that fails costs up to
    /// [`SpinBudget::MAX`] (~64 µs), so one in 4096 adds about 0.016 µs per slow acquire; one in
    /// 512 added 2 % to a sleeping hand-off's time (`docs/bench-semaphore.md`). Noticing that
    /// spinning pays again takes up to 4096 slow acquires (tens of ms of sleeping hand-offs).
    const PROBE_EVERY: u32 = 4096;
    /// Iterations between two clock reads while spinning (deadline and preemption checks).
    const LAP: u32 = 64;
    /// A lap of `LAP` iterations that took longer than this was interrupted: 64 `PAUSE`s take
    /// 0.3-3 µs (from 5 to 140 cycles each, by CPU model), and a thread that loses its CPU to
    /// another runnable thread loses it for a good part of a time slice (0.75 ms or more).
    const PREEMPTED_NS: u64 = 50_000;

    #[cfg(not(loom))]
    const fn new() -> SpinBudget {
        SpinBudget {
            budget: AtomicU32::new(Self::MAX),
            skipped: AtomicU32::new(0),
        }
    }

    #[cfg(loom)]
    fn new() -> SpinBudget {
        SpinBudget {
            budget: AtomicU32::new(Self::MAX),
            skipped: AtomicU32::new(0),
        }
    }

    /// The spins for the next slow acquire.
    fn get(&self) -> u32 {
        // Relaxed (here and below): a tuning hint; a stale or lost update only changes how
        // long one spin lasts, never what the semaphore does.
        let budget = self.budget.load(Ordering::Relaxed);
        if budget > 0 {
            return budget;
        }
        let skipped = self.skipped.fetch_add(1, Ordering::Relaxed);
        if skipped.is_multiple_of(Self::PROBE_EVERY) {
            Self::MAX
        } else {
            0
        }
    }

    fn succeeded(&self, spins: u32) {
        let next = spins.saturating_mul(2).clamp(Self::LEAST, Self::MAX);
        self.budget.store(next, Ordering::Relaxed);
    }

    /// The spinner lost its CPU while spinning: spinning stops until a probe succeeds.
    fn preempted(&self) {
        self.budget.store(0, Ordering::Relaxed);
    }

    fn failed(&self, budget: u32) {
        // A failed probe leaves the budget at 0.
        let current = self.budget.load(Ordering::Relaxed);
        self.budget
            .store(current.min(budget) / 2, Ordering::Relaxed);
    }
}

/// Whether the absolute CLOCK_MONOTONIC deadline, if any, has passed.
fn passed(deadline_ns: Option<u64>) -> bool {
    deadline_ns.is_some_and(|d| monotonic_now_ns() >= d)
}

/// The absolute CLOCK_MONOTONIC deadline of `timeout` in ns, fixed once per acquire; `None`
/// waits forever (also when the deadline is too far to represent).
fn deadline_ns(timeout: Timeout) -> Option<u64> {
    match timeout {
        Timeout::Never => None,
        Timeout::After(duration) => {
            let duration = u64::try_from(duration.as_nanos()).ok()?;
            monotonic_now_ns().checked_add(duration)
        }
        Timeout::At(instant) => {
            // `Instant` is CLOCK_MONOTONIC on Linux. Reading it first and our clock second
            // makes the deadline at or after `instant`, never before.
            let remaining = instant.saturating_duration_since(std::time::Instant::now());
            let now = monotonic_now_ns();
            let remaining = u64::try_from(remaining.as_nanos()).ok()?;
            now.checked_add(remaining)
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// The futex words' values: a waker bumps a word right before it wakes on it.
    fn bumps(sem: &RawSemaphore) -> (u32, u32) {
        (
            sem.single_wake.load(Ordering::Relaxed),
            sem.multi_wake.load(Ordering::Relaxed),
        )
    }

    /// A semaphore with `singles` and `multis` registered waiters that are not asleep (so a
    /// wake finds nobody), and `tokens` permits.
    fn with_waiters(tokens: u32, singles: u32, multis: u32) -> RawSemaphore {
        let sem = RawSemaphore::<false>::new(0);
        for _ in 0..singles {
            assert!(!sem.register_or_take(1, WaiterKind::Single).unwrap());
        }
        for _ in 0..multis {
            assert!(!sem.register_or_take(2, WaiterKind::Multi).unwrap());
        }
        let state = State(sem.state.load(Ordering::Relaxed));
        sem.state
            .store(state.give(tokens).unwrap().0, Ordering::Relaxed);
        sem
    }

    /// Forgets the registrations so the drop check passes.
    fn unregister(sem: RawSemaphore) {
        sem.forget_waiters();
    }

    #[test]
    fn release_bumps_only_the_words_that_can_progress() {
        // One permit: no multi waiter can proceed, so its word is left alone.
        let sem = with_waiters(0, 0, 1);
        sem.release(1).unwrap();
        assert_eq!(bumps(&sem), (0, 0));
        sem.release(1).unwrap();
        assert_eq!(bumps(&sem), (0, 1), "2 permits: multi waiters are woken");
        unregister(sem);
        // No single waiter: its word is left alone.
        let sem = with_waiters(0, 0, 1);
        sem.release(3).unwrap();
        assert_eq!(bumps(&sem), (0, 1));
        unregister(sem);
        let sem = with_waiters(0, 1, 0);
        sem.release(3).unwrap();
        assert_eq!(bumps(&sem), (1, 0));
        unregister(sem);
    }

    #[test]
    fn a_leaving_holder_wakes_what_the_permits_left_can_serve() {
        let sem = with_waiters(0, 1, 0);
        sem.wake_after_reservation(State(sem.state.load(Ordering::Relaxed)));
        assert_eq!(
            bumps(&sem),
            (0, 0),
            "no permit left, no single waiter woken"
        );
        unregister(sem);
        let sem = with_waiters(3, 0, 0);
        sem.wake_after_reservation(State(sem.state.load(Ordering::Relaxed)));
        assert_eq!(bumps(&sem), (0, 0), "nobody waits, nobody woken");
        unregister(sem);
        let sem = with_waiters(1, 1, 1);
        sem.wake_after_reservation(State(sem.state.load(Ordering::Relaxed)));
        assert_eq!(bumps(&sem), (1, 1), "multi waiters even with 1 permit");
        unregister(sem);
    }

    #[test]
    #[should_panic(expected = "semaphore dropped while threads wait on it")]
    fn dropping_with_a_registered_waiter_panics() {
        drop(with_waiters(0, 0, 1));
    }

    #[test]
    fn spinning_takes_permits_that_are_there() {
        let sem = RawSemaphore::<false>::new(2);
        assert!(sem.spin_then_take(2, None));
        assert_eq!(sem.available(), 0);
        assert_eq!(
            sem.spin_budget.budget.load(Ordering::Relaxed),
            SpinBudget::LEAST
        );
        // None there and no deadline: spins the whole budget in vain, which halves it.
        assert!(!sem.spin_then_take(1, None));
        assert_eq!(
            sem.spin_budget.budget.load(Ordering::Relaxed),
            SpinBudget::LEAST / 2
        );
        // Registered waiters stop it at once, permits or not.
        let sem = with_waiters(2, 1, 0);
        assert!(!sem.spin_then_take(1, None));
        assert_eq!(sem.available(), 2);
        unregister(sem);
    }

    #[test]
    fn a_spin_in_vain_halves_the_full_budget() {
        let sem = RawSemaphore::<false>::new(0);
        assert!(!sem.spin_then_take(1, None));
        // 0 if the test thread lost its CPU mid-spin (a busy machine): that stops spinning.
        let budget = sem.spin_budget.budget.load(Ordering::Relaxed);
        assert!(
            budget == SpinBudget::MAX / 2 || budget == 0,
            "budget {budget} after a spin in vain"
        );
    }

    #[test]
    fn spinning_stops_at_the_deadline_without_judging_the_spin() {
        let sem = RawSemaphore::<false>::new(0);
        assert!(!sem.spin_then_take(1, Some(0)));
        assert_eq!(
            sem.spin_budget.budget.load(Ordering::Relaxed),
            SpinBudget::MAX,
            "a spin cut short by the deadline says nothing about spinning"
        );
    }

    #[test]
    fn spin_budget_adapts() {
        let budget = SpinBudget::new();
        assert_eq!(budget.get(), SpinBudget::MAX);
        budget.succeeded(5);
        assert_eq!(budget.get(), SpinBudget::LEAST);
        budget.succeeded(100);
        assert_eq!(budget.get(), 200);
        budget.succeeded(SpinBudget::MAX);
        assert_eq!(budget.get(), SpinBudget::MAX);
        budget.failed(SpinBudget::MAX);
        assert_eq!(budget.get(), SpinBudget::MAX / 2);
        budget.failed(300);
        assert_eq!(budget.get(), 150);
        budget.succeeded(100);
        budget.preempted();
        assert_eq!(
            budget.budget.load(Ordering::Relaxed),
            0,
            "a preempted spin stops spinning at once"
        );
        budget.failed(1);
        // At 0: one probe with the full budget in every `PROBE_EVERY` calls.
        let probes = (0..2 * SpinBudget::PROBE_EVERY)
            .map(|_| budget.get())
            .filter(|&spins| spins == SpinBudget::MAX)
            .count();
        assert_eq!(probes, 2);
        assert_eq!(budget.get(), SpinBudget::MAX, "the next probe");
        assert_eq!(budget.get(), 0);
    }
}
