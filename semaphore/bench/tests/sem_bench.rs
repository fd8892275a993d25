//! sem-bench runs every workload on every semaphore it carries and prints the spec's JSON
//! line; `pair` prints its own. Small N: this checks the program, not the speed.

use std::process::{Command, Output};

fn sem_bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sem-bench"))
        .args(args)
        .output()
        .expect("run sem-bench")
}

/// The one stdout line of a successful run.
fn line(args: &[&str]) -> String {
    let output = sem_bench(args);
    let stdout = String::from_utf8(output.stdout).expect("UTF-8 output");
    assert!(
        output.status.success(),
        "sem-bench {args:?} failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(stdout.lines().count(), 1, "one line: {stdout}");
    stdout.trim_end().to_owned()
}

/// The number after `"field":` in `line`.
fn field(line: &str, field: &str) -> f64 {
    let key = format!("\"{field}\":");
    let start = line
        .find(&key)
        .unwrap_or_else(|| panic!("no {field} in {line}"))
        + key.len();
    let text: String = line[start..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    text.parse()
        .unwrap_or_else(|_| panic!("{field} is no number in {line}"))
}

#[test]
fn every_semaphore_runs_every_workload() {
    for implementation in ["futexscope", "std", "parking_lot", "posix", "qt"] {
        for (workload, n, threads) in [
            ("uncontended", "1000", 1),
            ("pingpong", "200", 2),
            ("prodcons", "1000", 4),
            ("multi", "1000", 3),
            ("timed", "3", 1),
        ] {
            let args = [implementation, workload, n, &threads.to_string()];
            if implementation == "posix" && workload == "multi" {
                let output = sem_bench(&args);
                assert_eq!(output.status.code(), Some(2), "`sem_t` has no multi");
                continue;
            }
            let line = line(&args);
            let head = format!(
                r#"{{"impl":"{implementation}","workload":"{workload}","ops":{n},"threads":{threads},"ns_per_op":"#
            );
            assert!(line.starts_with(&head), "{line} should start with {head}");
            assert!(field(&line, "ns_per_op") > 0.0, "{line}");
            if workload == "timed" {
                // sem-bench itself asserts that no timed acquire gave up before 1 ms.
                assert!(field(&line, "ns_per_op") >= 1e6, "{line}");
                for quantile in ["p50", "p99", "max"] {
                    field(&line, &format!("overshoot_us_{quantile}"));
                }
            }
        }
    }
}

#[test]
fn load_adds_its_field() {
    let line = sem_bench_with_load("2", &["qt", "pingpong", "100"]);
    assert!(line.ends_with(r#","load":2}"#), "{line}");
}

fn sem_bench_with_load(load: &str, args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_sem-bench"))
        .args(args)
        .env("LOAD", load)
        .output()
        .expect("run sem-bench");
    assert!(output.status.success());
    String::from_utf8(output.stdout)
        .unwrap()
        .trim_end()
        .to_owned()
}

#[test]
fn pair_reports_the_blocks_and_their_ratios() {
    let line = line(&["pair", "futexscope", "qt", "prodcons", "500", "2", "7"]);
    let head = r#"{"impl":"futexscope","peer":"qt","workload":"prodcons","ops":500,"threads":2,"blocks":7,"#;
    assert!(line.starts_with(head), "{line}");
    let [min, p10, p50, p90, max] = [
        "ratio_min",
        "ratio_p10",
        "ratio_p50",
        "ratio_p90",
        "ratio_max",
    ]
    .map(|f| field(&line, f));
    assert!(
        0.0 < min && min <= p10 && p10 <= p50 && p50 <= p90 && p90 <= max,
        "ratios out of order: {line}"
    );
    let above_1 = field(&line, "blocks_above_1");
    assert!(
        field(&line, "blocks_above_1_5") <= above_1 && above_1 <= 7.0,
        "{line}"
    );
    assert!(field(&line, "peer_ns_per_op") > 0.0, "{line}");
}

#[test]
fn pair_refuses_what_a_side_cannot_run() {
    let output = sem_bench(&["pair", "futexscope", "posix", "multi", "100"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("no multi-permit acquire"));
}
