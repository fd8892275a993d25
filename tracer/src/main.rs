//! The `futexscope` command.

mod cli;

use std::process::ExitCode;

use clap::Parser;
use cli::{Cli, Command, TraceArgs};
use futexscope::{
    attach::MarkerSet,
    demo, flood, kernel_report,
    session::{self, Options, Target, TraceError, exit_code},
    stdsync, usdt, workload,
};

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Run { trace, command } => traced(&Target::Command(command), &trace),
        Command::Attach { trace, pid } => traced(&Target::Pid(pid), &trace),
        Command::Demo { trace } => demo(&trace),
        Command::List { target } => list(&target),
        Command::KernelReport { json, quick } => kernel_report(json.as_deref(), quick),
        Command::KernelDiff { all, reports } => match kernel_report::diff_files(&reports, all) {
            Ok(table) => {
                print!("{table}");
                ExitCode::SUCCESS
            }
            Err(err) => report_any_error(&err),
        },
        Command::DemoWorkload => {
            let counts = demo::run();
            println!("{counts}");
            ExitCode::SUCCESS
        }
        Command::Workload { eagain_waits } => {
            let word = workload::eagain_waits(eagain_waits);
            println!("workload: {eagain_waits} waits on {word:#x}");
            ExitCode::SUCCESS
        }
        Command::Flood {
            rate,
            seconds,
            threads,
        } => {
            let calls = flood::run(rate, seconds, threads);
            println!("flood: {calls} futex calls in {seconds} s");
            ExitCode::SUCCESS
        }
        Command::StdSync { timeouts, parked } => {
            let counts = stdsync::run(timeouts, parked);
            println!(
                "std-sync: timed condvar {:#x}: {} timeouts",
                counts.timed_condvar, counts.timeouts
            );
            println!(
                "std-sync: park condvar {:#x}: {} parked at once",
                counts.park_condvar, counts.parked
            );
            ExitCode::SUCCESS
        }
    }
}

fn options(args: &TraceArgs) -> Options {
    Options {
        duration: args.duration,
        interval: args.interval,
        json: args.json.clone(),
        export: args.export.clone(),
        events: args.events.clone(),
        view: args.view,
        sort: args.sort,
        verbose: args.verbose,
        markers: match (args.no_markers, args.all_markers) {
            (true, _) => None,
            (false, true) => Some(MarkerSet::All),
            (false, false) => Some(MarkerSet::Essential),
        },
        buffer_size: args.buffer_size,
    }
}

/// Runs a tracing session; errors are printed with their causes.
fn traced(target: &Target, args: &TraceArgs) -> ExitCode {
    match session::trace(target, &options(args)) {
        Ok(outcome) => ExitCode::from(outcome.exit_code()),
        Err(err) => ExitCode::from(report_error(&err)),
    }
}

/// Traces the demo workload (this same binary, hidden `demo-workload` command).
fn demo(args: &TraceArgs) -> ExitCode {
    let program = match std::env::current_exe() {
        Ok(path) => path.to_string_lossy().into_owned(),
        Err(err) => {
            eprintln!(
                "futexscope: error: cannot find the futexscope binary to run the demo: {err}"
            );
            return ExitCode::FAILURE;
        }
    };
    let target = Target::Command(vec![program, "demo-workload".to_owned()]);
    match session::trace(&target, &options(args)) {
        // The demo runs until stopped: stopping it is success.
        Ok(_) => ExitCode::SUCCESS,
        Err(err) => ExitCode::from(report_error(&err)),
    }
}

/// Prints the markers of a file or process.
fn list(target: &str) -> ExitCode {
    match usdt::list(target) {
        Ok(lines) if lines.is_empty() => {
            eprintln!("futexscope: no futexscope markers in `{target}`");
            ExitCode::FAILURE
        }
        Ok(lines) => {
            for line in lines {
                println!("{line}");
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            print_error(&err);
            ExitCode::from(exit_code::CANNOT_READ)
        }
    }
}

/// Runs the kernel report battery, prints it and writes its JSON if asked.
fn kernel_report(json: Option<&std::path::Path>, quick: bool) -> ExitCode {
    let result = kernel_report::run(kernel_report::Battery { quick }).and_then(|report| {
        print!("{}", report.render());
        json.map_or(Ok(()), |path| report.write(path))
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => report_any_error(&err),
    }
}

/// Prints an error that has no exit code of its own, with its causes; exit code 1.
fn report_any_error(err: &dyn std::error::Error) -> ExitCode {
    print_error(err);
    ExitCode::FAILURE
}

/// Prints `err` and the chain of its causes to stderr.
fn print_error(err: &dyn std::error::Error) {
    eprintln!("futexscope: error: {err}");
    let mut source = err.source();
    while let Some(cause) = source {
        eprintln!("  caused by: {cause}");
        source = cause.source();
    }
}

/// Prints `err` and its causes to stderr; returns its exit code.
fn report_error(err: &TraceError) -> u8 {
    print_error(err);
    err.exit_code()
}
