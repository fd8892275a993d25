//! Which processes the agent traces: all of them, or those named by `--pid`, `--comm` and
//! `--cgroup`. Names match processes that start later too: the probes trace a process that
//! execs into a traced name (`process_exec`), and the tick rescans `/proc` for processes that
//! took the name some other way (`prctl(PR_SET_NAME)` of their main thread).

use std::{collections::BTreeSet, fs, os::unix::fs::MetadataExt, path::Path};

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

/// The id and level of the cgroup v2 directory `path` (absolute, or relative to
/// `/sys/fs/cgroup`).
fn cgroup_filter(path: &Path) -> std::io::Result<CgroupFilter> {
    let root = Path::new("/sys/fs/cgroup");
    let full = if path.is_absolute() {
        path.to_owned()
    } else {
        root.join(path)
    };
    let full = full.canonicalize()?;
    let relative = full.strip_prefix(root).map_err(|_| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "not under /sys/fs/cgroup")
    })?;
    if !full.join("cgroup.procs").exists() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a cgroup v2 directory (no cgroup.procs)",
        ));
    }
    Ok(CgroupFilter {
        // A cgroup v2 id is the inode number of its directory.
        id: fs::metadata(&full)?.ino(),
        level: relative.components().count() as u32,
    })
}
