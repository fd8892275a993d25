//! The marker uprobe program, attached by file offset with a cookie per site, decoding its
//! arguments from registers: stand-in marker sites in `futexscope-workload` (plain functions,
//! so the arguments are in the System V argument registers) fire in a known order, and the
//! marker-based counters must match. Root only; in CI it must run.

mod common;

use std::{path::Path, time::Duration};

use futexscope::collect::{
    ebpf::{MarkerSiteSpec, ProbeOptions, Probes},
    spawn::GatedChild,
};
use futexscope_probes_common::{
    event::{Event, EventKind, spurious},
    maps::{MarkerArg, log2_bucket},
    markers::Marker,
};
use object::{Object, ObjectSection, ObjectSymbol};

/// Offsets in x86_64 `struct pt_regs` of the System V argument registers, in order.
const ARG_REGISTERS: [u32; 6] = [112, 104, 96, 88, 72, 64];

/// The file offset of symbol `name` in the ELF file `data`.
fn file_offset(data: &[u8], name: &str) -> u64 {
    let file = object::File::parse(data).expect("parse the workload binary");
    let symbol = file
        .symbols()
        .find(|s| s.name() == Ok(name))
        .unwrap_or_else(|| panic!("no symbol `{name}`"));
    let section = file
        .section_by_index(symbol.section_index().expect("symbol in a section"))
        .expect("section");
    let (section_offset, _) = section.file_range().expect("section in the file");
    symbol.address() - section.address() + section_offset
}

fn site(data: &[u8], marker: Marker, function: &str, signed: &[usize]) -> MarkerSiteSpec {
    let count = marker.spec().args.len();
    let args = (0..count)
        .map(|i| MarkerArg::register(ARG_REGISTERS[i], 8, signed.contains(&i)))
        .collect();
    MarkerSiteSpec {
        marker,
        file_offset: file_offset(data, function),
        args,
    }
}

#[test]
#[ignore = "needs root"]
fn marker_sites_give_lost_races_satisfied_wakeups_and_caller_drift() {
    common::require_ebpf();
    let binary = Path::new(env!("CARGO_BIN_EXE_futexscope-workload"));
    let data = std::fs::read(binary).expect("read the workload binary");
    let sites = [
        site(
            &data,
            Marker::WaitBegin,
            "futexscope_workload_wait_begin",
            &[],
        ),
        site(&data, Marker::WaitEnd, "futexscope_workload_wait_end", &[2]),
        site(&data, Marker::Acquired, "futexscope_workload_acquired", &[]),
        site(
            &data,
            Marker::TimedOut,
            "futexscope_workload_timed_out",
            &[],
        ),
    ];
    // Verbose, so the programs are loaded with their diagnostics on as well.
    let options = ProbeOptions {
        verbose: true,
        ..ProbeOptions::default()
    };
    let mut probes = Probes::load_with(&options).expect("load the probes with diagnostics on");
    assert_eq!(
        probes
            .attach_markers(binary, &sites)
            .expect("attach the marker sites"),
        4
    );

    let report_path =
        std::env::temp_dir().join(format!("futexscope-markers-{}.txt", std::process::id()));
    let command = format!(
        "exec {} markers > {}",
        binary.display(),
        report_path.display()
    );
    let gated = GatedChild::spawn(&["sh".to_owned(), "-c".to_owned(), command]).expect("spawn");
    let pid = gated.pid();
    probes.trace_tgid(pid).expect("trace");
    let child = gated.start("sh").expect("start");
    let status = futexscope::collect::spawn::wait(child).expect("wait");
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
    std::thread::sleep(Duration::from_millis(10));
    let report = std::fs::read_to_string(&report_path).expect("report");
    let _ = std::fs::remove_file(&report_path);
    let value = |key: &str| -> u64 {
        let text = report
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key} ")))
            .unwrap_or_else(|| panic!("no `{key}` in {report}"));
        match text.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16).expect("hex"),
            None => text.parse().expect("number"),
        }
    };
    let (word, sem, deadline) = (value("word"), value("sem"), value("deadline"));

    let all_stats = probes.futex_stats().expect("stats");
    let stats_of = |uaddr: u64| {
        all_stats
            .iter()
            .find(|(key, _)| key.tgid == pid && key.uaddr == uaddr)
            .map(|(_, s)| *s)
            .unwrap_or_else(|| panic!("no statistics for the word {uaddr:#x}"))
    };
    let stats = stats_of(word);
    assert_eq!(stats.tokens_asked, value("tokens_asked"));
    assert_eq!(
        stats.lost_race,
        value("lost_race"),
        "each lost race decided once"
    );
    assert_eq!(stats.woken_satisfied, value("woken_satisfied"));
    assert_eq!(stats.caller_timeouts, 1);
    assert_eq!(
        stats.caller_drift_hist[log2_bucket(value("caller_drift"))],
        1
    );
    assert_eq!(
        (stats.waits, stats.eagain),
        (3, 3),
        "the real futex calls are counted too"
    );
    let condvar = stats_of(value("condvar"));
    assert_eq!(
        (condvar.waits, condvar.wakeups, condvar.lost_race),
        (2, 1, 0),
        "a word the markers never name: woken, and waited on again 5 ms later, is no lost race"
    );

    let mut events: Vec<Event> = Vec::new();
    probes.read_events(|e| events.push(*e));
    let markers: Vec<&Event> = events
        .iter()
        .filter(|e| e.kind == EventKind::Marker as u32 && e.tgid == pid)
        .collect();
    let order: Vec<u32> = markers.iter().map(|e| e.op).collect();
    let expected = [
        Marker::WaitBegin,
        Marker::WaitEnd,
        Marker::WaitBegin,
        Marker::WaitEnd,
        Marker::Acquired,
        Marker::WaitBegin,
        Marker::WaitEnd,
        Marker::TimedOut,
    ]
    .map(|m| m as u32);
    assert_eq!(order, expected, "marker records in firing order");
    assert_eq!(
        markers[0].args[..6],
        [sem, word, 0, 3, 0, 1 << 48],
        "wait_begin arguments decoded"
    );
    // The futex hooks decide the lost race, on the record of the wait that follows it.
    let waits: Vec<u32> = events
        .iter()
        .filter(|e| e.kind == EventKind::Wait as u32 && e.tgid == pid && e.uaddr == word)
        .map(|e| e.spurious & spurious::LOST_RACE)
        .collect();
    assert_eq!(
        waits,
        [0, spurious::LOST_RACE, 0],
        "lost-race flags of the three waits"
    );
    assert_eq!(
        (markers[4].uaddr, markers[7].uaddr),
        (word, word),
        "acquired and timed_out booked on the word of the last futex wait"
    );
    assert_eq!(
        markers[6].args[2] as i64,
        -i64::from(libc::ETIMEDOUT),
        "signed result decoded"
    );
    assert_eq!(markers[7].args[..4], [sem, 2, deadline, deadline + 5_000]);
    probes.drain_log();
}
