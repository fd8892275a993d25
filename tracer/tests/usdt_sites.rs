//! The stapsdt parser on a real binary: this test binary, which uses the futexscope semaphore
//! and so carries its markers. Checked against the ELF itself (a `nop` at every file offset)
//! and against `readelf` (binutils), an independent reader.

use futexscope::collect::usdt::{self, ArgLocation, UsdtSite};
use futexscope_probes_common::markers::{MARKERS, PROVIDER};
use futexscope_semaphore::Semaphore;
use std::{collections::BTreeSet, path::PathBuf, process::Command, time::Duration};

/// This test binary, after running the semaphore's waiting and waking paths so they are in it.
fn this_binary() -> PathBuf {
    let sem = Semaphore::new(0);
    assert!(sem.try_acquire_for(1, Duration::from_millis(1)).is_err());
    sem.release(1).expect("room for one permit");
    sem.acquire(1).expect("one permit is free").forget();
    std::env::current_exe().expect("path of this test binary")
}

fn futexscope_sites() -> Vec<UsdtSite> {
    let sites = usdt::read_sites(&this_binary()).expect("this binary's notes parse");
    sites
        .into_iter()
        .filter(|s| s.provider == PROVIDER)
        .collect()
}

#[test]
fn sites_are_the_marker_table_with_register_args() {
    let sites = futexscope_sites();
    let names: BTreeSet<&str> = sites.iter().map(|s| s.name.as_str()).collect();
    let table: BTreeSet<&str> = MARKERS.iter().map(|m| m.name).collect();
    assert_eq!(names, table);
    for site in &sites {
        let spec = MARKERS
            .iter()
            .find(|m| m.name == site.name)
            .expect("checked above");
        assert_eq!(site.args.len(), spec.args.len(), "{site:?}");
        assert_eq!(site.semaphore, 0, "{site:?}");
        for arg in &site.args {
            assert_eq!(arg.size, 8, "{site:?}");
            assert!(matches!(arg.location, ArgLocation::Register(_)), "{site:?}");
            assert!(arg.is_supported());
        }
    }
}

/// x86_64 `syscall`, `mov $SYS_futex, %eax` and `nop`.
const SYSCALL: [u8; 2] = [0x0f, 0x05];
const MOV_SYS_FUTEX_TO_EAX: [u8; 5] = [0xb8, 0xca, 0x00, 0x00, 0x00];
const NOP: u8 = 0x90;

#[test]
fn every_file_offset_holds_the_markers_instruction() {
    let file = std::fs::read(this_binary()).expect("read this binary");
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
    let exe = this_binary();
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
    let missing = usdt::read_sites("/nonexistent/futexscope-test".as_ref()).unwrap_err();
    assert_eq!(
        missing.to_string(),
        "cannot read `/nonexistent/futexscope-test`"
    );
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    let not_elf = usdt::read_sites(manifest.as_ref()).unwrap_err();
    assert!(
        not_elf.to_string().ends_with(
            "is not an ELF file: USDT markers are read from ELF executables and libraries"
        ),
        "{not_elf}"
    );
}
