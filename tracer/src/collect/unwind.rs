//! Unwinding the user stacks the probes copy (`--stacks`): each [`StackRecord`] holds the
//! registers and the top of the stack at a futex call; this module walks it with framehop,
//! using the DWARF call-frame information (`.eh_frame`) of every executable file the process
//! maps (frame pointers where a file has none), and normalizes each frame at once to (file,
//! file offset), so that the stacks of a process that exits before the summary are still named.

use std::{
    collections::HashMap,
    fs,
    ops::{Deref, Range},
    path::{Path, PathBuf},
    sync::Arc,
};

use framehop::{
    ExplicitModuleSectionInfo, FrameAddress, Module, Unwinder,
    x86_64::{CacheX86_64, UnwindRegsX86_64, UnwinderX86_64},
};
use futexscope_probes_common::stack::StackRecord;
use object::{Object, ObjectSection, ObjectSegment};

use super::proc_maps::{self, Mapping};

/// Most frames kept of one stack; deeper stacks are cut there (and say so).
pub const MAX_FRAMES: usize = 128;

/// One executable file a traced process maps, as the unwinder and the symbolizer see it.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct ModuleFile {
    /// The file's path in the traced process (as `/proc/PID/maps` shows it).
    pub path: PathBuf,
    /// Where futexscope opens it: `path` itself when the process sees the same file system,
    /// otherwise through `/proc/PID/root` or `map_files`.
    pub open_path: PathBuf,
    /// The GNU build id, hex, if the file has one.
    pub build_id: Option<String>,
}

/// One frame, normalized: an offset in a file, or an address in no file (JIT code, vDSO).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RawFrame {
    /// Index of the file in [`Unwinders::modules`], `None` outside any file.
    pub module: Option<u32>,
    /// The file offset of the address looked up (the instruction pointer itself for the first
    /// frame, a return address minus one for the others), or the address outside any file.
    pub offset: u64,
    /// For an address outside any file, its process (JIT code is named from the process's
    /// `/tmp/perf-PID.map`); 0 for a file offset, which names the same code in every process.
    pub pid: u32,
}

/// A walked stack, leaf first.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RawStack {
    /// Frames, the futex call's own first.
    pub frames: Vec<RawFrame>,
    /// Why the walk stopped before the root (the thread's start), if it did.
    pub truncated: Option<String>,
}

/// A file's bytes, shared by every process that maps it, and one section of them.
#[derive(Clone)]
struct Section {
    data: Arc<Vec<u8>>,
    range: Range<usize>,
}

impl Deref for Section {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.data[self.range.clone()]
    }
}

/// What the unwinder needs of a file, read once.
struct LoadedFile {
    index: u32,
    /// (file offset, virtual address) of each executable `PT_LOAD` segment.
    segments: Vec<(Range<u64>, u64)>,
    sections: Vec<(&'static str, Range<u64>, Section)>,
    got: Option<Range<u64>>,
}

/// One traced process: its mappings and its unwinder.
struct ProcessUnwinder {
    mappings: Vec<(Mapping, Option<u32>)>,
    unwinder: UnwinderX86_64<Section>,
}

/// The unwinders of the traced processes and the files they map.
#[derive(Default)]
pub struct Unwinders {
    processes: HashMap<u32, ProcessUnwinder>,
    files: HashMap<PathBuf, Option<Arc<LoadedFile>>>,
    modules: Vec<Arc<ModuleFile>>,
    cache: CacheX86_64,
}

impl Unwinders {
    /// The files frames refer to, by [`RawFrame::module`].
    pub fn modules(&self) -> &[Arc<ModuleFile>] {
        &self.modules
    }

    /// Walks the stack in `record` and normalizes its frames. The process's mappings are read
    /// at its first stack, and again when an instruction lies outside them (a library loaded
    /// since).
    pub fn unwind(&mut self, record: &StackRecord) -> RawStack {
        let pid = record.tgid;
        let known = self
            .processes
            .get(&pid)
            .is_some_and(|p| find_mapping(&p.mappings, record.ip).is_some());
        if !known {
            self.load_process(pid);
        }
        let Some(process) = self.processes.get(&pid) else {
            return RawStack {
                frames: vec![RawFrame {
                    module: None,
                    offset: record.ip,
                    pid,
                }],
                truncated: Some("the process's memory map could not be read".to_owned()),
            };
        };
        let copied = u64::from(record.copied).min(record.stack.len() as u64);
        let sp = record.sp;
        let mut read_stack = |addr: u64| -> Result<u64, ()> {
            let at = addr.checked_sub(sp).ok_or(())?;
            if at % 8 != 0 || at + 8 > copied {
                return Err(());
            }
            let at = at as usize;
            let bytes: [u8; 8] = record.stack[at..at + 8].try_into().map_err(|_| ())?;
            Ok(u64::from_le_bytes(bytes))
        };
        let regs = UnwindRegsX86_64::new(record.ip, record.sp, record.bp);
        let mut frames = Vec::new();
        let mut walk =
            process
                .unwinder
                .iter_frames(record.ip, regs, &mut self.cache, &mut read_stack);
        let truncated = loop {
            if frames.len() == MAX_FRAMES {
                break Some(format!("cut at {MAX_FRAMES} frames"));
            }
            match walk.next() {
                Ok(Some(address)) => frames.push(normalize(&process.mappings, pid, address)),
                Ok(None) => break None,
                Err(framehop::Error::CouldNotReadStack(addr)) if addr >= sp + copied => {
                    break Some(format!(
                        "the stack copy ended ({copied} bytes from the stack pointer)"
                    ));
                }
                Err(err) => break Some(format!("unwinding failed: {err}")),
            }
        };
        RawStack { frames, truncated }
    }

    fn load_process(&mut self, pid: u32) {
        let Ok(maps) = proc_maps::read(pid) else {
            self.processes.remove(&pid);
            return;
        };
        let mut unwinder = UnwinderX86_64::new();
        let mut mappings = Vec::with_capacity(maps.len());
        for mapping in maps {
            let file = match mapping.host_path(pid) {
                Some(path) if mapping.executable => self.file(&mapping, &path),
                _ => None,
            };
            if let Some(file) = &file
                && let Some(module) = module_of(&mapping, file)
            {
                unwinder.add_module(module);
            }
            mappings.push((mapping, file.map(|f| f.index)));
        }
        self.processes
            .insert(pid, ProcessUnwinder { mappings, unwinder });
    }

    /// The file mapped by `mapping`, reached at `host_path`, read once.
    fn file(&mut self, mapping: &Mapping, host_path: &Path) -> Option<Arc<LoadedFile>> {
        // The same file reached from another process has the same canonical path.
        let open_path = fs::canonicalize(host_path).unwrap_or_else(|_| host_path.to_owned());
        if let Some(file) = self.files.get(&open_path) {
            return file.clone();
        }
        let index = self.modules.len() as u32;
        let loaded = load_file(&open_path, index);
        if let Some((_, build_id)) = &loaded {
            self.modules.push(Arc::new(ModuleFile {
                path: mapping.path.clone().unwrap_or_else(|| open_path.clone()),
                open_path: open_path.clone(),
                build_id: build_id.clone(),
            }));
        }
        let file = loaded.map(|(file, _)| Arc::new(file));
        self.files.insert(open_path, file.clone());
        file
    }
}

/// The mapping of `mappings` that holds `address`.
fn find_mapping(
    mappings: &[(Mapping, Option<u32>)],
    address: u64,
) -> Option<&(Mapping, Option<u32>)> {
    mappings
        .iter()
        .find(|(m, _)| (m.start..m.end).contains(&address))
}

/// The frame at `address` of process `pid`, as a file offset: the instruction pointer is looked up as it is, a
/// return address minus one (inside the call, not at the next line).
fn normalize(mappings: &[(Mapping, Option<u32>)], pid: u32, address: FrameAddress) -> RawFrame {
    let lookup = address.address_for_lookup();
    match find_mapping(mappings, lookup) {
        Some((mapping, Some(module))) => RawFrame {
            module: Some(*module),
            offset: lookup - mapping.start + mapping.offset,
            pid: 0,
        },
        _ => RawFrame {
            module: None,
            offset: lookup,
            pid,
        },
    }
}

/// Reads the ELF file at `path`: its segments, unwind sections and build id.
fn load_file(path: &Path, index: u32) -> Option<(LoadedFile, Option<String>)> {
    let data = Arc::new(fs::read(path).ok()?);
    let elf = object::File::parse(&data[..]).ok()?;
    // Only executable segments: a read-only one may share the page an executable mapping
    // starts on (lld leaves a gap between file offset and address there), and would give the
    // wrong bias.
    let segments = elf
        .segments()
        .filter(|s| {
            matches!(s.flags(), object::SegmentFlags::Elf { p_flags } if p_flags & object::elf::PF_X != 0)
        })
        .map(|s| {
            let (offset, size) = s.file_range();
            (offset..offset + size, s.address())
        })
        .collect();
    let mut sections = Vec::new();
    let mut got = None;
    for section in elf.sections() {
        let Ok(name) = section.name() else { continue };
        let svma = section.address()..section.address() + section.size();
        let name: &'static str = match name {
            ".text" => ".text",
            ".eh_frame" => ".eh_frame",
            ".eh_frame_hdr" => ".eh_frame_hdr",
            ".debug_frame" => ".debug_frame",
            ".got" => {
                got = Some(svma);
                continue;
            }
            _ => continue,
        };
        let Some((offset, size)) = section.file_range() else {
            continue; // .debug_frame of a stripped file, or NOBITS
        };
        let range = offset as usize..(offset + size) as usize;
        if range.end > data.len() {
            continue;
        }
        let data = Arc::clone(&data);
        sections.push((name, svma, Section { data, range }));
    }
    let build_id = elf
        .build_id()
        .ok()
        .flatten()
        .map(|id| id.iter().map(|b| format!("{b:02x}")).collect());
    Some((
        LoadedFile {
            index,
            segments,
            sections,
            got,
        },
        build_id,
    ))
}

/// The unwinder's module for the executable `mapping` of `file`: its address range and its
/// load bias, from the `PT_LOAD` segment that holds the mapped file offset.
fn module_of(mapping: &Mapping, file: &LoadedFile) -> Option<Module<Section>> {
    let (segment, vaddr) = file.segments.iter().find(|(range, _)| {
        range.contains(&mapping.offset)
            || mapping.offset <= range.start
                && range.start < mapping.offset + (mapping.end - mapping.start)
    })?;
    // The address of file offset `segment.start` is `mapping.start + (segment.start -
    // mapping.offset)`; the bias maps the segment's virtual address there.
    let base_avma = (mapping.start + segment.start)
        .wrapping_sub(mapping.offset)
        .wrapping_sub(*vaddr);
    let section = |name: &str| {
        file.sections
            .iter()
            .find(|(n, _, _)| *n == name)
            .map(|(_, svma, data)| (svma.clone(), data.clone()))
    };
    let text = section(".text");
    let eh_frame = section(".eh_frame");
    let eh_frame_hdr = section(".eh_frame_hdr");
    let info = ExplicitModuleSectionInfo {
        base_svma: 0,
        text_svma: text.as_ref().map(|(svma, _)| svma.clone()),
        text: text.map(|(_, data)| data),
        got_svma: file.got.clone(),
        eh_frame_svma: eh_frame.as_ref().map(|(svma, _)| svma.clone()),
        eh_frame: eh_frame.map(|(_, data)| data),
        eh_frame_hdr_svma: eh_frame_hdr.as_ref().map(|(svma, _)| svma.clone()),
        eh_frame_hdr: eh_frame_hdr.map(|(_, data)| data),
        debug_frame: section(".debug_frame").map(|(_, data)| data),
        stubs_svma: None,
        stub_helper_svma: None,
        unwind_info: None,
        text_segment_svma: None,
        text_segment: None,
    };
    Some(Module::new(
        mapping
            .path
            .as_ref()
            .map_or_else(String::new, |p| p.display().to_string()),
        mapping.start..mapping.end,
        base_avma,
        info,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unwinds_this_process_own_stack() {
        // A stack record of this very thread, made by hand: the registers and the top of the
        // stack here. The walk must name this test binary's file.
        let mut record = StackRecord {
            kind: 1,
            tid: 0,
            tgid: std::process::id(),
            copied: 0,
            ts_ns: 0,
            start_ns: 0,
            uaddr: 0,
            ret: 0,
            ip: 0,
            sp: 0,
            bp: 0,
            key: futexscope_probes_common::maps::FutexKey::default(),
            stack: [0; futexscope_probes_common::stack::STACK_WINDOW_BYTES],
        };
        let ip = unwinds_this_process_own_stack as *const () as u64;
        let marker = 0u64;
        let sp = (&raw const marker) as u64 & !7;
        record.ip = ip;
        record.sp = sp;
        // SAFETY: reading this thread's own live stack from `sp` upward; 1 KiB above a local of
        // a test function is still inside the test thread's stack.
        let window = unsafe { std::slice::from_raw_parts(sp as *const u8, 1024) };
        record.stack[..1024].copy_from_slice(window);
        record.copied = 1024;
        let mut unwinders = Unwinders::default();
        let stack = unwinders.unwind(&record);
        let first = stack.frames[0];
        let module = &unwinders.modules()[first.module.expect("in a file") as usize];
        let exe = fs::canonicalize("/proc/self/exe").unwrap();
        assert_eq!(module.open_path, exe);
    }
}
