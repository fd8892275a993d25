//! Finding the stapsdt notes of an ELF image and turning each into a [`UsdtSite`].

use object::{
    Endianness, elf,
    read::elf::{FileHeader, ProgramHeader, SectionHeader},
};

use crate::{Arch, ParseError, Sites, SkipReason, SkippedSite, UsdtArg, UsdtSite};

/// The ELF note owner of stapsdt notes.
const STAPSDT_OWNER: &[u8] = b"stapsdt";
/// The ELF note type of stapsdt (version 3) notes.
const STAPSDT_NOTE_TYPE: u32 = 3;
/// The section holding stapsdt notes.
const STAPSDT_SECTION: &[u8] = b".note.stapsdt";
/// The section whose link-time address every note records, to undo prelink-style relocation.
const STAPSDT_BASE_SECTION: &[u8] = b".stapsdt.base";

/// The sites of `provider` (all providers if `None`) in an ELF image of class `Elf`.
pub(crate) fn parse<Elf: FileHeader<Endian = Endianness>>(
    data: &[u8],
    provider: Option<&str>,
) -> Result<Sites, ParseError> {
    let malformed = |e: object::Error| ParseError::Malformed {
        reason: e.to_string(),
    };
    let header = Elf::parse(data).map_err(malformed)?;
    let endian = header.endian().map_err(malformed)?;
    let sections = header.sections(endian, data).map_err(malformed)?;
    let Some(notes_section) = sections
        .iter()
        .find(|s| sections.section_name(endian, s) == Ok(STAPSDT_SECTION))
    else {
        return Ok(Sites::default());
    };
    let arch = match header.e_machine(endian) {
        elf::EM_X86_64 => Arch::X86_64,
        elf::EM_AARCH64 => Arch::Aarch64,
        machine => {
            return Err(ParseError::UnsupportedMachine { machine });
        }
    };
    let base_address = sections
        .iter()
        .find(|s| sections.section_name(endian, s) == Ok(STAPSDT_BASE_SECTION))
        .map(|s| s.sh_addr(endian).into());
    let segments = header.program_headers(endian, data).map_err(malformed)?;
    let text_segments: Vec<(u64, u64, u64)> = segments
        .iter()
        .filter(|p| p.p_type(endian) == elf::PT_LOAD && p.p_flags(endian) & elf::PF_X != 0)
        .map(|p| {
            (
                p.p_vaddr(endian).into(),
                p.p_memsz(endian).into(),
                p.p_offset(endian).into(),
            )
        })
        .collect();
    let word_size = if header.is_type_64() { 8 } else { 4 };

    let notes = notes_section
        .notes(endian, data)
        .map_err(malformed)?
        .into_iter()
        .flatten();
    let mut found = Sites::default();
    for (index, note) in notes.enumerate() {
        let note = note.map_err(malformed)?;
        if note.name() != STAPSDT_OWNER || note.n_type(endian) != STAPSDT_NOTE_TYPE {
            continue;
        }
        let bad_note = |reason| ParseError::BadNote { index, reason };
        let desc = note.desc();
        let Some((words, strings)) = desc.split_at_checked(3 * word_size) else {
            return Err(bad_note("descriptor shorter than its three addresses"));
        };
        let word = |i: usize| -> u64 {
            let bytes = &words[i * word_size..(i + 1) * word_size];
            match (word_size, endian) {
                (8, Endianness::Little) => u64::from_le_bytes(bytes.try_into().unwrap_or_default()),
                (8, Endianness::Big) => u64::from_be_bytes(bytes.try_into().unwrap_or_default()),
                (_, Endianness::Little) => {
                    u64::from(u32::from_le_bytes(bytes.try_into().unwrap_or_default()))
                }
                (_, Endianness::Big) => {
                    u64::from(u32::from_be_bytes(bytes.try_into().unwrap_or_default()))
                }
            }
        };
        let (pc, note_base, semaphore) = (word(0), word(1), word(2));
        if strings.iter().filter(|&&b| b == 0).count() < 3 {
            return Err(bad_note(
                "provider, name and argument spec are not three NUL-terminated strings",
            ));
        }
        let mut fields = strings.split(|&b| b == 0);
        let mut text = |what| {
            fields
                .next()
                .and_then(|s| std::str::from_utf8(s).ok())
                .ok_or_else(|| bad_note(what))
        };
        let provider_name = text("provider is not UTF-8")?;
        let name = text("probe name is not UTF-8")?;
        let spec = text("argument spec is not UTF-8")?;
        if pc == 0 || provider.is_some_and(|wanted| wanted != provider_name) {
            continue;
        }
        // Undo prelink-style relocation: the note recorded where `.stapsdt.base` was at link
        // time; the section header says where it is now.
        let adjust = |address: u64| match base_address {
            Some(base) if address != 0 => address.wrapping_add(base).wrapping_sub(note_base),
            _ => address,
        };
        let address = adjust(pc);
        let Some(&(vaddr, _, segment_offset)) = text_segments
            .iter()
            .find(|&&(vaddr, memsz, _)| address >= vaddr && address - vaddr < memsz)
        else {
            found.skipped.push(SkippedSite {
                provider: provider_name.to_owned(),
                name: name.to_owned(),
                address,
                reason: SkipReason::OutsideText,
            });
            continue;
        };
        let probe = format!("{provider_name}:{name}");
        let file_offset = (address - vaddr)
            .checked_add(segment_offset)
            .ok_or_else(|| ParseError::Malformed {
                reason: format!("the segment holding {address:#x} has a file offset past 2^64"),
            })?;
        let args = spec
            .split_ascii_whitespace()
            .enumerate()
            .map(|(position, item)| {
                UsdtArg::parse(arch, item).map_err(|source| ParseError::BadArgSpec {
                    probe: probe.clone(),
                    position,
                    item: item.to_owned(),
                    source,
                })
            })
            .collect::<Result<_, _>>()?;
        found.sites.push(UsdtSite {
            provider: provider_name.to_owned(),
            name: name.to_owned(),
            address,
            file_offset,
            semaphore: adjust(semaphore),
            args,
        });
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use object::elf;

    use crate::*;

    /// A note to put in a synthetic ELF file.
    #[derive(Clone, Copy)]
    struct Note<'a> {
        pc: u64,
        base: u64,
        semaphore: u64,
        provider: &'a str,
        name: &'a str,
        spec: &'a str,
    }

    /// Executable segment of the synthetic file: vaddr 0x401000, file offset 0x1000, 0x100 bytes.
    const TEXT_VADDR: u64 = 0x40_1000;
    const TEXT_OFFSET: u64 = 0x1000;
    /// Where the synthetic file's `.stapsdt.base` section is.
    const BASE_VADDR: u64 = 0x40_2000;

    /// A minimal little-endian x86_64 ELF64 file: one executable PT_LOAD, a `.stapsdt.base`
    /// section (if `with_base`), and a `.note.stapsdt` section holding `notes`.
    fn synthetic_elf(notes: &[Note<'_>], with_base: bool) -> Vec<u8> {
        let mut note_bytes = Vec::new();
        for n in notes {
            let mut desc = Vec::new();
            for word in [n.pc, n.base, n.semaphore] {
                desc.extend_from_slice(&word.to_le_bytes());
            }
            for text in [n.provider, n.name, n.spec] {
                desc.extend_from_slice(text.as_bytes());
                desc.push(0);
            }
            note_bytes.extend_from_slice(&8u32.to_le_bytes());
            note_bytes.extend_from_slice(&(desc.len() as u32).to_le_bytes());
            note_bytes.extend_from_slice(&3u32.to_le_bytes());
            note_bytes.extend_from_slice(b"stapsdt\0");
            note_bytes.extend_from_slice(&desc);
            while !note_bytes.len().is_multiple_of(4) {
                note_bytes.push(0);
            }
        }
        let shstrtab = b"\0.note.stapsdt\0.stapsdt.base\0.shstrtab\0";
        let mut file = vec![0u8; 0x1200];
        let notes_offset = file.len();
        file.extend_from_slice(&note_bytes);
        let shstrtab_offset = file.len();
        file.extend_from_slice(shstrtab);
        while !file.len().is_multiple_of(8) {
            file.push(0);
        }
        let shoff = file.len();
        // Section headers: null, .note.stapsdt, .stapsdt.base, .shstrtab.
        let section =
            |name: u32, kind: u32, flags: u64, addr: u64, offset: u64, size: u64, align: u64| {
                let mut h = Vec::new();
                h.extend_from_slice(&name.to_le_bytes());
                h.extend_from_slice(&kind.to_le_bytes());
                h.extend_from_slice(&flags.to_le_bytes());
                h.extend_from_slice(&addr.to_le_bytes());
                h.extend_from_slice(&offset.to_le_bytes());
                h.extend_from_slice(&size.to_le_bytes());
                h.extend_from_slice(&0u32.to_le_bytes());
                h.extend_from_slice(&0u32.to_le_bytes());
                h.extend_from_slice(&align.to_le_bytes());
                h.extend_from_slice(&0u64.to_le_bytes());
                h
            };
        file.extend(section(0, 0, 0, 0, 0, 0, 0));
        file.extend(section(
            1,
            elf::SHT_NOTE,
            0,
            0,
            notes_offset as u64,
            note_bytes.len() as u64,
            4,
        ));
        let base_name = if with_base { 15 } else { 30 }; // ".shstrtab" when absent
        file.extend(section(
            base_name,
            elf::SHT_PROGBITS,
            2,
            BASE_VADDR,
            0x1100,
            1,
            1,
        ));
        file.extend(section(
            29,
            elf::SHT_STRTAB,
            0,
            0,
            shstrtab_offset as u64,
            shstrtab.len() as u64,
            1,
        ));
        // ELF header.
        file[..4].copy_from_slice(b"\x7fELF");
        file[4] = 2; // ELFCLASS64
        file[5] = 1; // little-endian
        file[6] = 1; // EV_CURRENT
        file[16..18].copy_from_slice(&3u16.to_le_bytes()); // ET_DYN
        file[18..20].copy_from_slice(&elf::EM_X86_64.to_le_bytes());
        file[20..24].copy_from_slice(&1u32.to_le_bytes());
        file[32..40].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
        file[40..48].copy_from_slice(&(shoff as u64).to_le_bytes());
        file[52..54].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
        file[54..56].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
        file[56..58].copy_from_slice(&1u16.to_le_bytes()); // e_phnum
        file[58..60].copy_from_slice(&64u16.to_le_bytes()); // e_shentsize
        file[60..62].copy_from_slice(&4u16.to_le_bytes()); // e_shnum
        file[62..64].copy_from_slice(&3u16.to_le_bytes()); // e_shstrndx
        // PT_LOAD, R+X.
        let ph = &mut file[64..120];
        ph[0..4].copy_from_slice(&elf::PT_LOAD.to_le_bytes());
        ph[4..8].copy_from_slice(&(elf::PF_R | elf::PF_X).to_le_bytes());
        ph[8..16].copy_from_slice(&TEXT_OFFSET.to_le_bytes());
        ph[16..24].copy_from_slice(&TEXT_VADDR.to_le_bytes());
        ph[24..32].copy_from_slice(&TEXT_VADDR.to_le_bytes());
        ph[32..40].copy_from_slice(&0x100u64.to_le_bytes());
        ph[40..48].copy_from_slice(&0x100u64.to_le_bytes());
        ph[48..56].copy_from_slice(&0x1000u64.to_le_bytes());
        file
    }

    fn note<'a>(pc: u64, name: &'a str, spec: &'a str) -> Note<'a> {
        Note {
            pc,
            base: BASE_VADDR,
            semaphore: 0,
            provider: "futexscope",
            name,
            spec,
        }
    }

    /// The sites of `data`, all providers, checking that none was skipped.
    fn parse(data: &[u8]) -> Result<Vec<UsdtSite>, ParseError> {
        let found = parse_sites(data)?;
        assert_eq!(found.skipped, [], "skipped notes");
        Ok(found.sites)
    }

    #[test]
    fn synthetic_notes_give_sites_with_file_offsets() {
        let data = synthetic_elf(
            &[
                note(TEXT_VADDR + 0x10, "wait_begin", "8@%rdi -4@%esi 8@$-3"),
                note(TEXT_VADDR + 0x20, "acquired", ""),
            ],
            true,
        );
        let sites = parse(&data).unwrap();
        assert_eq!(sites.len(), 2);
        assert_eq!(sites[0].provider, "futexscope");
        assert_eq!(sites[0].name, "wait_begin");
        assert_eq!(sites[0].address, TEXT_VADDR + 0x10);
        assert_eq!(sites[0].file_offset, TEXT_OFFSET + 0x10);
        assert_eq!(sites[0].semaphore, 0);
        let rdi = Register::from_name(Arch::X86_64, "rdi").unwrap();
        let rsi = Register::from_name(Arch::X86_64, "rsi").unwrap();
        assert_eq!(
            sites[0].args,
            [
                UsdtArg {
                    size: 8,
                    signed: false,
                    location: ArgLocation::Register(rdi),
                    spec: "8@%rdi".into()
                },
                UsdtArg {
                    size: 4,
                    signed: true,
                    location: ArgLocation::Register(rsi),
                    spec: "-4@%esi".into()
                },
                UsdtArg {
                    size: 8,
                    signed: false,
                    location: ArgLocation::Immediate(-3),
                    spec: "8@$-3".into()
                },
            ]
        );
        assert_eq!(sites[1].name, "acquired");
        assert!(sites[1].args.is_empty());
        assert_eq!(sites[1].file_offset, TEXT_OFFSET + 0x20);
    }

    #[test]
    fn base_adjustment_undoes_relocation() {
        // Recorded at link time with `.stapsdt.base` at BASE_VADDR - 0x1000: everything has
        // moved up by 0x1000 since.
        let mut moved = note(TEXT_VADDR + 0x10 - 0x1000, "wake_end", "8@%rax");
        moved.base = BASE_VADDR - 0x1000;
        moved.semaphore = 0x40_3000 - 0x1000;
        let sites = parse(&synthetic_elf(&[moved], true)).unwrap();
        assert_eq!(sites[0].address, TEXT_VADDR + 0x10);
        assert_eq!(sites[0].file_offset, TEXT_OFFSET + 0x10);
        assert_eq!(sites[0].semaphore, 0x40_3000);
        // Without a `.stapsdt.base` section the note's own address stands.
        let unmoved = note(TEXT_VADDR + 0x30, "wake_end", "8@%rax");
        let sites = parse(&synthetic_elf(&[unmoved], false)).unwrap();
        assert_eq!(sites[0].address, TEXT_VADDR + 0x30);
    }

    #[test]
    fn discarded_sites_are_left_out_and_stray_ones_skipped_alone() {
        let discarded = note(0, "timed_out", "8@%rdi");
        assert_eq!(parse(&synthetic_elf(&[discarded], false)).unwrap(), []);
        // A note left behind by code lld dropped records the marker's offset in the dropped
        // function: here 0x13, below the text segment. One past the segment's end is just as
        // unreachable. The good notes around them still give their sites.
        let good = note(TEXT_VADDR + 0x10, "wait_begin", "8@%rdi");
        let dropped = note(0x13, "wake_begin", "8@%rdi 8@%bogus");
        let past_end = note(TEXT_VADDR + 0x100, "timed_out", "8@%rdi");
        let last = note(TEXT_VADDR + 0xff, "acquired", "8@%rax");
        let found = parse_sites(&synthetic_elf(&[good, dropped, past_end, last], true)).unwrap();
        let names: Vec<&str> = found.sites.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["wait_begin", "acquired"]);
        assert_eq!(found.sites[1].file_offset, TEXT_OFFSET + 0xff);
        assert_eq!(
            found.skipped,
            [
                SkippedSite {
                    provider: "futexscope".into(),
                    name: "wake_begin".into(),
                    address: 0x13,
                    reason: SkipReason::OutsideText,
                },
                SkippedSite {
                    provider: "futexscope".into(),
                    name: "timed_out".into(),
                    address: TEXT_VADDR + 0x100,
                    reason: SkipReason::OutsideText,
                },
            ]
        );
        assert_eq!(
            found.skipped[0].to_string(),
            "marker `futexscope:wake_begin` at 0x13 skipped: outside every executable PT_LOAD \
             segment (its code was probably dropped by the linker)"
        );
        // The provider filter gives the same answer for the provider's notes.
        assert_eq!(
            sites(
                &synthetic_elf(&[good, dropped, past_end, last], true),
                "futexscope"
            )
            .unwrap(),
            found
        );
        // The adjustment applies before the check: a note recorded with `.stapsdt.base` one page
        // lower lies in the text segment once moved, and outside it unmoved.
        let mut moved = note(TEXT_VADDR - 0x1000 + 0x20, "wake_end", "8@%rax");
        moved.base = BASE_VADDR - 0x1000;
        let found = parse_sites(&synthetic_elf(&[moved], true)).unwrap();
        assert_eq!((found.sites.len(), found.skipped.len()), (1, 0));
        let found = parse_sites(&synthetic_elf(&[moved], false)).unwrap();
        assert_eq!((found.sites.len(), found.skipped.len()), (0, 1));
    }

    #[test]
    fn bad_arg_spec_names_the_probe_and_item() {
        let bad = note(TEXT_VADDR, "wait_end", "8@%rdi 8@%xyz");
        let error = parse(&synthetic_elf(&[bad], true)).unwrap_err();
        assert_eq!(
            error.to_string(),
            "argument 1 (`8@%xyz`) of marker `futexscope:wait_end` cannot be parsed"
        );
    }

    #[test]
    fn non_elf_and_empty_input_are_errors() {
        assert!(matches!(parse(b""), Err(ParseError::NotElf)));
        assert!(matches!(
            parse(b"#!/bin/sh\necho hi\n"),
            Err(ParseError::NotElf)
        ));
        assert!(matches!(
            parse(b"\x7fELF\x02\x01\x01"),
            Err(ParseError::Malformed { .. })
        ));
    }

    #[test]
    fn every_truncation_and_byte_flip_is_handled_without_panic() {
        let data = synthetic_elf(
            &[note(
                TEXT_VADDR + 4,
                "wait_begin",
                "8@%rdi -8@%r8 8@-16(%rbp) 4@(%rax,%rbx,8)",
            )],
            true,
        );
        assert_eq!(parse(&data).unwrap().len(), 1);
        for len in 0..data.len() {
            let _ = parse_sites(&data[..len]);
        }
        for position in 0..data.len() {
            for value in [0x00, 0x01, 0x7f, 0x80, 0xff] {
                let mut mutated = data.clone();
                mutated[position] = value;
                let _ = parse_sites(&mutated);
            }
        }
    }

    #[test]
    fn the_provider_filter_skips_other_providers_before_parsing_them() {
        let ours = note(TEXT_VADDR + 0x10, "wait_begin", "8@%rdi");
        // Notes of another provider: one with a spec this parser does not understand, one at
        // an address outside the text segment.
        let unparsable = Note {
            provider: "libc",
            ..note(TEXT_VADDR + 0x20, "setjmp", "8@sym(%rip)")
        };
        let stray = Note {
            provider: "libc",
            ..note(0x9999_0000, "longjmp", "8@%rdi")
        };
        let data = synthetic_elf(&[unparsable, ours, stray], true);
        assert!(matches!(
            parse_sites(&data),
            Err(ParseError::BadArgSpec { position: 0, .. })
        ));
        let without_unparsable = parse_sites(&synthetic_elf(&[ours, stray], true)).unwrap();
        assert_eq!(without_unparsable.sites.len(), 1);
        assert_eq!(without_unparsable.skipped.len(), 1);
        assert_eq!(without_unparsable.skipped[0].name, "longjmp");
        let found = sites(&data, "futexscope").unwrap();
        assert_eq!(found.sites.len(), 1);
        assert_eq!(found.sites[0].name, "wait_begin");
        assert_eq!(found.skipped, []);
        assert_eq!(sites(&data, "nobody").unwrap(), Sites::default());
        // A structurally broken note is an error whatever its provider.
        let mut broken = synthetic_elf(&[note(TEXT_VADDR, "wait_end", "")], true);
        let end = broken
            .windows(9)
            .position(|w| w == b"wait_end\0")
            .expect("the name in the note")
            + 8;
        broken[end] = b'x';
        broken[end + 1] = b'x';
        assert!(matches!(
            sites(&broken, "nobody"),
            Err(ParseError::BadNote { index: 0, .. })
        ));
    }

    /// Inputs that once crashed the parser (found by `cargo fuzz run usdt_notes`), kept in
    /// `tests/data/malformed/`: each must now be a clean error.
    #[test]
    fn fuzz_regressions_are_errors() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/malformed");
        let mut checked = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let result = parse_sites(&std::fs::read(&path).unwrap());
            assert!(result.is_err(), "`{}` parsed: {result:?}", path.display());
            checked += 1;
        }
        assert!(checked > 0, "no inputs in `{}`", dir.display());
    }
}
