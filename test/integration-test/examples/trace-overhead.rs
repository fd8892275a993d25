//! Benchmark (not a test): what tracing costs the traced program, and how many events per
//! second the tracer takes without dropping any. docs/overhead.md shows the results.
//!
//! ```text
//! cargo build --release -p futexscope --bin futexscope \
//!     -p futexscope-integration-test --bin futexscope-workload \
//!     -p futexscope-semaphore-bench --bin sem-bench
//! cargo run --release -p futexscope-integration-test --example trace-overhead -- \
//!     target/release/futexscope target/release/sem-bench [RUNS] [OPS]
//! ```
//!
//! Part 1: `sem-bench IMPL pingpong|prodcons OPS` for the futexscope semaphore and the POSIX
//! `sem_t` peer, RUNS times each untraced, traced (`futexscope run -- sem-bench ...`), traced
//! without markers (`--no-markers`) and under the cheapest syscall tracer one can write (a
//! bpftrace script that only counts the process's system call entries and exits: the floor any
//! tracer hooking every futex call pays), interleaved; prints the median ns per op of each and
//! the median ratio to the untraced run next to it. Each row runs on both CPUs and again with
//! everything (benchmark and tracer) pinned to one CPU (`taskset -c 0`), where every
//! `pingpong` hand-off sleeps: the stable measure of what tracing adds to a sleeping
//! hand-off. Part 2: `futexscope-workload flood` (found next to FUTEXSCOPE) at rising target
//! rates under `futexscope run`, with the default 16 MiB ring buffer, 1 MiB and 64 KiB; prints
//! the calls and events per second and the records dropped, and the rate where drops start.

use std::{
    path::Path,
    process::{Command, ExitCode},
    time::Duration,
};

/// How `sem-bench` runs in one column of part 1.
enum Mode {
    Untraced,
    /// Under `futexscope` with these arguments before the command.
    Futexscope(&'static [&'static str]),
    /// Under [`FLOOR_SCRIPT`].
    BpftraceFloor,
}

/// Two eBPF programs that do nothing but count the traced process's system call entries and
/// exits in per-CPU maps: what any tracer that hooks every futex call pays at least.
const FLOOR_SCRIPT: &str = "tracepoint:raw_syscalls:sys_enter /pid == cpid/ { @enter = count(); } \
                            tracepoint:raw_syscalls:sys_exit /pid == cpid/ { @exit = count(); }";

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Runs `command` and returns the `ns_per_op` of its sem-bench JSON line.
fn ns_per_op(command: &mut Command) -> Result<f64, String> {
    let output = command
        .output()
        .map_err(|e| format!("cannot run {command:?}: {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!(
            "{command:?} failed: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let line = stdout
        .lines()
        .find(|l| l.contains("\"ns_per_op\""))
        .ok_or(format!("no result in {stdout}"))?;
    let value: serde_json::Value =
        serde_json::from_str(line).map_err(|e| format!("bad JSON {line}: {e}"))?;
    value["ns_per_op"]
        .as_f64()
        .ok_or(format!("no ns_per_op in {line}"))
}

/// Ratios of each traced run to the untraced run next to it, and their median.
fn median_ratio(traced: &[f64], plain: &[f64]) -> f64 {
    let mut ratios: Vec<f64> = traced.iter().zip(plain).map(|(t, p)| t / p).collect();
    median(&mut ratios)
}

/// One `futexscope-workload flood` (next to `futexscope`) under `futexscope run --buffer-size BUFFER`: the futex calls made per
/// second, the event records received per second of the flood, and the records dropped.
fn flood(
    futexscope: &str,
    buffer: &str,
    rate: u64,
    json: &Path,
) -> Result<(f64, f64, u64), String> {
    const SECONDS: f64 = 2.0;
    let workload = Path::new(futexscope).with_file_name("futexscope-workload");
    let output = Command::new(futexscope)
        .args(["run", "--view", "quiet", "--buffer-size", buffer, "--json"])
        .arg(json)
        .arg("--")
        .arg(&workload)
        .args(["flood", "--rate", &rate.to_string()])
        .args(["--seconds", &SECONDS.to_string(), "--threads", "2"])
        .output()
        .map_err(|e| e.to_string())?;
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).into_owned());
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let calls: f64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("flood: "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .ok_or(format!("no flood line in {stdout}"))?;
    let summary: serde_json::Value = std::fs::read(json)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or("no JSON summary")?;
    let events = summary["events"].as_f64().unwrap_or(0.0);
    let dropped = summary["drops"]["ring_buffer_full"].as_u64().unwrap_or(0);
    Ok((calls / SECONDS, events / SECONDS, dropped))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [futexscope, sem_bench, rest @ ..] = args.as_slice() else {
        eprintln!("usage: trace-overhead FUTEXSCOPE SEM_BENCH [RUNS] [OPS]");
        return ExitCode::from(2);
    };
    let runs: usize = rest.first().and_then(|s| s.parse().ok()).unwrap_or(5);
    let ops = rest.get(1).cloned().unwrap_or_else(|| "200000".to_owned());
    let json = std::env::temp_dir().join(format!("trace-overhead-{}.json", std::process::id()));

    println!(
        "part 1: sem-bench under `futexscope run` ({runs} runs each, {ops} ops; medians, and the \
         median of each traced run's ratio to the untraced run next to it)"
    );
    let modes = [
        ("untraced", Mode::Untraced),
        (
            "traced",
            Mode::Futexscope(&["run", "--view", "quiet", "--"]),
        ),
        (
            "--no-markers",
            Mode::Futexscope(&["run", "--view", "quiet", "--no-markers", "--"]),
        ),
        ("bpftrace floor", Mode::BpftraceFloor),
    ];
    for (cpus, placement) in [(None, ""), (Some("0"), " (1 CPU)")] {
        for implementation in ["futexscope", "posix"] {
            for workload in ["pingpong", "prodcons"] {
                let bench = [sem_bench.as_str(), implementation, workload, ops.as_str()];
                let mut results: Vec<Vec<f64>> = vec![Vec::new(); modes.len()];
                for _ in 0..runs {
                    for ((_, mode), results) in modes.iter().zip(&mut results) {
                        let mut command = bench_command(mode, cpus, futexscope, &bench);
                        match ns_per_op(&mut command) {
                            Ok(ns) => results.push(ns),
                            Err(e) => return fail(&e),
                        }
                    }
                }
                print_row(
                    &format!("{implementation} {workload}{placement}"),
                    &modes,
                    &results,
                );
            }
        }
    }

    println!("part 2: event rate (`futexscope-workload flood`, 2 threads, 2 s per rate)");
    for buffer in ["16M", "1M", "64K"] {
        let mut onset = None;
        for rate in [
            100_000u64, 250_000, 500_000, 1_000_000, 2_000_000, 4_000_000,
        ] {
            let (calls, events, dropped) = match flood(futexscope, buffer, rate, &json) {
                Ok(result) => result,
                Err(e) => return fail(&e),
            };
            println!(
                "buffer {buffer:>4}, target {rate:>9}/s: futex calls {calls:>10.0}/s, \
                 events received {events:>10.0}/s, dropped {dropped}"
            );
            if dropped > 0 && onset.is_none() {
                onset = Some(calls);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        match onset {
            Some(calls) => println!("buffer {buffer:>4}: drops start at about {calls:.0} calls/s"),
            None => println!("buffer {buffer:>4}: no drops at any rate this machine reached"),
        }
    }
    let _ = std::fs::remove_file(json);
    ExitCode::SUCCESS
}

/// The command that runs `bench` (sem-bench and its arguments) in `mode`, pinned to the CPU
/// list `cpus` if given (tracer and benchmark alike).
fn bench_command(mode: &Mode, cpus: Option<&str>, futexscope: &str, bench: &[&str]) -> Command {
    let mut words: Vec<String> = cpus
        .map(|cpus| vec!["taskset".to_owned(), "-c".to_owned(), cpus.to_owned()])
        .unwrap_or_default();
    match mode {
        Mode::Untraced => words.extend(bench.iter().map(|w| w.to_string())),
        Mode::Futexscope(args) => {
            words.push(futexscope.to_owned());
            words.extend(args.iter().chain(bench).map(|w| w.to_string()));
        }
        Mode::BpftraceFloor => {
            words.extend(["bpftrace", "-q", "-e", FLOOR_SCRIPT, "-c"].map(str::to_owned));
            words.push(bench.join(" "));
        }
    }
    let mut command = Command::new(&words[0]);
    command.args(&words[1..]);
    command
}

/// Prints one row of part 1: each mode's median and its median ratio to the untraced runs.
fn print_row(row: &str, modes: &[(&str, Mode)], results: &[Vec<f64>]) {
    let mut line = format!("{row:>29}:");
    for ((name, _), values) in modes.iter().zip(results) {
        let mut sorted = values.clone();
        line.push_str(&format!(" {name} {:8.1} ns/op", median(&mut sorted)));
        if *name != "untraced" {
            line.push_str(&format!(" (x{:.3})", median_ratio(values, &results[0])));
        }
        line.push(';');
    }
    println!("{}", line.trim_end_matches(';'));
}

fn fail(message: &str) -> ExitCode {
    eprintln!("trace-overhead: {message}");
    ExitCode::FAILURE
}
