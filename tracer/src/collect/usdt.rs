//! The USDT markers (stapsdt notes) of files and processes on this system: reading an ELF file,
//! finding the files a process maps, and `futexscope list`. The notes themselves are parsed by
//! the `futexscope-stapsdt` crate, which this module re-exports; it does no I/O, so errors
//! from it are wrapped here with the file they came from.

use std::{
    collections::BTreeMap,
    fs, io,
    path::{Path, PathBuf},
};

use futexscope_probes_common::markers;
pub use futexscope_stapsdt::{
    Arch, ArgLocation, ArgSpecError, ParseError, Register, Sites, SkipReason, SkippedSite, UsdtArg,
    UsdtSite,
};

use super::proc_maps;
use crate::errors::Chain;

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
    /// The file's stapsdt notes could not be parsed.
    #[error("cannot parse the USDT markers of `{path}`")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: ParseError,
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

/// Reads the futexscope marker sites (provider [`markers::PROVIDER`]) of the ELF file at
/// `path`. Other providers' notes are not parsed (see [`futexscope_stapsdt::sites`]).
///
/// Sites whose `nop` the linker discarded (their recorded address is 0, left by
/// `--gc-sections` for code that nothing called) are not returned: no process can hit them.
/// Notes whose address lies outside the file's code are returned as skipped, each on its own.
pub fn read_markers(path: &Path) -> Result<Sites, UsdtError> {
    let data = fs::read(path).map_err(|source| UsdtError::Read {
        path: path.into(),
        source,
    })?;
    futexscope_stapsdt::sites(&data, markers::PROVIDER).map_err(|source| UsdtError::Parse {
        path: path.into(),
        source,
    })
}

/// A file mapped into a process that holds futexscope markers.
#[derive(Debug)]
pub struct MarkedObject {
    /// The file as the process's memory map names it.
    pub path: PathBuf,
    /// The same file reached through `/proc/PID/root` (or `/proc/PID/map_files` if it was
    /// deleted), valid in this mount namespace: read and attach through this one.
    pub host_path: PathBuf,
    /// Its futexscope marker sites.
    pub sites: Vec<UsdtSite>,
    /// Its futexscope notes that name no reachable site.
    pub skipped: Vec<SkippedSite>,
}

/// The files a process maps executable (its program and libraries), split into those with
/// futexscope markers and those that could not be read.
#[derive(Debug, Default)]
pub struct ProcessMarkers {
    /// Files with at least one futexscope marker note (a site, or a skipped one).
    pub marked: Vec<MarkedObject>,
    /// Mapped files that could not be read or parsed, with the reason.
    pub unreadable: Vec<(PathBuf, UsdtError)>,
}

/// Finds the executable and libraries mapped by process `pid` that carry futexscope markers
/// (provider [`markers::PROVIDER`]), from `/proc/PID/maps`.
pub fn process_markers(pid: u32) -> Result<ProcessMarkers, UsdtError> {
    let maps = proc_maps::read(pid).map_err(|source| UsdtError::ProcessMaps { pid, source })?;
    let mut result = ProcessMarkers::default();
    for (path, host_path) in executable_files(&maps, pid) {
        match read_markers(&host_path) {
            Ok(found) if found == Sites::default() => {}
            Ok(Sites { sites, skipped }) => result.marked.push(MarkedObject {
                path,
                host_path,
                sites,
                skipped,
            }),
            Err(error) => result.unreadable.push((path, error)),
        }
    }
    Ok(result)
}

/// The distinct files that `maps` (of process `pid`) maps executable, each with its host path.
fn executable_files(maps: &[proc_maps::Mapping], pid: u32) -> BTreeMap<PathBuf, PathBuf> {
    maps.iter()
        .filter(|m| m.executable)
        .filter_map(|m| Some((m.path.clone()?, m.host_path(pid)?)))
        .collect()
}

/// The lines `futexscope list BIN|PID` prints: one per futexscope marker site, in the form
/// `usdt:PATH:futexscope:NAME` followed by each argument's name and spec, like
/// `bpftrace -lv`; a note that names no reachable site is a `# skipped` line. `target` is a
/// file path, or a process id if it is a number.
pub fn list(target: &str) -> Result<Vec<String>, UsdtError> {
    let mut lines = Vec::new();
    match target.parse::<u32>() {
        Ok(pid) if !Path::new(target).exists() => {
            let found = process_markers(pid)?;
            for (path, error) in &found.unreadable {
                lines.push(format!("# skipped `{}`: {}", path.display(), Chain(error)));
            }
            for object in &found.marked {
                push_site_lines(&mut lines, &object.path, &object.sites, &object.skipped);
            }
        }
        _ => {
            let path = Path::new(target);
            let found = read_markers(path)?;
            push_site_lines(&mut lines, path, &found.sites, &found.skipped);
        }
    }
    Ok(lines)
}

/// Appends the `list` lines of `sites` and `skipped`, found in `path`.
fn push_site_lines(
    lines: &mut Vec<String>,
    path: &Path,
    sites: &[UsdtSite],
    skipped: &[SkippedSite],
) {
    for skipped in skipped {
        lines.push(format!("# `{}`: {skipped}", path.display()));
    }
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

    #[test]
    fn executable_files_are_found_once_each() {
        let maps = proc_maps::parse(
            "\
55d0c0a00000-55d0c0a01000 r--p 00000000 08:01 1234 /usr/bin/my prog
55d0c0a01000-55d0c0a02000 r-xp 00001000 08:01 1234 /usr/bin/my prog
7f0000000000-7f0000001000 r-xp 00000000 08:01 99 /lib/libc.so.6
7f0000001000-7f0000002000 r-xp 00002000 08:01 99 /lib/libc.so.6
7f0000003000-7f0000004000 rw-p 00000000 00:00 0
7f0000005000-7f0000006000 r-xp 00000000 08:01 77 /opt/old lib.so (deleted)
7ffd00000000-7ffd00001000 r-xp 00000000 00:00 0 [vdso]
",
        );
        let found: Vec<_> = executable_files(&maps, 7).into_iter().collect();
        let expected: [(PathBuf, PathBuf); 3] = [
            ("/lib/libc.so.6".into(), "/proc/7/root/lib/libc.so.6".into()),
            (
                "/opt/old lib.so".into(),
                "/proc/7/map_files/7f0000005000-7f0000006000".into(),
            ),
            (
                "/usr/bin/my prog".into(),
                "/proc/7/root/usr/bin/my prog".into(),
            ),
        ];
        assert_eq!(found, expected);
    }

    #[test]
    fn list_names_skipped_notes_before_the_sites() {
        let site = UsdtSite {
            provider: markers::PROVIDER.to_owned(),
            name: "acquired".to_owned(),
            address: 0x1000,
            file_offset: 0x1000,
            semaphore: 0,
            args: vec![],
        };
        let skipped = SkippedSite {
            provider: markers::PROVIDER.to_owned(),
            name: "wake_begin".to_owned(),
            address: 0x13,
            reason: SkipReason::OutsideText,
        };
        let mut lines = Vec::new();
        push_site_lines(&mut lines, Path::new("/bin/x"), &[site], &[skipped]);
        assert_eq!(
            lines[0],
            "# `/bin/x`: marker `futexscope:wake_begin` at 0x13 skipped: outside every \
             executable PT_LOAD segment (its code was probably dropped by the linker)"
        );
        assert_eq!(
            lines[1],
            "usdt:/bin/x:futexscope:acquired (file offset 0x1000)"
        );
        // The site has no arguments, where the table has two: one line says so.
        assert_eq!(
            lines[2],
            "    (0 arguments, futexscope's marker table has 2)"
        );
        assert_eq!(lines.len(), 3, "{lines:#?}");
    }
}
