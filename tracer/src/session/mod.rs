//! One tracing session: a [`Session`] loads the probes and starts or attaches to its target
//! ([`Session::start`]), moves records through the pipeline and refreshes the live view
//! ([`Session::tick`]), and ends with the summary and the output files ([`Session::finish`]).

mod error;
mod options;
mod records;

use std::{
    collections::BTreeSet,
    fs::File,
    io::{self, BufWriter, IsTerminal, Write},
    path::{Path, PathBuf},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

pub use error::{TraceError, exit_code};
pub use options::{Options, Outcome, Target};
use records::{RecordSink, window_note};

use crate::{
    aggregate::{
        labels::Labels,
        stacks::{StackBook, StackReport},
        table::{self, SortKey},
    },
    collect::{
        ebpf::{LoadError, ProbeOptions, Probes},
        markers::{self, Attached, MarkerSet},
        procfs,
        spawn::{self, Exit, GatedChild},
        unwind::Unwinders,
    },
    decode::{self, CallStack, Record, WordKey},
    errors::{self, Chain},
    output::{
        export,
        live::Live,
        pprof, stacks as stack_output,
        summary::{Ending, Summary},
        text,
    },
};

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

/// Checks the effective capabilities before trying: a clear message naming what is missing.
pub(crate) fn check_privileges() -> Result<(), TraceError> {
    use procfs::capability::{BPF, PERFMON, SYS_ADMIN};
    let Some(effective) = procfs::effective_capabilities() else {
        return Ok(());
    };
    let has = |cap: u32| effective & (1 << cap) != 0;
    if has(SYS_ADMIN) || (has(BPF) && has(PERFMON)) {
        return Ok(());
    }
    let missing: Vec<&str> = [(BPF, "CAP_BPF"), (PERFMON, "CAP_PERFMON")]
        .into_iter()
        .filter(|&(cap, _)| !has(cap))
        .map(|(_, name)| name)
        .collect();
    Err(TraceError::NotPermitted {
        missing: format!(": missing {} and CAP_SYS_ADMIN", missing.join(", ")),
    })
}

fn load_probes(options: &Options) -> Result<Probes, TraceError> {
    check_privileges()?;
    let probe_options = ProbeOptions {
        ring_buffer_bytes: options.buffer_size,
        follow_forks: options.children,
        verbose: options.verbose,
        stacks: options.stacks,
        stack_ring_bytes: options.stack_buffer_size,
        ..ProbeOptions::default()
    };
    Probes::load_with(&probe_options).map_err(|err| match err {
        LoadError::NotPermitted(_) => TraceError::NotPermitted {
            missing: String::new(),
        },
        err if errors::errno(&err) == Some(libc::ENOSYS) => TraceError::NoBpf(err),
        err => TraceError::Load(err),
    })
}

fn create(path: &Path) -> Result<(PathBuf, File), TraceError> {
    match File::create(path) {
        Ok(file) => Ok((path.to_owned(), file)),
        Err(source) => Err(TraceError::Output {
            path: path.to_owned(),
            source,
        }),
    }
}

/// The process a session traces.
struct Traced {
    /// The command or attached process.
    pid: u32,
    /// How it is shown: the command line.
    name: String,
    /// Our child, if the session started it (`run`, `demo`).
    child: Option<libc::pid_t>,
}

/// A tracing session in progress.
pub struct Session {
    options: Options,
    probes: Probes,
    traced: Traced,
    live: Live,
    notes: Vec<String>,
    records: RecordSink,
    /// The first error writing a record, reported when the session ends.
    record_error: Option<TraceError>,
    labels: Labels,
    json_file: Option<(PathBuf, File)>,
    /// The call stacks (`--stacks`): walked, then booked.
    stacks: Option<(Unwinders, StackBook)>,
    /// `--folded` and `--flamegraph`, created at start.
    folded_file: Option<(PathBuf, File)>,
    flamegraph_file: Option<(PathBuf, File)>,
    /// `--pprof`, created at start.
    pprof_file: Option<(PathBuf, File)>,
    /// When tracing started, for the pprof profile.
    started_unix_ns: u64,
    started: Instant,
    next_tick: Instant,
}

impl Session {
    /// Loads the probes, creates the output files, starts the live view, attaches to the
    /// target's markers and starts (or starts tracing) the target.
    pub fn start(target: &Target, options: Options) -> Result<Session, TraceError> {
        // First: a Ctrl-C while the probes load ends the session at its first tick, with the
        // summary, instead of killing futexscope.
        install_interrupt_handler();
        // A thread id names its whole process: futexes are traced per process.
        let target = match target {
            Target::Pid(pid) => {
                Target::Pid(procfs::process_of(*pid).ok_or(TraceError::NoSuchPid(*pid))?)
            }
            other => other.clone(),
        };
        let probes = load_probes(&options)?;
        // Output files are created before tracing starts, so a bad path fails at once.
        let records = RecordSink {
            count: 0,
            lines: options
                .events
                .as_deref()
                .map(create)
                .transpose()?
                .map(|(path, file)| (path, BufWriter::new(file))),
            export: options
                .export
                .as_deref()
                .map(create)
                .transpose()?
                .map(|(path, file)| {
                    let format = export::Format::for_path(&path);
                    export::Export::new(BufWriter::new(file), format)
                        .map(|export| (path.clone(), export))
                        .map_err(|source| TraceError::Output { path, source })
                })
                .transpose()?,
        };
        let json_file = options.json.as_deref().map(create).transpose()?;
        let report: Box<dyn Write> = match options.output.as_deref().map(create).transpose()? {
            Some((_, file)) => Box::new(BufWriter::new(file)),
            None => Box::new(io::stderr()),
        };
        let folded_file = options.folded.as_deref().map(create).transpose()?;
        let flamegraph_file = options.flamegraph.as_deref().map(create).transpose()?;
        let pprof_file = options.pprof.as_deref().map(create).transpose()?;
        let stacks = options
            .stacks
            .then(|| (Unwinders::default(), StackBook::default()));
        let name = match &target {
            Target::Command(argv) => argv.join(" "),
            Target::Pid(pid) => procfs::command_line(*pid).unwrap_or_else(|| format!("pid {pid}")),
        };
        // The view comes first, so nothing fails between starting the command and tracing it.
        let live = Live::new(
            options.view,
            options.sort,
            io::stderr().is_terminal(),
            name.clone(),
            report,
        )
        .map_err(TraceError::Terminal)?;
        let now = Instant::now();
        let mut session = Session {
            options,
            probes,
            traced: Traced {
                pid: 0,
                name,
                child: None,
            },
            live,
            notes: Vec::new(),
            records,
            record_error: None,
            labels: Labels::default(),
            json_file,
            stacks,
            folded_file,
            flamegraph_file,
            pprof_file,
            started_unix_ns: 0,
            started: now,
            next_tick: now,
        };
        session.note_missing_hooks();
        let attached = session.start_target(&target)?;
        session.started = Instant::now();
        session.started_unix_ns = unix_now_ns();
        session.next_tick = session.started + session.options.interval;
        session.note_markers(&attached);
        session.labels = Labels::new(session.traced.pid, session.traced.name.clone());
        Ok(session)
    }

    /// Runs the session to its end: ticks until the target ends, the duration elapses or the
    /// user stops it, then finishes.
    pub fn run(mut self) -> Result<Outcome, TraceError> {
        loop {
            if let Some(ending) = self.tick()? {
                return self.finish(ending);
            }
        }
    }

    /// One step: moves the records that arrived through the pipeline, checks whether the
    /// session is over, refreshes the view when an interval has passed, and waits for the next
    /// records (at most until the next drain or refresh). Returns how the session ended, if it
    /// has.
    pub fn tick(&mut self) -> Result<Option<Ending>, TraceError> {
        self.drain();
        if let Some(ending) = self.ending()? {
            return Ok(Some(ending));
        }
        if Instant::now() >= self.next_tick {
            self.next_tick += self.options.interval;
            self.refresh_view()?;
        }
        // Not a wakeup per record: the traced program must not pay for waking the tracer at
        // every futex call, nor lose a CPU to it. The probes wake it once the ring buffer is a
        // quarter full; otherwise it drains every DRAIN_PERIOD.
        let until_tick = self.next_tick.saturating_duration_since(Instant::now());
        self.probes
            .wait_for_wakeup(DRAIN_PERIOD.min(until_tick))
            .map_err(|err| TraceError::Read(LoadError::Wakeups(err)))?;
        self.probes.drain_log();
        Ok(None)
    }

    /// Ends the session: closes the view, stops a command that is still running, takes the
    /// last records, prints the summary and writes the output files.
    pub fn finish(mut self, ending: Ending) -> Result<Outcome, TraceError> {
        self.live.close().map_err(TraceError::Terminal)?;
        if let Some(pid) = self.traced.child {
            match ending {
                Ending::Duration => spawn::stop(pid, libc::SIGTERM),
                Ending::Interrupted => spawn::stop(pid, libc::SIGINT),
                _ => {}
            }
        }
        self.drain();
        if let Some(err) = self.record_error.take() {
            return Err(err);
        }
        let seconds = self.started.elapsed().as_secs_f64();
        let (mut futexes, drops) = self.snapshot()?;
        // The export ends now, with every label known, so that the summary can say what fell
        // out of its window.
        if let Some(note) = self
            .records
            .finish_export(&self.labels)?
            .and_then(window_note)
        {
            self.notes.push(note); // the view is closed: the summary shows it
        }
        table::sort_rows(&mut futexes, SortKey::Waits);
        let root = self.traced.pid;
        let others: BTreeSet<u32> = self
            .probes
            .traced_tgids()
            .unwrap_or_default()
            .into_iter()
            .chain(futexes.iter().flat_map(|row| row.pids.iter().copied()))
            .filter(|&pid| pid != root)
            .collect();
        let stack_report = self
            .stacks
            .take()
            .map(|(unwinders, book)| book.report(unwinders.modules()));
        if let Some(report) = &stack_report {
            stack_output::label_by_site(&mut futexes, &stack_output::sites(report));
        }
        let summary = Summary {
            target: self.traced.name.clone(),
            pids: std::iter::once(root).chain(others).collect(),
            seconds,
            ending,
            events: self.records.count,
            drops,
            notes: std::mem::take(&mut self.notes),
            futexes,
        };
        let mut report = text::summary(&summary);
        if let Some(stacks) = &stack_report {
            report += &stack_output::summary(stacks, word_label(&summary));
        }
        self.live.print(&report);
        self.write_files(&summary, stack_report.as_ref())?;
        Ok(Outcome {
            summary,
            attached: self.traced.child.is_none(),
        })
    }

    /// Starts tracing `target`, attaching to its markers first; returns what attaching did
    /// (`None` if it failed: a note says why).
    fn start_target(&mut self, target: &Target) -> Result<Option<Attached>, TraceError> {
        let set = self.options.markers;
        let (attached, failure) = match target {
            Target::Command(argv) => {
                // Markers first: the program hits them from its first instruction on.
                let program = markers::resolve_program(&argv[0]);
                let result = match (set, &program) {
                    (Some(set), Some(program)) => {
                        markers::attach_file(&mut self.probes, program, program, set)
                    }
                    _ => Ok(Attached::default()),
                };
                let gated = GatedChild::spawn(argv)?;
                self.traced.pid = gated.pid();
                self.probes
                    .trace_tgid(self.traced.pid)
                    .map_err(TraceError::Load)?;
                self.traced.child = Some(gated.start(&argv[0])?);
                let shown = program.map_or_else(|| argv[0].clone(), |p| p.display().to_string());
                split(result, || format!("the markers of `{shown}`"))
            }
            Target::Pid(pid) => {
                self.traced.pid = *pid;
                let pids = self.trace_tree(*pid)?;
                let result = match set {
                    Some(set) => markers::attach_processes(&mut self.probes, &pids, set),
                    None => Ok(Attached::default()),
                };
                split(result, || format!("the markers of process {pid}"))
            }
        };
        if let Some(failure) = failure {
            self.note(format!(
                "cannot attach to {failure}; tracing futex calls only"
            ));
        }
        Ok(attached)
    }

    /// Traces process `pid` and, unless told not to, the children, grandchildren… it has now
    /// (those it starts later are followed by the probes); says how many. Returns them all,
    /// `pid` first.
    fn trace_tree(&mut self, pid: u32) -> Result<Vec<u32>, TraceError> {
        let mut pids = vec![pid];
        self.probes.trace_tgid(pid).map_err(TraceError::Load)?;
        if !self.options.children {
            self.note(format!(
                "--no-children: tracing process {pid} alone, not the processes it starts"
            ));
            return Ok(pids);
        }
        // Until no new one appears: a descendant not yet traced may fork meanwhile.
        loop {
            let new: Vec<u32> = procfs::descendants(pid)
                .into_iter()
                .filter(|child| !pids.contains(child))
                .collect();
            if new.is_empty() {
                break;
            }
            for &child in &new {
                // One that exited meanwhile is simply not traced.
                let _ = self.probes.trace_tgid(child);
            }
            pids.extend(new);
        }
        self.note(match pids.len() - 1 {
            0 => format!("tracing process {pid}; it has no children now"),
            1 => format!("tracing process {pid} and its child (2 processes)"),
            n => format!(
                "tracing process {pid} and its {n} descendants ({} processes)",
                n + 1
            ),
        });
        Ok(pids)
    }

    fn note_missing_hooks(&mut self) {
        let absent: Vec<&str> = self
            .probes
            .syscalls()
            .iter()
            .filter(|s| !s.present)
            .map(|s| s.name)
            .collect();
        for name in absent {
            self.note(format!(
                "this kernel has no `{name}` system call: nothing can call it, so nothing is missed"
            ));
        }
        if !self.probes.keys_shared_futexes() {
            self.note(
                "futexes in shared memory are keyed by process (no BTF offsets for `vm_area_struct`, or raw syscall hooks): a wake in one process is not paired with a wait in another".to_owned(),
            );
        }
        if !self.probes.follows_forks() {
            self.note(
                "the kernel's BTF does not describe `task_struct`: children of the traced process are not followed".to_owned(),
            );
        }
    }

    /// Says which markers were attached, or why none were.
    fn note_markers(&mut self, attached: &Option<Attached>) {
        let Some(attached) = attached else {
            return; // attaching failed, and the note says why
        };
        for skipped in &attached.skipped {
            self.note(format!("marker site skipped: {skipped}"));
        }
        match self.options.markers {
            None => self.note("--no-markers: tracing futex calls only".to_owned()),
            Some(_) if attached.sites == 0 => self.note(
                "no futexscope markers found: tracing futex calls only (every lock's waits and wakes, without semaphore names or tokens)".to_owned(),
            ),
            Some(set) => {
                let which = match set {
                    MarkerSet::Essential => {
                        "acquired and timed_out; --all-markers attaches all six"
                    }
                    MarkerSet::All => "all six kinds",
                };
                self.note(format!(
                    "{} futexscope marker sites attached ({which})",
                    attached.sites
                ));
            }
        }
    }

    /// Tells the user something about the session now, and again in the summary.
    fn note(&mut self, text: String) {
        self.live.note(&text);
        self.notes.push(text);
    }

    /// Takes every record in the ring buffer through the decoder to the labels and the sink.
    fn drain(&mut self) {
        let Session {
            probes,
            records,
            labels,
            record_error,
            stacks,
            ..
        } = self;
        // Stacks first: the pairing finds a call's stack when the call's record comes out of
        // its window.
        if let Some((unwinders, book)) = stacks {
            probes.read_stacks(|record| {
                let call = CallStack::decode(record, unwinders.unwind(record));
                let (tid, end_ns) = (call.thread.tid, call.end_ns);
                let id = book.push_stack(call);
                if let Some((_, export)) = &mut records.export {
                    let frames = book.frames(id, unwinders.modules());
                    export.add_stack(tid, end_ns, export::CallStack { id, frames });
                }
            });
        }
        probes.read_events(|event| {
            let Some(record) = Record::decode(event) else {
                return;
            };
            labels.learn(&record);
            if let Some((_, book)) = stacks {
                book.push_record(&record);
            }
            if let Err(err) = records.push(&record) {
                record_error.get_or_insert(err);
            }
        });
        if let Err(err) = records.write_ready(labels) {
            record_error.get_or_insert(err);
        }
    }

    /// How the session ended, if it has.
    fn ending(&mut self) -> Result<Option<Ending>, TraceError> {
        if INTERRUPTED.load(Ordering::Relaxed) {
            return Ok(Some(Ending::Interrupted));
        }
        match self.traced.child {
            Some(pid) => {
                if let Some(exit) = spawn::try_exit(pid) {
                    return Ok(Some(match exit {
                        Exit::Code(code) => Ending::Exited { code },
                        Exit::Signal(signal) => Ending::Killed { signal },
                    }));
                }
            }
            None if !procfs::process_alive(self.traced.pid) => return Ok(Some(Ending::Gone)),
            None => {}
        }
        if (self.options.duration).is_some_and(|d| self.started.elapsed() >= d) {
            return Ok(Some(Ending::Duration));
        }
        if self.live.poll_quit().map_err(TraceError::Terminal)? {
            return Ok(Some(Ending::Interrupted));
        }
        Ok(None)
    }

    /// Reads the totals and the users of shared words, names what is new, and returns the rows
    /// (unsorted) with the drops.
    fn snapshot(&mut self) -> Result<(Vec<table::Row>, crate::collect::ebpf::Drops), TraceError> {
        let stats = self.probes.futex_stats().map_err(TraceError::Read)?;
        let users = decode::word_users(&self.probes.word_users().map_err(TraceError::Read)?);
        let drops = self.probes.drops().map_err(TraceError::Read)?;
        self.labels.update(&stats, &users);
        Ok((table::rows(&stats, &users, self.labels.words()), drops))
    }

    /// Reads the totals and shows them.
    fn refresh_view(&mut self) -> Result<(), TraceError> {
        let (mut rows, drops) = self.snapshot()?;
        // Not for `--view quiet`: looking up new frames stalls the drain. Only the frames of
        // each word's dominant waiter stack (its label) and of the word opened in the view.
        let (sites, opened) = match (self.live.shows_rows(), self.stacks.as_mut()) {
            (true, Some((unwinders, book))) => (
                Some(book.sites(unwinders.modules())),
                self.live
                    .opened()
                    .map(|word| book.word(word, unwinders.modules())),
            ),
            _ => (None, None),
        };
        if let Some(sites) = &sites {
            stack_output::label_by_site(&mut rows, sites);
        }
        self.live
            .update(
                self.started.elapsed().as_secs_f64(),
                rows,
                self.records.count,
                &drops,
            )
            .map_err(TraceError::Terminal)?;
        if let Some(stacks) = opened {
            self.live.set_stacks(stacks).map_err(TraceError::Terminal)?;
        }
        Ok(())
    }

    /// Writes the JSON summary (with the stacks, if captured), the rest of the event lines and
    /// the stack files.
    fn write_files(
        &mut self,
        summary: &Summary,
        stacks: Option<&StackReport>,
    ) -> Result<(), TraceError> {
        self.records.flush()?;
        if let Some((path, mut file)) = self.json_file.take() {
            let json = match stacks {
                Some(report) => {
                    let mut value =
                        serde_json::to_value(summary).expect("a summary always serializes");
                    stack_output::add_to_json(&mut value, &summary.futexes, report);
                    serde_json::to_string_pretty(&value).expect("JSON values serialize")
                }
                None => summary.to_json(),
            };
            file.write_all((json + "\n").as_bytes())
                .map_err(|source| TraceError::Output { path, source })?;
        }
        let Some(report) = stacks else {
            return Ok(());
        };
        let lines = stack_output::folded(report, word_label(summary));
        if let Some((path, mut file)) = self.folded_file.take() {
            let text: String = lines.iter().map(|line| format!("{line}\n")).collect();
            file.write_all(text.as_bytes())
                .map_err(|source| TraceError::Output { path, source })?;
        }
        if let Some((path, file)) = self.flamegraph_file.take() {
            stack_output::flamegraph(&lines, BufWriter::new(file))
                .map_err(|source| TraceError::Output { path, source })?;
        }
        if let Some((path, file)) = self.pprof_file.take() {
            let period = pprof::Period {
                start_unix_ns: self.started_unix_ns,
                duration_ns: self.started.elapsed().as_nanos() as u64,
            };
            pprof::write(
                report,
                word_label(summary),
                period,
                stack_output::SAMPLING,
                BufWriter::new(file),
            )
            .map_err(|source| TraceError::Output { path, source })?;
        }
        Ok(())
    }
}

/// What attaching markers gave, and, if it failed, a note naming `what` and why.
fn split<E: std::error::Error + 'static>(
    result: Result<Attached, E>,
    what: impl FnOnce() -> String,
) -> (Option<Attached>, Option<String>) {
    match result {
        Ok(attached) => (Some(attached), None),
        Err(err) => (None, Some(format!("{}: {}", what(), Chain(&err)))),
    }
}

/// Traces `target` until it exits, `duration` elapses or the user interrupts, then prints
/// the summary and writes the requested files.
pub fn trace(target: &Target, options: Options) -> Result<Outcome, TraceError> {
    Session::start(target, options)?.run()
}

/// Now, in ns since the Unix epoch.
fn unix_now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// The label of a word in the summary's rows, for the stack outputs.
fn word_label(summary: &Summary) -> impl Fn(&crate::aggregate::stacks::WordStacks) -> String {
    let labels: std::collections::HashMap<WordKey, String> = summary
        .futexes
        .iter()
        .map(|row| (row.word, row.label.clone()))
        .collect();
    move |word| labels.get(&word.word).cloned().unwrap_or_default()
}
