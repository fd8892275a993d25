//! Reading markers from the system: a file by path, this process by its memory map, and
//! `futexscope list`, on this test binary, which uses the futexscope semaphore and so carries
//! its markers. The parser itself is tested in the `futexscope-stapsdt` crate.

use futexscope::collect::usdt::{self, ParseError, UsdtError, UsdtSite};
use futexscope_probes_common::markers::{MARKERS, PROVIDER};
use futexscope_semaphore::Semaphore;
use std::{error::Error, path::PathBuf, time::Duration};

/// This test binary, after running the semaphore's waiting and waking paths so they are in it.
fn this_binary() -> PathBuf {
    let sem = Semaphore::new(0);
    assert!(sem.try_acquire_for(1, Duration::from_millis(1)).is_err());
    sem.release(1).expect("room for one permit");
    sem.acquire(1).expect("one permit is free").forget();
    std::env::current_exe().expect("path of this test binary")
}

/// This binary's futexscope sites; none may be skipped.
fn futexscope_sites() -> Vec<UsdtSite> {
    let found = usdt::read_markers(&this_binary()).expect("this binary's notes parse");
    assert_eq!(found.skipped, [], "notes at no reachable address");
    found.sites
}

#[test]
fn read_markers_finds_only_futexscope_sites() {
    let sites = futexscope_sites();
    assert_eq!(sites.len(), MARKERS.len(), "{sites:#?}");
    assert!(sites.iter().all(|s| s.provider == PROVIDER), "{sites:#?}");
}

#[test]
fn list_names_every_marker_and_argument() {
    let exe = this_binary();
    let lines = usdt::list(exe.to_str().expect("a UTF-8 path")).expect("list this binary");
    for marker in MARKERS {
        let header = format!(
            "usdt:{}:{PROVIDER}:{} (file offset",
            exe.display(),
            marker.name
        );
        let at = lines
            .iter()
            .position(|l| l.starts_with(&header))
            .unwrap_or_else(|| panic!("no line for `{}` in {lines:#?}", marker.name));
        for (position, meaning) in marker.args.iter().enumerate() {
            let name = meaning.split(':').next().expect("a name");
            let line = &lines[at + 1 + position];
            assert!(
                line.starts_with(&format!("    arg{position} {name} ")),
                "{line}"
            );
        }
    }
}

#[test]
fn own_process_maps_lead_to_this_binary() {
    let exe = this_binary().canonicalize().expect("canonical path");
    let found = usdt::process_markers(std::process::id()).expect("read own maps");
    let object = found
        .marked
        .iter()
        .find(|o| o.path == exe)
        .unwrap_or_else(|| panic!("`{}` not among {found:#?}", exe.display()));
    assert_eq!(object.sites, futexscope_sites());
    assert_eq!(object.skipped, []);
    assert!(
        object
            .host_path
            .starts_with(format!("/proc/{}/root", std::process::id()))
    );
    let listed = usdt::list(&std::process::id().to_string()).expect("list own pid");
    assert!(
        listed
            .iter()
            .any(|l| l.starts_with(&format!("usdt:{}:{PROVIDER}:wait_begin", exe.display()))),
        "{listed:#?}"
    );
}

#[test]
fn missing_and_non_elf_files_are_clear_errors() {
    let missing = usdt::read_markers("/nonexistent/futexscope-test".as_ref()).unwrap_err();
    assert_eq!(
        missing.to_string(),
        "cannot read `/nonexistent/futexscope-test`"
    );
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    let not_elf = usdt::read_markers(manifest.as_ref()).unwrap_err();
    assert_eq!(
        not_elf.to_string(),
        format!("cannot parse the USDT markers of `{manifest}`")
    );
    assert!(
        matches!(
            not_elf,
            UsdtError::Parse {
                source: ParseError::NotElf,
                ..
            }
        ),
        "{not_elf:?}"
    );
    let cause = not_elf.source().expect("the parser's error").to_string();
    assert_eq!(
        cause,
        "not an ELF file: USDT markers are read from ELF executables and libraries"
    );
}
