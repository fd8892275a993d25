//! Just enough of the kernel's BTF (`/sys/kernel/btf/vmlinux`) to find one struct member's
//! byte offset, for the fork-following program (aya does not expose its BTF parser's types).

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

/// Byte offset of `member` in `struct name` according to the BTF file at `path`.
pub fn member_offset(path: &Path, name: &str, member: &str) -> Result<u32, BtfError> {
    let data = std::fs::read(path).map_err(|source| BtfError::Read {
        path: path.display().to_string(),
        source,
    })?;
    find_member_offset(&data, name, member)?.ok_or_else(|| BtfError::NotFound {
        name: name.into(),
        member: member.into(),
    })
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

/// Walks the type section of a little-endian BTF blob.
fn find_member_offset(data: &[u8], name: &str, member: &str) -> Result<Option<u32>, BtfError> {
    let magic = data.get(0..2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    if magic != Some(BTF_MAGIC) {
        return Err(BtfError::Malformed("bad magic"));
    }
    let header_len = u32_at(data, 4)? as usize;
    let type_off = u32_at(data, 8)? as usize;
    let type_len = u32_at(data, 12)? as usize;
    let str_off = u32_at(data, 16)? as usize;
    let str_len = u32_at(data, 20)? as usize;
    let types = data
        .get(header_len + type_off..header_len + type_off + type_len)
        .ok_or(BtfError::Malformed("type section out of bounds"))?;
    let strings = data
        .get(header_len + str_off..header_len + str_off + str_len)
        .ok_or(BtfError::Malformed("string section out of bounds"))?;
    let mut at = 0;
    while at + 12 <= types.len() {
        let name_off = u32_at(types, at)?;
        let info = u32_at(types, at + 4)?;
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
        if kind == KIND_STRUCT && str_at(strings, name_off) == name.as_bytes() {
            for i in 0..vlen {
                let m = at + 12 * i;
                if str_at(strings, u32_at(types, m)?) == member.as_bytes() {
                    let offset = u32_at(types, m + 8)?;
                    let bits = if kind_flag {
                        offset & 0x00ff_ffff
                    } else {
                        offset
                    };
                    return Ok(Some(bits / 8));
                }
            }
        }
        at += extra;
    }
    Ok(None)
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
        let tgid = member_offset(path, "task_struct", "tgid").expect("tgid offset");
        let pid = member_offset(path, "task_struct", "pid").expect("pid offset");
        // `pid` and `tgid` are adjacent 4-byte fields in every kernel since 2.6.
        assert_eq!(tgid, pid + 4);
    }

    #[test]
    fn rejects_garbage() {
        assert!(matches!(
            find_member_offset(b"not btf at all, really", "a", "b"),
            Err(BtfError::Malformed(_))
        ));
        assert!(find_member_offset(&[0x9f, 0xeb], "a", "b").is_err());
    }
}
