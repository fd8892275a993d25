//! Names for what the tables show: each futex word by the symbol it lives in or the semaphore
//! the markers name for it, and each process by its command line.

use std::collections::{BTreeSet, HashMap, hash_map::Entry};

use futexscope_probes_common::maps::{FutexKey, FutexStats};

use super::symbols::Symbolizer;
use crate::{
    collect::{proc_maps, procfs},
    decode::{Record, Wait, Wake, WordKey, WordUsers},
};

/// The names of the words and processes of one session, learnt as they appear.
#[derive(Debug, Default)]
pub struct Labels {
    symbolizer: Symbolizer,
    /// The label of each word named so far (empty: nothing names it yet).
    words: HashMap<WordKey, String>,
    /// The semaphore the markers named for each word.
    semaphores: HashMap<WordKey, u64>,
    /// Each process's command line, or `pid N` if it exited before it was seen.
    processes: HashMap<u32, String>,
}

impl Labels {
    /// Labels for a session whose first process is `pid`, named `name`.
    pub fn new(pid: u32, name: String) -> Labels {
        let mut labels = Labels::default();
        // A process that has already exited is named by what later refreshes find.
        let _ = labels.symbolizer.refresh(pid);
        labels.processes.insert(pid, name);
        labels
    }

    /// Learns from one record: a marker names the semaphore of the word it is booked on; the
    /// first call on a shared futex names it by its file while the caller still maps it (a
    /// short-lived process may be gone by the next refresh).
    pub fn learn(&mut self, record: &Record) {
        match record {
            Record::Marker(hit) => {
                if let Some(word) = hit.word {
                    self.semaphores.insert(word, hit.semaphore());
                }
            }
            Record::Wait(Wait { call, .. }) | Record::Wake(Wake { call }) => {
                if let WordKey::Shared { offset, .. } = call.word
                    && !self.words.contains_key(&call.word)
                {
                    let label = shared_file_label(call.thread.pid, call.uaddr, offset);
                    self.words.insert(call.word, label.unwrap_or_default());
                }
            }
            Record::Fork(_) | Record::DiedWaiting(_) => {}
        }
    }

    /// Names the words of `stats` that have no name yet (re-reading their processes' mappings
    /// first) and the processes that use them (`users` lists those of shared words).
    pub fn update(&mut self, stats: &[(FutexKey, FutexStats)], users: &WordUsers) {
        // Each word with the processes that use it and its address in each.
        let words: Vec<(WordKey, Vec<(u32, u64)>)> = stats
            .iter()
            .map(|(key, _)| {
                let key = WordKey::from(*key);
                let users = match key {
                    WordKey::Process { pid, uaddr } => vec![(pid, uaddr)],
                    WordKey::Shared { .. } => users.get(&key).cloned().unwrap_or_default(),
                };
                (key, users)
            })
            .collect();
        // A shared word named only by its device and inode is named again once a process
        // that maps it is seen.
        let unnamed = |words: &HashMap<WordKey, String>, key: &WordKey| {
            words
                .get(key)
                .is_none_or(|label| label.is_empty() || *label == key.describe())
        };
        let stale: BTreeSet<u32> = words
            .iter()
            .filter(|(key, _)| unnamed(&self.words, key))
            .flat_map(|(_, users)| users.iter().map(|&(pid, _)| pid))
            .collect();
        for &pid in &stale {
            // A process that has exited keeps the names its last mappings gave.
            let _ = self.symbolizer.refresh(pid);
        }
        for (key, users) in words {
            if unnamed(&self.words, &key) {
                let label = match key {
                    WordKey::Process { pid, uaddr } => {
                        let semaphore = self
                            .semaphores
                            .get(&key)
                            .map(|&address| (address, self.symbolizer.resolve(pid, address)));
                        label(self.symbolizer.resolve(pid, uaddr), semaphore)
                    }
                    WordKey::Shared { offset, .. } => users
                        .iter()
                        .find_map(|&(pid, uaddr)| self.symbolizer.resolve(pid, uaddr))
                        .or_else(|| {
                            users
                                .iter()
                                .find_map(|&(pid, uaddr)| shared_file_label(pid, uaddr, offset))
                        })
                        .unwrap_or_else(|| key.describe()),
                };
                self.words.insert(key, label);
            }
            for (pid, _) in users {
                if let Entry::Vacant(entry) = self.processes.entry(pid) {
                    let name = procfs::command_line(pid);
                    entry.insert(name.unwrap_or_else(|| format!("pid {pid}")));
                }
            }
        }
    }

    /// The label of every word named so far (empty: nothing names it).
    pub fn words(&self) -> &HashMap<WordKey, String> {
        &self.words
    }

    /// The name of every process seen so far.
    pub fn processes(&self) -> &HashMap<u32, String> {
        &self.processes
    }
}

/// The label of a shared futex at `uaddr` of process `pid` and byte `offset` of its file: the
/// file's path and the offset (`/dev/shm/sem.x+0x10`; `/dev/zero (deleted)` for
/// `MAP_SHARED|MAP_ANONYMOUS` memory). `None` if the process or its mapping is gone.
fn shared_file_label(pid: u32, uaddr: u64, offset: u64) -> Option<String> {
    let maps = proc_maps::read(pid).ok()?;
    let mapping = maps.iter().find(|m| (m.start..m.end).contains(&uaddr))?;
    let path = mapping.path.as_ref()?;
    let deleted = if mapping.deleted { " (deleted)" } else { "" };
    Some(format!("{}{deleted}+{offset:#x}", path.display()))
}

/// The label of a futex word: the symbol it lives in if any, else the semaphore the markers
/// name for it (by symbol or address), else empty.
pub fn label(word_symbol: Option<String>, semaphore: Option<(u64, Option<String>)>) -> String {
    match (word_symbol, semaphore) {
        (Some(symbol), _) => symbol,
        (None, Some((_, Some(symbol)))) => format!("semaphore {symbol}"),
        (None, Some((address, None))) => format!("semaphore {address:#x}"),
        (None, None) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{MarkerHit, Thread};
    use futexscope_probes_common::markers::Marker;

    #[test]
    fn labels_prefer_the_symbol_then_the_semaphore() {
        assert_eq!(
            label(Some("POOL+8".into()), Some((0x1000, Some("POOL".into())))),
            "POOL+8"
        );
        assert_eq!(
            label(None, Some((0x1000, Some("QUEUE".into())))),
            "semaphore QUEUE"
        );
        assert_eq!(label(None, Some((0x1000, None))), "semaphore 0x1000");
        assert_eq!(label(None, None), "");
    }

    #[test]
    fn a_marker_names_the_semaphore_of_a_heap_word() {
        // A pid above the kernel's limit: no mappings, so no symbol, and no command line.
        let pid = 1 << 23;
        let mut labels = Labels::default();
        let hit = |uaddr: Option<u64>| {
            Record::Marker(MarkerHit {
                thread: Thread { pid, tid: pid },
                cpu: 0,
                ts_ns: 5,
                marker: Some(Marker::Acquired),
                id: Marker::Acquired as u32,
                word: uaddr.map(|uaddr| WordKey::process(pid, uaddr)),
                args: [0x1000, 1, 0, 0, 0, 0],
            })
        };
        labels.learn(&hit(None));
        labels.learn(&hit(Some(0x1008)));
        let key = |uaddr| FutexKey::process(pid, uaddr);
        labels.update(
            &[
                (key(0x1008), FutexStats::ZERO),
                (key(0x2000), FutexStats::ZERO),
            ],
            &WordUsers::new(),
        );
        let word = |uaddr| labels.words()[&WordKey::process(pid, uaddr)].as_str();
        assert_eq!(word(0x1008), "semaphore 0x1000");
        assert_eq!(word(0x2000), "");
        assert_eq!(labels.processes()[&pid], format!("pid {pid}"));
    }
}
