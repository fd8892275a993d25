//! Naming futex words: an address in a traced process is looked up in the symbol tables of the
//! ELF files it has mapped (`/proc/PID/maps`), so a word inside a `static` shows as
//! `NAME` or `NAME+OFFSET`. Heap and stack words have no name.

use std::{collections::HashMap, fs, io, path::PathBuf, sync::Arc};

use object::{Object, ObjectSegment, ObjectSymbol, SymbolKind};

use crate::collect::proc_maps::{self, Mapping};

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
    /// Reads the data symbols (`STT_OBJECT`) of an ELF file's `.symtab` and `.dynsym`, from
    /// bytes in memory or (through [`object::ReadCache`]) only the parts of a file it needs.
    pub fn parse<'data, R: object::ReadRef<'data>>(data: R) -> Result<SymbolTable, object::Error> {
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
        let maps = proc_maps::read(pid)?;
        let mut modules = Vec::new();
        for mapping in maps.iter().filter(|m| m.offset == 0) {
            let Some(table) = self.table(pid, mapping) else {
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

    /// Forgets process `pid`'s mappings, and the symbol tables no remembered process maps (a
    /// long-running caller, the agent, stays bounded as processes come and go).
    pub fn forget(&mut self, pid: u32) {
        self.modules.remove(&pid);
        self.tables
            .retain(|_, table| table.as_ref().is_some_and(|t| Arc::strong_count(t) > 1));
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

    /// The symbol table of the file `mapping` maps into process `pid`, read once per file.
    fn table(&mut self, pid: u32, mapping: &Mapping) -> Option<Arc<SymbolTable>> {
        // Through the process's root, so files in other mount namespaces are found. A deleted
        // file is only reachable through this one mapping: its path may name another file now.
        let host_path = mapping.host_path(pid)?;
        let key = if mapping.deleted {
            host_path.clone()
        } else {
            mapping.path.clone()?
        };
        self.tables
            .entry(key)
            .or_insert_with(|| {
                // Only the headers and symbol sections are read, not the whole file: a
                // process can map a library of hundreds of MB, and the agent reads the tables
                // of every process it names words in.
                let file = object::ReadCache::new(fs::File::open(host_path).ok()?);
                SymbolTable::parse(&file).ok().map(Arc::new)
            })
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU32;

    use super::*;

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
