//! Loading futexscope's eBPF programs and reading what they record.
//!
//! ```no_run
//! use futexscope::collect::ebpf::{ProbeOptions, Probes};
//! let mut probes = Probes::load_with(&ProbeOptions::default())?;
//! probes.trace_tgid(1234)?;
//! // … later, from a polling loop:
//! probes.read_events(|event| println!("{event:?}"));
//! for (word, stats) in probes.futex_stats()? {
//!     println!("{:#x}: {} waits", word.uaddr, stats.waits);
//! }
//! println!("dropped: {:?}", probes.drops()?);
//! # Ok::<(), futexscope::collect::ebpf::LoadError>(())
//! ```
//!
//! Totals ([`Probes::futex_stats`]) are exact even when event records are dropped; every
//! dropped record is counted ([`Probes::drops`]). `docs/probes.md` defines every counter.

use std::{
    os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
    path::Path,
    time::Duration,
};

use super::btf::KernelBtf;
use crate::{errors, sys};
use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, PerCpuArray, RingBuf},
    programs::{
        BtfTracePoint, ProgramError, RawTracePoint, TracePoint, UProbe,
        uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeScope},
    },
};
use futexscope_probes_common::{
    abi::syscalls,
    event::Event,
    maps::{
        self, DEFAULT_LOST_RACE_WINDOW_NS, DEFAULT_RING_BUFFER_BYTES, DropReason, FutexKey,
        FutexStats, KeyOffsets, MAX_MARKER_SITES, MarkerArg, MarkerSite, WordUser, marker_cookie,
    },
    markers::Marker,
    stack::{self, DEFAULT_STACK_RING_BYTES, StackRecord},
};

/// The eBPF object built by `build.rs`, embedded so the binary is one file.
static PROBES_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/futexscope-probes"));

/// The syscall hooks: the tracepoint, its program on a kernel with BTF (registers read in
/// place), and its program on raw tracepoints (registers read by a helper call).
const SYSCALL_HOOKS: [(&str, &str, &str); 2] = [
    ("sys_enter", "futex_enter", "futex_enter_raw"),
    ("sys_exit", "futex_exit", "futex_exit_raw"),
];
/// The other raw tracepoint programs and the tracepoints they attach to.
const RAW_TRACEPOINTS: [(&str, &str); 2] = [
    ("process_fork", "sched_process_fork"),
    ("thread_exit", "sched_process_exit"),
];
/// The per-syscall tracepoint programs (enter, exit) and the futex syscalls they attach to, as
/// `syscalls:sys_enter_NAME` / `syscalls:sys_exit_NAME`.
const SYSCALL_TRACEPOINT_PROGRAMS: (&str, &str) = ("futex_enter_tp", "futex_exit_tp");
/// The program that traces a process that execs into a name of [`ProbeOptions::comms`].
const EXEC_PROGRAM: (&str, &str) = ("process_exec", "sched_process_exec");
/// The marker uprobe program.
const MARKER_PROGRAM: &str = "futexscope_marker";

/// Errors while loading, attaching or reading the probes.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The process lacks the privilege to load eBPF programs.
    #[error(
        "permission denied: loading eBPF programs needs root, or the capabilities CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN)"
    )]
    NotPermitted(#[source] aya::EbpfError),
    /// The kernel rejected the object.
    #[error(
        "the kernel rejected futexscope's eBPF object (it needs BPF with BTF, ring buffers and atomic compare-exchange: Linux 5.12 or later)"
    )]
    Load(#[source] aya::EbpfError),
    /// A program could not be loaded or attached.
    #[error("failed to load or attach the `{name}` program (kernel hook `{hook}`)")]
    Program {
        /// Program name.
        name: &'static str,
        /// The hook it attaches to.
        hook: String,
        /// Cause.
        #[source]
        source: aya::programs::ProgramError,
    },
    /// The epoll instance that waits for the probes' wakeups could not be set up.
    #[error("cannot watch the event ring buffer with epoll")]
    Wakeups(#[source] std::io::Error),
    /// A map is missing, has the wrong type, or could not be read or written.
    #[error("map `{name}` is missing, has the wrong type, or failed")]
    Map {
        /// Map name.
        name: &'static str,
        /// Cause.
        #[source]
        source: aya::maps::MapError,
    },
    /// The ring buffer size is not a power of two of at least one page.
    #[error("ring buffer size {0} is not a power of two of at least 4096 bytes")]
    RingBufferSize(u32),
    /// tracefs is not mounted and could not be mounted (the per-syscall tracepoints need it).
    #[error(
        "tracefs is not mounted and could not be mounted at /sys/kernel/tracing (needs CAP_SYS_ADMIN): mount it, or use the sys_enter/sys_exit hooks"
    )]
    Tracefs(#[source] std::io::Error),
    /// The kernel has no `syscalls:` tracepoints (built without `CONFIG_FTRACE_SYSCALLS`).
    #[error(
        "this kernel has no syscalls:sys_enter_futex tracepoints (CONFIG_FTRACE_SYSCALLS is off): use the sys_enter/sys_exit hooks"
    )]
    NoSyscallTracepoints,
    /// The stack ring buffer size is not a power of two that holds two stack records.
    #[error("stack ring buffer size {0} is not a power of two of at least 32K (two stack records)")]
    StackRingBufferSize(u32),
    /// More marker sites than the probes can hold.
    #[error("too many marker sites: at most {MAX_MARKER_SITES} can be attached")]
    TooManySites,
}

/// Settings fixed at load time.
#[derive(Clone, Debug)]
pub struct ProbeOptions {
    /// Byte size of the event ring buffer: a power of two, at least 4096.
    pub ring_buffer_bytes: u32,
    /// CLOCK_REALTIME minus CLOCK_MONOTONIC in ns, for converting realtime deadlines; `None`
    /// measures it at load.
    pub realtime_offset_ns: Option<i64>,
    /// A woken thread that waits again on the same word within this many ns (with no futex
    /// call in between) lost the race; used for code without markers.
    pub lost_race_window_ns: u64,
    /// Keep the probes' own diagnostics (a map full, markers out of order) for
    /// [`Probes::drain_log`]; off, the kernel drops them from the programs at load.
    pub verbose: bool,
    /// Hook the system calls by raw tracepoint even when the kernel has BTF, as on a kernel
    /// without it (the BTF tracepoints read the registers in place, so they cost less).
    pub raw_syscall_hooks: bool,
    /// Trace the processes a traced process forks, from their first instruction on.
    pub follow_forks: bool,
    /// Capture the user stack of each wait that slept and each wake that woke
    /// ([`Probes::read_stacks`]); off, the programs skip it at the cost of one branch.
    pub stacks: bool,
    /// Trace every process on the host (no [`Probes::trace_tgid`] needed).
    pub trace_all: bool,
    /// Also trace the processes of this cgroup and of the cgroups below it.
    pub cgroup: Option<CgroupFilter>,
    /// Also trace processes that exec into one of these names (`comm`, at most 15 bytes each).
    pub comms: Vec<String>,
    /// Stop tracing a process that execs into a name not in `comms` (a child followed from a
    /// named process that runs another program).
    pub untrace_other_execs: bool,
    /// Write event records to the ring buffer; off, only the totals are kept.
    pub records: bool,
    /// Hook the futex system calls by their own tracepoints (`syscalls:sys_enter_futex` and
    /// friends, which need tracefs; mounted if missing) instead of `sys_enter`/`sys_exit`:
    /// other system calls then run no program. No user stacks.
    pub syscall_tracepoints: bool,
    /// Byte size of the stack ring buffer while `stacks` is on: a power of two that holds at
    /// least two records.
    pub stack_ring_bytes: u32,
}

/// A cgroup (v2) whose processes are traced: its id (the inode number of its directory) and
/// its depth below the root.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CgroupFilter {
    /// The cgroup id.
    pub id: u64,
    /// Its level: 0 is the root, 1 a directory in it, …
    pub level: u32,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        ProbeOptions {
            ring_buffer_bytes: DEFAULT_RING_BUFFER_BYTES,
            realtime_offset_ns: None,
            lost_race_window_ns: DEFAULT_LOST_RACE_WINDOW_NS,
            verbose: false,
            raw_syscall_hooks: false,
            follow_forks: true,
            stacks: false,
            trace_all: false,
            cgroup: None,
            comms: Vec::new(),
            untrace_other_execs: false,
            records: true,
            syscall_tracepoints: false,
            stack_ring_bytes: DEFAULT_STACK_RING_BYTES,
        }
    }
}

/// One futex syscall and whether the running kernel has it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyscallSupport {
    /// The syscall's name.
    pub name: &'static str,
    /// Its x86_64 number.
    pub number: u32,
    /// Whether the kernel has it (absent ones can never be called, so nothing is missed).
    pub present: bool,
}

/// Records and map entries lost, summed over all CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Drops {
    /// Event records lost because the ring buffer was full (totals stay exact).
    pub ring_buffer_full: u64,
    /// Words, threads or processes not recorded because a map was full (totals incomplete).
    pub map_full: u64,
    /// Words of non-private futex operations keyed by (process, address) because their
    /// mapping could not be looked up: a wake from another process on them is not paired.
    pub shared_key_fallback: u64,
    /// Stack records lost because the stack ring buffer was full (`--stacks`): those calls
    /// have no stack.
    pub stack_ring_full: u64,
}

impl Drops {
    /// Whether anything was dropped.
    pub fn any(&self) -> bool {
        self.ring_buffer_full + self.map_full + self.shared_key_fallback + self.stack_ring_full > 0
    }
}

/// One marker site to attach: the place in a file and how to read its arguments.
#[derive(Clone, Debug)]
pub struct MarkerSiteSpec {
    /// Which marker.
    pub marker: Marker,
    /// Offset of the marker's instruction in the file (not its virtual address).
    pub file_offset: u64,
    /// Where each argument is, in order (at most 6; see [`MarkerArg::register`] and friends).
    pub args: Vec<MarkerArg>,
}

/// Loaded and attached probes.
pub struct Probes {
    ebpf: Ebpf,
    events: RingBuf<MapData>,
    /// The stack records (`--stacks`).
    stacks: RingBuf<MapData>,
    /// An epoll instance watching `events` edge-triggered: it reports the wakeups the probes
    /// send once the ring buffer is a quarter full, not every record that arrives.
    wakeups: OwnedFd,
    syscalls: Vec<SyscallSupport>,
    follows_forks: bool,
    keys_shared_futexes: bool,
    btf_syscall_hooks: bool,
    marker_sites: u32,
    log: Option<aya_log::EbpfLogger<StderrLog>>,
}

/// An epoll instance watching `events` for readability, edge-triggered: it becomes ready when
/// the kernel wakes the ring buffer's waiters (the probes' forced wakeups), not merely because
/// records are waiting.
fn edge_triggered_epoll(events: &RingBuf<MapData>) -> std::io::Result<OwnedFd> {
    // SAFETY: epoll_create1 has no preconditions; it returns a new fd or -1.
    let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new descriptor that nothing else owns.
    let epoll = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut interest = libc::epoll_event {
        events: (libc::EPOLLIN | libc::EPOLLET) as u32,
        u64: 0,
    };
    // SAFETY: both fds are open for the call; `interest` is a valid epoll_event.
    let ret = unsafe {
        libc::epoll_ctl(
            epoll.as_raw_fd(),
            libc::EPOLL_CTL_ADD,
            events.as_raw_fd(),
            &mut interest,
        )
    };
    if ret < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(epoll)
}

/// Adds `ring` to the edge-triggered `epoll`: its forced wakeups end a wait too.
fn watch_edge_triggered(epoll: &OwnedFd, ring: &RingBuf<MapData>) -> std::io::Result<()> {
    let mut interest = libc::epoll_event {
        events: (libc::EPOLLIN | libc::EPOLLET) as u32,
        u64: 1,
    };
    // SAFETY: both fds are open for the call; `interest` is a valid epoll_event.
    let ret = unsafe {
        libc::epoll_ctl(
            epoll.as_raw_fd(),
            libc::EPOLL_CTL_ADD,
            ring.as_raw_fd(),
            &mut interest,
        )
    };
    if ret < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// A wait cut short by a signal ends like a timeout; other errors are errors.
fn interrupted_is_timeout(err: std::io::Error) -> std::io::Result<bool> {
    if err.kind() == std::io::ErrorKind::Interrupted {
        Ok(false)
    } else {
        Err(err)
    }
}

/// Prints the probes' diagnostics to stderr.
struct StderrLog;

impl log::Log for StderrLog {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        eprintln!(
            "futexscope: probe {}: {}",
            record.level().as_str().to_lowercase(),
            record.args()
        );
    }

    fn flush(&self) {}
}

impl Probes {
    /// Loads the probes with default [`ProbeOptions`].
    pub fn load() -> Result<Probes, LoadError> {
        Probes::load_with(&ProbeOptions::default())
    }

    /// Loads the embedded object with `options` and attaches the futex, fork and exit programs.
    pub fn load_with(options: &ProbeOptions) -> Result<Probes, LoadError> {
        let ring = options.ring_buffer_bytes;
        if !ring.is_power_of_two() || ring < 4096 {
            return Err(LoadError::RingBufferSize(ring));
        }
        let stack_ring = if options.stacks {
            options.stack_ring_bytes
        } else {
            4096
        };
        if options.stacks
            && (!stack_ring.is_power_of_two()
                || (stack_ring as usize) < 2 * size_of::<StackRecord>())
        {
            return Err(LoadError::StackRingBufferSize(stack_ring));
        }
        let realtime_offset = options
            .realtime_offset_ns
            .unwrap_or_else(sys::realtime_offset_ns);
        // Without BTF fork following is off and shared futexes are keyed by process; the rest
        // works.
        let kernel_btf = KernelBtf::read(Path::new("/sys/kernel/btf/vmlinux")).ok();
        let tgid_offset = kernel_btf
            .as_ref()
            .and_then(|btf| btf.member_offset("task_struct", "tgid").ok())
            .unwrap_or(0);
        let key_offsets = kernel_btf
            .as_ref()
            .and_then(|btf| key_offsets(btf).ok())
            .unwrap_or_default();
        let follows_forks = tgid_offset != 0;
        let tgid_offset = if options.follow_forks { tgid_offset } else { 0 };
        // Level 0 turns every log site off, and the verifier then drops them.
        let log_level: u8 = if options.verbose { u8::MAX } else { 0 };
        let mut ebpf = EbpfLoader::new()
            .map_max_entries(maps::EVENTS, ring)
            .map_max_entries(stack::STACKS, stack_ring)
            .override_global(stack::STACK_CAPTURE, &u32::from(options.stacks), true)
            .override_global(stack::STACK_WAKEUP_BYTES, &u64::from(stack_ring / 4), true)
            .override_global("AYA_LOG_LEVEL", &log_level, false)
            .override_global(maps::REALTIME_OFFSET_NS, &realtime_offset, true)
            .override_global(maps::TASK_TGID_OFFSET, &tgid_offset, true)
            .override_global(maps::KEY_OFFSETS, &key_offsets, true)
            .override_global(
                maps::LOST_RACE_WINDOW_NS,
                &options.lost_race_window_ns,
                true,
            )
            .override_global(maps::WAKEUP_BYTES, &u64::from(ring / 4), true)
            .override_global(maps::TRACE_ALL, &u32::from(options.trace_all), true)
            .override_global(
                maps::UNTRACE_OTHER_EXECS,
                &u32::from(options.untrace_other_execs),
                true,
            )
            .override_global(maps::NO_RECORDS, &u32::from(!options.records), true)
            .override_global(
                maps::TRACED_CGROUP,
                &options.cgroup.map_or(0, |cgroup| cgroup.id),
                true,
            )
            .override_global(
                maps::TRACED_CGROUP_LEVEL,
                &options.cgroup.map_or(0, |cgroup| cgroup.level),
                true,
            )
            .load(PROBES_OBJECT)
            .map_err(|err| {
                if errors::is_permission_denied(&err) {
                    LoadError::NotPermitted(err)
                } else {
                    LoadError::Load(err)
                }
            })?;
        let btf = if options.raw_syscall_hooks {
            None
        } else {
            Btf::from_sys_fs().ok()
        };
        let mut btf_syscall_hooks = true;
        let hooks = if options.syscall_tracepoints {
            attach_syscall_tracepoints(&mut ebpf)?;
            btf_syscall_hooks = false;
            &[][..]
        } else {
            &SYSCALL_HOOKS[..]
        };
        for &(hook, btf_program, raw_program) in hooks {
            // A kernel with BTF that still refuses the BTF tracepoint gets the raw one, which
            // does the same at a little more cost.
            let attached = btf.as_ref().is_some_and(|btf| {
                attach_btf_tracepoint(&mut ebpf, btf_program, hook, btf).is_ok()
            });
            if !attached {
                attach_raw_tracepoint(&mut ebpf, raw_program, hook)?;
                btf_syscall_hooks = false;
            }
        }
        for (name, hook) in RAW_TRACEPOINTS {
            attach_raw_tracepoint(&mut ebpf, name, hook)?;
        }
        if !options.comms.is_empty() {
            trace_comms(&mut ebpf, &options.comms)?;
        }
        let marker: &mut UProbe = program(&mut ebpf, MARKER_PROGRAM, "uprobe")?;
        marker
            .load()
            .map_err(program_error(MARKER_PROGRAM, "uprobe"))?;
        let events = ebpf
            .take_map(maps::EVENTS)
            .ok_or_else(|| missing(maps::EVENTS))
            .and_then(|map| {
                RingBuf::try_from(map).map_err(|source| LoadError::Map {
                    name: maps::EVENTS,
                    source,
                })
            })?;
        let stacks = ebpf
            .take_map(stack::STACKS)
            .ok_or_else(|| missing(stack::STACKS))
            .and_then(|map| {
                RingBuf::try_from(map).map_err(|source| LoadError::Map {
                    name: stack::STACKS,
                    source,
                })
            })?;
        let wakeups = edge_triggered_epoll(&events).map_err(LoadError::Wakeups)?;
        watch_edge_triggered(&wakeups, &stacks).map_err(LoadError::Wakeups)?;
        let log = if options.verbose {
            // Without the log map (an object built without log sites) there is nothing to show.
            aya_log::EbpfLogger::init_with_logger(&mut ebpf, StderrLog).ok()
        } else {
            None
        };
        Ok(Probes {
            ebpf,
            events,
            stacks,
            wakeups,
            syscalls: detect_syscalls(),
            follows_forks,
            keys_shared_futexes: key_offsets.valid != 0
                && (btf_syscall_hooks || options.syscall_tracepoints),
            btf_syscall_hooks,
            marker_sites: 0,
            log,
        })
    }

    /// The futex syscalls futexscope hooks and whether this kernel has each.
    pub fn syscalls(&self) -> &[SyscallSupport] {
        &self.syscalls
    }

    /// Whether this kernel lets the probes follow forks (its BTF describes `task_struct`);
    /// they do unless [`ProbeOptions::follow_forks`] was off.
    pub fn follows_forks(&self) -> bool {
        self.follows_forks
    }

    /// Whether non-private futex operations on shared memory are keyed by the shared file
    /// (device, inode, offset), so waits and wakes pair across processes: needs the kernel's
    /// BTF offsets and the BTF syscall hooks (`bpf_find_vma`). Without, they are keyed by
    /// (process, address) and counted in [`Drops::shared_key_fallback`].
    pub fn keys_shared_futexes(&self) -> bool {
        self.keys_shared_futexes
    }

    /// Whether the system calls are hooked by BTF tracepoint (the kernel has BTF and took the
    /// programs), not by raw tracepoint.
    pub fn btf_syscall_hooks(&self) -> bool {
        self.btf_syscall_hooks
    }

    /// Starts tracing process `tgid` (and, with [`Probes::follows_forks`], its future children).
    pub fn trace_tgid(&mut self, tgid: u32) -> Result<(), LoadError> {
        let mut tgids: HashMap<&mut MapData, u32, u8> = self.hash_map_mut(maps::TRACED_TGIDS)?;
        tgids.insert(tgid, 1, 0).map_err(|source| LoadError::Map {
            name: maps::TRACED_TGIDS,
            source,
        })
    }

    /// Stops tracing process `tgid` (its statistics stay). Not an error if it was not traced.
    pub fn untrace_tgid(&mut self, tgid: u32) -> Result<(), LoadError> {
        let mut tgids: HashMap<&mut MapData, u32, u8> = self.hash_map_mut(maps::TRACED_TGIDS)?;
        match tgids.remove(&tgid) {
            Ok(()) => Ok(()),
            Err(aya::maps::MapError::SyscallError(err))
                if err.io_error.raw_os_error() == Some(libc::ENOENT) =>
            {
                Ok(())
            }
            Err(source) => Err(LoadError::Map {
                name: maps::TRACED_TGIDS,
                source,
            }),
        }
    }

    /// The processes being traced (those added and their children).
    pub fn traced_tgids(&self) -> Result<Vec<u32>, LoadError> {
        let name = maps::TRACED_TGIDS;
        let map = self.ebpf.map(name).ok_or_else(|| missing(name))?;
        let tgids: HashMap<&MapData, u32, u8> =
            HashMap::try_from(map).map_err(|source| LoadError::Map { name, source })?;
        tgids
            .keys()
            .collect::<Result<_, _>>()
            .map_err(|source| LoadError::Map { name, source })
    }

    /// Per-word totals of every traced process.
    pub fn futex_stats(&self) -> Result<Vec<(FutexKey, FutexStats)>, LoadError> {
        let mut all = Vec::new();
        self.for_each_futex_stats(|key, stats| all.push((key, *stats)))?;
        Ok(all)
    }

    /// Hands the totals of each word to `each`, one at a time: a long-running reader (the
    /// agent) keeps no copy of the whole map, which holds up to [`maps::MAX_FUTEX_WORDS`]
    /// words of about 5 KiB each.
    pub fn for_each_futex_stats(
        &self,
        mut each: impl FnMut(FutexKey, &FutexStats),
    ) -> Result<(), LoadError> {
        let name = maps::FUTEX_STATS;
        let map = self.ebpf.map(name).ok_or_else(|| missing(name))?;
        let stats: HashMap<&MapData, FutexKey, FutexStats> =
            HashMap::try_from(map).map_err(|source| LoadError::Map { name, source })?;
        for entry in stats.iter() {
            let (key, stats) = entry.map_err(|source| LoadError::Map { name, source })?;
            each(key, &stats);
        }
        Ok(())
    }

    /// The processes that used each shared futex (keyed by file), with the word's address in
    /// each.
    pub fn word_users(&self) -> Result<Vec<(WordUser, u64)>, LoadError> {
        let name = maps::WORD_USERS;
        let map = self.ebpf.map(name).ok_or_else(|| missing(name))?;
        let users: HashMap<&MapData, WordUser, u64> =
            HashMap::try_from(map).map_err(|source| LoadError::Map { name, source })?;
        users
            .iter()
            .collect::<Result<_, _>>()
            .map_err(|source| LoadError::Map { name, source })
    }

    /// Records and map entries lost so far.
    pub fn drops(&self) -> Result<Drops, LoadError> {
        let name = maps::DROPS;
        let map = self.ebpf.map(name).ok_or_else(|| missing(name))?;
        let drops: PerCpuArray<&MapData, u64> =
            PerCpuArray::try_from(map).map_err(|source| LoadError::Map { name, source })?;
        let sum = |reason: DropReason| -> Result<u64, LoadError> {
            let values = drops
                .get(&(reason as u32), 0)
                .map_err(|source| LoadError::Map { name, source })?;
            Ok(values.iter().sum())
        };
        Ok(Drops {
            ring_buffer_full: sum(DropReason::RingBufferFull)?,
            map_full: sum(DropReason::MapFull)?,
            shared_key_fallback: sum(DropReason::SharedKeyFallback)?,
            stack_ring_full: sum(DropReason::StackRingFull)?,
        })
    }

    /// Hands every event record waiting in the ring buffer to `each`, oldest first; returns how
    /// many. Never blocks: poll [`Probes::events_fd`] for readability to wait.
    pub fn read_events(&mut self, mut each: impl FnMut(&Event)) -> usize {
        let mut count = 0;
        while let Some(item) = self.events.next() {
            if item.len() >= size_of::<Event>() {
                // SAFETY: the record holds at least an `Event`'s bytes, written by the eBPF side
                // as an `Event`; `Event` is plain integers, so any bytes are valid, and
                // read_unaligned copes with the ring buffer's 8-byte alignment.
                let event = unsafe { item.as_ptr().cast::<Event>().read_unaligned() };
                each(&event);
                count += 1;
            }
        }
        count
    }

    /// Hands every stack record waiting in the stack ring buffer to `each`, oldest first;
    /// returns how many. Never blocks. Empty unless loaded with [`ProbeOptions::stacks`].
    pub fn read_stacks(&mut self, mut each: impl FnMut(&StackRecord)) -> usize {
        let mut count = 0;
        while let Some(item) = self.stacks.next() {
            if item.len() >= size_of::<StackRecord>() {
                // SAFETY: the record holds a `StackRecord`'s bytes, written by the eBPF side as
                // one; it is plain integers and bytes, so any bytes are valid, and
                // read_unaligned copes with the ring buffer's 8-byte alignment. Boxed: 8 KiB.
                let record =
                    Box::new(unsafe { item.as_ptr().cast::<StackRecord>().read_unaligned() });
                each(&record);
                count += 1;
            }
        }
        count
    }

    /// Waits up to `timeout` for event records; true if some are waiting.
    pub fn wait_for_events(&self, timeout: Duration) -> std::io::Result<bool> {
        let mut poll = libc::pollfd {
            fd: self.events.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let millis = timeout_millis(timeout);
        // SAFETY: one valid pollfd for an fd this object owns, for the duration of the call.
        match unsafe { libc::poll(&mut poll, 1, millis) } {
            n if n < 0 => interrupted_is_timeout(std::io::Error::last_os_error()),
            n => Ok(n > 0 && poll.revents & libc::POLLIN != 0),
        }
    }

    /// Waits up to `timeout` for the probes to ask for a drain (the ring buffer holds a quarter
    /// of its size), or for a signal; true if they asked. Unlike
    /// [`Probes::wait_for_events`], records that arrive below that level do not end the wait,
    /// so a tracer that drains at least once per `timeout` is not woken per record.
    pub fn wait_for_wakeup(&self, timeout: Duration) -> std::io::Result<bool> {
        let mut event = libc::epoll_event { events: 0, u64: 0 };
        let millis = timeout_millis(timeout);
        // SAFETY: a valid epoll fd this object owns and room for exactly one event.
        match unsafe { libc::epoll_wait(self.wakeups.as_raw_fd(), &mut event, 1, millis) } {
            n if n < 0 => interrupted_is_timeout(std::io::Error::last_os_error()),
            n => Ok(n > 0),
        }
    }

    /// The ring buffer's file descriptor: readable when records are waiting (for `poll` or
    /// `tokio::io::unix::AsyncFd`).
    pub fn events_fd(&self) -> BorrowedFd<'_> {
        self.events.as_fd()
    }

    /// With [`ProbeOptions::verbose`], prints the probes' waiting diagnostics to stderr;
    /// otherwise does nothing.
    pub fn drain_log(&mut self) {
        if let Some(log) = &mut self.log {
            log.flush();
        }
    }

    /// Attaches the marker program to `sites` in the executable or library `path`, for every
    /// process (records are still limited to traced processes). Returns the number attached.
    pub fn attach_markers(
        &mut self,
        path: &Path,
        sites: &[MarkerSiteSpec],
    ) -> Result<usize, LoadError> {
        let first = self.marker_sites;
        if sites.len() > (MAX_MARKER_SITES - first) as usize {
            return Err(LoadError::TooManySites);
        }
        let name = maps::MARKER_SITES;
        {
            let map = self.ebpf.map_mut(name).ok_or_else(|| missing(name))?;
            let mut table: Array<&mut MapData, MarkerSite> =
                Array::try_from(map).map_err(|source| LoadError::Map { name, source })?;
            for (i, site) in sites.iter().enumerate() {
                let mut entry = MarkerSite {
                    marker: site.marker as u32,
                    ..MarkerSite::default()
                };
                for (slot, arg) in entry.args.iter_mut().zip(&site.args) {
                    *slot = *arg;
                }
                entry.arg_count = site.args.len().min(entry.args.len()) as u32;
                table
                    .set(first + i as u32, entry, 0)
                    .map_err(|source| LoadError::Map { name, source })?;
            }
        }
        let hook = format!("uprobe:{}", path.display());
        let program: &mut UProbe = program(&mut self.ebpf, MARKER_PROGRAM, &hook)?;
        let attach_error = program_error(MARKER_PROGRAM, &hook);
        for (i, site) in sites.iter().enumerate() {
            let point = UProbeAttachPoint {
                location: UProbeAttachLocation::AbsoluteOffset(site.file_offset),
                cookie: Some(marker_cookie(site.marker as u32, first + i as u32)),
            };
            program
                .attach(point, path, UProbeScope::AllProcesses)
                .map_err(&attach_error)?;
            self.marker_sites += 1;
        }
        Ok(sites.len())
    }

    /// The name of process `tgid` as the probes kept it (agent mode, [`ProbeOptions::records`]
    /// off): the thread that first used one of its futex words.
    pub fn process_comm(&self, tgid: u32) -> Option<String> {
        let map = self.ebpf.map(maps::PROCESS_COMMS)?;
        let comms: HashMap<&MapData, u32, [u8; 16]> = HashMap::try_from(map).ok()?;
        let comm = comms.get(&tgid, 0).ok()?;
        let len = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
        Some(String::from_utf8_lossy(&comm[..len]).into_owned())
    }

    /// Forgets the totals of the words `keys` (words of processes gone, or evicted by a cap);
    /// words already gone are not an error. Returns how many were removed.
    pub fn remove_words(&mut self, keys: &[FutexKey]) -> Result<usize, LoadError> {
        let name = maps::FUTEX_STATS;
        let mut stats: HashMap<&mut MapData, FutexKey, FutexStats> = self.hash_map_mut(name)?;
        let mut removed = 0;
        for key in keys {
            match stats.remove(key) {
                Ok(()) => removed += 1,
                Err(aya::maps::MapError::SyscallError(err))
                    if err.io_error.raw_os_error() == Some(libc::ENOENT) => {}
                Err(source) => return Err(LoadError::Map { name, source }),
            }
        }
        Ok(removed)
    }

    /// Removes processes' uses of shared futexes from `WORD_USERS` (the processes are gone);
    /// returns how many were there.
    pub fn remove_word_users(&mut self, users: &[WordUser]) -> Result<usize, LoadError> {
        let name = maps::WORD_USERS;
        let mut map: HashMap<&mut MapData, WordUser, u64> = self.hash_map_mut(name)?;
        let mut removed = 0;
        for user in users {
            match map.remove(user) {
                Ok(()) => removed += 1,
                Err(aya::maps::MapError::SyscallError(err))
                    if err.io_error.raw_os_error() == Some(libc::ENOENT) => {}
                Err(source) => return Err(LoadError::Map { name, source }),
            }
        }
        Ok(removed)
    }

    fn hash_map_mut<'a, K: aya::Pod, V: aya::Pod>(
        &'a mut self,
        name: &'static str,
    ) -> Result<HashMap<&'a mut MapData, K, V>, LoadError> {
        let map = self.ebpf.map_mut(name).ok_or_else(|| missing(name))?;
        HashMap::try_from(map).map_err(|source| LoadError::Map { name, source })
    }
}

/// The offsets shared futex keys are read with (see `probes/ebpf/src/syscall/key.rs`), from
/// the kernel's BTF.
fn key_offsets(btf: &KernelBtf) -> Result<KeyOffsets, super::btf::BtfError> {
    Ok(KeyOffsets {
        valid: 1,
        vma_start: btf.member_offset("vm_area_struct", "vm_start")?,
        vma_pgoff: btf.member_offset("vm_area_struct", "vm_pgoff")?,
        vma_flags: btf.member_offset("vm_area_struct", "vm_flags")?,
        vma_file: btf.member_offset("vm_area_struct", "vm_file")?,
        file_mapping: btf.member_offset("file", "f_mapping")?,
        mapping_host: btf.member_offset("address_space", "host")?,
        inode_ino: btf.member_offset("inode", "i_ino")?,
        inode_sb: btf.member_offset("inode", "i_sb")?,
        sb_dev: btf.member_offset("super_block", "s_dev")?,
        vma_end: btf.member_offset("vm_area_struct", "vm_end")?,
    })
}

/// Loads the per-syscall tracepoint programs and attaches them to the `syscalls:` tracepoints
/// of every futex syscall this kernel has; mounts tracefs first if it is not mounted.
fn attach_syscall_tracepoints(ebpf: &mut Ebpf) -> Result<(), LoadError> {
    let tracefs = sys::ensure_tracefs().map_err(LoadError::Tracefs)?;
    let (enter, exit) = SYSCALL_TRACEPOINT_PROGRAMS;
    for (name, direction) in [(enter, "enter"), (exit, "exit")] {
        let hook = format!("syscalls:sys_{direction}_futex*");
        let program: &mut TracePoint = program(ebpf, name, &hook)?;
        program.load().map_err(program_error(name, &hook))?;
        for syscall in detect_syscalls().iter().filter(|s| s.present) {
            let event = format!("sys_{direction}_{}", syscall.name);
            // A kernel built without CONFIG_FTRACE_SYSCALLS has no such events.
            if !tracefs.join("events/syscalls").join(&event).exists() {
                return Err(LoadError::NoSyscallTracepoints);
            }
            program
                .attach("syscalls", &event)
                .map_err(program_error(name, &format!("syscalls:{event}")))?;
        }
    }
    Ok(())
}

/// Fills `TRACED_COMMS` with `comms` and attaches the program that traces a process that
/// execs into one of them.
fn trace_comms(ebpf: &mut Ebpf, comms: &[String]) -> Result<(), LoadError> {
    let name = maps::TRACED_COMMS;
    {
        let map = ebpf.map_mut(name).ok_or_else(|| missing(name))?;
        let mut table: HashMap<&mut MapData, [u8; 16], u8> =
            HashMap::try_from(map).map_err(|source| LoadError::Map { name, source })?;
        for comm in comms {
            table
                .insert(comm_key(comm), 1, 0)
                .map_err(|source| LoadError::Map { name, source })?;
        }
    }
    let (program, hook) = EXEC_PROGRAM;
    attach_raw_tracepoint(ebpf, program, hook)
}

/// A process name as the kernel keeps it: at most 15 bytes, zero-padded to 16.
pub fn comm_key(comm: &str) -> [u8; 16] {
    let mut key = [0u8; 16];
    let bytes = comm.as_bytes();
    let len = bytes.len().min(15);
    key[..len].copy_from_slice(&bytes[..len]);
    key
}

/// Loads raw tracepoint program `name` and attaches it to `hook`.
fn attach_raw_tracepoint(ebpf: &mut Ebpf, name: &'static str, hook: &str) -> Result<(), LoadError> {
    let program: &mut RawTracePoint = program(ebpf, name, hook)?;
    program.load().map_err(program_error(name, hook))?;
    program
        .attach(hook)
        .map(drop)
        .map_err(program_error(name, hook))
}

/// Loads BTF tracepoint program `name` for `hook` with the kernel's `btf` and attaches it.
fn attach_btf_tracepoint(
    ebpf: &mut Ebpf,
    name: &'static str,
    hook: &str,
    btf: &Btf,
) -> Result<(), LoadError> {
    let program: &mut BtfTracePoint = program(ebpf, name, hook)?;
    program.load(hook, btf).map_err(program_error(name, hook))?;
    program
        .attach()
        .map(drop)
        .map_err(program_error(name, hook))
}

/// Program `name` of the object, as the type its hook needs.
fn program<'a, T>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
    hook: &str,
) -> Result<&'a mut T, LoadError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or(ProgramError::UnexpectedProgramType)
        .and_then(TryInto::try_into)
        .map_err(program_error(name, hook))
}

/// Turns a program error of `name` on `hook` into a [`LoadError`].
fn program_error(name: &'static str, hook: &str) -> impl Fn(ProgramError) -> LoadError {
    let hook = hook.to_owned();
    move |source| LoadError::Program {
        name,
        hook: hook.clone(),
        source,
    }
}

fn missing(name: &'static str) -> LoadError {
    LoadError::Map {
        name,
        source: aya::maps::MapError::InvalidName { name: name.into() },
    }
}

/// Which futex syscalls the kernel has ([`sys`] calls each with arguments it must reject).
fn detect_syscalls() -> Vec<SyscallSupport> {
    let probe = |number: u32| match number {
        syscalls::FUTEX_WAITV => sys::futex_waitv_present(),
        syscalls::FUTEX_WAKE => sys::futex2_wake_present(),
        syscalls::FUTEX_WAIT => sys::futex2_wait_present(),
        syscalls::FUTEX_REQUEUE => sys::futex2_requeue_present(),
        _ => true,
    };
    vec![
        SyscallSupport {
            name: "futex",
            number: syscalls::FUTEX,
            present: true,
        },
        SyscallSupport {
            name: "futex_waitv",
            number: syscalls::FUTEX_WAITV,
            present: probe(syscalls::FUTEX_WAITV),
        },
        SyscallSupport {
            name: "futex_wake",
            number: syscalls::FUTEX_WAKE,
            present: probe(syscalls::FUTEX_WAKE),
        },
        SyscallSupport {
            name: "futex_wait",
            number: syscalls::FUTEX_WAIT,
            present: probe(syscalls::FUTEX_WAIT),
        },
        SyscallSupport {
            name: "futex_requeue",
            number: syscalls::FUTEX_REQUEUE,
            present: probe(syscalls::FUTEX_REQUEUE),
        },
    ]
}

/// `timeout` in whole milliseconds for poll/epoll_wait, rounded up: rounded down, a wait of
/// less than 1 ms would return at once and a loop waiting for a deadline would spin until it.
fn timeout_millis(timeout: Duration) -> i32 {
    i32::try_from(timeout.as_nanos().div_ceil(1_000_000)).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_round_up_to_whole_milliseconds() {
        assert_eq!(timeout_millis(Duration::ZERO), 0);
        assert_eq!(timeout_millis(Duration::from_micros(1)), 1);
        assert_eq!(timeout_millis(Duration::from_micros(999)), 1);
        assert_eq!(timeout_millis(Duration::from_millis(100)), 100);
        assert_eq!(timeout_millis(Duration::from_micros(100_001)), 101);
        assert_eq!(timeout_millis(Duration::MAX), i32::MAX);
    }
}
