//! `futexscope run --pprof FILE`: blocked time as a gzipped pprof profile, read back here with
//! prost and profile.proto's messages (a reader other than the writer), and by `go tool pprof`
//! where Go is installed, on the condvar program of `cli_stacks.rs` (`stacks_waiters.c`, `-O2
//! -fomit-frame-pointer -g`).

mod common;

use std::{io::Read, path::PathBuf, process::Command};

/// The messages of google/pprof `proto/profile.proto` that the test reads.
mod proto {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Profile {
        #[prost(message, repeated, tag = "1")]
        pub sample_type: Vec<ValueType>,
        #[prost(message, repeated, tag = "2")]
        pub sample: Vec<Sample>,
        #[prost(message, repeated, tag = "4")]
        pub location: Vec<Location>,
        #[prost(message, repeated, tag = "5")]
        pub function: Vec<Function>,
        #[prost(string, repeated, tag = "6")]
        pub string_table: Vec<String>,
        #[prost(int64, tag = "9")]
        pub time_nanos: i64,
        #[prost(int64, tag = "10")]
        pub duration_nanos: i64,
        #[prost(message, optional, tag = "11")]
        pub period_type: Option<ValueType>,
        #[prost(int64, tag = "12")]
        pub period: i64,
        #[prost(int64, repeated, tag = "13")]
        pub comment: Vec<i64>,
        #[prost(int64, tag = "14")]
        pub default_sample_type: i64,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ValueType {
        #[prost(int64, tag = "1")]
        pub r#type: i64,
        #[prost(int64, tag = "2")]
        pub unit: i64,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Sample {
        #[prost(uint64, repeated, tag = "1")]
        pub location_id: Vec<u64>,
        #[prost(int64, repeated, tag = "2")]
        pub value: Vec<i64>,
        #[prost(message, repeated, tag = "3")]
        pub label: Vec<Label>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Label {
        #[prost(int64, tag = "1")]
        pub key: i64,
        #[prost(int64, tag = "2")]
        pub str: i64,
        #[prost(int64, tag = "3")]
        pub num: i64,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Location {
        #[prost(uint64, tag = "1")]
        pub id: u64,
        #[prost(uint64, tag = "3")]
        pub address: u64,
        #[prost(message, repeated, tag = "4")]
        pub line: Vec<Line>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Line {
        #[prost(uint64, tag = "1")]
        pub function_id: u64,
        #[prost(int64, tag = "2")]
        pub line: i64,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Function {
        #[prost(uint64, tag = "1")]
        pub id: u64,
        #[prost(int64, tag = "2")]
        pub name: i64,
        #[prost(int64, tag = "4")]
        pub filename: i64,
    }
}

fn build(dir: &std::path::Path) -> PathBuf {
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

#[test]
#[ignore = "needs root"]
fn pprof_profile_of_blocked_time_names_the_condvar_waiters() {
    common::require_ebpf();
    let dir = std::env::temp_dir().join(format!("futexscope-cli-pprof-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let binary = build(&dir);
    let path = dir.join("blocked.pb.gz");
    let output = Command::new(env!("CARGO_BIN_EXE_futexscope"))
        .args(["run", "--view", "plain", "--pprof"])
        .arg(&path)
        .arg("--")
        .arg(&binary)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{report}");
    let gzipped = std::fs::read(&path).unwrap();
    // Go's own reader too, where a Go toolchain is installed (Debian: golang-go).
    if Command::new("go").arg("version").output().is_ok() {
        let raw = Command::new("go")
            .args(["tool", "pprof", "-raw"])
            .arg(&path)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&raw.stdout);
        assert!(
            raw.status.success(),
            "{}",
            String::from_utf8_lossy(&raw.stderr)
        );
        assert!(
            text.contains("contentions/count delay/nanoseconds"),
            "{text}"
        );
        assert!(text.contains("wait_level_three"), "{text}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(&gzipped[..])
        .read_to_end(&mut bytes)
        .expect("gzip");
    let profile: proto::Profile = prost::Message::decode(&bytes[..]).expect("profile.proto");
    let text = |index: i64| profile.string_table[index as usize].as_str();
    assert_eq!(text(0), "");
    let types: Vec<(&str, &str)> = profile
        .sample_type
        .iter()
        .map(|t| (text(t.r#type), text(t.unit)))
        .collect();
    assert_eq!(
        types,
        [("contentions", "count"), ("delay", "nanoseconds")],
        "Go's block-profile sample types"
    );
    assert_eq!(text(profile.default_sample_type), "delay");
    let period = profile.period_type.as_ref().unwrap();
    assert_eq!(
        (text(period.r#type), text(period.unit)),
        ("contentions", "count")
    );
    assert_eq!(profile.period, 1);
    assert!(profile.time_nanos > 0 && profile.duration_nanos > 0);
    assert!(
        profile
            .comment
            .iter()
            .any(|&c| text(c).contains("every wait")),
        "the profile says what it holds"
    );
    // Function names of a sample, leaf first, inlined calls before their callers.
    let names = |sample: &proto::Sample| -> Vec<String> {
        sample
            .location_id
            .iter()
            .flat_map(|id| {
                let location = profile.location.iter().find(|l| l.id == *id).unwrap();
                location.line.iter().map(|line| {
                    let function = profile
                        .function
                        .iter()
                        .find(|f| f.id == line.function_id)
                        .unwrap();
                    text(function.name).to_owned()
                })
            })
            .collect()
    };
    let label = |sample: &proto::Sample, key: &str| -> Option<String> {
        sample
            .label
            .iter()
            .find(|l| text(l.key) == key)
            .map(|l| text(l.str).to_owned())
    };
    let condvar: Vec<&proto::Sample> = profile
        .sample
        .iter()
        .filter(|s| label(s, "futex").is_some_and(|l| l.contains("ready+")))
        .collect();
    // glibc's `pthread_cond_signal` may itself sleep, waiting for the group switch to quiesce:
    // those samples are the signaller's (under `signal_from_alpha`/`_beta`), every other one a
    // waiter's, three levels deep.
    let (signallers, waiters): (Vec<&proto::Sample>, Vec<&proto::Sample>) =
        condvar.iter().partition(|sample| {
            let names = names(sample);
            names.iter().any(|n| n.contains("pthread_cond_signal"))
                && names.iter().any(|n| n.starts_with("signal_from_"))
        });
    for sample in &signallers {
        assert!(sample.value[1] > 0, "blocked time");
    }
    let waits: i64 = waiters.iter().map(|s| s.value[0]).sum();
    assert!(waits >= 30, "most of the 40 waits slept: {waits}");
    for sample in &waiters {
        assert!(sample.value[1] > 0, "blocked time");
        let names = names(sample);
        let at = |f: &str| names.iter().position(|n| n == f);
        let levels = [
            at("wait_level_three"),
            at("wait_level_two"),
            at("wait_level_one"),
        ];
        assert!(
            levels.iter().all(Option::is_some) && levels.is_sorted(),
            "the three levels, leaf first: {names:#?}"
        );
        let cond_wait = names
            .iter()
            .position(|n| n.contains("pthread_cond_wait"))
            .expect("glibc's condvar wait");
        assert!(cond_wait < levels[0].unwrap(), "{names:#?}");
        let level_three = sample
            .location_id
            .iter()
            .flat_map(|id| &profile.location.iter().find(|l| l.id == *id).unwrap().line)
            .find(|line| {
                let function = profile.function.iter().find(|f| f.id == line.function_id);
                function.is_some_and(|f| text(f.name) == "wait_level_three")
            })
            .unwrap();
        assert!(level_three.line > 0, "line numbers from the debug info");
        let function = profile
            .function
            .iter()
            .find(|f| f.id == level_three.function_id)
            .unwrap();
        assert!(text(function.filename).ends_with("stacks_waiters.c"));
    }
}
