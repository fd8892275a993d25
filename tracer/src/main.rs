//! The `futexscope` command.

mod cli;

use std::process::ExitCode;

use clap::Parser;
use cli::{Cli, Command, TraceArgs};
use futexscope::{
    collect::usdt,
    demo, errors, kernel_report,
    session::{self, Target, exit_code},
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
        Command::Agent(args) => match futexscope::agent::run(args.options()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                errors::print(&err);
                ExitCode::from(err.exit_code())
            }
        },
        Command::DemoWorkload => {
            let counts = demo::run();
            println!("{counts}");
            ExitCode::SUCCESS
        }
    }
}

/// Runs a tracing session; errors are printed with their causes.
fn traced(target: &Target, args: &TraceArgs) -> ExitCode {
    match session::trace(target, args.options()) {
        Ok(outcome) => ExitCode::from(outcome.exit_code()),
        Err(err) => {
            errors::print(&err);
            ExitCode::from(err.exit_code())
        }
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
    match session::trace(&target, args.options()) {
        // The demo runs until stopped: stopping it is success.
        Ok(_) => ExitCode::SUCCESS,
        Err(err) => {
            errors::print(&err);
            ExitCode::from(err.exit_code())
        }
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
            errors::print(&err);
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
fn report_any_error(err: &(dyn std::error::Error + 'static)) -> ExitCode {
    errors::print(err);
    ExitCode::FAILURE
}
