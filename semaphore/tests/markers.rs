//! The stapsdt notes a program using the semaphore carries, read back with the
//! `futexscope-stapsdt` parser: exactly the futexscope marker table, with plain 8-byte register
//! arguments and no SDT semaphore; none at all when the `markers` feature is off or the
//! portable implementation (which has no futex paths to mark) is in use. That the parser
//! agrees with `readelf` (binutils, an independent reader) on such a binary is tested in
//! `stapsdt/tests/semaphore_binary.rs`.

use futexscope_probes_common::markers::{MARKERS, PROVIDER};
use futexscope_semaphore::Semaphore;
use futexscope_stapsdt::UsdtSite;
use std::time::Duration;

/// The futexscope marker sites of this test binary, which uses the semaphore's waiting and
/// waking paths, and the binary's bytes.
fn sites_of_this_binary() -> (Vec<UsdtSite>, Vec<u8>) {
    // Run the slow paths so nothing about them can be left out of the binary.
    let sem = Semaphore::new(0);
    assert!(sem.try_acquire_for(1, Duration::from_millis(1)).is_err());
    sem.release(1).expect("room for one permit");
    sem.acquire(1).expect("one permit is free").forget();

    let exe = std::env::current_exe().expect("path of this test binary");
    let data = std::fs::read(exe).expect("read this test binary");
    let found = futexscope_stapsdt::sites(&data, PROVIDER).expect("this binary's notes parse");
    // A note is dropped with its code, so none can point outside the program's code.
    assert_eq!(found.skipped, [], "notes at no reachable address");
    (found.sites, data)
}

/// Checks that `site`'s file offset in `binary` holds the instruction its marker sits on (see
/// `semaphore/src/futex.rs`): on x86_64 a `nop`, or for `wake_begin` the load of the system
/// call number, or for the `_end` futex markers the instruction right after `syscall`.
#[cfg(all(feature = "markers", target_os = "linux", not(feature = "portable")))]
fn check_instruction(site: &UsdtSite, binary: &[u8]) {
    let offset = usize::try_from(site.file_offset).expect("offset fits");
    let at = |from: usize, len: usize| binary.get(from..from + len).unwrap_or_default();
    if cfg!(target_arch = "x86_64") {
        match site.name.as_str() {
            "wake_begin" => {
                // movl $202 (SYS_futex), %eax
                assert_eq!(at(offset, 5), [0xb8, 0xca, 0, 0, 0], "{site:?}");
            }
            "wait_end" | "wake_end" => {
                // syscall (0f 05) just before
                assert_eq!(at(offset - 2, 2), [0x0f, 0x05], "{site:?}");
            }
            _ => assert_eq!(at(offset, 1), [0x90], "not a nop: {site:?}"),
        }
    } else if cfg!(target_arch = "aarch64") {
        assert_eq!(
            at(offset, 4),
            0xd503_201f_u32.to_le_bytes(),
            "not a nop: {site:?}"
        );
    }
}

#[cfg(all(feature = "markers", target_os = "linux", not(feature = "portable")))]
#[test]
fn binary_carries_exactly_the_marker_table() {
    use futexscope_stapsdt::ArgLocation;
    use std::collections::BTreeSet;

    let (sites, binary) = sites_of_this_binary();
    let found: BTreeSet<&str> = sites.iter().map(|s| s.name.as_str()).collect();
    let table: BTreeSet<&str> = MARKERS.iter().map(|m| m.name).collect();
    assert_eq!(found, table, "marker names in the binary vs the table");
    // An optimized build has a site for each copy the compiler made of a marked path (inlined
    // into several callers); an unoptimized one has one site per marker. Every site must sit
    // on its marker's instruction: a note left behind by code the linker dropped would point
    // anywhere (lld records the marker's offset in the dropped function).
    if cfg!(debug_assertions) {
        assert_eq!(
            sites.len(),
            MARKERS.len(),
            "one site per marker: {sites:#?}"
        );
    }
    for site in &sites {
        check_instruction(site, &binary);
        let spec = MARKERS
            .iter()
            .find(|m| m.name == site.name)
            .expect("checked above");
        assert_eq!(
            site.args.len(),
            spec.args.len(),
            "argument count of {site:?}"
        );
        for (arg, meaning) in site.args.iter().zip(spec.args) {
            let ArgLocation::Register(register) = arg.location else {
                panic!("`{arg}` of {site:?} is not in a register");
            };
            assert_eq!(arg.size, 8, "`{arg}` of {site:?} is not 8 bytes");
            assert!(
                !matches!(register.name().as_str(), "rsp" | "rip" | "sp"),
                "`{arg}` of {site:?} is not a general-purpose register"
            );
            assert_eq!(
                arg.signed,
                meaning.starts_with("result"),
                "signedness of `{arg}` ({meaning})"
            );
        }
        assert_eq!(site.semaphore, 0, "{site:?} has an SDT semaphore");
    }
}

#[cfg(not(all(feature = "markers", target_os = "linux", not(feature = "portable"))))]
#[test]
fn markers_feature_off_leaves_no_notes() {
    let (sites, _) = sites_of_this_binary();
    assert!(
        sites.is_empty(),
        "futexscope notes with the `markers` feature off: {sites:?}"
    );
}

#[test]
fn marker_ids_index_the_table() {
    use futexscope_probes_common::markers::{Marker, by_name};
    for (index, spec) in MARKERS.iter().enumerate() {
        let id = u32::try_from(index).expect("six markers");
        assert_eq!(spec.marker as usize, index);
        assert_eq!(Marker::from_id(id), Some(spec.marker));
        assert_eq!(by_name(spec.name), Some(spec.marker));
    }
    assert_eq!(Marker::from_id(6), None);
}
