//! Benchmark (not a test): what tracing costs the traced program, and how many events per
//! second the tracer takes without dropping any. docs/tracer.md shows the results and commands.
//!
//! ```text
//! cargo build --release -p futexscope -p futexscope-semaphore --example sem-bench
//! cargo run --release -p futexscope --example trace-overhead -- \
//!     target/release/futexscope target/release/examples/sem-bench [RUNS] [OPS]
//! ```
//!
//! Part 1: `sem-bench futexscope pingpong|prodcons OPS`, RUNS times each untraced, traced
//! (`futexscope run -- sem-bench ...`) and traced without markers (`--no-markers`),
//! interleaved; prints the median ns per op of each and the ratios to untraced. Part 2: `futexscope flood` at rising target rates under
//! `futexscope run`; prints the events/s achieved and the records dropped.

use std::{
    process::{Command, ExitCode},
    time::Duration,
};

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
        "part 1: slowdown of sem-bench under `futexscope run` ({runs} runs each, {ops} ops, medians)"
    );
    for workload in ["pingpong", "prodcons"] {
        let (mut plain, mut traced, mut futex_only) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..runs {
            let bench_args = ["futexscope", workload, ops.as_str()];
            for (results, tracer_args) in [
                (&mut plain, None),
                (&mut traced, Some(&["run", "--view", "quiet", "--"][..])),
                (
                    &mut futex_only,
                    Some(&["run", "--view", "quiet", "--no-markers", "--"][..]),
                ),
            ] {
                let mut command = match tracer_args {
                    None => Command::new(sem_bench),
                    Some(args) => {
                        let mut command = Command::new(futexscope);
                        command.args(args).arg(sem_bench);
                        command
                    }
                };
                match ns_per_op(command.args(bench_args)) {
                    Ok(ns) => results.push(ns),
                    Err(e) => return fail(&e),
                }
            }
        }
        let (plain, traced, futex_only) = (
            median(&mut plain),
            median(&mut traced),
            median(&mut futex_only),
        );
        println!(
            "{workload:>9}: untraced {plain:9.1} ns/op; traced {traced:9.1} ns/op (ratio {:.3}); \
             --no-markers {futex_only:9.1} ns/op (ratio {:.3})",
            traced / plain,
            futex_only / plain
        );
    }

    println!("part 2: event rate (`futexscope flood`, 2 threads, 2 s per rate)");
    for rate in [
        100_000u64, 250_000, 500_000, 1_000_000, 2_000_000, 4_000_000,
    ] {
        let status = Command::new(futexscope)
            .args(["run", "--view", "quiet", "--json"])
            .arg(&json)
            .args([
                "--",
                futexscope,
                "flood",
                "--rate",
                &rate.to_string(),
                "--seconds",
                "2",
                "--threads",
                "2",
            ])
            .output();
        let output = match status {
            Ok(output) if output.status.success() => output,
            Ok(output) => return fail(&String::from_utf8_lossy(&output.stderr)),
            Err(e) => return fail(&e.to_string()),
        };
        let flood = String::from_utf8_lossy(&output.stdout);
        let calls: f64 = flood
            .lines()
            .find_map(|l| l.strip_prefix("flood: "))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0.0);
        let summary: serde_json::Value =
            match std::fs::read(&json).map(|b| serde_json::from_slice(&b)) {
                Ok(Ok(value)) => value,
                _ => return fail("no JSON summary"),
            };
        let seconds = summary["seconds"].as_f64().unwrap_or(1.0);
        let events = summary["events"].as_f64().unwrap_or(0.0);
        let dropped = summary["drops"]["ring_buffer_full"].as_u64().unwrap_or(0);
        println!(
            "target {rate:>9}/s: futex calls {:>10.0}/s, events received {:>10.0}/s, dropped {dropped}",
            calls / 2.0,
            events / seconds
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = std::fs::remove_file(json);
    ExitCode::SUCCESS
}

fn fail(message: &str) -> ExitCode {
    eprintln!("trace-overhead: {message}");
    ExitCode::FAILURE
}
