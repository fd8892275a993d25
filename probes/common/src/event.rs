//! Records the eBPF programs put in the [`crate::maps::EVENTS`] ring buffer, for the live view
//! and for export. Totals never depend on them (see [`crate::maps`]).
//!
//! New kinds get new numbers; numbers are never reused; fields are only appended.

/// What an [`Event`] records.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A wait-type futex call returned (`start_ns` is when it began, `ret` its result).
    Wait = 1,
    /// A wake-type futex call returned (`ret` is the number woken or -errno).
    Wake = 2,
    /// A futexscope marker fired (`op` is the marker id, `args` its arguments).
    Marker = 3,
    /// A traced process forked: `args[0]` is the new process id, now traced too.
    Fork = 4,
    /// A thread exited inside a wait (`start_ns`, `uaddr`, `deadline_ns` describe the wait).
    DiedWaiting = 5,
}

impl EventKind {
    /// The kind numbered `value`, if any.
    pub const fn from_u32(value: u32) -> Option<EventKind> {
        match value {
            1 => Some(EventKind::Wait),
            2 => Some(EventKind::Wake),
            3 => Some(EventKind::Marker),
            4 => Some(EventKind::Fork),
            5 => Some(EventKind::DiedWaiting),
            _ => None,
        }
    }
}

/// One ring-buffer record. Fixed size, `repr(C)`, no implicit padding.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    /// An [`EventKind`] value.
    pub kind: u32,
    /// Thread id.
    pub tid: u32,
    /// Process id.
    pub tgid: u32,
    /// CPU the record was made on.
    pub cpu: u32,
    /// CLOCK_MONOTONIC time in ns when the call returned (or the marker fired).
    pub ts_ns: u64,
    /// CLOCK_MONOTONIC time in ns when the call began (0 for markers).
    pub start_ns: u64,
    /// Futex word address (first word for multi-word calls).
    pub uaddr: u64,
    /// Second word (requeue, wake-op), 0 if none.
    pub uaddr2: u64,
    /// Futex op (command with flags), syscall-specific; the marker id for markers.
    pub op: u32,
    /// The syscall number the record came from (0 for markers).
    pub syscall: u32,
    /// Syscall result: >= 0, or -errno.
    pub ret: i64,
    /// Absolute CLOCK_MONOTONIC deadline in ns, 0 if untimed.
    pub deadline_ns: u64,
    /// Marker arguments; for waits `args[0]` is the expected value; for wakes `args[0]` is the
    /// wake count; for `futex_waitv` `args[1..4]` are the further words.
    pub args: [u64; 6],
    /// [`spurious`] flags of a wait.
    pub spurious: u32,
    /// Clock the deadline was given on: `CLOCK_REALTIME` (0), `CLOCK_MONOTONIC` (1), or
    /// [`NO_CLOCK`] if untimed. `deadline_ns` is always converted to CLOCK_MONOTONIC.
    pub clock: u32,
    /// The key of the first word (`uaddr`), a [`crate::maps::key_kind`] value: `PROCESS`
    /// means (`tgid`, `uaddr`); `INODE` means (`key_dev`, `key_ino`, `key_offset`). Waits,
    /// wakes and deaths in a wait only; 0 (`PROCESS`) for the rest.
    pub key_kind: u32,
    /// Device of the shared futex's file ([`crate::maps::key_kind::INODE`]), else 0.
    pub key_dev: u32,
    /// Inode number of the shared futex's file ([`crate::maps::key_kind::INODE`]), else 0.
    pub key_ino: u64,
    /// Byte offset of the shared futex in its file ([`crate::maps::key_kind::INODE`]), else 0.
    pub key_offset: u64,
}

impl Event {
    /// A record with every field zero (`clock` untimed), to fill in with struct update syntax.
    pub const ZERO: Event = Event {
        kind: 0,
        tid: 0,
        tgid: 0,
        cpu: 0,
        ts_ns: 0,
        start_ns: 0,
        uaddr: 0,
        uaddr2: 0,
        op: 0,
        syscall: 0,
        ret: 0,
        deadline_ns: 0,
        args: [0; 6],
        spurious: 0,
        clock: NO_CLOCK,
        key_kind: 0,
        key_dev: 0,
        key_ino: 0,
        key_offset: 0,
    };
}

/// [`Event::clock`] of an untimed wait.
pub const NO_CLOCK: u32 = u32::MAX;

/// Flags in [`Event::spurious`]: why a wait did not end with what it waited for.
pub mod spurious {
    /// Interrupted by a signal (`EINTR`, or a kernel restart code the caller never sees).
    pub const INTERRUPTED: u32 = 1;
    /// The word's value had changed before the thread could sleep (`EAGAIN`).
    pub const VALUE_CHANGED: u32 = 2;
    /// This wait began right after a wakeup of the same thread on the same word that did not
    /// give it what it waited for: the earlier wakeup lost the race.
    pub const LOST_RACE: u32 = 4;
    /// Woken (returned 0) with no wake call on the word since the wait began.
    pub const NO_WAKER: u32 = 8;
}

#[cfg(feature = "user")]
// SAFETY: `Event` is `repr(C)`, made only of integers laid out without padding (checked by the
// size assertion below), so every bit pattern is valid.
unsafe impl aya::Pod for Event {}

const _: () = assert!(
    core::mem::size_of::<Event>() == 4 * 4 + 8 * 4 + 4 * 2 + 8 * 2 + 8 * 6 + 4 * 2 + 4 * 2 + 8 * 2
);
