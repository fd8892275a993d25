//! The stapsdt notes a program using the semaphore carries, read back with `readelf` (binutils,
//! an independent ELF reader): exactly the futexscope marker table, with plain-register
//! argument specs and no SDT semaphore; none at all when the `markers` feature is off or the
//! portable implementation (which has no futex paths to mark) is in use.

use futexscope_probes_common::markers::{MARKERS, PROVIDER};
use futexscope_semaphore::Semaphore;
use std::{process::Command, time::Duration};

/// One stapsdt note as `readelf -n` prints it.
#[derive(Debug, Default)]
struct Note {
    provider: String,
    name: String,
    location: u64,
    semaphore: u64,
    arguments: Vec<String>,
}

/// Every stapsdt note of this test binary, which uses the semaphore's waiting and waking paths.
fn notes_of_this_binary() -> Vec<Note> {
    // Run the slow paths so nothing about them can be left out of the binary.
    let sem = Semaphore::new(0);
    assert!(sem.try_acquire_for(1, Duration::from_millis(1)).is_err());
    sem.release(1).expect("room for one permit");
    sem.acquire(1).expect("one permit is free").forget();

    let exe = std::env::current_exe().expect("path of this test binary");
    let output = Command::new("readelf")
        .args(["--notes", "--wide"])
        .arg(&exe)
        .output()
        .expect("`readelf` (binutils) runs");
    assert!(output.status.success(), "readelf failed: {output:?}");
    parse_readelf_notes(&String::from_utf8_lossy(&output.stdout))
}

/// The stapsdt notes in `readelf --notes` output.
fn parse_readelf_notes(text: &str) -> Vec<Note> {
    let hex = |s: &str| {
        u64::from_str_radix(s.trim().trim_start_matches("0x"), 16).expect("a hex address")
    };
    let mut notes = Vec::new();
    for line in text.lines().map(str::trim) {
        // With `--wide` the provider shares the line of the note header.
        if let Some((_, provider)) = line.split_once("Provider: ") {
            notes.push(Note {
                provider: provider.to_owned(),
                ..Note::default()
            });
            continue;
        }
        let Some(note) = notes.last_mut() else {
            continue;
        };
        if let Some(name) = line.strip_prefix("Name: ") {
            note.name = name.to_owned();
        } else if let Some(rest) = line.strip_prefix("Location: ") {
            let fields: Vec<&str> = rest.split(", ").collect();
            note.location = hex(fields[0]);
            note.semaphore = hex(fields[2].trim_start_matches("Semaphore: "));
        } else if let Some(arguments) = line.strip_prefix("Arguments: ") {
            note.arguments = arguments.split_whitespace().map(str::to_owned).collect();
        }
    }
    notes
}

/// Whether `item` is `8@REG` or `-8@REG` with REG a 64-bit general-purpose register of the
/// target (`%rdi` on x86_64, `x0` on aarch64).
fn is_plain_register_arg(item: &str) -> bool {
    let Some(register) = item.strip_prefix("8@").or_else(|| item.strip_prefix("-8@")) else {
        return false;
    };
    if cfg!(target_arch = "x86_64") {
        let names = [
            "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "r8", "r9", "r10", "r11", "r12",
            "r13", "r14", "r15",
        ];
        register
            .strip_prefix('%')
            .is_some_and(|r| names.contains(&r))
    } else {
        register
            .strip_prefix('x')
            .and_then(|n| n.parse::<u8>().ok())
            .is_some_and(|n| n <= 30)
    }
}

#[cfg(all(feature = "markers", target_os = "linux", not(feature = "portable")))]
#[test]
fn binary_carries_exactly_the_marker_table() {
    use std::collections::BTreeSet;

    let notes: Vec<Note> = notes_of_this_binary()
        .into_iter()
        .filter(|n| n.provider == PROVIDER)
        .collect();
    let found: BTreeSet<&str> = notes.iter().map(|n| n.name.as_str()).collect();
    let table: BTreeSet<&str> = MARKERS.iter().map(|m| m.name).collect();
    assert_eq!(found, table, "marker names in the binary vs the table");
    for note in &notes {
        let spec = MARKERS
            .iter()
            .find(|m| m.name == note.name)
            .expect("checked above");
        assert_eq!(
            note.arguments.len(),
            spec.args.len(),
            "argument count of {note:?}"
        );
        for (item, meaning) in note.arguments.iter().zip(spec.args) {
            assert!(
                is_plain_register_arg(item),
                "`{item}` of {note:?} is not an 8-byte register"
            );
            let signed = item.starts_with('-');
            assert_eq!(
                signed,
                meaning.starts_with("result"),
                "signedness of `{item}` ({meaning})"
            );
        }
        assert_eq!(note.semaphore, 0, "{note:?} has an SDT semaphore");
        assert_ne!(note.location, 0, "{note:?} points at discarded code");
    }
}

#[cfg(not(all(feature = "markers", target_os = "linux", not(feature = "portable"))))]
#[test]
fn markers_feature_off_leaves_no_notes() {
    let notes = notes_of_this_binary();
    assert!(
        notes.iter().all(|n| n.provider != PROVIDER),
        "futexscope notes with the `markers` feature off: {notes:?}"
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

#[test]
fn readelf_note_parsing() {
    let text = "\
Displaying notes found in: .note.stapsdt
  Owner                Data size \tDescription
  stapsdt              0x00000049\tNT_STAPSDT (SystemTap probe descriptors)
    Provider: futexscope
    Name: wait_end
    Location: 0x0000000000015932, Base: 0x000000000000d0d4, Semaphore: 0x0000000000000000
    Arguments: 8@%rax 8@%rdx -8@%rsi 8@%rdi
";
    let notes = parse_readelf_notes(text);
    assert_eq!(notes.len(), 1);
    assert_eq!(notes[0].provider, "futexscope");
    assert_eq!(notes[0].name, "wait_end");
    assert_eq!((notes[0].location, notes[0].semaphore), (0x15932, 0));
    assert_eq!(
        notes[0].arguments,
        ["8@%rax", "8@%rdx", "-8@%rsi", "8@%rdi"]
    );
    assert_eq!(
        is_plain_register_arg("-8@%rsi"),
        cfg!(target_arch = "x86_64")
    );
    assert!(!is_plain_register_arg("4@%eax"));
    assert!(!is_plain_register_arg("8@-8(%rbp)"));
}
