//! Naming futex words: an address in a traced process is looked up in the symbol tables of the
//! ELF files it has mapped (`/proc/PID/maps`), so a word inside a `static` shows as
//! `NAME` or `NAME+OFFSET`. Heap and stack words have no name.

use std::{
    collections::HashMap,
    fs, io,
    path::{Path, PathBuf},
    sync::Arc,
};

use object::{Object, ObjectSegment, ObjectSymbol, SymbolKind};

/// One line of `/proc/PID/maps`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapping {
    /// First address.
    pub start: u64,
    /// One past the last address.
    pub end: u64,
    /// File offset of `start`.
    pub offset: u64,
    /// The mapped file, if any.
    pub path: Option<PathBuf>,
}

/// Parses the text of `/proc/PID/maps`; malformed lines are skipped.
pub fn parse_maps(text: &str) -> Vec<Mapping> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (start, end) = fields.next()?.split_once('-')?;
            let _perms = fields.next()?;
            let offset = u64::from_str_radix(fields.next()?, 16).ok()?;
            let _device = fields.next()?;
            let _inode = fields.next()?;
            let rest: Vec<&str> = fields.collect();
            let path = rest.join(" ");
            Some(Mapping {
                start: u64::from_str_radix(start, 16).ok()?,
                end: u64::from_str_radix(end, 16).ok()?,
                offset,
                path: path.starts_with('/').then(|| PathBuf::from(path)),
            })
        })
        .collect()
}

/// The data symbols of one ELF file, sorted by address.
#[derive(Debug, Default)]
pub struct SymbolTable {
    /// `(address, size, demangled name)`, sorted by address.
    symbols: Vec<(u64, u64, String)>,
    /// Lowest virtual address of a loadable segment, page-aligned down.
    first_vaddr: u64,
    /// One past the highest virtual address of a loadable segment (memory size, so `.bss` too).
    end_vaddr: u64,
}

const PAGE: u64 = 4096;

impl SymbolTable {
    /// Reads the data symbols (`STT_OBJECT`) of an ELF file's `.symtab` and `.dynsym`.
    pub fn parse(data: &[u8]) -> Result<SymbolTable, object::Error> {
        let file = object::File::parse(data)?;
        let mut symbols: Vec<(u64, u64, String)> = file
            .symbols()
            .chain(file.dynamic_symbols())
            .filter(|s| s.kind() == SymbolKind::Data && s.address() != 0)
            .filter_map(|s| {
                let name = s.name().ok()?;
                Some((
                    s.address(),
                    s.size(),
                    format!("{:#}", rustc_demangle::demangle(name)),
                ))
            })
            .collect();
        symbols.sort();
        symbols.dedup_by(|a, b| a.0 == b.0);
        let loads: Vec<(u64, u64)> = file
            .segments()
            .map(|s| (s.address(), s.address() + s.size()))
            .collect();
        let first_vaddr = loads.iter().map(|&(start, _)| start).min().unwrap_or(0) & !(PAGE - 1);
        let end_vaddr = loads.iter().map(|&(_, end)| end).max().unwrap_or(0);
        Ok(SymbolTable {
            symbols,
            first_vaddr,
            end_vaddr,
        })
    }

    /// The symbol covering virtual address `vaddr`, as `NAME` or `NAME+OFFSET`.
    pub fn lookup(&self, vaddr: u64) -> Option<String> {
        let index = self
            .symbols
            .partition_point(|&(address, _, _)| address <= vaddr)
            .checked_sub(1)?;
        let (address, size, name) = &self.symbols[index];
        let offset = vaddr - address;
        if offset >= (*size).max(1) {
            return None;
        }
        Some(if offset == 0 {
            name.clone()
        } else {
            format!("{name}+{offset}")
        })
    }
}

/// One ELF file mapped into a process.
#[derive(Debug)]
struct Module {
    /// Load bias: runtime address minus ELF virtual address.
    bias: u64,
    /// Runtime address range the file's segments cover.
    start: u64,
    end: u64,
    table: Arc<SymbolTable>,
}

/// Resolves addresses of traced processes to symbols; remembers the last mappings seen, so
/// words can still be named after the process exits.
#[derive(Debug, Default)]
pub struct Symbolizer {
    tables: HashMap<PathBuf, Option<Arc<SymbolTable>>>,
    modules: HashMap<u32, Vec<Module>>,
}

impl Symbolizer {
    /// Re-reads `/proc/PID/maps` and the symbol tables of newly mapped files. Keeps what it
    /// knew if the process is gone.
    pub fn refresh(&mut self, pid: u32) -> io::Result<()> {
        let maps = parse_maps(&fs::read_to_string(format!("/proc/{pid}/maps"))?);
        let mut modules = Vec::new();
        for mapping in maps.iter().filter(|m| m.offset == 0) {
            let Some(path) = &mapping.path else { continue };
            let Some(table) = self.table(pid, path) else {
                continue;
            };
            let bias = mapping.start.wrapping_sub(table.first_vaddr);
            modules.push(Module {
                bias,
                start: mapping.start,
                end: table.end_vaddr.wrapping_add(bias),
                table,
            });
        }
        if !modules.is_empty() {
            self.modules.insert(pid, modules);
        }
        Ok(())
    }

    /// The symbol at `address` in process `pid`, if one covers it.
    pub fn resolve(&self, pid: u32, address: u64) -> Option<String> {
        let module = self
            .modules
            .get(&pid)?
            .iter()
            .find(|m| (m.start..m.end).contains(&address))?;
        module.table.lookup(address.wrapping_sub(module.bias))
    }

    fn table(&mut self, pid: u32, path: &Path) -> Option<Arc<SymbolTable>> {
        self.tables
            .entry(path.to_owned())
            .or_insert_with(|| {
                // Through the process's root, so files in other mount namespaces are found.
                let rooted =
                    Path::new(&format!("/proc/{pid}/root")).join(path.strip_prefix("/").ok()?);
                let data = fs::read(rooted).ok()?;
                SymbolTable::parse(&data).ok().map(Arc::new)
            })
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU32;

    use super::*;

    #[test]
    fn parses_maps_lines() {
        let maps = parse_maps(
            "55d0c000-55d0d000 r--p 00000000 08:01 1234   /usr/bin/my prog\n\
             7ffc0000-7ffc1000 rw-p 00000000 00:00 0      [stack]\n\
             7f000000-7f001000 rw-p 00000000 00:00 0\n\
             garbage\n",
        );
        assert_eq!(maps.len(), 3);
        assert_eq!(maps[0].start, 0x55d0_c000);
        assert_eq!(maps[0].path.as_deref(), Some(Path::new("/usr/bin/my prog")));
        assert_eq!(maps[1].path, None);
        assert_eq!(maps[2].path, None);
    }

    #[test]
    fn lookup_names_offsets_inside_a_symbol() {
        let table = SymbolTable {
            symbols: vec![(0x100, 16, "A".into()), (0x200, 0, "B".into())],
            first_vaddr: 0,
            end_vaddr: 0x1000,
        };
        assert_eq!(table.lookup(0x100).as_deref(), Some("A"));
        assert_eq!(table.lookup(0x104).as_deref(), Some("A+4"));
        assert_eq!(table.lookup(0x110), None);
        assert_eq!(table.lookup(0x200).as_deref(), Some("B"));
        assert_eq!(table.lookup(0x50), None);
    }

    /// A static of this very test binary, found through this process's own maps.
    static NAMED_WORD: [AtomicU32; 2] = [AtomicU32::new(0), AtomicU32::new(0)];

    #[test]
    fn resolves_a_static_of_a_live_process() {
        let mut symbolizer = Symbolizer::default();
        symbolizer.refresh(std::process::id()).unwrap();
        let address = NAMED_WORD[1].as_ptr() as u64;
        let name = symbolizer
            .resolve(std::process::id(), address)
            .expect("static resolved");
        assert!(name.ends_with("NAMED_WORD+4"), "{name}");
        let stack_word = 0u32;
        assert_eq!(
            symbolizer.resolve(std::process::id(), &raw const stack_word as u64),
            None
        );
    }
}
