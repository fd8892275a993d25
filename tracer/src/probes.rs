//! Loading the embedded eBPF object and attaching its programs.

use aya::{
    Ebpf,
    maps::{HashMap, MapData},
    programs::RawTracePoint,
};
use futexscope_probes_common::maps::{self, FutexKey, FutexStats};

/// The eBPF object built by `build.rs`, embedded so the binary is one file.
static PROBES_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/futexscope-probes"));

/// Errors while loading or attaching the probes.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The process lacks the privilege to load eBPF programs.
    #[error(
        "permission denied loading eBPF programs: run as root, or grant CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN"
    )]
    NotPermitted(#[source] aya::EbpfError),
    /// The kernel rejected the object.
    #[error("the kernel rejected futexscope's eBPF object")]
    Load(#[source] aya::EbpfError),
    /// A program could not be loaded or attached.
    #[error("failed to load or attach the `{name}` program")]
    Program {
        /// Program name.
        name: &'static str,
        /// Cause.
        #[source]
        source: aya::programs::ProgramError,
    },
    /// A map is missing or has the wrong type.
    #[error("map `{name}` is missing or has the wrong type")]
    Map {
        /// Map name.
        name: &'static str,
        /// Cause.
        #[source]
        source: aya::maps::MapError,
    },
}

/// Loaded and attached probes.
pub struct Probes {
    ebpf: Ebpf,
}

impl Probes {
    /// Loads the embedded object and attaches the futex programs.
    pub fn load() -> Result<Probes, LoadError> {
        let mut ebpf = Ebpf::load(PROBES_OBJECT).map_err(|err| {
            if is_permission_error(&err) {
                LoadError::NotPermitted(err)
            } else {
                LoadError::Load(err)
            }
        })?;
        let name = "futex_enter";
        let program: &mut RawTracePoint = ebpf
            .program_mut(name)
            .ok_or(LoadError::Program {
                name,
                source: aya::programs::ProgramError::UnexpectedProgramType,
            })?
            .try_into()
            .map_err(|source| LoadError::Program { name, source })?;
        program
            .load()
            .map_err(|source| LoadError::Program { name, source })?;
        program
            .attach("sys_enter")
            .map_err(|source| LoadError::Program { name, source })?;
        Ok(Probes { ebpf })
    }

    /// Starts tracing process `tgid`.
    pub fn trace_tgid(&mut self, tgid: u32) -> Result<(), LoadError> {
        let mut tgids: HashMap<&mut MapData, u32, u8> = self.map_mut(maps::TRACED_TGIDS)?;
        tgids.insert(tgid, 1, 0).map_err(|source| LoadError::Map {
            name: maps::TRACED_TGIDS,
            source,
        })
    }

    /// Per-word totals of every traced process.
    pub fn futex_stats(&self) -> Result<Vec<(FutexKey, FutexStats)>, LoadError> {
        let name = maps::FUTEX_STATS;
        let map = self.ebpf.map(name).ok_or(LoadError::Map {
            name,
            source: aya::maps::MapError::InvalidName { name: name.into() },
        })?;
        let stats: HashMap<&MapData, FutexKey, FutexStats> =
            HashMap::try_from(map).map_err(|source| LoadError::Map { name, source })?;
        stats
            .iter()
            .collect::<Result<_, _>>()
            .map_err(|source| LoadError::Map { name, source })
    }

    fn map_mut<'a, K: aya::Pod, V: aya::Pod>(
        &'a mut self,
        name: &'static str,
    ) -> Result<HashMap<&'a mut MapData, K, V>, LoadError> {
        let map = self.ebpf.map_mut(name).ok_or(LoadError::Map {
            name,
            source: aya::maps::MapError::InvalidName { name: name.into() },
        })?;
        HashMap::try_from(map).map_err(|source| LoadError::Map { name, source })
    }
}

fn is_permission_error(err: &aya::EbpfError) -> bool {
    let text = format!("{err:?}");
    text.contains("EPERM")
        || text.contains("PermissionDenied")
        || text.contains("Operation not permitted")
}
