//! The `futexscope` command.

use clap::{Parser, Subcommand};
use futexscope::{
    kernel_report,
    probes::Probes,
    spawn::{self, GatedChild},
    workload,
};

/// See what futexes do inside real programs.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start CMD, trace it, and print per-futex totals when it exits.
    Run {
        /// The command and its arguments.
        #[arg(required = true, trailing_var_arg = true)]
        command: Vec<String>,
    },
    /// Run a fixed battery of futex experiments and report how this kernel's futexes behave.
    KernelReport {
        /// Also write the report as JSON to FILE.
        #[arg(long, value_name = "FILE")]
        json: Option<std::path::PathBuf>,
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
        reports: Vec<std::path::PathBuf>,
    },
    /// Run a scripted workload with known futex counts (for tests and demos).
    #[command(hide = true)]
    Workload {
        /// Number of EAGAIN waits.
        eagain_waits: u32,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Cmd::Run { command } => run(&command),
        Cmd::KernelReport { json, quick } => {
            let report = kernel_report::run(kernel_report::Battery { quick })?;
            print!("{}", report.render());
            Ok(json.map_or(Ok(()), |path| report.write(&path))?)
        }
        Cmd::KernelDiff { all, reports } => {
            print!("{}", kernel_report::diff_files(&reports, all)?);
            Ok(())
        }
        Cmd::Workload { eagain_waits } => {
            let word = workload::eagain_waits(eagain_waits);
            println!("workload: {eagain_waits} waits on {word:#x}");
            Ok(())
        }
    }
}

fn run(command: &[String]) -> anyhow::Result<()> {
    let mut probes = Probes::load()?;
    let child = GatedChild::spawn(command)?;
    probes.trace_tgid(child.pid())?;
    let pid = child.start(&command[0])?;
    let status = spawn::wait(pid)?;
    for (key, stats) in probes.futex_stats()? {
        println!(
            "pid {} futex {:#x}: waits {}",
            key.tgid, key.uaddr, stats.waits
        );
    }
    println!("exit status: {status}");
    Ok(())
}
