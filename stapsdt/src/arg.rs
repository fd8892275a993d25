//! Argument specs: one `SIZE@LOCATION` item per probe argument (`8@%rdi`, `-4@-16(%rbp)`,
//! `8@x0`), parsed into a size, a signedness and a location in the kernel's register frame.

use std::fmt;

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

    /// Whether the value is known from the register frame alone (a register or a constant),
    /// which is all futexscope's eBPF programs read; a memory operand is not.
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
