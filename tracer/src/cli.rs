//! The command line: subcommands and options (definitions only; `main.rs` runs them).

use std::{path::PathBuf, time::Duration};

use clap::{
    Args, Parser, Subcommand,
    builder::{PossibleValue, PossibleValuesParser, TypedValueParser},
};
use futexscope::{
    aggregate::table::SortKey, collect::markers::MarkerSet, output::live::View, session::Options,
};

/// What `--help` says about exit codes (docs/tracer.md has the same table).
const EXIT_CODES: &str = "\
Exit codes:
  run      the command's own exit status (128+N if killed by signal N),
           124 if --duration elapsed first (the command is sent SIGTERM),
           130 if interrupted by Ctrl-C or SIGTERM (the command is sent SIGINT)
  attach   0 when the process exits, --duration elapses or on Ctrl-C
  demo     0 when --duration elapses or on Ctrl-C
  list     0 if markers were found, 1 if none, 66 if BIN or PID cannot be read
  1    other failure (reading the probes' maps, drawing on the terminal)
  2    command line error
  67   attach: no such process
  69   the kernel has no BPF support or rejected the probes
  74   an output file (-o, --json, --export, --events, --folded, --flamegraph) cannot be written
  77   not permitted: needs root, or CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN)
  126  run: the command cannot be executed
  127  run: the command was not found";

/// See what futexes do inside real programs: every futex wait and wake of a process, with
/// waiter counts, spurious wakeups, timeout drift and wait times per futex word.
#[derive(Parser)]
#[command(version, about, after_help = EXIT_CODES)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Subcommand)]
pub enum Command {
    /// Start CMD and trace it (its threads and children); print the summary when it exits.
    #[command(after_help = EXIT_CODES, override_usage = "futexscope run [OPTIONS] -- CMD [ARGS]...")]
    Run {
        /// Tracing options.
        #[command(flatten)]
        trace: TraceArgs,
        /// The command and its arguments (after `--`).
        #[arg(required = true, trailing_var_arg = true, value_name = "CMD")]
        command: Vec<String>,
    },
    /// Trace a running process until it exits, Ctrl-C or --duration.
    #[command(after_help = EXIT_CODES, override_usage = "futexscope attach [OPTIONS] PID")]
    Attach {
        /// Tracing options.
        #[command(flatten)]
        trace: TraceArgs,
        /// The process id.
        pid: u32,
    },
    /// Trace the built-in demo: threads contending on futexscope semaphores (multi-token
    /// acquires, timeouts, a signal storm, a producer/consumer).
    #[command(after_help = EXIT_CODES)]
    Demo {
        /// Tracing options.
        #[command(flatten)]
        trace: TraceArgs,
    },
    /// List the futexscope markers of an executable or library, or of the files a running
    /// process maps, with their argument specs (like `bpftrace -l`).
    #[command(after_help = EXIT_CODES, override_usage = "futexscope list BIN|PID")]
    List {
        /// An ELF file, or a process id.
        #[arg(value_name = "BIN|PID")]
        target: String,
    },
    /// Run a fixed battery of futex experiments and report how this kernel's futexes behave.
    KernelReport {
        /// Also write the report as JSON to FILE.
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
        /// Run the short battery (seconds; coarse figures).
        #[arg(long)]
        quick: bool,
    },
    /// Compare kernel reports (JSON from `kernel-report --json`) side by side.
    KernelDiff {
        /// Show every row, not only those that differ.
        #[arg(long)]
        all: bool,
        /// Two or more report files; each column is named after its file (`6.12.json`: `6.12`).
        #[arg(required = true, num_args = 2..)]
        reports: Vec<PathBuf>,
    },
    /// Serve futex metrics of every process (or those selected) to Prometheus until SIGTERM
    /// or SIGINT: `/metrics` (OpenMetrics text) and `/healthz`. See docs/agent.md.
    #[command(after_help = EXIT_CODES)]
    Agent(AgentArgs),
    /// Run the demo's workload untraced until SIGINT/SIGTERM (what `demo` traces).
    #[command(hide = true)]
    DemoWorkload,
}

/// Options shared by `run`, `attach` and `demo`.
#[derive(Args, Clone)]
pub struct TraceArgs {
    /// Stop tracing after this long (e.g. `10s`, `500ms`, `2m`; a bare number is seconds).
    #[arg(short, long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Live view refresh period.
    #[arg(short, long, value_parser = parse_duration, default_value = "1s")]
    pub interval: Duration,
    /// Write the report (plain lines each interval and the summary) to FILE instead of
    /// stderr. futexscope never writes to stdout: it belongs to the traced command.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Write the summary as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write a trace ui.perfetto.dev opens to FILE: Chrome trace-event JSON if FILE ends in
    /// `.json`, else Perfetto protobuf (e.g. `trace.pftrace`).
    #[arg(long, value_name = "FILE")]
    pub export: Option<PathBuf>,
    /// Write every event record as one JSON object per line to FILE.
    #[arg(long, value_name = "FILE")]
    pub events: Option<PathBuf>,
    /// Live view: a full-screen table on a terminal (auto), plain text lines, or nothing.
    #[arg(long, value_parser = named(&View::ALL, View::describe), default_value = "auto")]
    pub view: View,
    /// Sort the table by this column (largest first); `s` cycles it in the full-screen view.
    #[arg(long, value_parser = named(&SortKey::ALL, SortKey::describe), default_value = "waits")]
    pub sort: SortKey,
    /// Do not attach to the futexscope markers: trace futex calls only (cheaper: each marker
    /// hit costs a uprobe trap).
    #[arg(long, conflicts_with = "all_markers")]
    pub no_markers: bool,
    /// Attach all six markers, not only `acquired` and `timed_out` (the others repeat what the
    /// futex hooks record; with this, `--events` and `--export` carry them too, at four more
    /// uprobe hits per sleeping hand-off).
    #[arg(long)]
    pub all_markers: bool,
    /// Size of the ring buffer the probes hand events over in (e.g. `16M`, `256K`; a power of
    /// two, at least 4K). Larger absorbs longer bursts; events that find it full are counted
    /// as dropped.
    #[arg(long, value_name = "SIZE", value_parser = parse_buffer_size, default_value = "16M")]
    pub buffer_size: u32,
    /// Print the probes' own diagnostics (a full map, markers out of order) to stderr.
    #[arg(short, long)]
    pub verbose: bool,
    /// Trace the command or process alone: not the children `attach` finds running, nor the
    /// processes it starts (by default the whole tree is traced).
    #[arg(long)]
    pub no_children: bool,
    /// Capture the call stack of every wait that slept and every wake that woke: the summary
    /// shows each busy word's top waiter and waker call sites, `--json` every word's stacks.
    #[arg(long)]
    pub stacks: bool,
    /// Write folded stacks of blocked time (waiter stacks, wait ns) to FILE, for flame graph
    /// tools and speedscope. Implies `--stacks`.
    #[arg(long, value_name = "FILE")]
    pub folded: Option<PathBuf>,
    /// Write a flame graph of blocked time by waiter stack to FILE (SVG). Implies `--stacks`.
    #[arg(long, value_name = "FILE.svg")]
    pub flamegraph: Option<PathBuf>,
    /// Write a pprof profile of blocked time to FILE (gzipped profile.proto: waiter stacks with
    /// `contentions` and `delay`, like Go's block profile) for `go tool pprof`, Pyroscope and
    /// Parca. Implies `--stacks`.
    #[arg(long, value_name = "FILE")]
    pub pprof: Option<PathBuf>,
    /// Size of the ring buffer stack records are handed over in (`--stacks`; a power of two,
    /// at least 32K; 8 KiB and a header per stack). Larger absorbs longer bursts; stacks that
    /// find it full are counted as dropped.
    #[arg(long, value_name = "SIZE", value_parser = parse_buffer_size, default_value = "8M")]
    pub stack_buffer_size: u32,
}

impl TraceArgs {
    /// The session options these arguments ask for.
    pub fn options(&self) -> Options {
        Options {
            duration: self.duration,
            interval: self.interval,
            output: self.output.clone(),
            json: self.json.clone(),
            export: self.export.clone(),
            events: self.events.clone(),
            view: self.view,
            sort: self.sort,
            verbose: self.verbose,
            markers: match (self.no_markers, self.all_markers) {
                (true, _) => None,
                (false, true) => Some(MarkerSet::All),
                (false, false) => Some(MarkerSet::Essential),
            },
            buffer_size: self.buffer_size,
            children: !self.no_children,
            stacks: self.stacks
                || self.folded.is_some()
                || self.flamegraph.is_some()
                || self.pprof.is_some(),
            folded: self.folded.clone(),
            flamegraph: self.flamegraph.clone(),
            pprof: self.pprof.clone(),
            stack_buffer_size: self.stack_buffer_size,
        }
    }
}

/// Parses a value among `all`, each named and described by `describe` (`--view`, `--sort`).
fn named<T: Copy + Send + Sync + 'static>(
    all: &'static [T],
    describe: fn(T) -> (&'static str, &'static str),
) -> impl TypedValueParser<Value = T> {
    let values = all.iter().map(move |&value| {
        let (name, about) = describe(value);
        PossibleValue::new(name).help(about)
    });
    PossibleValuesParser::new(values).map(move |name| {
        *all.iter()
            .find(|&&value| describe(value).0 == name)
            .expect("clap only accepts the listed names")
    })
}

/// Parses a ring buffer size: bytes, or a number with `K`, `M` or `G` (powers of 1024); it must
/// be a power of two from 4K to 1G.
pub fn parse_buffer_size(text: &str) -> Result<u32, String> {
    let text = text.trim();
    let (number, shift) = match text.char_indices().last() {
        Some((at, 'K' | 'k')) => (&text[..at], 10),
        Some((at, 'M' | 'm')) => (&text[..at], 20),
        Some((at, 'G' | 'g')) => (&text[..at], 30),
        _ => (text, 0),
    };
    let size = number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .ok_or(format!("`{text}` is not a size (try `16M` or `256K`)"))?;
    if !size.is_power_of_two() || !(4096..=1 << 30).contains(&size) {
        return Err(format!(
            "`{text}` is not a power of two from 4K to 1G (the kernel's ring buffers need one)"
        ));
    }
    Ok(size as u32)
}

/// Parses `10s`, `500ms`, `2m`, `1h`, `250us` or a bare number of seconds (fractions allowed).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration (try `10s` or `500ms`)"))?;
    let seconds = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1e3,
        "us" => value / 1e6,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        other => {
            return Err(format!(
                "unknown unit `{other}` in `{text}` (use h, m, s, ms or us)"
            ));
        }
    };
    Duration::try_from_secs_f64(seconds).map_err(|_| format!("`{text}` is out of range"))
}

/// A duration above zero (a period).
fn parse_nonzero_duration(text: &str) -> Result<Duration, String> {
    parse_duration(text).and_then(|d| {
        if d.is_zero() {
            Err(format!("`{text}` is zero: give a period, e.g. `15s`"))
        } else {
            Ok(d)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("5"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("abc").is_err());
        assert!(
            parse_duration("5 weeks")
                .unwrap_err()
                .contains("unknown unit")
        );
    }

    #[test]
    fn buffer_sizes_parse() {
        assert_eq!(parse_buffer_size("16M"), Ok(16 << 20));
        assert_eq!(parse_buffer_size("256k"), Ok(256 << 10));
        assert_eq!(parse_buffer_size("4096"), Ok(4096));
        assert_eq!(parse_buffer_size("1G"), Ok(1 << 30));
        for bad in ["3M", "2K", "2G", "lots", "", "-4K"] {
            assert!(parse_buffer_size(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}

/// The options of `futexscope agent`.
#[derive(Args)]
pub struct AgentArgs {
    /// Address to serve `/metrics` and `/healthz` on (labels name processes and locks: keep
    /// it on loopback or a private network).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9464")]
    pub listen: std::net::SocketAddr,
    /// Trace this process and its children (repeatable). Without --pid, --comm and --cgroup
    /// every process is traced.
    #[arg(long, value_name = "PID")]
    pub pid: Vec<u32>,
    /// Trace processes with this name (`comm`, 15 bytes), also those that start later, and
    /// their children until they run another program (repeatable).
    #[arg(long, value_name = "NAME")]
    pub comm: Vec<String>,
    /// Trace the processes of this cgroup v2 and the cgroups below it (a container, a systemd
    /// unit: `system.slice/nginx.service`): a directory under the cgroup v2 mount, or a cgroup
    /// path as `/proc/PID/cgroup` shows it (`/system.slice/nginx.service`), below the mount
    /// (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` on a hybrid layout). In a cgroup
    /// namespace (a container), as the namespace sees it.
    #[arg(long, value_name = "PATH")]
    pub cgroup: Option<PathBuf>,
    /// How long an exited process's final counts are still served.
    #[arg(long, value_parser = parse_duration, default_value = "5m")]
    pub grace: Duration,
    /// Locks per process with a series of their own (by wait time; the rest are `other`).
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub top: usize,
    /// Futex words tracked at most (the least waited-on are evicted, and counted).
    #[arg(long, value_name = "N", default_value_t = 8192)]
    pub max_words: usize,
    /// Hook every system call (`sys_enter`/`sys_exit`) instead of the futex syscalls' own
    /// tracepoints (which need tracefs; used by default, mounted if missing).
    #[arg(long)]
    pub sys_enter_exit: bool,
    /// Also push the metrics to this OTLP/HTTP receiver (an OpenTelemetry collector:
    /// `http://HOST:4318/v1/metrics`; a URL with no path gets `/v1/metrics`). http only.
    #[arg(long, value_name = "URL")]
    pub otlp: Option<futexscope::agent::otlp::Endpoint>,
    /// Time between OTLP pushes (one more is made at shutdown).
    #[arg(long, value_parser = parse_nonzero_duration, default_value = "15s", requires = "otlp")]
    pub otlp_interval: Duration,
}

impl AgentArgs {
    /// The agent's options.
    pub fn options(&self) -> futexscope::agent::AgentOptions {
        futexscope::agent::AgentOptions {
            listen: self.listen,
            pids: self.pid.clone(),
            comms: self.comm.clone(),
            cgroup: self.cgroup.clone(),
            limits: futexscope::agent::model::Limits {
                top_words: self.top,
                max_words: self.max_words,
                grace: self.grace,
            },
            sys_enter_exit: self.sys_enter_exit,
            otlp: self
                .otlp
                .clone()
                .map(|endpoint| futexscope::agent::otlp::OtlpOptions {
                    endpoint,
                    interval: self.otlp_interval,
                }),
        }
    }
}
