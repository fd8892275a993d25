//! The parser on a real binary: this test binary, which uses the futexscope semaphore and so
//! carries its markers. Checked against the ELF itself (the marker's instruction at every file
//! offset) and against `readelf` (binutils), an independent reader. That the notes are exactly
//! the marker table is the semaphore's own test (`semaphore/tests/markers.rs`).

use futexscope_probes_common::markers::PROVIDER;
use futexscope_semaphore::Semaphore;
use futexscope_stapsdt::{ParseError, UsdtSite, sites};
use std::{collections::BTreeSet, process::Command, time::Duration};

/// The bytes of this test binary, after running the semaphore's waiting and waking paths so
/// they are in it.
fn this_binary() -> Vec<u8> {
    let sem = Semaphore::new(0);
    assert!(sem.try_acquire_for(1, Duration::from_millis(1)).is_err());
    sem.release(1).expect("room for one permit");
    sem.acquire(1).expect("one permit is free").forget();
    let exe = std::env::current_exe().expect("path of this test binary");
    std::fs::read(exe).expect("read this test binary")
}

/// This binary's futexscope sites; none may be skipped (each note is dropped with its code).
fn futexscope_sites() -> Vec<UsdtSite> {
    let found = sites(&this_binary(), PROVIDER).expect("this binary's notes parse");
    assert_eq!(found.skipped, [], "notes at no reachable address");
    found.sites
}

/// x86_64 `syscall`, `mov $SYS_futex, %eax` and `nop`.
const SYSCALL: [u8; 2] = [0x0f, 0x05];
const MOV_SYS_FUTEX_TO_EAX: [u8; 5] = [0xb8, 0xca, 0x00, 0x00, 0x00];
const NOP: u8 = 0x90;

#[test]
fn every_file_offset_holds_the_markers_instruction() {
    let file = this_binary();
    let sites = futexscope_sites();
    assert!(!sites.is_empty());
    for site in sites {
        let offset = usize::try_from(site.file_offset).expect("offset fits");
        if cfg!(target_arch = "x86_64") {
            // docs/markers.md: three markers ride on instructions the futex call executes
            // anyway, the other three are `nop`s of their own.
            match site.name.as_str() {
                "wake_begin" => assert_eq!(
                    file.get(offset..offset + 5),
                    Some(&MOV_SYS_FUTEX_TO_EAX[..]),
                    "`wake_begin` is not on the system call number's load: {site:?}"
                ),
                "wait_end" | "wake_end" => assert_eq!(
                    file.get(offset - 2..offset),
                    Some(&SYSCALL[..]),
                    "`{}` does not follow a `syscall`: {site:?}",
                    site.name
                ),
                _ => assert_eq!(file.get(offset), Some(&NOP), "no `nop` at {site:?}"),
            }
        } else {
            let word = file
                .get(offset..offset + 4)
                .expect("offset inside the file");
            assert_eq!(word, 0xd503_201f_u32.to_le_bytes(), "no `nop` at {site:?}");
        }
    }
}

#[test]
fn addresses_and_specs_agree_with_readelf() {
    let exe = std::env::current_exe().expect("path of this test binary");
    let output = Command::new("readelf")
        .arg("--notes")
        .arg(&exe)
        .output()
        .expect("`readelf` (binutils) runs");
    assert!(output.status.success(), "readelf failed: {output:?}");
    let text = String::from_utf8_lossy(&output.stdout);
    // (name, location, arguments) of every futexscope note, as readelf prints them.
    let mut readelf_notes = BTreeSet::new();
    let mut lines = text.lines().map(str::trim);
    while let Some(line) = lines.next() {
        if line != format!("Provider: {PROVIDER}") {
            continue;
        }
        let name = lines
            .next()
            .and_then(|l| l.strip_prefix("Name: "))
            .expect("name line");
        let location = lines
            .next()
            .and_then(|l| l.strip_prefix("Location: 0x"))
            .and_then(|l| l.split(',').next())
            .and_then(|hex| u64::from_str_radix(hex, 16).ok())
            .expect("location line");
        let arguments = lines
            .next()
            .and_then(|l| l.strip_prefix("Arguments: "))
            .unwrap_or("");
        readelf_notes.insert((name.to_owned(), location, arguments.to_owned()));
    }
    // No prelinking here: `.stapsdt.base` has not moved, so the adjusted address is the
    // note's own address.
    let ours: BTreeSet<_> = futexscope_sites()
        .into_iter()
        .map(|s| {
            let args: Vec<String> = s.args.iter().map(ToString::to_string).collect();
            (s.name, s.address, args.join(" "))
        })
        .collect();
    assert!(!ours.is_empty());
    assert_eq!(ours, readelf_notes);
}

#[test]
fn a_text_file_is_not_elf() {
    let manifest = include_bytes!("../Cargo.toml");
    let error = sites(manifest, PROVIDER).unwrap_err();
    assert!(matches!(error, ParseError::NotElf), "{error:?}");
    assert_eq!(
        error.to_string(),
        "not an ELF file: USDT markers are read from ELF executables and libraries"
    );
}
