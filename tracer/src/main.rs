//! The `futexscope` command.

use clap::{Parser, Subcommand};
use futexscope::{
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
