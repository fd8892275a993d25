//! `futexscope run --stacks` and `demo --stacks`: the call stacks of waiters and wakers, named
//! through code built without frame pointers, and paired.
//!
//! The C program (`stacks_waiters.c`, built here with `cc -O2 -fomit-frame-pointer -g`) has two
//! threads wait on a condition variable three `noinline` calls deep (`wait_level_one` →
//! `wait_level_two` → `wait_level_three`), while `main` signals alternately from
//! `signal_from_alpha` and `signal_from_beta`; it exits before futexscope prints the summary,
//! so its frames are named from the files after the process is gone.

mod common;

use std::{path::PathBuf, process::Command};

use serde_json::Value;

fn build() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("futexscope-cli-stacks-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let binary = dir.join("stacks_waiters");
    common::compile_c(
        std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/stacks_waiters.c"
        )),
        &binary,
        &["-O2", "-fomit-frame-pointer", "-g", "-pthread"],
    );
    binary
}

/// Runs futexscope's subcommand `args[0]` with `--json JSON` and the rest of `args`, then
/// returns its report (stderr) and the summary.
fn trace(args: &[&str], json: &std::path::Path) -> (String, Value) {
    let output = Command::new(env!("CARGO_BIN_EXE_futexscope"))
        .arg(args[0])
        .arg("--json")
        .arg(json)
        .args(&args[1..])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{report}");
    let summary = serde_json::from_slice(&std::fs::read(json).unwrap()).unwrap();
    (report, summary)
}

fn frames(stack: &Value) -> Vec<String> {
    stack["frames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap().to_owned())
        .collect()
}

/// Index of the first frame naming `function`.
fn position(frames: &[String], function: &str) -> Option<usize> {
    frames
        .iter()
        .position(|f| f.starts_with(&format!("{function} (")))
}

#[test]
#[ignore = "needs root"]
fn condvar_waiters_and_wakers_are_named_without_frame_pointers_and_paired() {
    common::require_ebpf();
    let binary = build();
    let dir = binary.parent().unwrap().to_owned();
    let json = dir.join("summary.json");
    let folded = dir.join("blocked.folded");
    let svg = dir.join("blocked.svg");
    let (report, summary) = trace(
        &[
            "run",
            "--view",
            "plain",
            "--stacks",
            "--folded",
            folded.to_str().unwrap(),
            "--flamegraph",
            svg.to_str().unwrap(),
            "--",
            binary.to_str().unwrap(),
        ],
        &json,
    );
    let folded = std::fs::read_to_string(&folded).unwrap();
    let svg = std::fs::read_to_string(&svg).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(report.contains("call sites ("), "{report}");
    let rows = summary["futexes"].as_array().unwrap();
    // glibc's condvar waits on the words inside `ready`: 40 waits over its two words.
    let cond_rows: Vec<&Value> = rows
        .iter()
        .filter(|r| r["label"].as_str().unwrap().starts_with("ready+"))
        .collect();
    // glibc's `pthread_cond_signal` may itself sleep, waiting for the group switch to quiesce:
    // those stacks are the signaller's (under `signal_from_alpha`/`_beta`); every other waiter
    // stack is three levels deep.
    let waiters: Vec<&Value> = cond_rows
        .iter()
        .flat_map(|r| r["waiter_stacks"].as_array().unwrap())
        .filter(|stack| {
            let frames = frames(stack);
            !(frames.iter().any(|f| f.contains("pthread_cond_signal"))
                && frames.iter().any(|f| f.starts_with("signal_from_")))
        })
        .collect();
    let waits: u64 = waiters.iter().map(|w| w["waits"].as_u64().unwrap()).sum();
    assert!(waits >= 30, "most of the 40 waits slept: {summary:#}");
    for waiter in &waiters {
        let frames = frames(waiter);
        let levels: Vec<Option<usize>> = ["wait_level_three", "wait_level_two", "wait_level_one"]
            .iter()
            .map(|f| position(&frames, f))
            .collect();
        assert!(
            levels.iter().all(Option::is_some) && levels.is_sorted(),
            "the three levels, leaf first: {frames:#?}"
        );
        let cond_wait = frames
            .iter()
            .position(|f| f.contains("pthread_cond_wait"))
            .expect("glibc's condvar wait");
        assert!(cond_wait < levels[0].unwrap(), "{frames:#?}");
        assert!(
            frames.iter().any(|f| f.starts_with("start_thread")),
            "unwound to the thread's start: {frames:#?}"
        );
        assert!(
            frames.iter().any(|f| f.contains("(stacks_waiters.c:")),
            "file:line from the debug info: {frames:#?}"
        );
        assert_eq!(waiter["truncated"], Value::Null, "{frames:#?}");
        let times = &waiter["wait_ns"];
        assert!(times["total"].as_u64().unwrap() >= times["max"].as_u64().unwrap());
        assert!(times["p99"].as_u64().unwrap() >= times["p50"].as_u64().unwrap());
    }
    // The other side of that quiescence: a waiter leaving `pthread_cond_wait` wakes the
    // signaller sleeping for it (glibc's `__condvar_dec_grefs`); those stacks are a waiter's
    // (under `wait_level_*`), every other waker stack is a signaller's.
    let wakers: Vec<&Value> = cond_rows
        .iter()
        .flat_map(|r| r["waker_stacks"].as_array().unwrap())
        .filter(|stack| {
            let frames = frames(stack);
            !(frames.iter().any(|f| f.contains("pthread_cond_wait"))
                && frames.iter().any(|f| f.starts_with("wait_level_")))
        })
        .collect();
    let signalled_from = |function: &str| {
        wakers
            .iter()
            .filter(|w| position(&frames(w), function).is_some())
            .map(|w| w["woken"].as_u64().unwrap())
            .sum::<u64>()
    };
    assert!(signalled_from("signal_from_alpha") > 0, "{wakers:#?}");
    assert!(signalled_from("signal_from_beta") > 0, "{wakers:#?}");
    for waker in &wakers {
        let frames = frames(waker);
        let give = position(&frames, "give").unwrap_or_else(|| panic!("give: {frames:#?}"));
        let main = position(&frames, "main").expect("main");
        assert!(give < main, "{frames:#?}");
    }
    // The pairing: the waits of the waiter stacks were ended by the two waker stacks, and the
    // blame adds up on both sides.
    let waker_ids: Vec<u64> = wakers.iter().map(|w| w["id"].as_u64().unwrap()).collect();
    let paired: u64 = waiters
        .iter()
        .flat_map(|w| w["woken_by"].as_array().unwrap())
        .inspect(|b| assert!(waker_ids.contains(&b["stack"].as_u64().unwrap())))
        .map(|b| b["waits"].as_u64().unwrap())
        .sum();
    assert!(paired * 10 >= waits * 9, "{paired} of {waits} waits paired");
    let blamed_by_waiters: u64 = waiters
        .iter()
        .flat_map(|w| w["woken_by"].as_array().unwrap())
        .map(|b| b["wait_ns"].as_u64().unwrap())
        .sum();
    let blamed_by_wakers: u64 = wakers
        .iter()
        .map(|w| w["blamed_wait_ns"].as_u64().unwrap())
        .sum();
    assert_eq!(blamed_by_waiters, blamed_by_wakers);
    // Folded stacks and the flame graph carry the same frames, root first.
    let line = folded
        .lines()
        .find(|l| l.contains("wait_level_one"))
        .expect("a folded waiter stack");
    let one = line.find("wait_level_one").unwrap();
    assert!(one < line.find("wait_level_three").unwrap(), "{line}");
    assert!(
        svg.contains("wait_level_three"),
        "the flame graph names the frames"
    );
}

#[test]
#[ignore = "needs root"]
fn semaphore_waiters_and_wakers_are_named() {
    common::require_ebpf();
    let dir = std::env::temp_dir().join(format!("futexscope-demo-stacks-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("summary.json");
    let (_, summary) = trace(
        &["demo", "--view", "plain", "--stacks", "--duration", "1s"],
        &json,
    );
    std::fs::remove_dir_all(&dir).unwrap();
    let pool = summary["futexes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| {
            r["label"]
                .as_str()
                .unwrap()
                .starts_with("futexscope::demo::POOL")
        })
        .expect("the demo's pool semaphore");
    let waiter = &pool["waiter_stacks"][0];
    let waiter_frames = frames(waiter);
    let acquire = waiter_frames
        .iter()
        .position(|f| f.starts_with("futexscope_semaphore::Semaphore::acquire"))
        .expect("the semaphore's acquire");
    let demo = waiter_frames
        .iter()
        .position(|f| f.starts_with("futexscope::demo::"))
        .expect("the demo's own frame");
    assert!(acquire < demo, "{waiter_frames:#?}");
    assert!(
        waiter["site"]
            .as_str()
            .unwrap()
            .contains("futexscope::demo::"),
        "the site is outside the semaphore: {waiter:#}"
    );
    let waker_frames = frames(&pool["waker_stacks"][0]);
    assert!(
        waker_frames
            .iter()
            .any(|f| f.starts_with("futexscope_semaphore::Semaphore::release")),
        "{waker_frames:#?}"
    );
    assert!(summary["stacks"]["captured"].as_u64().unwrap() > 0);
}
