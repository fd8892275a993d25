//! `futexscope agent`: always-on futex metrics for Prometheus.
//!
//! One tokio runtime on the current thread runs everything: the HTTP endpoint ([`http`]), the
//! signals, a one-second tick, and with `--otlp` the pushes ([`otlp`]). One thread is enough
//! (the work is a few map reads per refresh and a text encoding per scrape or push), keeps the
//! agent's own CPU and memory small, and lets the probes and the model live in one `RefCell`
//! without locks.
//!
//! The agent reads no per-event records: the in-kernel totals (`FUTEX_STATS`) are exact and
//! hold everything the metrics show, so the probes are loaded with records off (no ring-buffer
//! traffic at all) and the maps are read on each tick and each scrape ([`model`]).

pub mod http;
pub mod metrics;
pub mod model;
pub mod otlp;
pub mod selection;

use std::{
    cell::RefCell,
    io,
    net::SocketAddr,
    path::PathBuf,
    rc::Rc,
    time::{Duration, Instant},
};

use tokio::signal::unix::{SignalKind, signal};

use self::{
    metrics::{AgentStats, SeriesValues, Snapshot},
    model::{Limits, Model, ProcessInfo, SharedFile, WordReading},
    selection::Selection,
};
use crate::{
    aggregate::symbols::Symbolizer,
    collect::{
        ebpf::{LoadError, ProbeOptions, Probes},
        proc_maps, procfs,
    },
    errors,
    session::{TraceError, check_privileges, exit_code},
};

/// What `futexscope agent` was asked to do.
#[derive(Clone, Debug)]
pub struct AgentOptions {
    /// Where to serve `/metrics` and `/healthz`.
    pub listen: SocketAddr,
    /// Processes to trace by id (with their children); with `comms` and `cgroup` empty,
    /// every process is traced.
    pub pids: Vec<u32>,
    /// Process names to trace, now and when they start later.
    pub comms: Vec<String>,
    /// A cgroup (v2) directory whose processes are traced.
    pub cgroup: Option<PathBuf>,
    /// Bounds on series and words.
    pub limits: Limits,
    /// Hook `sys_enter`/`sys_exit` (every system call) instead of the futex syscalls'
    /// own tracepoints.
    pub sys_enter_exit: bool,
    /// Also push the metrics over OTLP.
    pub otlp: Option<otlp::OtlpOptions>,
}

/// Why the agent stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The probes could not be loaded (no permission, no BPF, …).
    #[error(transparent)]
    Probes(Box<TraceError>),
    /// The listen address is taken or not allowed.
    #[error("cannot listen on {addr}{hint}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// What to do.
        hint: &'static str,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// The `--cgroup` directory is not a cgroup v2 directory.
    #[error("cannot use cgroup `{path}`: give a directory under /sys/fs/cgroup (cgroup v2)")]
    Cgroup {
        /// The path given.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// A `--pid` does not exist.
    #[error("no such process: {0} (check the pid with `ps`)")]
    NoSuchPid(u32),
    /// The runtime or a signal handler could not be set up.
    #[error("cannot start the agent's event loop")]
    Runtime(#[source] io::Error),
    /// Reading the probes' maps failed.
    #[error("cannot read the probes' statistics")]
    Read(#[source] Box<LoadError>),
}

impl AgentError {
    /// The exit code this error ends futexscope with.
    pub fn exit_code(&self) -> u8 {
        match self {
            AgentError::Probes(err) => err.exit_code(),
            AgentError::NoSuchPid(_) => exit_code::NO_SUCH_PID,
            AgentError::Listen { .. } | AgentError::Cgroup { .. } => exit_code::USAGE,
            AgentError::Runtime(_) | AgentError::Read(_) => exit_code::FAILURE,
        }
    }
}

/// Runs the agent until SIGTERM or SIGINT.
pub fn run(options: AgentOptions) -> Result<(), AgentError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(AgentError::Runtime)?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, serve(options))
}

/// The probes, the model and what names processes, shared by the tick and the scrapes.
struct Agent {
    probes: Probes,
    model: Model,
    names: Names,
    selection: Selection,
    kernel: String,
    last_refresh: Option<Instant>,
    calls_per_second: f64,
    /// OTLP pushes so far (with `--otlp`).
    otlp: Option<otlp::PushStats>,
}

async fn serve(options: AgentOptions) -> Result<(), AgentError> {
    let mut selection = Selection::resolve(&options)?;
    let probes = load_probes(&options, &mut selection)?;
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .map_err(|source| AgentError::Listen {
            addr: options.listen,
            hint: match source.kind() {
                io::ErrorKind::AddrInUse => {
                    ": the port is in use (another agent?): stop it or pick another with --listen"
                }
                io::ErrorKind::PermissionDenied => {
                    ": not permitted (ports below 1024 need CAP_NET_BIND_SERVICE): pick another with --listen"
                }
                io::ErrorKind::AddrNotAvailable => ": no interface has this address",
                _ => "",
            },
            source,
        })?;
    let hooks = if probes.btf_syscall_hooks() || options.sys_enter_exit {
        "sys_enter/sys_exit"
    } else {
        "syscalls:sys_{enter,exit}_futex*"
    };
    eprintln!(
        "futexscope agent: tracing the futex calls of {} (hooks {hooks}), serving http://{}/metrics",
        selection.describe(),
        options.listen
    );
    if let Some(o) = &options.otlp {
        eprintln!(
            "futexscope agent: pushing over OTLP/HTTP to {} every {:?}",
            o.endpoint, o.interval
        );
    }
    let agent = Rc::new(RefCell::new(Agent {
        probes,
        model: Model::new(options.limits),
        names: Names::default(),
        selection,
        kernel: kernel_release(),
        last_refresh: None,
        calls_per_second: 0.0,
        otlp: options.otlp.as_ref().map(|_| otlp::PushStats::default()),
    }));
    let mut terminate = signal(SignalKind::terminate()).map_err(AgentError::Runtime)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(AgentError::Runtime)?;
    let mut hangup = signal(SignalKind::hangup()).map_err(AgentError::Runtime)?;
    // The OTLP pusher is a task of its own, so a slow receiver never holds up the scrapes.
    let pushing = options.otlp.clone().map(|o| {
        let pusher = otlp::Pusher::new(o, &agent.borrow().kernel);
        let (stop, stopped) = tokio::sync::oneshot::channel();
        (
            stop,
            tokio::task::spawn_local(pusher.run(Rc::clone(&agent), stopped)),
        )
    });
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
            _ = hangup.recv() => {
                let mut agent = agent.borrow_mut();
                agent.model.rename();
                agent.names = Names::default();
                let found = agent.selection.rescan();
                for tgid in found {
                    let _ = agent.probes.trace_tgid(tgid);
                }
                eprintln!("futexscope agent: SIGHUP: words renamed, processes rescanned");
            }
            _ = tick.tick() => {
                let mut agent = agent.borrow_mut();
                for tgid in agent.selection.rescan() {
                    let _ = agent.probes.trace_tgid(tgid);
                }
                agent.refresh(BACKGROUND_REFRESH)?;
            }
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    http::spawn_connection(stream, Rc::clone(&agent));
                }
            }
        }
    }
    if let Some((stop, task)) = pushing {
        // The pusher makes one last push with the counts of now, then ends.
        let _ = stop.send(());
        let _ = task.await;
    }
    eprintln!("futexscope agent: stopped");
    Ok(())
}

/// How often the maps are read between scrapes: exited processes are noticed (their grace
/// period starts) and the word cap enforced within this time. A read copies every word's
/// totals (~8 KiB each, up to 16384 words): at 1 s it was the agent's main cost on a busy host.
const BACKGROUND_REFRESH: Duration = Duration::from_secs(5);

/// A scrape reads the maps unless they were read this recently.
const SCRAPE_REFRESH: Duration = Duration::from_millis(200);

impl Agent {
    /// Reads the maps into the model, unless that was done less than `fresh` ago, and forgets
    /// what it says to.
    fn refresh(&mut self, fresh: Duration) -> Result<(), AgentError> {
        let now = Instant::now();
        if self
            .last_refresh
            .is_some_and(|t| now.duration_since(t) < fresh)
        {
            return Ok(());
        }
        let read = |err| AgentError::Read(Box::new(err));
        // Each word's ~5 KiB of kernel totals shrinks to a reading as it is read.
        let mut stats = Vec::new();
        self.probes
            .for_each_futex_stats(|key, word| stats.push((key, WordReading::of(word))))
            .map_err(read)?;
        let users = self.probes.word_users().map_err(read)?;
        // Mappings read for shared files hold for this refresh only.
        self.names.shared_maps.clear();
        let mut info = ProbeNames {
            names: &mut self.names,
            probes: &self.probes,
        };
        let refresh = self.model.refresh(&stats, &users, &mut info, now);
        if !refresh.forget.is_empty() {
            self.probes.remove_words(&refresh.forget).map_err(read)?;
        }
        if !refresh.forget_users.is_empty() {
            self.probes
                .remove_word_users(&refresh.forget_users)
                .map_err(read)?;
        }
        if let Some(last) = self.last_refresh {
            self.calls_per_second = refresh.calls as f64 / now.duration_since(last).as_secs_f64();
        }
        self.last_refresh = Some(now);
        self.untrace_exited()
    }

    /// Takes the processes that have exited out of the traced set (`--pid`, `--comm`,
    /// `--cgroup` select by it), so that it never fills however many come and go.
    fn untrace_exited(&mut self) -> Result<(), AgentError> {
        let traced = self
            .probes
            .traced_tgids()
            .map_err(|err| AgentError::Read(Box::new(err)))?;
        for tgid in traced.into_iter().filter(|&t| !procfs::process_alive(t)) {
            self.probes
                .untrace_tgid(tgid)
                .map_err(|err| AgentError::Read(Box::new(err)))?;
        }
        Ok(())
    }

    /// Refreshes even if the last refresh is recent, then takes a snapshot (the final OTLP
    /// push: the counts up to now). The calls-per-second gauge keeps its last value.
    fn snapshot_now(&mut self) -> Snapshot {
        self.last_refresh = None;
        self.snapshot()
    }

    /// Refreshes, then takes a snapshot for a scrape.
    fn snapshot(&mut self) -> Snapshot {
        if let Err(err) = self.refresh(SCRAPE_REFRESH) {
            errors::print(&err);
        }
        let (cpu_seconds, resident_bytes) = own_usage();
        Snapshot {
            series: self
                .model
                .series()
                .map(|(key, s)| SeriesValues {
                    key: key.clone(),
                    totals: s.totals.clone(),
                    waiters_now: s.waiters_now,
                })
                .collect(),
            agent: AgentStats {
                cpu_seconds,
                resident_bytes,
                calls_per_second: self.calls_per_second,
                calls: self.model.calls(),
                words: self.model.words(),
                evictions: self.model.evictions(),
                processes: self.model.processes(),
                drops: self.probes.drops().unwrap_or_default(),
                otlp: self.otlp,
            },
            kernel: self.kernel.clone(),
            traces: self.selection.describe(),
        }
    }
}

fn load_probes(options: &AgentOptions, selection: &mut Selection) -> Result<Probes, AgentError> {
    check_privileges().map_err(|err| AgentError::Probes(Box::new(err)))?;
    let mut probe_options = ProbeOptions {
        trace_all: selection.all(),
        cgroup: selection.cgroup(),
        comms: options.comms.clone(),
        records: false,
        // A selected process's children are traced from their first call: forked workers keep
        // their parent's name, and a 1 s rescan would miss what they do before it.
        follow_forks: !options.pids.is_empty() || !options.comms.is_empty(),
        // With `--comm` alone, a followed child that runs another program leaves the set.
        untrace_other_execs: options.pids.is_empty() && !options.comms.is_empty(),
        syscall_tracepoints: !options.sys_enter_exit,
        ..ProbeOptions::default()
    };
    let mut loaded = Probes::load_with(&probe_options);
    if let Err(LoadError::Tracefs(_) | LoadError::NoSyscallTracepoints) = &loaded {
        if let Err(err) = &loaded {
            eprintln!(
                "futexscope agent: note: {}; hooking sys_enter/sys_exit instead",
                errors::Chain(err)
            );
        }
        probe_options.syscall_tracepoints = false;
        loaded = Probes::load_with(&probe_options);
    }
    let mut probes = loaded.map_err(|err| {
        AgentError::Probes(Box::new(match err {
            LoadError::NotPermitted(_) => TraceError::NotPermitted {
                missing: String::new(),
            },
            err if errors::errno(&err) == Some(libc::ENOSYS) => TraceError::NoBpf(err),
            err => TraceError::Load(err),
        }))
    })?;
    for tgid in selection.initial() {
        probes
            .trace_tgid(tgid)
            .map_err(|err| AgentError::Probes(Box::new(TraceError::Load(err))))?;
    }
    Ok(probes)
}

/// Names processes and words: procfs and symbols while a process runs, the probes' record of
/// its name after.
#[derive(Default)]
struct Names {
    symbolizer: Symbolizer,
    /// When each process's mappings were last read.
    read_maps: std::collections::HashMap<u32, Instant>,
    /// The file mappings of the processes asked about shared files in this refresh.
    shared_maps: std::collections::HashMap<u32, Vec<proc_maps::Mapping>>,
}

struct ProbeNames<'a> {
    names: &'a mut Names,
    probes: &'a Probes,
}

impl ProcessInfo for ProbeNames<'_> {
    fn comm(&mut self, tgid: u32) -> Option<String> {
        std::fs::read_to_string(format!("/proc/{tgid}/comm"))
            .ok()
            .map(|c| c.trim_end().to_owned())
            .or_else(|| self.probes.process_comm(tgid))
    }

    fn alive(&mut self, tgid: u32) -> bool {
        procfs::process_alive(tgid)
    }

    fn symbol(&mut self, tgid: u32, uaddr: u64) -> Option<String> {
        // Mappings are re-read at most every 10 s per process (new libraries, new words).
        let now = Instant::now();
        let stale = self
            .names
            .read_maps
            .get(&tgid)
            .is_none_or(|t| now.duration_since(*t) > Duration::from_secs(10));
        if stale {
            let _ = self.names.symbolizer.refresh(tgid);
            self.names.read_maps.insert(tgid, now);
        }
        self.names.symbolizer.resolve(tgid, uaddr)
    }

    fn shared_file(&mut self, tgid: u32, dev: u32, ino: u64) -> Option<SharedFile> {
        let maps = self.names.shared_maps.entry(tgid).or_insert_with(|| {
            let mut maps = proc_maps::read(tgid).unwrap_or_default();
            maps.retain(|m| m.inode != 0);
            maps
        });
        let mapping = maps.iter().find(|m| m.dev == dev && m.inode == ino)?;
        let path = mapping.path.as_ref()?.to_string_lossy();
        // Shared anonymous memory is a shmem file the kernel names `/dev/zero` (`mmap`) or
        // `/SYSV<key>` (SysV, key 0 for `IPC_PRIVATE`), always marked deleted, as are memfds
        // (`/memfd:NAME`). Other deleted files count as anonymous too: a file unlinked while
        // mapped usually had a name made for one run (Python's `multiprocessing` unlinks
        // `/dev/shm/sem.mp-RANDOM` at once), and a label per run would grow the series
        // without bound across restarts.
        let keyed_sysv = path.starts_with("/SYSV") && path != "/SYSV00000000";
        let anonymous = mapping.deleted && !keyed_sysv && !path.starts_with("/memfd:");
        Some(if anonymous {
            SharedFile::Anonymous
        } else {
            SharedFile::Path(path.into_owned())
        })
    }

    fn forget(&mut self, tgid: u32) {
        self.names.read_maps.remove(&tgid);
        self.names.symbolizer.forget(tgid);
    }
}

/// `uname -r`.
fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|r| r.trim().to_owned())
        .unwrap_or_default()
}

/// The agent's CPU time (s) and resident memory (bytes).
fn own_usage() -> (f64, u64) {
    // SAFETY: getrusage writes one `rusage` into the zeroed struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let cpu = seconds(usage.ru_utime) + seconds(usage.ru_stime);
    let resident_pages: u64 = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(0) as u64;
    (cpu, resident_pages * page)
}
