//! Just enough of the kernel's BTF (`/sys/kernel/btf/vmlinux`) to find struct members' byte
//! offsets, for the programs that read kernel structures (fork following, shared futex keys;
//! aya does not expose its BTF parser's types).

use std::{io, path::Path};

/// Why a member offset could not be found.
#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    /// The BTF file could not be read.
    #[error("cannot read kernel BTF `{path}`")]
    Read {
        /// The file.
        path: String,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// The data is not BTF or is cut short.
    #[error("kernel BTF is malformed: {0}")]
    Malformed(&'static str),
    /// No struct with that name has a member with that name.
    #[error("kernel BTF has no member `{member}` in `struct {name}`")]
    NotFound {
        /// Struct name.
        name: String,
        /// Member name.
        member: String,
    },
}

const BTF_MAGIC: u16 = 0xeb9f;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_TYPE_TAG: u32 = 18;

/// One type of the type section: what the member searches need.
#[derive(Debug)]
struct Type {
    name_off: u32,
    kind: u32,
    /// The referenced type (typedef, const, volatile…); unused for the rest.
    referenced: u32,
    /// Struct and union members: (name offset, type id, bit offset).
    members: Vec<(u32, u32, u32)>,
}

/// The types of a kernel's BTF, parsed once for several member lookups.
#[derive(Debug)]
pub struct KernelBtf {
    /// Index = type id (0 is `void`, a placeholder here).
    types: Vec<Type>,
    strings: Vec<u8>,
}

impl KernelBtf {
    /// Reads and parses the BTF file at `path` (`/sys/kernel/btf/vmlinux`).
    pub fn read(path: &Path) -> Result<KernelBtf, BtfError> {
        let data = std::fs::read(path).map_err(|source| BtfError::Read {
            path: path.display().to_string(),
            source,
        })?;
        KernelBtf::parse(&data)
    }

    /// Parses a little-endian BTF blob.
    pub fn parse(data: &[u8]) -> Result<KernelBtf, BtfError> {
        let magic = data.get(0..2).map(|b| u16::from_le_bytes([b[0], b[1]]));
        if magic != Some(BTF_MAGIC) {
            return Err(BtfError::Malformed("bad magic"));
        }
        let header_len = u32_at(data, 4)? as usize;
        let type_off = u32_at(data, 8)? as usize;
        let type_len = u32_at(data, 12)? as usize;
        let str_off = u32_at(data, 16)? as usize;
        let str_len = u32_at(data, 20)? as usize;
        let section = |off: usize, len: usize, what| {
            header_len
                .checked_add(off)
                .and_then(|start| Some(start..start.checked_add(len)?))
                .and_then(|range| data.get(range))
                .ok_or(BtfError::Malformed(what))
        };
        let types = section(type_off, type_len, "type section out of bounds")?;
        let strings = section(str_off, str_len, "string section out of bounds")?;
        let mut parsed = vec![Type {
            name_off: 0,
            kind: 0,
            referenced: 0,
            members: Vec::new(),
        }];
        let mut at = 0;
        while at + 12 <= types.len() {
            let name_off = u32_at(types, at)?;
            let info = u32_at(types, at + 4)?;
            let size_or_type = u32_at(types, at + 8)?;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let kind_flag = info >> 31 == 1;
            at += 12;
            let extra = match kind {
                1 | 14 | 17 => 4,              // INT, VAR, DECL_TAG
                3 => 12,                       // ARRAY
                4 | 5 | 15 | 19 => 12 * vlen,  // STRUCT, UNION, DATASEC, ENUM64
                6 | 13 => 8 * vlen,            // ENUM, FUNC_PROTO
                0 | 2 | 7..=12 | 16 | 18 => 0, // the rest have no trailing data
                _ => return Err(BtfError::Malformed("unknown type kind")),
            };
            let mut members = Vec::new();
            if kind == KIND_STRUCT || kind == KIND_UNION {
                for i in 0..vlen {
                    let m = at + 12 * i;
                    let offset = u32_at(types, m + 8)?;
                    let bits = if kind_flag {
                        offset & 0x00ff_ffff
                    } else {
                        offset
                    };
                    members.push((u32_at(types, m)?, u32_at(types, m + 4)?, bits));
                }
            }
            parsed.push(Type {
                name_off,
                kind,
                referenced: size_or_type,
                members,
            });
            at += extra;
        }
        Ok(KernelBtf {
            types: parsed,
            strings: strings.to_vec(),
        })
    }

    /// Byte offset of `member` in `struct name`, also when it sits in anonymous struct or
    /// union members (as `vm_area_struct.vm_start` has since 6.4): their offsets are added.
    pub fn member_offset(&self, name: &str, member: &str) -> Result<u32, BtfError> {
        self.types
            .iter()
            .filter(|t| t.kind == KIND_STRUCT && self.name(t.name_off) == name.as_bytes())
            .find_map(|t| self.find_member(t, member, 0))
            .map(|bits| bits / 8)
            .ok_or_else(|| BtfError::NotFound {
                name: name.into(),
                member: member.into(),
            })
    }

    fn name(&self, offset: u32) -> &[u8] {
        str_at(&self.strings, offset)
    }

    /// The bit offset of `member` in `ty`, searching anonymous members depth first; `depth`
    /// bounds the search on malformed (cyclic) data.
    fn find_member(&self, ty: &Type, member: &str, depth: u32) -> Option<u32> {
        if depth > 16 {
            return None;
        }
        for &(name_off, type_id, bits) in &ty.members {
            if name_off != 0 {
                if self.name(name_off) == member.as_bytes() {
                    return Some(bits);
                }
                continue;
            }
            let inner = self.resolve(type_id)?;
            if (inner.kind == KIND_STRUCT || inner.kind == KIND_UNION)
                && let Some(found) = self.find_member(inner, member, depth + 1)
            {
                return Some(bits + found);
            }
        }
        None
    }

    /// Type `id` with typedefs and qualifiers peeled off.
    fn resolve(&self, mut id: u32) -> Option<&Type> {
        for _ in 0..16 {
            let ty = self.types.get(id as usize)?;
            match ty.kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = ty.referenced
                }
                _ => return Some(ty),
            }
        }
        None
    }
}

fn u32_at(data: &[u8], at: usize) -> Result<u32, BtfError> {
    data.get(at..at + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or(BtfError::Malformed("truncated"))
}

fn str_at(strings: &[u8], offset: u32) -> &[u8] {
    let rest = strings.get(offset as usize..).unwrap_or(&[]);
    let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
    &rest[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_task_struct_tgid_in_the_running_kernel() {
        let path = Path::new("/sys/kernel/btf/vmlinux");
        if !path.exists() {
            eprintln!("SKIPPED: the kernel has no BTF");
            return;
        }
        let btf = KernelBtf::read(path).expect("kernel BTF");
        let tgid = btf
            .member_offset("task_struct", "tgid")
            .expect("tgid offset");
        let pid = btf.member_offset("task_struct", "pid").expect("pid offset");
        // `pid` and `tgid` are adjacent 4-byte fields in every kernel since 2.6.
        assert_eq!(tgid, pid + 4);
    }

    #[test]
    fn rejects_garbage() {
        assert!(matches!(
            KernelBtf::parse(b"not btf at all, really"),
            Err(BtfError::Malformed(_))
        ));
        assert!(KernelBtf::parse(&[0x9f, 0xeb]).is_err());
    }

    #[test]
    fn finds_members_inside_anonymous_unions_of_the_running_kernel() {
        let path = Path::new("/sys/kernel/btf/vmlinux");
        if !path.exists() {
            eprintln!("SKIPPED: the kernel has no BTF");
            return;
        }
        let btf = KernelBtf::read(path).expect("kernel BTF");
        let offset = |name, member| btf.member_offset(name, member).expect(member);
        // `vm_start` and `vm_end` are adjacent unsigned longs, in an anonymous struct in an
        // anonymous union since 6.4; `vm_flags` in an anonymous union since 6.3.
        assert_eq!(
            offset("vm_area_struct", "vm_end"),
            offset("vm_area_struct", "vm_start") + 8
        );
        assert!(offset("vm_area_struct", "vm_flags") > offset("vm_area_struct", "vm_end"));
        assert!(
            btf.member_offset("vm_area_struct", "no_such_member")
                .is_err()
        );
    }

    /// A BTF blob with `struct outer { int a; union { int b; struct { int c; int d; }; }; }`.
    fn nested_blob() -> Vec<u8> {
        let strings = b"\0outer\0a\0b\0c\0d\0int\0";
        let name = |s: &str| {
            let needle = [s.as_bytes(), b"\0"].concat();
            (strings
                .windows(needle.len())
                .position(|w| w == needle.as_slice())
                .unwrap()) as u32
        };
        let mut types = Vec::new();
        let mut push = |words: &[u32]| words.iter().for_each(|w| types.extend(w.to_le_bytes()));
        // 1: int
        push(&[name("int"), 1 << 24, 4, 32]);
        // 2: anonymous struct { c at 0; d at 32 }
        push(&[0, (4 << 24) | 2, 8, name("c"), 1, 0, name("d"), 1, 32]);
        // 3: anonymous union { b at 0; struct 2 at 0 }
        push(&[0, (5 << 24) | 2, 8, name("b"), 1, 0, 0, 2, 0]);
        // 4: const union 3
        push(&[0, 10 << 24, 3]);
        // 5: struct outer { a at 0; const union at 64 }
        push(&[name("outer"), (4 << 24) | 2, 16, name("a"), 1, 0, 0, 4, 64]);
        let mut blob = Vec::new();
        blob.extend(BTF_MAGIC.to_le_bytes());
        blob.extend([1, 0]);
        for word in [
            24,
            0,
            types.len() as u32,
            types.len() as u32,
            strings.len() as u32,
        ] {
            blob.extend(word.to_le_bytes());
        }
        blob.extend(&types);
        blob.extend(strings);
        blob
    }

    #[test]
    fn descends_into_anonymous_members_through_qualifiers() {
        let btf = KernelBtf::parse(&nested_blob()).expect("valid blob");
        assert_eq!(btf.member_offset("outer", "a").unwrap(), 0);
        assert_eq!(btf.member_offset("outer", "b").unwrap(), 8);
        assert_eq!(btf.member_offset("outer", "c").unwrap(), 8);
        assert_eq!(btf.member_offset("outer", "d").unwrap(), 12);
        assert!(matches!(
            btf.member_offset("outer", "e"),
            Err(BtfError::NotFound { .. })
        ));
    }
}
