//! One tracing session: load the probes, trace a command or a running process, show the live
//! view each interval, and end with the summary and the output files.

use std::{
    collections::{BTreeSet, HashMap, hash_map::Entry},
    fs::{self, File},
    io::{self, BufWriter, IsTerminal, Write},
    path::PathBuf,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use futexscope_probes_common::{event::Event, maps::FutexKey};

use crate::{
    attach::{self, Attached, MarkerSet},
    export::{self, Recorder},
    live::Live,
    probes::{DropCounts, LoadError, ProbeOptions, Probes},
    render,
    report::{self, Drops, Ending, SortKey, Summary},
    spawn::{GatedChild, SpawnError},
    symbols::Symbolizer,
};

/// What to trace.
#[derive(Clone, Debug)]
pub enum Target {
    /// Start this command (program and arguments) and trace it.
    Command(Vec<String>),
    /// Trace this running process.
    Pid(u32),
}

/// How to show progress while tracing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum View {
    /// Full-screen table on a terminal, plain lines otherwise.
    #[default]
    Auto,
    /// Plain text lines each interval.
    Plain,
    /// Nothing until the summary.
    Quiet,
}

/// Options of a tracing session.
#[derive(Clone, Debug)]
pub struct Options {
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Live view refresh period.
    pub interval: Duration,
    /// Write the summary as JSON here.
    pub json: Option<PathBuf>,
    /// Write a Perfetto-readable trace here.
    pub export: Option<PathBuf>,
    /// Write every event record as a JSON line here.
    pub events: Option<PathBuf>,
    /// Live view style.
    pub view: View,
    /// Initial sort column.
    pub sort: SortKey,
    /// Print the probes' diagnostics.
    pub verbose: bool,
    /// Which futexscope markers of the target to attach (`None`: none).
    pub markers: Option<MarkerSet>,
    /// Bytes of the event ring buffer (a power of two, at least 4096).
    pub buffer_size: u32,
}

/// Why a session failed. [`TraceError::exit_code`] gives the documented exit code.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// Not privileged enough to load eBPF programs.
    #[error(
        "permission denied: loading eBPF programs needs root, or the capabilities CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN){missing}"
    )]
    NotPermitted {
        /// Which capabilities are missing, as a `: missing …` suffix, or empty.
        missing: String,
    },
    /// The kernel has no BPF system call.
    #[error(
        "this kernel has no BPF support (the `bpf` system call is missing): run futexscope on a kernel built with CONFIG_BPF_SYSCALL=y"
    )]
    NoBpf(#[source] LoadError),
    /// The probes could not be loaded for another reason.
    #[error("cannot load futexscope's eBPF probes")]
    Load(#[source] LoadError),
    /// The process to attach to does not exist.
    #[error("no such process: {0} (check the pid with `ps`)")]
    NoSuchPid(u32),
    /// The command could not be started.
    #[error("cannot start the command: check its name, `PATH` and its execute permission")]
    Spawn(#[from] SpawnError),
    /// An output file could not be written.
    #[error("cannot write `{path}`")]
    Output {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// Reading the probes' maps failed.
    #[error("cannot read the probes' statistics")]
    Read(#[source] LoadError),
    /// The terminal could not be set up or drawn on.
    #[error("cannot draw the live view on the terminal (use `--view plain`)")]
    Terminal(#[source] io::Error),
}

/// Exit codes, documented in `futexscope --help` and docs/tracer.md.
pub mod exit_code {
    /// Other failure (reading the probes' maps, the terminal).
    pub const FAILURE: u8 = 1;
    /// Command line error (from clap).
    pub const USAGE: u8 = 2;
    /// `list`: the file or process cannot be read.
    pub const CANNOT_READ: u8 = 66;
    /// An output file (`--json`, `--export`, `--events`) could not be written.
    pub const OUTPUT: u8 = 74;
    /// Not root and missing CAP_BPF/CAP_PERFMON/CAP_SYS_ADMIN.
    pub const NOT_PERMITTED: u8 = 77;
    /// The kernel has no BPF support, or rejected the probes.
    pub const NO_BPF: u8 = 69;
    /// `attach PID`: no such process.
    pub const NO_SUCH_PID: u8 = 64 + 3;
    /// `run`: `--duration` elapsed before the command exited (it was sent SIGTERM).
    pub const TIMED_OUT: u8 = 124;
    /// `run`: interrupted (Ctrl-C or SIGTERM); the command was sent SIGINT.
    pub const INTERRUPTED: u8 = 130;
    /// `run`: the command was found but could not be executed.
    pub const CANNOT_EXECUTE: u8 = 126;
    /// `run`: the command was not found.
    pub const NOT_FOUND: u8 = 127;
}

impl TraceError {
    /// The exit code this error ends futexscope with.
    pub fn exit_code(&self) -> u8 {
        match self {
            TraceError::NotPermitted { .. } => exit_code::NOT_PERMITTED,
            TraceError::NoBpf(_) | TraceError::Load(_) => exit_code::NO_BPF,
            TraceError::NoSuchPid(_) => exit_code::NO_SUCH_PID,
            TraceError::Spawn(SpawnError::Exec { source, .. })
                if source.kind() == io::ErrorKind::NotFound =>
            {
                exit_code::NOT_FOUND
            }
            TraceError::Spawn(_) => exit_code::CANNOT_EXECUTE,
            TraceError::Output { .. } => exit_code::OUTPUT,
            TraceError::Read(_) | TraceError::Terminal(_) => exit_code::FAILURE,
        }
    }
}

/// What a finished session reports.
#[derive(Debug)]
pub struct Outcome {
    /// The final summary (already printed).
    pub summary: Summary,
    /// Whether the session attached to a running process (`attach`) rather than starting a
    /// command (`run`, `demo`).
    pub attached: bool,
}

impl Outcome {
    /// The exit code: for `run`, the command's own status (128 + signal if killed, 124 if the
    /// duration elapsed first); otherwise 0.
    pub fn exit_code(&self) -> u8 {
        match self.summary.ending {
            Ending::Exited { code } => code as u8,
            Ending::Killed { signal } => 128 + signal as u8,
            Ending::Duration if !self.attached => exit_code::TIMED_OUT,
            Ending::Interrupted if !self.attached => exit_code::INTERRUPTED,
            _ => 0,
        }
    }
}

/// How often the ring buffer is drained at the latest; the probes wake the tracer sooner once
/// the buffer is a quarter full.
const DRAIN_PERIOD: Duration = Duration::from_millis(100);

/// Set by SIGINT/SIGTERM.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_interrupt(_signal: libc::c_int) {
    // Relaxed: the flag carries no data; the loop only needs to see it eventually.
    INTERRUPTED.store(true, Ordering::Relaxed);
}

fn install_interrupt_handler() {
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: a zeroed sigaction is valid; the handler only stores to an atomic, which is
        // async-signal-safe; `sa_mask` is initialised by sigemptyset.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_interrupt as *const () as usize;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
    }
}

/// Capabilities that allow loading tracing eBPF programs.
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Checks the effective capabilities before trying: a clear message naming what is missing.
fn check_privileges() -> Result<(), TraceError> {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return Ok(());
    };
    let Some(effective) = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
    else {
        return Ok(());
    };
    let has = |cap: u32| effective & (1 << cap) != 0;
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)) {
        return Ok(());
    }
    let missing: Vec<&str> = [(CAP_BPF, "CAP_BPF"), (CAP_PERFMON, "CAP_PERFMON")]
        .into_iter()
        .filter(|&(cap, _)| !has(cap))
        .map(|(_, name)| name)
        .collect();
    Err(TraceError::NotPermitted {
        missing: format!(": missing {} and CAP_SYS_ADMIN", missing.join(", ")),
    })
}

/// The errno of the first OS error in `err`'s source chain.
fn os_errno(err: &(dyn std::error::Error + 'static)) -> Option<i32> {
    let mut current = Some(err);
    while let Some(err) = current {
        if let Some(io) = err.downcast_ref::<io::Error>()
            && let Some(errno) = io.raw_os_error()
        {
            return Some(errno);
        }
        current = err.source();
    }
    None
}

fn load_probes(verbose: bool, ring_buffer_bytes: u32) -> Result<Probes, TraceError> {
    check_privileges()?;
    let options = ProbeOptions {
        ring_buffer_bytes,
        verbose,
        ..ProbeOptions::default()
    };
    Probes::load_with(&options).map_err(|err| match os_errno(&err) {
        Some(libc::EPERM | libc::EACCES) => TraceError::NotPermitted {
            missing: String::new(),
        },
        Some(libc::ENOSYS) => TraceError::NoBpf(err),
        _ => match err {
            LoadError::NotPermitted(_) => TraceError::NotPermitted {
                missing: String::new(),
            },
            err => TraceError::Load(err),
        },
    })
}

/// The process (tgid) of thread or process `id`, if it exists and has not exited.
fn process_of(id: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{id}/status")).ok()?;
    let tgid = status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))?
        .trim()
        .parse()
        .ok()?;
    process_alive(tgid).then_some(tgid)
}

fn process_alive(pid: u32) -> bool {
    // A zombie still has a /proc entry; its state is `Z`.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !matches!(rest.trim_start().chars().next(), Some('Z' | 'X'))),
        Err(_) => false,
    }
}

/// The exit of our child `pid` if it has exited (reaped), without blocking.
fn child_ending(pid: libc::pid_t) -> Option<Ending> {
    let mut status = 0;
    // SAFETY: non-blocking wait for our own child with a valid status pointer.
    let ret = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
    if ret != pid {
        return None;
    }
    Some(if libc::WIFSIGNALED(status) {
        Ending::Killed {
            signal: libc::WTERMSIG(status),
        }
    } else {
        Ending::Exited {
            code: libc::WEXITSTATUS(status),
        }
    })
}

/// Stops our child `pid` with `signal` (SIGKILL if it is still there after 2 s) and reaps it.
fn stop_child(pid: libc::pid_t, signal: libc::c_int) {
    // SAFETY: signalling our own child, not yet reaped, so the pid is still ours.
    unsafe { libc::kill(pid, signal) };
    let deadline = Instant::now() + Duration::from_secs(2);
    while child_ending(pid).is_none() {
        if Instant::now() >= deadline {
            // SAFETY: as above; then a blocking reap of our own child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, std::ptr::null_mut(), 0);
            }
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Where event records go: counted, written as JSON lines, kept for export.
pub struct EventSink {
    count: u64,
    /// The semaphore the markers named for each futex word.
    semaphores: HashMap<FutexKey, u64>,
    lines: Option<(PathBuf, BufWriter<File>)>,
    recorder: Option<Recorder>,
}

impl EventSink {
    fn new(options: &Options) -> Result<EventSink, TraceError> {
        let lines = match &options.events {
            Some(path) => Some((path.clone(), BufWriter::new(create(path)?))),
            None => None,
        };
        Ok(EventSink {
            count: 0,
            semaphores: HashMap::new(),
            lines,
            recorder: options.export.as_ref().map(|_| Recorder::default()),
        })
    }

    /// Takes one event record.
    pub fn push(&mut self, event: &Event) -> Result<(), TraceError> {
        self.count += 1;
        if let Some((word, semaphore)) = report::semaphore_of_word(event) {
            self.semaphores.insert(word, semaphore);
        }
        if let Some((path, out)) = &mut self.lines {
            export::write_event_line(out, event).map_err(|source| TraceError::Output {
                path: path.clone(),
                source,
            })?;
        }
        if let Some(recorder) = &mut self.recorder {
            recorder.push(event);
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), TraceError> {
        if let Some((path, out)) = &mut self.lines {
            out.flush().map_err(|source| TraceError::Output {
                path: path.clone(),
                source,
            })?;
        }
        Ok(())
    }
}

fn create(path: &PathBuf) -> Result<File, TraceError> {
    File::create(path).map_err(|source| TraceError::Output {
        path: path.clone(),
        source,
    })
}

/// Traces `target` until it exits, `duration` elapses or the user interrupts, then prints
/// the summary and writes the requested files.
pub fn trace(target: &Target, options: &Options) -> Result<Outcome, TraceError> {
    // A thread id names its whole process: futexes are traced per process.
    let target = &match target {
        Target::Pid(pid) => Target::Pid(process_of(*pid).ok_or(TraceError::NoSuchPid(*pid))?),
        other => other.clone(),
    };
    let mut probes = load_probes(options.verbose, options.buffer_size)?;
    // Output files are created before tracing starts, so a bad path fails at once.
    let mut sink = EventSink::new(options)?;
    let export_file = options
        .export
        .as_ref()
        .map(|path| create(path).map(|f| (path.clone(), f)))
        .transpose()?;
    let json_file = options
        .json
        .as_ref()
        .map(|path| create(path).map(|f| (path.clone(), f)))
        .transpose()?;
    install_interrupt_handler();
    let target_name = match target {
        Target::Command(argv) => argv.join(" "),
        Target::Pid(pid) => command_line(*pid).unwrap_or_else(|| format!("pid {pid}")),
    };
    // The view comes first, so nothing fails between starting the command and tracing it.
    let mut live = Live::new(
        options.view,
        options.sort,
        io::stdout().is_terminal(),
        target_name.clone(),
    )
    .map_err(TraceError::Terminal)?;

    let mut notes: Vec<String> = Vec::new();
    let mut note = |live: &mut Live, text: String| {
        live.note(&text);
        notes.push(text);
    };
    for syscall in probes.syscalls().iter().filter(|s| !s.present) {
        note(
            &mut live,
            format!(
                "this kernel has no `{}` system call: nothing can call it, so nothing is missed",
                syscall.name
            ),
        );
    }
    if !probes.follows_forks() {
        note(
            &mut live,
            "the kernel's BTF does not describe `task_struct`: children of the traced process are not followed".to_owned(),
        );
    }

    let mut markers = Attached::default();
    let (root_pid, child) = match target {
        Target::Command(argv) => {
            // Markers first: the program hits them from its first instruction on.
            if let Some(set) = options.markers
                && let Some(program) = attach::resolve_program(&argv[0])
                && let Err(err) =
                    attach::attach_file(&mut probes, &program, &program, set, &mut markers)
            {
                markers.failed = true;
                note(
                    &mut live,
                    format!(
                        "cannot attach to the markers of `{}`: {}; tracing futex calls only",
                        program.display(),
                        chain(&err)
                    ),
                );
            }
            let gated = GatedChild::spawn(argv)?;
            let pid = gated.pid();
            probes.trace_tgid(pid).map_err(TraceError::Load)?;
            let child = gated.start(&argv[0])?;
            (pid, Some(child))
        }
        Target::Pid(pid) => {
            if let Some(set) = options.markers
                && let Err(err) = attach::attach_process(&mut probes, *pid, set, &mut markers)
            {
                markers.failed = true;
                note(
                    &mut live,
                    format!(
                        "cannot attach to the markers of process {pid}: {}; tracing futex calls only",
                        chain(&err)
                    ),
                );
            }
            probes.trace_tgid(*pid).map_err(TraceError::Load)?;
            (*pid, None)
        }
    };
    let started = Instant::now();
    for skipped in &markers.skipped {
        note(&mut live, format!("marker site skipped: {skipped}"));
    }
    if options.markers.is_none() {
        note(
            &mut live,
            "--no-markers: tracing futex calls only".to_owned(),
        );
    } else if markers.sites == 0 && !markers.failed {
        note(
            &mut live,
            "no futexscope markers found: tracing futex calls only (every lock's waits and wakes, without semaphore names or tokens)".to_owned(),
        );
    } else if markers.sites > 0 {
        let which = match options.markers {
            Some(MarkerSet::Essential) => "acquired and timed_out; --all-markers attaches all six",
            _ => "all six kinds",
        };
        note(
            &mut live,
            format!(
                "{} futexscope marker sites attached ({which})",
                markers.sites
            ),
        );
    }
    let mut symbolizer = Symbolizer::default();
    let _ = symbolizer.refresh(root_pid);
    let mut labels: HashMap<FutexKey, String> = HashMap::new();
    let mut process_names = HashMap::from([(root_pid, target_name.clone())]);
    let mut next_tick = started + options.interval;
    let mut sink_error = None;
    let mut drain = |probes: &mut Probes, sink: &mut EventSink| {
        probes.read_events(|event| {
            if let Err(err) = sink.push(event)
                && sink_error.is_none()
            {
                sink_error = Some(err);
            }
        });
    };

    let ending = loop {
        drain(&mut probes, &mut sink);
        if INTERRUPTED.load(Ordering::Relaxed) {
            break Ending::Interrupted;
        }
        if let Some(pid) = child {
            if let Some(ending) = child_ending(pid) {
                break ending;
            }
        } else if !process_alive(root_pid) {
            break Ending::Gone;
        }
        let now = Instant::now();
        if options.duration.is_some_and(|d| now >= started + d) {
            break Ending::Duration;
        }
        if live.poll_quit().map_err(TraceError::Terminal)? {
            break Ending::Interrupted;
        }
        if now >= next_tick {
            next_tick += options.interval;
            let stats = probes.futex_stats().map_err(TraceError::Read)?;
            let drops = probes.drops().map_err(TraceError::Read)?;
            label_new_words(&stats, &sink.semaphores, &mut symbolizer, &mut labels);
            name_new_processes(&stats, &mut process_names);
            let rows = report::rows(&stats, &labels);
            live.update(
                started.elapsed().as_secs_f64(),
                rows,
                sink.count,
                &drops_of(drops),
            )
            .map_err(TraceError::Terminal)?;
        }
        // Not a wakeup per record: the traced program must not pay for waking the tracer at
        // every futex call, nor lose a CPU to it. The probes wake it once the ring buffer is a
        // quarter full; otherwise it drains every DRAIN_PERIOD.
        probes
            .wait_for_wakeup(DRAIN_PERIOD.min(next_tick.saturating_duration_since(Instant::now())))
            .map_err(|err| TraceError::Read(LoadError::Wakeups(err)))?;
        probes.drain_log();
    };
    live.close().map_err(TraceError::Terminal)?;
    if let Some(pid) = child {
        match ending {
            Ending::Duration => stop_child(pid, libc::SIGTERM),
            Ending::Interrupted => stop_child(pid, libc::SIGINT),
            _ => {}
        }
    }
    drain(&mut probes, &mut sink);
    if let Some(err) = sink_error {
        return Err(err);
    }

    let seconds = started.elapsed().as_secs_f64();
    let stats = probes.futex_stats().map_err(TraceError::Read)?;
    let drops = drops_of(probes.drops().map_err(TraceError::Read)?);
    label_new_words(&stats, &sink.semaphores, &mut symbolizer, &mut labels);
    name_new_processes(&stats, &mut process_names);
    let mut futexes = report::rows(&stats, &labels);
    report::sort_rows(&mut futexes, SortKey::Waits);
    let traced = probes.traced_tgids().unwrap_or_default();
    let others: BTreeSet<u32> = traced
        .into_iter()
        .chain(futexes.iter().map(|r| r.tgid))
        .filter(|&pid| pid != root_pid)
        .collect();
    let summary = Summary {
        target: target_name,
        pids: std::iter::once(root_pid).chain(others).collect(),
        seconds,
        ending,
        events: sink.count,
        drops,
        notes,
        futexes,
    };
    // A closed stdout (`| head`) must not lose the output files: ignore write errors here.
    let mut stdout = io::stdout().lock();
    let _ = stdout.write_all(render::summary(&summary).as_bytes());
    let _ = stdout.flush();
    drop(stdout);

    sink.finish()?;
    if let Some((path, mut file)) = json_file {
        file.write_all((summary.to_json() + "\n").as_bytes())
            .map_err(|source| TraceError::Output { path, source })?;
    }
    if let (Some((path, file)), Some(recorder)) = (export_file, &sink.recorder) {
        let format = export::Format::for_path(&path);
        recorder
            .timeline(&labels, &process_names)
            .write(&mut BufWriter::new(file), format)
            .map_err(|source| TraceError::Output { path, source })?;
    }
    Ok(Outcome {
        summary,
        attached: matches!(target, Target::Pid(_)),
    })
}

fn drops_of(counts: DropCounts) -> Drops {
    Drops {
        ring_buffer_full: counts.ring_buffer_full,
        map_full: counts.map_full,
    }
}

/// An error and its causes on one line.
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Names the processes owning `stats`' words by their command lines, for the export's process
/// tracks, once each; a process that exited before it was seen is named `pid N`.
fn name_new_processes(
    stats: &[(FutexKey, futexscope_probes_common::maps::FutexStats)],
    names: &mut HashMap<u32, String>,
) {
    for (key, _) in stats {
        if let Entry::Vacant(entry) = names.entry(key.tgid) {
            entry.insert(command_line(key.tgid).unwrap_or_else(|| format!("pid {}", key.tgid)));
        }
    }
}

/// A process's command line, its arguments joined by spaces; `None` once it has exited.
fn command_line(pid: u32) -> Option<String> {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<_> = raw
        .split(|&byte| byte == 0)
        .filter(|arg| !arg.is_empty())
        .map(String::from_utf8_lossy)
        .collect();
    (!args.is_empty()).then(|| args.join(" "))
}

/// Names the words that have no name yet, re-reading the mappings of their processes first.
fn label_new_words(
    stats: &[(FutexKey, futexscope_probes_common::maps::FutexStats)],
    semaphores: &HashMap<FutexKey, u64>,
    symbolizer: &mut Symbolizer,
    labels: &mut HashMap<FutexKey, String>,
) {
    let unnamed: BTreeSet<u32> = stats
        .iter()
        .filter(|(key, _)| {
            labels
                .get(&report::normalized(*key))
                .is_none_or(String::is_empty)
        })
        .map(|(key, _)| key.tgid)
        .collect();
    for pid in unnamed {
        // A process that has exited keeps the names its last mappings gave.
        let _ = symbolizer.refresh(pid);
    }
    for (key, _) in stats {
        let key = report::normalized(*key);
        if labels.get(&key).is_none_or(String::is_empty) {
            let semaphore = semaphores
                .get(&key)
                .map(|&address| (address, symbolizer.resolve(key.tgid, address)));
            labels.insert(
                key,
                report::label(symbolizer.resolve(key.tgid, key.uaddr), semaphore),
            );
        }
    }
}
