//! `/proc/PID/maps`: the memory mappings of a process, and how to reach each mapped file from
//! here. The one parser of that file in futexscope: marker discovery ([`super::usdt`]) and
//! symbol lookup ([`crate::aggregate::symbols`]) both use it.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

/// One line of `/proc/PID/maps`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapping {
    /// First address.
    pub start: u64,
    /// One past the last address.
    pub end: u64,
    /// Whether the mapping is executable (`x` in its permissions).
    pub executable: bool,
    /// File offset of `start`.
    pub offset: u64,
    /// Device of the mapped file's file system in the kernel's encoding (major << 20 | minor,
    /// as futex keys and `st_dev` inside the kernel hold it); 0 for anonymous memory.
    pub dev: u32,
    /// Inode number of the mapped file; 0 for anonymous memory.
    pub inode: u64,
    /// The mapped file, if the mapping has an absolute path (not `[stack]`, `[vdso]` or
    /// anonymous memory), without the ` (deleted)` suffix.
    pub path: Option<PathBuf>,
    /// Whether the kernel marked the file ` (deleted)`: it was removed or replaced since it
    /// was mapped, so its path names another file or none.
    pub deleted: bool,
}

impl Mapping {
    /// The mapped file of process `pid`, reached from this process's mount namespace: through
    /// `/proc/PID/root` under its path, or through `/proc/PID/map_files/` if it was deleted
    /// (the mapping keeps its inode alive). `None` for a mapping without a file.
    pub fn host_path(&self, pid: u32) -> Option<PathBuf> {
        let path = self.path.as_ref()?;
        Some(if self.deleted {
            // The kernel names map_files entries `%lx-%lx`: no zero padding, unlike `maps`.
            PathBuf::from(format!(
                "/proc/{pid}/map_files/{:x}-{:x}",
                self.start, self.end
            ))
        } else {
            Path::new(&format!("/proc/{pid}/root")).join(path.strip_prefix("/").unwrap_or(path))
        })
    }
}

/// Reads and parses `/proc/PID/maps`.
pub fn read(pid: u32) -> io::Result<Vec<Mapping>> {
    Ok(parse(&fs::read_to_string(format!("/proc/{pid}/maps"))?))
}

/// Parses the text of `/proc/PID/maps`; malformed lines are skipped.
pub fn parse(text: &str) -> Vec<Mapping> {
    text.lines().filter_map(parse_line).collect()
}

/// `START-END PERMS OFFSET DEV INODE [PATHNAME]`, the pathname after padding spaces; it may
/// contain spaces itself, so it is the rest of the line.
fn parse_line(line: &str) -> Option<Mapping> {
    let mut fields = line.splitn(6, ' ');
    let (start, end) = fields.next()?.split_once('-')?;
    let perms = fields.next()?;
    let offset = u64::from_str_radix(fields.next()?, 16).ok()?;
    let (major, minor) = fields.next()?.split_once(':')?;
    let dev = (u32::from_str_radix(major, 16).ok()? << 20) | u32::from_str_radix(minor, 16).ok()?;
    let inode = fields.next()?.parse().ok()?;
    let pathname = fields.next().unwrap_or("").trim_start();
    let (pathname, deleted) = match pathname.strip_suffix(" (deleted)") {
        Some(path) => (path, true),
        None => (pathname, false),
    };
    Some(Mapping {
        start: u64::from_str_radix(start, 16).ok()?,
        end: u64::from_str_radix(end, 16).ok()?,
        executable: perms.contains('x'),
        offset,
        dev,
        inode,
        path: pathname.starts_with('/').then(|| PathBuf::from(pathname)),
        deleted,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAPS: &str = "\
55d0c0a00000-55d0c0a01000 r--p 00000000 08:01 1234                       /usr/bin/my  prog
55d0c0a01000-55d0c0a02000 r-xp 00001000 08:01 1234                       /usr/bin/my  prog
00400000-00401000 r-xp 00000000 08:01 55 /opt/old lib.so (deleted)
7f0000003000-7f0000004000 rw-p 00000000 00:00 0
7ffc0000-7ffc1000 rw-p 00000000 00:00 0                          [stack]
7ffd00000000-7ffd00001000 r-xp 00000000 00:00 0 [vdso]
garbage
";

    #[test]
    fn parses_every_well_formed_line() {
        let maps = parse(MAPS);
        assert_eq!(maps.len(), 6);
        assert_eq!(
            maps[1],
            Mapping {
                start: 0x55d0_c0a0_1000,
                end: 0x55d0_c0a0_2000,
                executable: true,
                offset: 0x1000,
                dev: 0x80_0001,
                inode: 1234,
                // Padding before the path is dropped; spaces inside it are kept.
                path: Some(PathBuf::from("/usr/bin/my  prog")),
                deleted: false,
            }
        );
        assert!(!maps[0].executable);
        assert_eq!((maps[3].dev, maps[3].inode), (0, 0));
        assert_eq!(maps[2].path.as_deref(), Some(Path::new("/opt/old lib.so")));
        assert!(maps[2].deleted);
        for unnamed in &maps[3..] {
            assert_eq!(unnamed.path, None, "{unnamed:?}");
        }
    }

    #[test]
    fn host_paths_go_through_the_process_root_or_its_map_files() {
        let maps = parse(MAPS);
        assert_eq!(
            maps[0].host_path(42),
            Some(PathBuf::from("/proc/42/root/usr/bin/my  prog"))
        );
        // `maps` pads the range to eight digits; map_files does not.
        assert_eq!(
            maps[2].host_path(42),
            Some(PathBuf::from("/proc/42/map_files/400000-401000"))
        );
        assert_eq!(maps[4].host_path(42), None);
    }

    #[test]
    fn own_maps_hold_this_executable() {
        let exe = std::env::current_exe().unwrap().canonicalize().unwrap();
        let maps = read(std::process::id()).unwrap();
        let ours: Vec<&Mapping> = maps
            .iter()
            .filter(|m| m.path.as_deref() == Some(exe.as_path()))
            .collect();
        assert!(ours.iter().any(|m| m.executable), "{maps:#?}");
        let host = ours[0].host_path(std::process::id()).unwrap();
        assert_eq!(
            fs::metadata(host).unwrap().len(),
            fs::metadata(&exe).unwrap().len()
        );
    }
}
