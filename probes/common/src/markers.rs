//! The futexscope USDT marker table: the one definition shared by the semaphore (which emits
//! the markers), the eBPF programs (which decode their arguments) and the tracer (which lists
//! them). `docs/markers.md` describes the same table for people.
//!
//! Every marker belongs to the provider [`PROVIDER`]. Arguments are 8-byte values held in
//! registers; their order is ABI: append, never reorder.

/// The stapsdt provider name of every futexscope marker.
pub const PROVIDER: &str = "futexscope";

/// Deadline argument value meaning "no deadline" (an untimed wait).
pub const NO_DEADLINE: u64 = 0;

/// Identifies a marker; the value is the uprobe attach cookie and the event's marker id.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Marker {
    /// Just before a futex wait.
    WaitBegin = 0,
    /// Just after a futex wait returned.
    WaitEnd = 1,
    /// Just before a futex wake.
    WakeBegin = 2,
    /// Just after a futex wake returned.
    WakeEnd = 3,
    /// Tokens obtained by an acquire that had to wait.
    Acquired = 4,
    /// A timed acquire gave up at its deadline.
    TimedOut = 5,
}

/// A marker's name and the meaning of each of its arguments, in order.
#[derive(Clone, Copy, Debug)]
pub struct MarkerSpec {
    /// Which marker.
    pub marker: Marker,
    /// The stapsdt probe name.
    pub name: &'static str,
    /// One short description per argument, in argument order.
    pub args: &'static [&'static str],
}

/// Every futexscope marker, indexed by `Marker as usize`.
pub const MARKERS: [MarkerSpec; 6] = [
    MarkerSpec {
        marker: Marker::WaitBegin,
        name: "wait_begin",
        args: &[
            "sem: address of the semaphore",
            "word: address of the futex word waited on",
            "expected: value the wait expects in the word",
            "wanted: tokens the acquire asks for",
            "deadline_ns: absolute CLOCK_MONOTONIC deadline in ns, 0 = none",
            "state: the semaphore's state word that sent it to sleep (bits 0..32 tokens \
             available, 32..48 single-token waiters, 48..64 multi-token waiters, this one \
             included)",
        ],
    },
    MarkerSpec {
        marker: Marker::WaitEnd,
        name: "wait_end",
        args: &[
            "sem: address of the semaphore",
            "word: address of the futex word waited on",
            "result: 0 = woken, else -errno (-EAGAIN, -EINTR, -ETIMEDOUT)",
            "wanted: tokens the acquire asks for",
        ],
    },
    MarkerSpec {
        marker: Marker::WakeBegin,
        name: "wake_begin",
        args: &[
            "sem: address of the semaphore",
            "word: address of the futex word woken",
            "count: threads asked to wake (i32::MAX = all)",
            "waiters: waiters the semaphore believes it has",
        ],
    },
    MarkerSpec {
        marker: Marker::WakeEnd,
        name: "wake_end",
        args: &[
            "sem: address of the semaphore",
            "word: address of the futex word woken",
            "result: threads the kernel woke, or -errno",
            "count: threads asked to wake",
        ],
    },
    MarkerSpec {
        marker: Marker::Acquired,
        name: "acquired",
        args: &["sem: address of the semaphore", "tokens: tokens obtained"],
    },
    MarkerSpec {
        marker: Marker::TimedOut,
        name: "timed_out",
        args: &[
            "sem: address of the semaphore",
            "wanted: tokens the acquire asked for",
            "deadline_ns: absolute CLOCK_MONOTONIC deadline in ns",
            "now_ns: CLOCK_MONOTONIC time in ns when it gave up",
        ],
    },
];

impl Marker {
    /// The marker whose cookie/id is `id`, if any.
    pub const fn from_id(id: u32) -> Option<Marker> {
        match id {
            0 => Some(Marker::WaitBegin),
            1 => Some(Marker::WaitEnd),
            2 => Some(Marker::WakeBegin),
            3 => Some(Marker::WakeEnd),
            4 => Some(Marker::Acquired),
            5 => Some(Marker::TimedOut),
            _ => None,
        }
    }

    /// This marker's entry in [`MARKERS`].
    pub const fn spec(self) -> &'static MarkerSpec {
        &MARKERS[self as usize]
    }

    /// The stapsdt probe name.
    pub const fn name(self) -> &'static str {
        self.spec().name
    }
}

/// The marker with stapsdt probe name `name`, if any.
pub fn by_name(name: &str) -> Option<Marker> {
    MARKERS.iter().find(|m| m.name == name).map(|m| m.marker)
}
