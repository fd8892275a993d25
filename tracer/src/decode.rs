//! The decode boundary: raw ring-buffer [`Event`]s become typed [`Record`]s, and stack records
//! [`CallStack`]s, with their futex word keys normalized once. Nothing after this module reads
//! the wire structs.

use std::collections::HashMap;

use futexscope_probes_common::{
    event::{Event, EventKind, NO_CLOCK, spurious},
    maps::{FutexKey, WordUser, key_kind},
    markers::Marker,
    stack::StackRecord,
};

use crate::collect::unwind::RawStack;

/// A futex word as the kernel tells words apart (`get_futex_key`; docs/probes.md, "Keys").
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WordKey {
    /// A word of one process: every private operation, and non-private ones on private memory
    /// (heap, stack, private mappings).
    Process {
        /// Process id owning the word.
        pid: u32,
        /// Address of the word in that process.
        uaddr: u64,
    },
    /// A word in shared memory named by non-private operations: the same futex in every
    /// process that maps it, at whatever address.
    Shared {
        /// Device of the file system holding the file (`st_dev` in the kernel's encoding:
        /// major << 20 | minor).
        dev: u32,
        /// Inode number of the file (shmem for `MAP_SHARED|MAP_ANONYMOUS` and `/dev/shm`).
        ino: u64,
        /// Byte offset of the word in the file.
        offset: u64,
    },
}

impl WordKey {
    /// The word at `uaddr` of process `pid`.
    pub fn process(pid: u32, uaddr: u64) -> WordKey {
        WordKey::Process { pid, uaddr }
    }

    /// The process that owns a process-local word; `None` for a shared one.
    pub fn pid(&self) -> Option<u32> {
        match *self {
            WordKey::Process { pid, .. } => Some(pid),
            WordKey::Shared { .. } => None,
        }
    }

    /// The address of a process-local word; `None` for a shared one.
    pub fn address(&self) -> Option<u64> {
        match *self {
            WordKey::Process { uaddr, .. } => Some(uaddr),
            WordKey::Shared { .. } => None,
        }
    }

    /// A short name when nothing better names the word: `0x…` for a process-local word,
    /// `dev MAJ:MIN inode N+0x…` (hexadecimal device numbers, as `/proc/PID/maps`) for a shared one.
    pub fn describe(&self) -> String {
        match *self {
            WordKey::Process { uaddr, .. } => format!("{uaddr:#x}"),
            WordKey::Shared { dev, ino, offset } => {
                format!(
                    "dev {:02x}:{:02x} inode {ino}+{offset:#x}",
                    dev >> 20,
                    dev & 0xf_ffff
                )
            }
        }
    }

    fn from_parts(kind: u32, pid: u32, uaddr: u64, dev: u32, ino: u64, offset: u64) -> WordKey {
        if kind == key_kind::INODE {
            WordKey::Shared { dev, ino, offset }
        } else {
            WordKey::Process { pid, uaddr }
        }
    }
}

impl From<FutexKey> for WordKey {
    /// The key of a statistics-map entry (its padding ignored).
    fn from(key: FutexKey) -> WordKey {
        WordKey::from_parts(key.kind, key.tgid, key.uaddr, key.dev, key.ino, key.uaddr)
    }
}

/// The processes that use each word, with the word's address in each, sorted by process id:
/// the owner of a process-local word; every process seen using a shared one.
pub type WordUsers = HashMap<WordKey, Vec<(u32, u64)>>;

/// The users of the shared words, from the probes' `WORD_USERS` map.
pub fn word_users(users: &[(WordUser, u64)]) -> WordUsers {
    let mut by_word = WordUsers::new();
    for (user, uaddr) in users {
        by_word
            .entry(WordKey::from(user.key))
            .or_default()
            .push((user.tgid, *uaddr));
    }
    for list in by_word.values_mut() {
        list.sort_unstable();
        list.dedup_by_key(|(pid, _)| *pid);
    }
    by_word
}

/// A thread of a traced process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Thread {
    /// Process id.
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
}

/// A futex system call that returned: what every wait and wake record carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Call {
    /// The calling thread.
    pub thread: Thread,
    /// CPU the call returned on.
    pub cpu: u32,
    /// The word (the first one of a multi-word call), as the kernel keys it.
    pub word: WordKey,
    /// The word's address in the calling process.
    pub uaddr: u64,
    /// The second word (requeue, wake-op), 0 if none.
    pub uaddr2: u64,
    /// The system call number.
    pub syscall: u32,
    /// The futex operation with its flags, as the system call took it.
    pub op: u32,
    /// CLOCK_MONOTONIC ns when the call began.
    pub start_ns: u64,
    /// CLOCK_MONOTONIC ns when it returned.
    pub end_ns: u64,
    /// Its result: >= 0, or -errno.
    pub ret: i64,
    /// Operation-specific arguments: a wait's expected value, a wake's count, the further words
    /// of `futex_waitv` (see [`Event::args`]).
    pub args: [u64; 6],
}

/// The absolute deadline of a timed wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deadline {
    /// CLOCK_MONOTONIC ns (a CLOCK_REALTIME deadline is converted by the probes).
    pub monotonic_ns: u64,
    /// The clock the caller gave it on: `CLOCK_REALTIME` (0) or `CLOCK_MONOTONIC` (1).
    pub clock: u32,
}

/// Why a wait ended without what it waited for (docs/probes.md defines each).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpuriousFlags(pub u32);

impl SpuriousFlags {
    /// Interrupted by a signal.
    pub fn interrupted(self) -> bool {
        self.0 & spurious::INTERRUPTED != 0
    }
    /// The word's value had changed before the thread slept.
    pub fn value_changed(self) -> bool {
        self.0 & spurious::VALUE_CHANGED != 0
    }
    /// Woken, then waited again without getting what it waited for.
    pub fn lost_race(self) -> bool {
        self.0 & spurious::LOST_RACE != 0
    }
    /// Woken with no wake call on the word since the wait began.
    pub fn no_waker(self) -> bool {
        self.0 & spurious::NO_WAKER != 0
    }
}

/// A wait-type futex call that returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Wait {
    /// The call.
    pub call: Call,
    /// Its deadline, if timed.
    pub deadline: Option<Deadline>,
    /// Spurious-wakeup flags.
    pub spurious: SpuriousFlags,
}

impl Wait {
    /// Whether a wake call ended it (it returned 0).
    pub fn woken(&self) -> bool {
        self.call.ret == 0
    }

    /// Whether it timed out.
    pub fn timed_out(&self) -> bool {
        self.call.ret == -i64::from(libc::ETIMEDOUT)
    }

    /// Return time minus deadline, in ns (negative if it returned early); `None` if untimed.
    pub fn drift_ns(&self) -> Option<i64> {
        self.deadline
            .map(|d| self.call.end_ns as i64 - d.monotonic_ns as i64)
    }
}

/// A wake-type futex call that returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Wake {
    /// The call; its `ret` is the number of threads woken, or -errno.
    pub call: Call,
}

impl Wake {
    /// Threads it woke (0 if it failed).
    pub fn woken(&self) -> u64 {
        self.call.ret.max(0) as u64
    }
}

/// A futexscope marker that fired.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MarkerHit {
    /// The thread that hit it.
    pub thread: Thread,
    /// CPU.
    pub cpu: u32,
    /// CLOCK_MONOTONIC ns.
    pub ts_ns: u64,
    /// Which marker (`None` for an id this build does not know).
    pub marker: Option<Marker>,
    /// The raw marker id.
    pub id: u32,
    /// The futex word it is booked on: its word argument, or for `acquired` and `timed_out`
    /// the word of the thread's last futex wait; `None` if there is none.
    pub word: Option<WordKey>,
    /// The marker's arguments; the first is always the semaphore's address.
    pub args: [u64; 6],
}

impl MarkerHit {
    /// The address of the semaphore the marker names.
    pub fn semaphore(&self) -> u64 {
        self.args[0]
    }
}

/// A traced process forked; the child is traced too.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fork {
    /// The forking thread.
    pub parent: Thread,
    /// CPU.
    pub cpu: u32,
    /// CLOCK_MONOTONIC ns.
    pub ts_ns: u64,
    /// The new process.
    pub child_pid: u32,
}

/// A thread exited while it waited on a futex.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiedWaiting {
    /// The wait, as far as it went: `end_ns` is when the thread exited, `ret` is 0.
    pub call: Call,
    /// The wait's deadline, if timed.
    pub deadline: Option<Deadline>,
}

/// A futex call's user call stack (`--stacks`): the call, as its stack record names it, and
/// the frames [`crate::collect::unwind`] walked from the record's registers and stack bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallStack {
    /// A wait that slept (`false`: a wake that woke a thread).
    pub wait: bool,
    /// The calling thread.
    pub thread: Thread,
    /// The word the call named (its canonical key).
    pub word: WordKey,
    /// When the call began, CLOCK_MONOTONIC ns.
    pub start_ns: u64,
    /// When it returned: with the thread, the link to the call's [`Wait`] or [`Wake`].
    pub end_ns: u64,
    /// Its result: a wake's number of threads woken, a wait's 0 or -errno.
    pub ret: i64,
    /// The walked stack, leaf first.
    pub stack: RawStack,
}

impl CallStack {
    /// Decodes a stack record whose stack `unwind` walked.
    pub fn decode(record: &StackRecord, stack: RawStack) -> CallStack {
        CallStack {
            wait: record.kind == EventKind::Wait as u32,
            thread: Thread {
                pid: record.tgid,
                tid: record.tid,
            },
            word: WordKey::from(record.key),
            start_ns: record.start_ns,
            end_ns: record.ts_ns,
            ret: record.ret,
            stack,
        }
    }
}

/// One record of the probes, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Record {
    /// A finished wait.
    Wait(Wait),
    /// A wake call.
    Wake(Wake),
    /// A marker hit.
    Marker(MarkerHit),
    /// A fork of a traced process.
    Fork(Fork),
    /// A thread that died waiting.
    DiedWaiting(DiedWaiting),
}

impl Record {
    /// Decodes one ring-buffer record; `None` for a kind this build does not know.
    pub fn decode(event: &Event) -> Option<Record> {
        let thread = Thread {
            pid: event.tgid,
            tid: event.tid,
        };
        // Markers book on (process, address); calls carry their key.
        let word = WordKey::process(event.tgid, event.uaddr);
        let call_word = WordKey::from_parts(
            event.key_kind,
            event.tgid,
            event.uaddr,
            event.key_dev,
            event.key_ino,
            event.key_offset,
        );
        let deadline = (event.deadline_ns != 0).then_some(Deadline {
            monotonic_ns: event.deadline_ns,
            clock: event.clock,
        });
        let call = Call {
            thread,
            cpu: event.cpu,
            word: call_word,
            uaddr: event.uaddr,
            uaddr2: event.uaddr2,
            syscall: event.syscall,
            op: event.op,
            start_ns: event.start_ns,
            end_ns: event.ts_ns,
            ret: event.ret,
            args: event.args,
        };
        Some(match EventKind::from_u32(event.kind)? {
            EventKind::Wait => Record::Wait(Wait {
                call,
                deadline,
                spurious: SpuriousFlags(event.spurious),
            }),
            EventKind::Wake => Record::Wake(Wake { call }),
            EventKind::Marker => Record::Marker(MarkerHit {
                thread,
                cpu: event.cpu,
                ts_ns: event.ts_ns,
                marker: Marker::from_id(event.op),
                id: event.op,
                word: (event.uaddr != 0).then_some(word),
                args: event.args,
            }),
            EventKind::Fork => Record::Fork(Fork {
                parent: thread,
                cpu: event.cpu,
                ts_ns: event.ts_ns,
                child_pid: event.args[0] as u32,
            }),
            EventKind::DiedWaiting => Record::DiedWaiting(DiedWaiting { call, deadline }),
        })
    }

    /// The clock a deadline was given on, as the wire format writes it ([`NO_CLOCK`] if none).
    pub fn clock_of(deadline: Option<Deadline>) -> u32 {
        deadline.map_or(NO_CLOCK, |d| d.clock)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: EventKind) -> Event {
        Event {
            kind: kind as u32,
            tid: 2,
            tgid: 1,
            cpu: 3,
            ts_ns: 900,
            start_ns: 100,
            uaddr: 0x1008,
            uaddr2: 0,
            op: 0x80,
            syscall: futexscope_probes_common::abi::syscalls::FUTEX,
            ret: -i64::from(libc::ETIMEDOUT),
            deadline_ns: 850,
            args: [0x1000, 1, 0, 0, 0, 0],
            spurious: spurious::NO_WAKER,
            clock: 1,
            ..Event::ZERO
        }
    }

    #[test]
    fn waits_carry_their_deadline_drift_and_flags() {
        let Some(Record::Wait(wait)) = Record::decode(&event(EventKind::Wait)) else {
            panic!("a wait");
        };
        assert_eq!(wait.call.word, WordKey::process(1, 0x1008));
        assert_eq!(wait.call.uaddr, 0x1008);
        assert_eq!(wait.call.thread, Thread { pid: 1, tid: 2 });
        assert!(wait.timed_out() && !wait.woken());
        assert_eq!(wait.drift_ns(), Some(50));
        assert!(wait.spurious.no_waker() && !wait.spurious.lost_race());
    }

    #[test]
    fn an_untimed_wait_has_no_deadline() {
        let mut raw = event(EventKind::Wait);
        raw.deadline_ns = 0;
        raw.clock = NO_CLOCK;
        let Some(Record::Wait(wait)) = Record::decode(&raw) else {
            panic!("a wait");
        };
        assert_eq!((wait.deadline, wait.drift_ns()), (None, None));
        assert_eq!(Record::clock_of(wait.deadline), NO_CLOCK);
    }

    #[test]
    fn markers_name_their_word_and_semaphore() {
        let mut raw = event(EventKind::Marker);
        raw.op = Marker::Acquired as u32;
        let Some(Record::Marker(hit)) = Record::decode(&raw) else {
            panic!("a marker");
        };
        assert_eq!(hit.marker, Some(Marker::Acquired));
        assert_eq!(hit.word, Some(WordKey::process(1, 0x1008)));
        assert_eq!(hit.semaphore(), 0x1000);
        raw.uaddr = 0;
        let Some(Record::Marker(hit)) = Record::decode(&raw) else {
            panic!("a marker");
        };
        assert_eq!(hit.word, None);
    }

    #[test]
    fn forks_name_the_child_and_unknown_kinds_decode_to_nothing() {
        let mut raw = event(EventKind::Fork);
        raw.args[0] = 4242;
        assert!(matches!(
            Record::decode(&raw),
            Some(Record::Fork(Fork {
                child_pid: 4242,
                ..
            }))
        ));
        raw.kind = 99;
        assert_eq!(Record::decode(&raw), None);
    }

    #[test]
    fn stats_keys_lose_their_padding() {
        let key = FutexKey {
            pad: 0xdead,
            ..FutexKey::process(7, 0x10)
        };
        assert_eq!(WordKey::from(key), WordKey::process(7, 0x10));
        let shared = FutexKey {
            pad: 0xdead,
            ..FutexKey::inode(5, 77, 0x40)
        };
        assert_eq!(
            WordKey::from(shared),
            WordKey::Shared {
                dev: 5,
                ino: 77,
                offset: 0x40
            }
        );
    }

    #[test]
    fn calls_on_shared_memory_are_keyed_by_file_whatever_the_process_and_address() {
        let mut first = event(EventKind::Wait);
        first.key_kind = key_kind::INODE;
        (first.key_dev, first.key_ino, first.key_offset) = ((8 << 20) | 1, 4242, 0x10);
        let mut second = first;
        (second.tgid, second.uaddr) = (99, 0x7000_0010);
        let word = |raw: &Event| match Record::decode(raw) {
            Some(Record::Wait(wait)) => (wait.call.word, wait.call.uaddr),
            _ => panic!("a wait"),
        };
        let (key, uaddr) = word(&first);
        assert_eq!((word(&second).0, uaddr), (key, 0x1008));
        assert_eq!(key.pid(), None);
        assert_eq!(key.describe(), "dev 08:01 inode 4242+0x10");
    }

    #[test]
    fn users_of_a_shared_word_are_listed_once_per_process() {
        let key = FutexKey::inode(5, 77, 0);
        let user = |tgid| WordUser { key, tgid, pad: 0 };
        let users = word_users(&[(user(20), 0x2000), (user(10), 0x1000)]);
        assert_eq!(users[&WordKey::from(key)], [(10, 0x1000), (20, 0x2000)]);
    }
}
