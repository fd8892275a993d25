//! Reading USDT marker sites (stapsdt notes) from ELF executables and shared libraries.
//!
//! Each stapsdt note names one probe site: the address of its `nop`, the link-time address of
//! the `.stapsdt.base` section, an optional SDT semaphore, and the provider, probe name and
//! argument spec (`8@%rdi -4@$5 8@-16(%rbp)`). [`read_sites`] turns every note of a file into
//! a [`UsdtSite`] whose `file_offset` is what a uprobe attaches to, and whose arguments say
//! where an eBPF program finds each value in `pt_regs`.
//!
//! The parser never panics: every malformed file, note or spec is a [`UsdtError`].

use std::{
    collections::BTreeMap,
    fmt, fs, io,
    path::{Path, PathBuf},
};

use futexscope_probes_common::markers;
use object::{
    Endianness, FileKind,
    elf::{self, FileHeader32, FileHeader64},
    read::elf::{FileHeader, ProgramHeader, SectionHeader},
};

/// The ELF note owner of stapsdt notes.
const STAPSDT_OWNER: &[u8] = b"stapsdt";
/// The ELF note type of stapsdt (version 3) notes.
const STAPSDT_NOTE_TYPE: u32 = 3;
/// The section holding stapsdt notes.
const STAPSDT_SECTION: &[u8] = b".note.stapsdt";
/// The section whose link-time address every note records, to undo prelink-style relocation.
const STAPSDT_BASE_SECTION: &[u8] = b".stapsdt.base";

/// One USDT probe site found in an ELF file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsdtSite {
    /// The provider (`futexscope` for our markers).
    pub provider: String,
    /// The probe name (`wait_begin`…).
    pub name: String,
    /// Virtual address of the probe's `nop`, after the `.stapsdt.base` adjustment.
    pub address: u64,
    /// File offset of the probe's `nop` (the offset a uprobe attaches to).
    pub file_offset: u64,
    /// Virtual address of the SDT semaphore (after adjustment), 0 if the probe has none.
    pub semaphore: u64,
    /// The probe's arguments, in order.
    pub args: Vec<UsdtArg>,
}

/// One argument of a USDT probe site, as its stapsdt argument spec describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsdtArg {
    /// Size of the value in bytes: 1, 2, 4 or 8.
    pub size: u8,
    /// Whether the value is signed (a negative size in the spec).
    pub signed: bool,
    /// Where the value is.
    pub location: ArgLocation,
    /// The item as the note wrote it (`-8@%rsi`).
    pub spec: String,
}

/// Where a probe argument's value is when the probe fires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArgLocation {
    /// In a register.
    Register(Register),
    /// A constant.
    Immediate(i64),
    /// In memory at `base + index * scale + offset`. Not supported by futexscope's eBPF
    /// programs, which read registers only.
    Memory {
        /// The base register.
        base: Register,
        /// The index register and its scale (1, 2, 4 or 8), if any.
        index: Option<(Register, u8)>,
        /// The constant displacement.
        offset: i64,
    },
}

/// The instruction sets whose stapsdt argument specs this parser understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    /// x86_64 (AT&T operand syntax: `%rdi`, `$5`, `-8(%rbp)`).
    X86_64,
    /// aarch64 (`x0`, `5`, `[sp, 16]`).
    Aarch64,
}

/// A general-purpose register named by an argument spec.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Register {
    arch: Arch,
    /// Index into the architecture's register table ([`X86_64_REGISTERS`] or x0..x30, sp).
    index: u8,
}

/// x86_64 registers in `struct pt_regs` order (arch/x86/include/asm/ptrace.h), each with the
/// names of its 64/32/16/8-bit forms. The slot is 8 bytes; smaller forms are its low bytes.
const X86_64_REGISTERS: [[&str; 4]; 17] = [
    ["r15", "r15d", "r15w", "r15b"],
    ["r14", "r14d", "r14w", "r14b"],
    ["r13", "r13d", "r13w", "r13b"],
    ["r12", "r12d", "r12w", "r12b"],
    ["rbp", "ebp", "bp", "bpl"],
    ["rbx", "ebx", "bx", "bl"],
    ["r11", "r11d", "r11w", "r11b"],
    ["r10", "r10d", "r10w", "r10b"],
    ["r9", "r9d", "r9w", "r9b"],
    ["r8", "r8d", "r8w", "r8b"],
    ["rax", "eax", "ax", "al"],
    ["rcx", "ecx", "cx", "cl"],
    ["rdx", "edx", "dx", "dl"],
    ["rsi", "esi", "si", "sil"],
    ["rdi", "edi", "di", "dil"],
    // orig_rax (slot 15) is no operand; rip and rsp follow it in pt_regs.
    ["rip", "eip", "ip", ""],
    ["rsp", "esp", "sp", "spl"],
];

/// `struct pt_regs` slot (in 8-byte units) of each entry of [`X86_64_REGISTERS`].
const X86_64_PT_REGS_SLOT: [u8; 17] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 16, 19];

/// Index of aarch64's `sp` in this module's register numbering (x0..x30 are 0..=30).
const AARCH64_SP: u8 = 31;

impl Register {
    /// The register called `name` (without `%`) on `arch`, any width.
    pub fn from_name(arch: Arch, name: &str) -> Option<Register> {
        match arch {
            Arch::X86_64 => X86_64_REGISTERS
                .iter()
                .position(|forms| forms.contains(&name) && !name.is_empty())
                .map(|index| Register {
                    arch,
                    index: index as u8,
                }),
            Arch::Aarch64 => {
                if name == "sp" {
                    return Some(Register {
                        arch,
                        index: AARCH64_SP,
                    });
                }
                let number = name.strip_prefix(['x', 'w'])?;
                if number.len() > 1 && number.starts_with('0') {
                    return None;
                }
                let index: u8 = number.parse().ok()?;
                (index <= 30).then_some(Register { arch, index })
            }
        }
    }

    /// The architecture this register belongs to.
    pub fn arch(self) -> Arch {
        self.arch
    }

    /// The register's full-width name (`rdi`, `x0`).
    pub fn name(self) -> String {
        match self.arch {
            Arch::X86_64 => X86_64_REGISTERS[usize::from(self.index)][0].to_owned(),
            Arch::Aarch64 if self.index == AARCH64_SP => "sp".to_owned(),
            Arch::Aarch64 => format!("x{}", self.index),
        }
    }

    /// Byte offset of this register in the kernel's register frame that uprobe programs see:
    /// x86_64 `struct pt_regs` (r15, r14, r13, r12, rbp, rbx, r11, r10, r9, r8, rax, rcx, rdx,
    /// rsi, rdi, orig_rax, rip, cs, eflags, rsp, ss), or aarch64 `struct user_pt_regs`
    /// (x0..x30, sp). On little-endian machines a narrower value is the slot's low bytes.
    pub fn pt_regs_offset(self) -> usize {
        match self.arch {
            Arch::X86_64 => 8 * usize::from(X86_64_PT_REGS_SLOT[usize::from(self.index)]),
            Arch::Aarch64 => 8 * usize::from(self.index),
        }
    }
}

impl fmt::Display for Register {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.arch {
            Arch::X86_64 => write!(f, "%{}", self.name()),
            Arch::Aarch64 => f.write_str(&self.name()),
        }
    }
}

impl UsdtArg {
    /// Parses one `SIZE@LOCATION` item of a stapsdt argument spec for `arch`.
    pub fn parse(arch: Arch, item: &str) -> Result<UsdtArg, ArgSpecError> {
        let (size, location) = item.split_once('@').ok_or(ArgSpecError::NoSize)?;
        let (signed, magnitude) = match size.strip_prefix('-') {
            Some(magnitude) => (true, magnitude),
            None => (false, size),
        };
        let size = match magnitude {
            "1" => 1,
            "2" => 2,
            "4" => 4,
            "8" => 8,
            _ => return Err(ArgSpecError::BadSize(size.to_owned())),
        };
        let location = match arch {
            Arch::X86_64 => parse_x86_64_location(location),
            Arch::Aarch64 => parse_aarch64_location(location),
        }
        .ok_or_else(|| ArgSpecError::BadLocation(location.to_owned()))?;
        Ok(UsdtArg {
            size,
            signed,
            location,
            spec: item.to_owned(),
        })
    }

    /// Whether futexscope's eBPF programs can read this argument (registers and constants;
    /// memory operands are not supported).
    pub fn is_supported(&self) -> bool {
        !matches!(self.location, ArgLocation::Memory { .. })
    }
}

impl fmt::Display for UsdtArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.spec)
    }
}

/// Parses an integer as assemblers write it: optional sign, decimal or `0x` hexadecimal.
fn parse_integer(text: &str) -> Option<i64> {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let magnitude = match digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        Some(hex) => u64::from_str_radix(hex, 16).ok()?,
        None if digits.bytes().all(|b| b.is_ascii_digit()) => digits.parse().ok()?,
        None => return None,
    };
    if negative {
        0i64.checked_sub_unsigned(magnitude)
    } else {
        i64::try_from(magnitude).ok()
    }
}

/// `%reg`, `$imm`, `off(%base)`, `off(%base,%index,scale)`.
fn parse_x86_64_location(text: &str) -> Option<ArgLocation> {
    let register = |name: &str| Register::from_name(Arch::X86_64, name.strip_prefix('%')?);
    if let Some(value) = text.strip_prefix('$') {
        return parse_integer(value).map(ArgLocation::Immediate);
    }
    if text.starts_with('%') {
        return register(text).map(ArgLocation::Register);
    }
    let (offset, rest) = text.split_once('(')?;
    let operands = rest.strip_suffix(')')?;
    let offset = if offset.is_empty() {
        0
    } else {
        parse_integer(offset)?
    };
    let mut parts = operands.split(',').map(str::trim);
    let base = register(parts.next()?)?;
    let index = match (parts.next(), parts.next()) {
        (None, _) => None,
        (Some(index), scale) => {
            let scale = match scale {
                None => 1,
                Some(scale) => scale.parse().ok().filter(|s| matches!(s, 1 | 2 | 4 | 8))?,
            };
            Some((register(index)?, scale))
        }
    };
    if parts.next().is_some() {
        return None;
    }
    Some(ArgLocation::Memory {
        base,
        index,
        offset,
    })
}

/// `xN`/`wN`/`sp`, `imm`, `[reg]`, `[reg, off]`.
fn parse_aarch64_location(text: &str) -> Option<ArgLocation> {
    if let Some(inner) = text.strip_prefix('[') {
        let inner = inner.strip_suffix(']')?;
        let (base, offset) = match inner.split_once(',') {
            Some((base, offset)) => {
                let offset = offset.trim();
                (
                    base.trim(),
                    parse_integer(offset.strip_prefix('#').unwrap_or(offset))?,
                )
            }
            None => (inner.trim(), 0),
        };
        let base = Register::from_name(Arch::Aarch64, base)?;
        return Some(ArgLocation::Memory {
            base,
            index: None,
            offset,
        });
    }
    if let Some(register) = Register::from_name(Arch::Aarch64, text) {
        return Some(ArgLocation::Register(register));
    }
    parse_integer(text.strip_prefix('#').unwrap_or(text)).map(ArgLocation::Immediate)
}

/// Why one item of a stapsdt argument spec could not be parsed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ArgSpecError {
    /// The item has no `SIZE@` prefix.
    #[error("no `SIZE@` prefix")]
    NoSize,
    /// The size is not 1, 2, 4 or 8 (optionally negative).
    #[error("size `{0}` is not 1, 2, 4 or 8 (negative for signed)")]
    BadSize(String),
    /// The location is not a register, constant or memory operand this parser knows.
    #[error("location `{0}` is not a known register, constant or memory operand")]
    BadLocation(String),
}

/// Why the USDT sites of a file or process could not be read.
#[derive(Debug, thiserror::Error)]
pub enum UsdtError {
    /// The file could not be read.
    #[error("cannot read `{path}`")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// The file is not a 64- or 32-bit ELF file.
    #[error(
        "`{path}` is not an ELF file: USDT markers are read from ELF executables and libraries"
    )]
    NotElf {
        /// The file.
        path: PathBuf,
    },
    /// The ELF structure is broken.
    #[error("`{path}` is a malformed ELF file: {reason}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The file's instruction set is neither x86_64 nor aarch64.
    #[error(
        "`{path}` is for ELF machine {machine}: only x86_64 and aarch64 markers are understood"
    )]
    UnsupportedMachine {
        /// The file.
        path: PathBuf,
        /// The ELF `e_machine` value.
        machine: u16,
    },
    /// A stapsdt note is truncated or not NUL-terminated.
    #[error("stapsdt note {index} of `{path}` is malformed: {reason}")]
    BadNote {
        /// The file.
        path: PathBuf,
        /// The note's position in `.note.stapsdt`, from 0.
        index: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// An argument spec item could not be parsed.
    #[error("argument {position} (`{item}`) of marker `{probe}` in `{path}` cannot be parsed")]
    BadArgSpec {
        /// The file.
        path: PathBuf,
        /// `provider:name`.
        probe: String,
        /// The argument's position, from 0.
        position: usize,
        /// The spec item.
        item: String,
        /// What is wrong.
        #[source]
        source: ArgSpecError,
    },
    /// A probe's address lies in no executable loadable segment, so it has no file offset.
    #[error(
        "marker `{probe}` of `{path}` is at {address:#x}, outside every executable PT_LOAD segment"
    )]
    OutsideText {
        /// The file.
        path: PathBuf,
        /// `provider:name`.
        probe: String,
        /// The adjusted virtual address.
        address: u64,
    },
    /// The memory map of a process could not be read.
    #[error("cannot read the memory map of process {pid} (`/proc/{pid}/maps`): is it running?")]
    ProcessMaps {
        /// The process.
        pid: u32,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
}

/// Reads every USDT probe site of the ELF file at `path`.
///
/// Sites whose `nop` the linker discarded (their recorded address is 0, left by
/// `--gc-sections` for code that nothing called) are not returned: no process can hit them.
pub fn read_sites(path: &Path) -> Result<Vec<UsdtSite>, UsdtError> {
    let data = fs::read(path).map_err(|source| UsdtError::Read {
        path: path.into(),
        source,
    })?;
    parse_sites(path, &data)
}

/// Reads every USDT probe site of an ELF image held in memory; `path` only names it in errors.
pub fn parse_sites(path: &Path, data: &[u8]) -> Result<Vec<UsdtSite>, UsdtError> {
    match FileKind::parse(data) {
        Ok(FileKind::Elf64) => parse_elf::<FileHeader64<Endianness>>(path, data),
        Ok(FileKind::Elf32) => parse_elf::<FileHeader32<Endianness>>(path, data),
        Ok(_) => Err(UsdtError::NotElf { path: path.into() }),
        Err(e) if data.starts_with(&elf::ELFMAG) => Err(UsdtError::Malformed {
            path: path.into(),
            reason: e.to_string(),
        }),
        Err(_) => Err(UsdtError::NotElf { path: path.into() }),
    }
}

fn parse_elf<Elf: FileHeader<Endian = Endianness>>(
    path: &Path,
    data: &[u8],
) -> Result<Vec<UsdtSite>, UsdtError> {
    let malformed = |e: object::Error| UsdtError::Malformed {
        path: path.into(),
        reason: e.to_string(),
    };
    let header = Elf::parse(data).map_err(malformed)?;
    let endian = header.endian().map_err(malformed)?;
    let sections = header.sections(endian, data).map_err(malformed)?;
    let Some(notes_section) = sections
        .iter()
        .find(|s| sections.section_name(endian, s) == Ok(STAPSDT_SECTION))
    else {
        return Ok(Vec::new());
    };
    let arch = match header.e_machine(endian) {
        elf::EM_X86_64 => Arch::X86_64,
        elf::EM_AARCH64 => Arch::Aarch64,
        machine => {
            return Err(UsdtError::UnsupportedMachine {
                path: path.into(),
                machine,
            });
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
    let mut sites = Vec::new();
    for (index, note) in notes.enumerate() {
        let note = note.map_err(malformed)?;
        if note.name() != STAPSDT_OWNER || note.n_type(endian) != STAPSDT_NOTE_TYPE {
            continue;
        }
        let bad_note = |reason| UsdtError::BadNote {
            path: path.into(),
            index,
            reason,
        };
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
        let provider = text("provider is not UTF-8")?.to_owned();
        let name = text("probe name is not UTF-8")?.to_owned();
        let spec = text("argument spec is not UTF-8")?.to_owned();
        if pc == 0 {
            continue;
        }
        // Undo prelink-style relocation: the note recorded where `.stapsdt.base` was at link
        // time; the section header says where it is now.
        let adjust = |address: u64| match base_address {
            Some(base) if address != 0 => address.wrapping_add(base).wrapping_sub(note_base),
            _ => address,
        };
        let address = adjust(pc);
        let probe = format!("{provider}:{name}");
        let &(vaddr, _, segment_offset) = text_segments
            .iter()
            .find(|&&(vaddr, memsz, _)| address >= vaddr && address - vaddr < memsz)
            .ok_or_else(|| UsdtError::OutsideText {
                path: path.into(),
                probe: probe.clone(),
                address,
            })?;
        let file_offset = (address - vaddr)
            .checked_add(segment_offset)
            .ok_or_else(|| UsdtError::Malformed {
                path: path.into(),
                reason: format!("the segment holding {address:#x} has a file offset past 2^64"),
            })?;
        let args = spec
            .split_ascii_whitespace()
            .enumerate()
            .map(|(position, item)| {
                UsdtArg::parse(arch, item).map_err(|source| UsdtError::BadArgSpec {
                    path: path.into(),
                    probe: probe.clone(),
                    position,
                    item: item.to_owned(),
                    source,
                })
            })
            .collect::<Result<_, _>>()?;
        sites.push(UsdtSite {
            provider,
            name,
            address,
            file_offset,
            semaphore: adjust(semaphore),
            args,
        });
    }
    Ok(sites)
}

/// A file mapped into a process that holds futexscope markers.
#[derive(Debug)]
pub struct MarkedObject {
    /// The file as the process's memory map names it.
    pub path: PathBuf,
    /// The same file reached through `/proc/PID/root`, valid in this mount namespace: read
    /// and attach through this one.
    pub host_path: PathBuf,
    /// Its futexscope marker sites.
    pub sites: Vec<UsdtSite>,
}

/// The files a process maps executable (its program and libraries), split into those with
/// futexscope markers and those that could not be read.
#[derive(Debug, Default)]
pub struct ProcessMarkers {
    /// Files with at least one futexscope marker site.
    pub marked: Vec<MarkedObject>,
    /// Mapped files that could not be read or parsed, with the reason.
    pub unreadable: Vec<(PathBuf, UsdtError)>,
}

/// Finds the executable and libraries mapped by process `pid` that carry futexscope markers
/// (provider [`markers::PROVIDER`]), from `/proc/PID/maps`.
pub fn process_markers(pid: u32) -> Result<ProcessMarkers, UsdtError> {
    let maps = fs::read_to_string(format!("/proc/{pid}/maps"))
        .map_err(|source| UsdtError::ProcessMaps { pid, source })?;
    let mut result = ProcessMarkers::default();
    for (path, mapping) in executable_mappings(&maps) {
        let host_path = match mapping {
            // The file was replaced or removed since it was mapped: its inode is still
            // reachable through the mapping itself.
            Mapping::Deleted { range } => PathBuf::from(format!("/proc/{pid}/map_files/{range}")),
            Mapping::Present => Path::new(&format!("/proc/{pid}/root"))
                .join(path.strip_prefix("/").unwrap_or(&path)),
        };
        match read_sites(&host_path) {
            Ok(sites) => {
                let sites: Vec<_> = sites
                    .into_iter()
                    .filter(|s| s.provider == markers::PROVIDER)
                    .collect();
                if !sites.is_empty() {
                    result.marked.push(MarkedObject {
                        path,
                        host_path,
                        sites,
                    });
                }
            }
            Err(error) => result.unreadable.push((path, error)),
        }
    }
    Ok(result)
}

/// How a mapped file can be reached.
#[derive(Debug, PartialEq, Eq)]
enum Mapping {
    /// Under its path (in the process's root).
    Present,
    /// Only through `/proc/PID/map_files/RANGE`: the path no longer names it.
    Deleted {
        /// The mapping's `START-END` address range as `maps` writes it.
        range: String,
    },
}

/// The distinct absolute paths of executable file mappings in a `/proc/PID/maps` text, each
/// with how to reach it.
fn executable_mappings(maps: &str) -> BTreeMap<PathBuf, Mapping> {
    maps.lines()
        .filter_map(|line| {
            // address perms offset dev inode pathname (the pathname may contain spaces)
            let mut fields = line.splitn(6, ' ');
            let range = fields.next()?;
            let perms = fields.next()?;
            let pathname = fields.nth(3)?.trim_start();
            if !perms.contains('x') || !pathname.starts_with('/') {
                return None;
            }
            Some(match pathname.strip_suffix(" (deleted)") {
                Some(path) => (
                    PathBuf::from(path),
                    Mapping::Deleted {
                        range: range.to_owned(),
                    },
                ),
                None => (PathBuf::from(pathname), Mapping::Present),
            })
        })
        .collect()
}

/// The lines `futexscope list BIN|PID` prints: one per futexscope marker site, in the form
/// `usdt:PATH:futexscope:NAME` followed by each argument's name and spec, like
/// `bpftrace -lv`. `target` is a file path, or a process id if it is a number.
pub fn list(target: &str) -> Result<Vec<String>, UsdtError> {
    let mut lines = Vec::new();
    match target.parse::<u32>() {
        Ok(pid) if !Path::new(target).exists() => {
            let found = process_markers(pid)?;
            for (path, error) in &found.unreadable {
                lines.push(format!("# skipped `{}`: {error}", path.display()));
            }
            for object in &found.marked {
                push_site_lines(&mut lines, &object.path, &object.sites);
            }
        }
        _ => {
            let path = Path::new(target);
            let sites: Vec<_> = read_sites(path)?
                .into_iter()
                .filter(|s| s.provider == markers::PROVIDER)
                .collect();
            push_site_lines(&mut lines, path, &sites);
        }
    }
    Ok(lines)
}

/// Appends the `list` lines of `sites`, found in `path`.
fn push_site_lines(lines: &mut Vec<String>, path: &Path, sites: &[UsdtSite]) {
    for site in sites {
        lines.push(format!(
            "usdt:{}:{}:{} (file offset {:#x})",
            path.display(),
            site.provider,
            site.name,
            site.file_offset
        ));
        let names = markers::by_name(&site.name).map(|m| m.spec().args);
        for (position, arg) in site.args.iter().enumerate() {
            let name = names
                .and_then(|names| names.get(position))
                .and_then(|text| text.split(':').next())
                .unwrap_or("?");
            lines.push(format!("    arg{position} {name} {arg}"));
        }
        match names {
            None => lines.push("    (not in futexscope's marker table)".to_owned()),
            Some(names) if names.len() != site.args.len() => lines.push(format!(
                "    ({} arguments, futexscope's marker table has {})",
                site.args.len(),
                names.len()
            )),
            Some(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A note to put in a synthetic ELF file.
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

    fn parse(data: &[u8]) -> Result<Vec<UsdtSite>, UsdtError> {
        parse_sites(Path::new("synthetic"), data)
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
    fn discarded_sites_are_skipped_and_stray_ones_are_errors() {
        let discarded = note(0, "timed_out", "8@%rdi");
        assert_eq!(parse(&synthetic_elf(&[discarded], false)).unwrap(), []);
        let stray = note(0x9999_0000, "timed_out", "8@%rdi");
        let error = parse(&synthetic_elf(&[stray], true)).unwrap_err();
        assert!(
            matches!(
                error,
                UsdtError::OutsideText {
                    address: 0x9999_0000,
                    ..
                }
            ),
            "{error}"
        );
    }

    #[test]
    fn bad_arg_spec_names_the_probe_and_item() {
        let bad = note(TEXT_VADDR, "wait_end", "8@%rdi 8@%xyz");
        let error = parse(&synthetic_elf(&[bad], true)).unwrap_err();
        assert_eq!(
            error.to_string(),
            "argument 1 (`8@%xyz`) of marker `futexscope:wait_end` in `synthetic` cannot be parsed"
        );
    }

    #[test]
    fn non_elf_and_empty_input_are_errors() {
        assert!(matches!(parse(b""), Err(UsdtError::NotElf { .. })));
        assert!(matches!(
            parse(b"#!/bin/sh\necho hi\n"),
            Err(UsdtError::NotElf { .. })
        ));
        assert!(matches!(
            parse(b"\x7fELF\x02\x01\x01"),
            Err(UsdtError::Malformed { .. })
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
            let _ = parse(&data[..len]);
        }
        for position in 0..data.len() {
            for value in [0x00, 0x01, 0x7f, 0x80, 0xff] {
                let mut mutated = data.clone();
                mutated[position] = value;
                let _ = parse(&mutated);
            }
        }
    }

    /// Inputs that once crashed the parser (found by `cargo fuzz run usdt_notes`): each must
    /// now be a clean error.
    #[test]
    fn fuzz_regressions_are_errors() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/usdt-malformed");
        let mut checked = 0;
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let result = read_sites(&path);
            assert!(result.is_err(), "`{}` parsed: {result:?}", path.display());
            checked += 1;
        }
        assert!(checked > 0, "no inputs in `{}`", dir.display());
    }

    #[test]
    fn x86_64_registers_map_to_pt_regs_offsets() {
        let offset = |name| {
            Register::from_name(Arch::X86_64, name)
                .unwrap()
                .pt_regs_offset()
        };
        let pt_regs = [
            "r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8", "rax", "rcx",
            "rdx", "rsi", "rdi",
        ];
        for (slot, name) in pt_regs.iter().enumerate() {
            assert_eq!(offset(name), slot * 8, "{name}");
        }
        assert_eq!(offset("rip"), 16 * 8);
        assert_eq!(offset("rsp"), 19 * 8);
        for (narrow, full) in [
            ("eax", "rax"),
            ("r8d", "r8"),
            ("r10w", "r10"),
            ("dil", "rdi"),
            ("cl", "rcx"),
        ] {
            assert_eq!(offset(narrow), offset(full), "{narrow}");
        }
        assert_eq!(Register::from_name(Arch::X86_64, "ah"), None);
        assert_eq!(Register::from_name(Arch::X86_64, ""), None);
    }

    #[test]
    fn arg_spec_forms() {
        let x86 = |item| UsdtArg::parse(Arch::X86_64, item);
        let reg = |name| Register::from_name(Arch::X86_64, name).unwrap();
        assert_eq!(
            x86("-4@-1204(%rbp)").unwrap().location,
            ArgLocation::Memory {
                base: reg("rbp"),
                index: None,
                offset: -1204
            }
        );
        assert_eq!(
            x86("8@16(%rax,%rcx,4)").unwrap().location,
            ArgLocation::Memory {
                base: reg("rax"),
                index: Some((reg("rcx"), 4)),
                offset: 16
            }
        );
        assert!(!x86("8@(%rsp)").unwrap().is_supported());
        assert!(x86("8@%rsp").unwrap().is_supported());
        assert_eq!(x86("2@$0x10").unwrap().location, ArgLocation::Immediate(16));
        assert_eq!(x86("%rdi"), Err(ArgSpecError::NoSize));
        assert_eq!(x86("3@%rdi"), Err(ArgSpecError::BadSize("3".into())));
        assert_eq!(x86("8@rdi"), Err(ArgSpecError::BadLocation("rdi".into())));
        assert_eq!(
            x86("8@sym(%rip)"),
            Err(ArgSpecError::BadLocation("sym(%rip)".into()))
        );
        assert_eq!(
            x86("8@8(%rax,%rcx,3)"),
            Err(ArgSpecError::BadLocation("8(%rax,%rcx,3)".into()))
        );
        assert_eq!(
            x86("8@$99999999999999999999"),
            Err(ArgSpecError::BadLocation("$99999999999999999999".into()))
        );

        let arm = |item| UsdtArg::parse(Arch::Aarch64, item);
        let x = |n| Register::from_name(Arch::Aarch64, n).unwrap();
        assert_eq!(
            arm("8@x0").unwrap().location,
            ArgLocation::Register(x("x0"))
        );
        assert_eq!(x("w7").pt_regs_offset(), 56);
        assert_eq!(x("sp").pt_regs_offset(), 248);
        assert_eq!(
            arm("-4@[sp, 16]").unwrap().location,
            ArgLocation::Memory {
                base: x("sp"),
                index: None,
                offset: 16
            }
        );
        assert_eq!(
            arm("8@[x29]").unwrap().location,
            ArgLocation::Memory {
                base: x("x29"),
                index: None,
                offset: 0
            }
        );
        assert_eq!(arm("4@5").unwrap().location, ArgLocation::Immediate(5));
        assert_eq!(arm("8@x31"), Err(ArgSpecError::BadLocation("x31".into())));
    }

    #[test]
    fn executable_mappings_are_found_once_each() {
        let maps = "\
55d0c0a00000-55d0c0a01000 r--p 00000000 08:01 1234 /usr/bin/my prog
55d0c0a01000-55d0c0a02000 r-xp 00001000 08:01 1234 /usr/bin/my prog
7f0000000000-7f0000001000 r-xp 00000000 08:01 99 /lib/libc.so.6
7f0000001000-7f0000002000 r-xp 00002000 08:01 99 /lib/libc.so.6
7f0000003000-7f0000004000 rw-p 00000000 00:00 0
7f0000005000-7f0000006000 r-xp 00000000 08:01 77 /opt/old lib.so (deleted)
7ffd00000000-7ffd00001000 r-xp 00000000 00:00 0 [vdso]
";
        let found: Vec<_> = executable_mappings(maps).into_iter().collect();
        let deleted = Mapping::Deleted {
            range: "7f0000005000-7f0000006000".to_owned(),
        };
        assert_eq!(
            found,
            [
                (PathBuf::from("/lib/libc.so.6"), Mapping::Present),
                (PathBuf::from("/opt/old lib.so"), deleted),
                (PathBuf::from("/usr/bin/my prog"), Mapping::Present),
            ]
        );
    }
}
