//! Reading USDT marker sites (stapsdt notes) from the bytes of an ELF executable or shared
//! library: bytes in, marker sites or an error out.
//!
//! Each stapsdt note names one probe site: the address of its `nop`, the link-time address of
//! the `.stapsdt.base` section, an optional SDT semaphore, and the provider, probe name and
//! argument spec (`8@%rdi -4@$5 8@-16(%rbp)`). [`sites`] turns the notes of one provider into
//! [`UsdtSite`]s whose `file_offset` is what a uprobe attaches to, and whose arguments say where
//! an eBPF program finds each value in `pt_regs`.
//!
//! This crate makes no system calls and knows nothing of eBPF, in the way `aya-obj` sits beside
//! `aya`: reading files and processes is the caller's business (futexscope's tracer does it in
//! `futexscope::usdt`). Errors name no file for the same reason; the caller adds the path.
//!
//! The parser never panics: every malformed file, note or spec is a [`ParseError`]. It is
//! fuzzed (`fuzz/fuzz_targets/usdt_notes.rs`).
//!
//! # Example
//!
//! ```
//! use futexscope_stapsdt::{ArgLocation, ParseError, sites};
//!
//! // The markers of the running program, if it carries any.
//! let data = std::fs::read(std::env::current_exe()?)?;
//! let found = sites(&data, "futexscope")?;
//! for skipped in &found.skipped {
//!     println!("{skipped}");
//! }
//! for site in &found.sites {
//!     println!("{}:{} at file offset {:#x}", site.provider, site.name, site.file_offset);
//!     for arg in &site.args {
//!         if let ArgLocation::Register(register) = arg.location {
//!             println!("  {arg}: {} bytes at pt_regs+{}", arg.size, register.pt_regs_offset());
//!         }
//!     }
//! }
//!
//! // Anything that is not an ELF file is an error, never a panic.
//! assert!(matches!(sites(b"#!/bin/sh\n", "futexscope"), Err(ParseError::NotElf)));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod arg;
mod elf;

pub use arg::{Arch, ArgLocation, ArgSpecError, Register, UsdtArg};

use object::{
    Endianness, FileKind,
    elf::{ELFMAG, FileHeader32, FileHeader64},
};

/// One USDT probe site found in an ELF file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsdtSite {
    /// The provider (`futexscope` for futexscope's markers).
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

/// Why the stapsdt notes of an ELF image could not be read. No variant names the file: the
/// caller, which knows where the bytes came from, adds that.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// The bytes are not a 64- or 32-bit ELF file.
    #[error("not an ELF file: USDT markers are read from ELF executables and libraries")]
    NotElf,
    /// The ELF structure is broken.
    #[error("malformed ELF file: {reason}")]
    Malformed {
        /// What is wrong.
        reason: String,
    },
    /// The file's instruction set is neither x86_64 nor aarch64.
    #[error(
        "ELF machine {machine} is not supported: only x86_64 and aarch64 markers are understood"
    )]
    UnsupportedMachine {
        /// The ELF `e_machine` value.
        machine: u16,
    },
    /// A stapsdt note is truncated or not NUL-terminated.
    #[error("stapsdt note {index} is malformed: {reason}")]
    BadNote {
        /// The note's position in `.note.stapsdt`, from 0.
        index: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// An argument spec item could not be parsed.
    #[error("argument {position} (`{item}`) of marker `{probe}` cannot be parsed")]
    BadArgSpec {
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
}

/// What a file's stapsdt notes hold: the sites a uprobe can attach to, and the notes that name
/// a site no process can reach, each skipped on its own so that the others still attach.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sites {
    /// The usable sites, in note order.
    pub sites: Vec<UsdtSite>,
    /// The notes skipped, in note order, each with the reason.
    pub skipped: Vec<SkippedSite>,
}

/// A stapsdt note whose site cannot be attached to.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("marker `{provider}:{name}` at {address:#x} skipped: {reason}")]
pub struct SkippedSite {
    /// The provider.
    pub provider: String,
    /// The probe name.
    pub name: String,
    /// The note's address, after the `.stapsdt.base` adjustment.
    pub address: u64,
    /// Why it was skipped.
    pub reason: SkipReason,
}

/// Why a site was skipped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SkipReason {
    /// The address lies in no executable loadable segment, so it has no file offset. This is
    /// what a note whose code the linker dropped looks like when the linker wrote the marker's
    /// offset in the dropped function instead of 0 (lld does, for notes not linked to their
    /// code's section).
    #[error(
        "outside every executable PT_LOAD segment (its code was probably dropped by the linker)"
    )]
    OutsideText,
}

/// Every USDT probe site of an ELF image, whatever its provider.
///
/// Sites whose `nop` the linker discarded and marked so (their recorded address is 0, as GNU
/// ld leaves it for code that `--gc-sections` dropped) are not returned, not even as skipped:
/// they are no sites. A note whose address lies outside the executable segments is skipped on
/// its own ([`Sites::skipped`]); the other notes' sites are still returned.
pub fn parse_sites(data: &[u8]) -> Result<Sites, ParseError> {
    parse(data, None)
}

/// The USDT probe sites of `provider` in an ELF image (`futexscope` for futexscope's markers).
///
/// Only that provider's notes have their argument specs parsed and their addresses placed in a
/// segment, so another provider's note that this parser does not understand (a memory operand
/// it cannot read, a RIP-relative one) does not make the file unreadable. Notes that are
/// structurally broken are errors whatever their provider. Discarded and unreachable sites are
/// left out or skipped as in [`parse_sites`].
pub fn sites(data: &[u8], provider: &str) -> Result<Sites, ParseError> {
    parse(data, Some(provider))
}

/// [`parse_sites`] or [`sites`]: the sites of `provider`, or of all providers if `None`.
fn parse(data: &[u8], provider: Option<&str>) -> Result<Sites, ParseError> {
    match FileKind::parse(data) {
        Ok(FileKind::Elf64) => elf::parse::<FileHeader64<Endianness>>(data, provider),
        Ok(FileKind::Elf32) => elf::parse::<FileHeader32<Endianness>>(data, provider),
        Ok(_) => Err(ParseError::NotElf),
        Err(e) if data.starts_with(&ELFMAG) => Err(ParseError::Malformed {
            reason: e.to_string(),
        }),
        Err(_) => Err(ParseError::NotElf),
    }
}
