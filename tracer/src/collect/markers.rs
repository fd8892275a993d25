//! Attaching the marker program to the futexscope markers of a traced program: from the
//! stapsdt sites [`super::usdt`] reads to the site specs [`super::ebpf`] attaches.

use std::path::{Path, PathBuf};

use futexscope_probes_common::{
    maps::{MarkerArg, arg_kind},
    markers,
};

use crate::errors::Chain;

use super::{
    ebpf::{LoadError, MarkerSiteSpec, Probes},
    usdt::{self, ArgLocation, ParseError, SkippedSite, UsdtError, UsdtSite},
};

/// Why markers could not be attached (tracing goes on without them).
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    /// The marker notes could not be read.
    #[error(transparent)]
    Usdt(#[from] UsdtError),
    /// The probes refused the sites.
    #[error(transparent)]
    Probes(#[from] LoadError),
}

/// Which of the futexscope markers to attach.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MarkerSet {
    /// `acquired` and `timed_out`: what the futex hooks cannot see (the semaphore, the
    /// tokens, satisfied and lost wakeups, the caller's drift) at one uprobe hit per sleeping
    /// acquire. The other four repeat what the futex hooks already record (the futex hooks
    /// also tell which word the acquire slept on).
    Essential,
    /// All six, so `--events` and `--export` carry every marker record.
    All,
}

impl MarkerSet {
    /// Whether this set attaches `marker`.
    pub fn includes(self, marker: markers::Marker) -> bool {
        use markers::Marker::{Acquired, TimedOut};
        self == MarkerSet::All || matches!(marker, Acquired | TimedOut)
    }
}

/// What attaching found and did.
#[derive(Debug, Default)]
pub struct Attached {
    /// Marker sites attached.
    pub sites: usize,
    /// Files they are in.
    pub files: Vec<PathBuf>,
    /// Sites that could not be used (notes at no reachable address, arguments the eBPF program
    /// cannot read, processes gone), each with the reason.
    pub skipped: Vec<String>,
}

impl Attached {
    /// Adds what attaching to another file did.
    fn extend(&mut self, other: Attached) {
        self.sites += other.sites;
        self.files.extend(other.files);
        self.skipped.extend(other.skipped);
    }
}

/// The spec of one site, or why the eBPF program cannot read it.
pub fn site_spec(site: &UsdtSite) -> Result<MarkerSiteSpec, String> {
    let marker = markers::by_name(&site.name)
        .ok_or_else(|| format!("`{}` is not a futexscope marker", site.name))?;
    let args = site
        .args
        .iter()
        .map(|arg| {
            let (kind, reg_offset, value) = match arg.location {
                ArgLocation::Register(register) => {
                    (arg_kind::REGISTER, register.pt_regs_offset(), 0)
                }
                ArgLocation::Immediate(value) => (arg_kind::CONSTANT, 0, value as u64),
                ArgLocation::Memory {
                    base,
                    index: None,
                    offset,
                } => (arg_kind::MEMORY, base.pt_regs_offset(), offset as u64),
                ArgLocation::Memory { index: Some(_), .. } => {
                    return Err(format!(
                        "argument `{}` of `{}` uses an index register",
                        arg.spec, site.name
                    ));
                }
            };
            Ok(MarkerArg {
                kind,
                size: u32::from(arg.size),
                signed: u32::from(arg.signed),
                reg_offset: reg_offset as u32,
                value,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(MarkerSiteSpec {
        marker,
        file_offset: site.file_offset,
        args,
    })
}

/// Attaches the marker program to the futexscope markers of the ELF file `path` (`shown`
/// is the name to report it by). A file without markers attaches nothing.
pub fn attach_file(
    probes: &mut Probes,
    path: &Path,
    shown: &Path,
    set: MarkerSet,
) -> Result<Attached, AttachError> {
    let found = match usdt::read_markers(path) {
        // A script or other non-ELF program has no markers.
        Err(UsdtError::Parse {
            source: ParseError::NotElf,
            ..
        }) => return Ok(Attached::default()),
        found => found?,
    };
    attach_sites(probes, path, shown, &found.sites, &found.skipped, set)
}

/// Attaches to every file the processes `pids` map that carries futexscope markers, each file
/// once however many of them map it. The first process must be readable; one of the others
/// that cannot be read (it may have exited) is skipped with the reason.
pub fn attach_processes(
    probes: &mut Probes,
    pids: &[u32],
    set: MarkerSet,
) -> Result<Attached, AttachError> {
    use std::os::unix::fs::MetadataExt;
    let mut attached = Attached::default();
    let mut seen = std::collections::HashSet::new();
    for (index, &pid) in pids.iter().enumerate() {
        let found = match usdt::process_markers(pid) {
            Ok(found) => found,
            Err(err) if index > 0 => {
                attached
                    .skipped
                    .push(format!("process {pid}: {}", Chain(&err)));
                continue;
            }
            Err(err) => return Err(err.into()),
        };
        for object in &found.marked {
            // The same file under another path (a container's root) is still the same file.
            let identity = std::fs::metadata(&object.host_path)
                .map(|m| (m.dev(), m.ino()))
                .ok();
            if identity.is_some_and(|identity| !seen.insert(identity)) {
                continue;
            }
            attached.extend(attach_sites(
                probes,
                &object.host_path,
                &object.path,
                &object.sites,
                &object.skipped,
                set,
            )?);
        }
    }
    Ok(attached)
}

/// Attaches to `sites` of the file `path` (reported as `shown`) those of `set`; the notes of
/// `set` that the parser `skipped` and the sites the eBPF program cannot read are reported as
/// skipped.
fn attach_sites(
    probes: &mut Probes,
    path: &Path,
    shown: &Path,
    sites: &[UsdtSite],
    skipped: &[SkippedSite],
    set: MarkerSet,
) -> Result<Attached, AttachError> {
    let mut attached = Attached {
        skipped: skipped
            .iter()
            .filter(|s| markers::by_name(&s.name).is_none_or(|m| set.includes(m)))
            .map(|skipped| format!("{}: {skipped}", shown.display()))
            .collect(),
        ..Attached::default()
    };
    let mut specs = Vec::with_capacity(sites.len());
    for site in sites {
        match site_spec(site) {
            Ok(spec) if set.includes(spec.marker) => specs.push(spec),
            Ok(_) => {}
            Err(why) => attached.skipped.push(format!("{}: {why}", shown.display())),
        }
    }
    if !specs.is_empty() {
        attached.sites = probes.attach_markers(path, &specs)?;
        attached.files.push(shown.to_owned());
    }
    Ok(attached)
}

/// The file `program` names: itself if it has a `/`, else the first executable match in `PATH`.
pub fn resolve_program(program: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    if program.contains('/') {
        return Some(PathBuf::from(program));
    }
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(if dir.is_empty() { "." } else { dir }).join(program))
        .find(|candidate| {
            candidate
                .metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

#[cfg(test)]
mod tests {
    use futexscope_probes_common::markers::PROVIDER;

    use super::*;
    use crate::collect::usdt::{Arch, UsdtArg};

    fn site(name: &str, specs: &[&str]) -> UsdtSite {
        UsdtSite {
            provider: PROVIDER.to_owned(),
            name: name.to_owned(),
            address: 0x1000,
            file_offset: 0x1000,
            semaphore: 0,
            args: specs
                .iter()
                .map(|s| UsdtArg::parse(Arch::X86_64, s).unwrap())
                .collect(),
        }
    }

    #[test]
    fn register_constant_and_memory_arguments_become_site_specs() {
        let spec = site_spec(&site(
            "wait_end",
            &["8@%rdi", "-4@$5", "8@-16(%rbp)", "4@%esi"],
        ))
        .unwrap();
        assert_eq!(spec.marker, markers::Marker::WaitEnd);
        assert_eq!(spec.file_offset, 0x1000);
        // pt_regs: rdi is slot 14, rbp slot 4, rsi slot 13.
        assert_eq!(
            (
                spec.args[0].kind,
                spec.args[0].reg_offset,
                spec.args[0].size
            ),
            (arg_kind::REGISTER, 14 * 8, 8)
        );
        assert_eq!(
            (
                spec.args[1].kind,
                spec.args[1].value as i64,
                spec.args[1].signed
            ),
            (arg_kind::CONSTANT, 5, 1)
        );
        assert_eq!(
            (
                spec.args[2].kind,
                spec.args[2].reg_offset,
                spec.args[2].value as i64
            ),
            (arg_kind::MEMORY, 4 * 8, -16)
        );
        assert_eq!((spec.args[3].reg_offset, spec.args[3].size), (13 * 8, 4));
    }

    #[test]
    fn unknown_markers_and_index_registers_are_refused() {
        assert!(
            site_spec(&site("no_such_marker", &[]))
                .unwrap_err()
                .contains("not a futexscope marker")
        );
        assert!(
            site_spec(&site("wait_end", &["8@8(%rax,%rbx,2)"]))
                .unwrap_err()
                .contains("index register")
        );
    }

    #[test]
    fn programs_are_found_in_path() {
        assert_eq!(resolve_program("./x"), Some(PathBuf::from("./x")));
        let sh = resolve_program("sh").expect("sh is in PATH");
        assert!(sh.is_absolute() && sh.ends_with("sh"), "{}", sh.display());
        assert_eq!(resolve_program("no-such-program-futexscope"), None);
    }
}
