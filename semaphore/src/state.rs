//! The futex implementation's 64-bit state word: token count and waiter counts, read and
//! changed only as a whole by one atomic operation.
//!
//! | bits   | field      | range                         | meaning                                   |
//! |--------|------------|-------------------------------|-------------------------------------------|
//! | 0..31  | `tokens`   | `0..=Semaphore::MAX_PERMITS`  | permits available now                     |
//! | 31     | `reserved` | 0 or 1                        | a starving multi waiter has reserved the permits: nobody else takes any |
//! | 32..48 | `singles`  | `0..=MAX_WAITERS`             | threads registered to wait for 1 permit   |
//! | 48..64 | `multis`   | `0..=MAX_WAITERS`             | threads registered to wait for 2 or more  |
//!
//! `reserved` is set only by a registered multi waiter (the *holder*, counted in `multis`) and
//! cleared only by it, in the CAS that ends its wait (see `futex_semaphore.rs`, "Eventual
//! fairness"). `tokens + n` never reaches bit 31 (`MAX_PERMITS` is `2^31 - 1`), so adding
//! permits never disturbs the flag.
//!
//! `docs/semaphore.md` lists every legal transition. The futex words that waiters sleep on are
//! separate 32-bit atomics (see `futex.rs`), so no futex ever aliases part of this word.

use crate::MAX_PERMITS;

const TOKEN_MASK: u64 = 0x7fff_ffff;
const RESERVED: u64 = 1 << 31;
const SINGLE_SHIFT: u32 = 32;
const MULTI_SHIFT: u32 = 48;
const WAITER_FIELD_MASK: u64 = 0xffff;

/// Most threads that can be registered as waiting at once for one kind of request. Loom
/// models use 2, so that a model with three threads can reach the limit.
pub(crate) const MAX_WAITERS: u32 = if cfg!(loom) { 2 } else { 0xffff };

/// Which queue a waiter registers in: single-permit waiters can always use a woken wake-up,
/// multi-permit waiters may not, so they are woken separately (see `docs/semaphore.md`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WaiterKind {
    /// Waits for exactly one permit.
    Single,
    /// Waits for two or more permits.
    Multi,
}

impl WaiterKind {
    /// The queue a request for `permits` (at least 1) waits in.
    pub(crate) fn for_request(permits: u32) -> WaiterKind {
        if permits == 1 {
            WaiterKind::Single
        } else {
            WaiterKind::Multi
        }
    }

    fn shift(self) -> u32 {
        match self {
            WaiterKind::Single => SINGLE_SHIFT,
            WaiterKind::Multi => MULTI_SHIFT,
        }
    }
}

/// One value of the state word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct State(pub(crate) u64);

impl State {
    /// A semaphore holding `tokens` permits and no waiters.
    pub(crate) const fn with_tokens(tokens: u32) -> State {
        State(tokens as u64)
    }

    /// Permits available.
    pub(crate) fn tokens(self) -> u32 {
        (self.0 & TOKEN_MASK) as u32
    }

    /// Registered waiters of one kind.
    pub(crate) fn waiters(self, kind: WaiterKind) -> u32 {
        ((self.0 >> kind.shift()) & WAITER_FIELD_MASK) as u32
    }

    /// Registered waiters of both kinds.
    pub(crate) fn all_waiters(self) -> u32 {
        self.waiters(WaiterKind::Single) + self.waiters(WaiterKind::Multi)
    }

    /// Whether any waiter is registered (a release must then consider waking).
    pub(crate) fn has_waiters(self) -> bool {
        self.0 >> SINGLE_SHIFT != 0
    }

    /// Whether a starving multi waiter has reserved the permits.
    pub(crate) fn reserved(self) -> bool {
        self.0 & RESERVED != 0
    }

    /// The state after taking `n` permits, or `None` if fewer are available or they are
    /// reserved for a starving waiter.
    pub(crate) fn take(self, n: u32) -> Option<State> {
        (!self.reserved() && self.tokens() >= n).then(|| State(self.0 - u64::from(n)))
    }

    /// The reservation holder's take: the state after taking `n` permits and clearing the
    /// reservation, or `None` if fewer are available.
    ///
    /// # Panics
    /// If the permits are not reserved: only the holder calls this, so this is a bug.
    pub(crate) fn take_reserved(self, n: u32) -> Option<State> {
        assert!(
            self.reserved(),
            "semaphore state {:#x}: the reservation holder finds no reservation",
            self.0
        );
        (self.tokens() >= n).then(|| State(self.0 - u64::from(n) - RESERVED))
    }

    /// The state with the permits reserved, or `None` if they already are.
    pub(crate) fn reserve(self) -> Option<State> {
        (!self.reserved()).then_some(State(self.0 | RESERVED))
    }

    /// The state with the reservation cleared.
    pub(crate) fn unreserve(self) -> State {
        State(self.0 & !RESERVED)
    }

    /// The state after removing up to `n` permits, whether reserved or not, and how many.
    pub(crate) fn remove(self, n: u32) -> (State, u32) {
        let removed = self.tokens().min(n);
        (State(self.0 - u64::from(removed)), removed)
    }

    /// The state after adding `n` permits, or `None` if the count would pass `MAX_PERMITS`.
    pub(crate) fn give(self, n: u32) -> Option<State> {
        let tokens = self.tokens().checked_add(n)?;
        (tokens <= MAX_PERMITS).then(|| State(self.0 + u64::from(n)))
    }

    /// The state with one more waiter of `kind`, or `None` if that field is full.
    pub(crate) fn register(self, kind: WaiterKind) -> Option<State> {
        (self.waiters(kind) < MAX_WAITERS).then(|| State(self.0 + (1 << kind.shift())))
    }

    /// The state with one waiter of `kind` fewer.
    ///
    /// # Panics
    /// If no such waiter is registered: a waiter only removes the unit it added, so this is a bug.
    pub(crate) fn deregister(self, kind: WaiterKind) -> State {
        assert!(
            self.waiters(kind) > 0,
            "semaphore state {:#x}: deregistering a {kind:?} waiter that is not registered",
            self.0
        );
        State(self.0 - (1 << kind.shift()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_independent() {
        let s = State::with_tokens(7)
            .register(WaiterKind::Single)
            .and_then(|s| s.register(WaiterKind::Multi))
            .and_then(|s| s.register(WaiterKind::Multi))
            .unwrap();
        assert_eq!(s.tokens(), 7);
        assert_eq!(s.waiters(WaiterKind::Single), 1);
        assert_eq!(s.waiters(WaiterKind::Multi), 2);
        assert!(s.has_waiters());
        let s = s.take(7).unwrap().deregister(WaiterKind::Multi);
        assert_eq!((s.tokens(), s.all_waiters()), (0, 2));
        assert!(!State::with_tokens(MAX_PERMITS).has_waiters());
    }

    #[test]
    fn take_never_underflows() {
        assert_eq!(State::with_tokens(2).take(3), None);
        assert_eq!(State::with_tokens(3).take(3), Some(State(0)));
    }

    #[test]
    fn give_stops_at_max_permits() {
        let full = State::with_tokens(MAX_PERMITS)
            .register(WaiterKind::Single)
            .unwrap();
        assert_eq!(full.give(1), None);
        assert_eq!(State::with_tokens(1).give(MAX_PERMITS), None);
        assert_eq!(State::with_tokens(1).give(u32::MAX), None);
        assert_eq!(
            State::with_tokens(1)
                .give(MAX_PERMITS - 1)
                .unwrap()
                .tokens(),
            MAX_PERMITS
        );
    }

    #[test]
    fn waiter_fields_refuse_to_overflow() {
        for kind in [WaiterKind::Single, WaiterKind::Multi] {
            let full = State((u64::from(MAX_WAITERS) << kind.shift()) | 5);
            assert_eq!(full.waiters(kind), MAX_WAITERS);
            assert_eq!(full.register(kind), None);
            assert_eq!(full.deregister(kind).waiters(kind), MAX_WAITERS - 1);
            assert_eq!(full.tokens(), 5);
        }
    }

    #[test]
    #[should_panic(expected = "not registered")]
    fn deregister_without_waiter_panics() {
        let _ = State::with_tokens(1).deregister(WaiterKind::Multi);
    }

    #[test]
    fn reservation_blocks_takes_but_not_gives() {
        let s = State::with_tokens(3)
            .register(WaiterKind::Multi)
            .unwrap()
            .reserve()
            .unwrap();
        assert!(s.reserved() && s.has_waiters());
        assert_eq!(s.tokens(), 3);
        assert_eq!(s.reserve(), None);
        assert_eq!(s.take(1), None);
        assert_eq!(s.take_reserved(4), None);
        let s = s.give(MAX_PERMITS - 3).unwrap();
        assert_eq!((s.tokens(), s.reserved()), (MAX_PERMITS, true));
        assert_eq!(s.give(1), None);
        let taken = s.take_reserved(MAX_PERMITS).unwrap();
        assert_eq!((taken.tokens(), taken.reserved()), (0, false));
        assert_eq!(taken.waiters(WaiterKind::Multi), 1);
        assert_eq!(s.unreserve().take(2).unwrap().tokens(), MAX_PERMITS - 2);
        assert!(
            !State::with_tokens(MAX_PERMITS)
                .reserve()
                .unwrap()
                .has_waiters()
        );
    }

    #[test]
    fn remove_takes_what_is_there() {
        let s = State::with_tokens(5).reserve().unwrap();
        assert_eq!(s.remove(3), (State::with_tokens(2).reserve().unwrap(), 3));
        assert_eq!(s.remove(9), (State::with_tokens(0).reserve().unwrap(), 5));
        assert_eq!(State::with_tokens(0).remove(1), (State(0), 0));
    }

    #[test]
    #[should_panic(expected = "finds no reservation")]
    fn take_reserved_without_reservation_panics() {
        let _ = State::with_tokens(5).take_reserved(1);
    }

    #[test]
    fn request_kinds() {
        assert_eq!(WaiterKind::for_request(1), WaiterKind::Single);
        assert_eq!(WaiterKind::for_request(2), WaiterKind::Multi);
        assert_eq!(WaiterKind::for_request(MAX_PERMITS), WaiterKind::Multi);
    }
}
