//! `futexscope-workload NAME ARGS…`: runs one scripted futex workload (see
//! `futexscope::workload`) and prints its report, one `key value` line each.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match futexscope::workload::run(&args) {
        Ok(lines) => {
            for line in lines {
                println!("{line}");
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("futexscope-workload: {err}");
            ExitCode::from(2)
        }
    }
}
