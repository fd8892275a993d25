//! Which processes the agent traces: all of them, or those named by `--pid`, `--comm` and
//! `--cgroup`. Names match processes that start later too: the probes trace a process that
//! execs into a traced name (`process_exec`), and the tick rescans `/proc` for processes that
//! took the name some other way (`prctl(PR_SET_NAME)` of their main thread).

use std::{
    collections::BTreeSet,
    fs,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use super::{AgentError, AgentOptions};
use crate::collect::{ebpf::CgroupFilter, procfs};

/// The processes to trace.
#[derive(Debug)]
pub struct Selection {
    pids: Vec<u32>,
    comms: Vec<String>,
    cgroup: Option<(String, CgroupFilter)>,
    /// Processes already added by name.
    named: BTreeSet<u32>,
}

impl Selection {
    /// Checks the options: the pids exist, the cgroup is a cgroup v2 directory.
    pub fn resolve(options: &AgentOptions) -> Result<Selection, AgentError> {
        if let Some(&pid) = options
            .pids
            .iter()
            .find(|&&pid| !procfs::process_alive(pid))
        {
            return Err(AgentError::NoSuchPid(pid));
        }
        let cgroup = match &options.cgroup {
            None => None,
            Some(path) => Some((
                path.display().to_string(),
                cgroup_filter(path).map_err(|source| AgentError::Cgroup {
                    path: path.clone(),
                    source,
                })?,
            )),
        };
        Ok(Selection {
            pids: options.pids.clone(),
            comms: options.comms.iter().map(|c| truncate(c)).collect(),
            cgroup,
            named: BTreeSet::new(),
        })
    }

    /// Whether every process is traced.
    pub fn all(&self) -> bool {
        self.pids.is_empty() && self.comms.is_empty() && self.cgroup.is_none()
    }

    /// The cgroup filter for the probes.
    pub fn cgroup(&self) -> Option<CgroupFilter> {
        self.cgroup.as_ref().map(|(_, filter)| *filter)
    }

    /// The processes to add to the traced set at start: the pids and those named now.
    pub fn initial(&mut self) -> Vec<u32> {
        let mut tgids = self.pids.clone();
        tgids.extend(self.rescan());
        tgids
    }

    /// Processes that have a traced name and were not added yet (a `/proc` scan; nothing
    /// without `--comm`).
    pub fn rescan(&mut self) -> Vec<u32> {
        if self.comms.is_empty() {
            return Vec::new();
        }
        let Ok(entries) = fs::read_dir("/proc") else {
            return Vec::new();
        };
        let mut found = Vec::new();
        let mut seen = BTreeSet::new();
        for pid in entries.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok()) {
            seen.insert(pid);
            if self.named.contains(&pid) {
                continue;
            }
            let Ok(comm) = fs::read_to_string(format!("/proc/{pid}/comm")) else {
                continue;
            };
            if self.comms.iter().any(|c| c == comm.trim_end()) {
                self.named.insert(pid);
                found.push(pid);
            }
        }
        self.named.retain(|pid| seen.contains(pid));
        found
    }

    /// What is traced, for the start line and the info metric.
    pub fn describe(&self) -> String {
        if self.all() {
            return "every process".into();
        }
        let mut parts = Vec::new();
        if !self.pids.is_empty() {
            let pids: Vec<String> = self.pids.iter().map(u32::to_string).collect();
            parts.push(format!("pid {} (and children)", pids.join(", ")));
        }
        if !self.comms.is_empty() {
            parts.push(format!("comm {}", self.comms.join(", ")));
        }
        if let Some((path, _)) = &self.cgroup {
            parts.push(format!("cgroup {path}"));
        }
        parts.join("; ")
    }
}

/// A name as the kernel keeps it (15 bytes).
fn truncate(comm: &str) -> String {
    let mut end = comm.len().min(15);
    while !comm.is_char_boundary(end) {
        end -= 1;
    }
    comm[..end].to_owned()
}

/// The cgroup v2 hierarchy's mount points (`/proc/self/mountinfo`), each with the path of its
/// root in the hierarchy (`/` unless a cgroup namespace or bind mount shows only a part).
fn cgroup2_mounts() -> Vec<(PathBuf, PathBuf)> {
    let Ok(mountinfo) = fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    mountinfo
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            if right.split_whitespace().next() != Some("cgroup2") {
                return None;
            }
            let mut fields = left.split_whitespace().skip(3);
            let root = fields.next()?;
            let mount = fields.next()?;
            Some((PathBuf::from(mount), PathBuf::from(root)))
        })
        .collect()
}

/// Where a relative `--cgroup` path starts: the cgroup v2 mount at `/sys/fs/cgroup` (unified
/// layout), else one below it (`/sys/fs/cgroup/unified`, systemd's hybrid layout).
fn cgroup2_root(mounts: &[(PathBuf, PathBuf)]) -> PathBuf {
    let base = Path::new("/sys/fs/cgroup");
    mounts
        .iter()
        .map(|(mount, _)| mount)
        .find(|m| m.as_path() == base)
        .or_else(|| mounts.iter().map(|(m, _)| m).find(|m| m.starts_with(base)))
        .cloned()
        .unwrap_or_else(|| base.to_owned())
}

/// The directory of cgroup `path`: a directory under a cgroup v2 mount as it is; any other
/// path, absolute as `/proc/PID/cgroup` shows cgroups (`/system.slice/x.service`) or relative,
/// below the cgroup v2 mount ([`cgroup2_root`]).
fn cgroup_dir(path: &Path, mounts: &[(PathBuf, PathBuf)]) -> PathBuf {
    if mounts.iter().any(|(mount, _)| path.starts_with(mount)) {
        return path.to_owned();
    }
    let below = path.strip_prefix("/").unwrap_or(path);
    cgroup2_root(mounts).join(below)
}

/// The level of a directory `below` levels below a cgroup v2 mount whose root is `root` in
/// the hierarchy, as far as this process can tell: inside a cgroup namespace `root` is
/// relative to the namespace's root (`/..` above it), whose own level is unknown here, so
/// this is the least the level can be (the probes search down from it).
fn least_level(root: &Path, below: usize) -> u32 {
    let depth = root.components().fold(0i64, |depth, c| match c {
        std::path::Component::Normal(_) => depth + 1,
        std::path::Component::ParentDir => depth - 1,
        _ => depth,
    });
    (below as i64 + depth.max(0)) as u32
}

/// The id and level of the cgroup v2 directory `path` (see [`cgroup_dir`]).
fn cgroup_filter(path: &Path) -> std::io::Result<CgroupFilter> {
    let invalid = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, what);
    let mounts = cgroup2_mounts();
    let full = cgroup_dir(path, &mounts).canonicalize()?;
    // A cgroup v1 directory has a `cgroup.procs` too: ask the file system.
    // SAFETY: an all-zero statfs is valid; statfs writes one into it.
    let mut fs_info: libc::statfs = unsafe { std::mem::zeroed() };
    let c_path = std::ffi::CString::new(full.as_os_str().as_encoded_bytes())
        .map_err(|_| invalid("a path with a NUL byte".into()))?;
    // SAFETY: a NUL-terminated path and a statfs to fill, both live for the call.
    if unsafe { libc::statfs(c_path.as_ptr(), &mut fs_info) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if fs_info.f_type != libc::CGROUP2_SUPER_MAGIC {
        return Err(invalid(format!(
            "{} is not in a cgroup v2 hierarchy (cgroup v1, or not a cgroup)",
            full.display()
        )));
    }
    // Its level is its depth below the hierarchy's root: below the mount it lies under, plus
    // the depth of that mount's root (in a cgroup namespace, plus the unknown depth of the
    // namespace's root).
    let (mount, root) = mounts
        .iter()
        .filter(|(mount, _)| full.starts_with(mount))
        .max_by_key(|(mount, _)| mount.components().count())
        .ok_or_else(|| invalid(format!("no cgroup v2 mount holds {}", full.display())))?;
    let below = full.strip_prefix(mount).unwrap_or(Path::new(""));
    Ok(CgroupFilter {
        // A cgroup v2 id is the inode number of its directory, the same in every namespace.
        id: fs::metadata(&full)?.ino(),
        level: least_level(root, below.components().count()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_paths_are_directories_or_cgroups_below_the_mount() {
        let unified = [(PathBuf::from("/sys/fs/cgroup"), PathBuf::from("/"))];
        let hybrid = [(PathBuf::from("/sys/fs/cgroup/unified"), PathBuf::from("/"))];
        let dir = |path: &str, mounts: &[(PathBuf, PathBuf)]| cgroup_dir(Path::new(path), mounts);
        assert_eq!(
            dir("/sys/fs/cgroup/a/b", &unified),
            Path::new("/sys/fs/cgroup/a/b")
        );
        assert_eq!(dir("a/b", &unified), Path::new("/sys/fs/cgroup/a/b"));
        assert_eq!(dir("/a/b", &unified), Path::new("/sys/fs/cgroup/a/b"));
        assert_eq!(dir("/a", &hybrid), Path::new("/sys/fs/cgroup/unified/a"));
        assert_eq!(
            dir("/sys/fs/cgroup/unified/a", &hybrid),
            Path::new("/sys/fs/cgroup/unified/a")
        );
    }

    #[test]
    fn levels_count_the_mount_root_and_never_go_below_the_namespace_root() {
        assert_eq!(least_level(Path::new("/"), 2), 2);
        // A mount of a part of the hierarchy (a bind mount, a container's view).
        assert_eq!(least_level(Path::new("/kubepods/pod1"), 1), 3);
        // The host's mount seen from a cgroup namespace two levels down.
        assert_eq!(least_level(Path::new("/../.."), 3), 3);
    }
}
