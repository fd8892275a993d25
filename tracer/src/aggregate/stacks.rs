//! Call stacks per futex word (`--stacks`): the stacks that wait on a word and the stacks that
//! wake it, and which waker stacks ended which waiter stacks' waits.
//!
//! Call stacks ([`CallStack`], unwound and normalized as they arrive by
//! [`crate::collect::unwind`]) are interned (one id per distinct stack), and booked on their
//! word: a waiter stack with its waits and wait times, a waker stack with its wakes and the
//! threads they woke. The pairing comes from a [`Timeline`] of the same calls: when it pairs a
//! woken wait with the wake that ended it, the two calls' stacks (found by thread and return
//! time, the link between a stack record and its event record) are booked as a pair, with the
//! wait's time: the blame the waker stack bears. Symbols are looked up by file and offset, so
//! the processes may be gone by then, once per distinct frame: when a report or the export
//! first needs the frame ([`StackBook::report`], [`StackBook::word`], [`StackBook::sites`],
//! [`StackBook::frames`]).

use std::{
    collections::{BTreeMap, HashMap},
    ffi::OsStr,
    path::Path,
    sync::Arc,
};

use blazesym::symbolize::{
    Input, Symbolized, Symbolizer,
    source::{Elf, Source},
};
use serde::Serialize;

use super::timeline::{CallKind, Item, Timeline};
use crate::{
    collect::unwind::{ModuleFile, RawFrame, RawStack},
    decode::{CallStack, Record, WordKey},
};

/// Waiter stacks of one word: waits and their times.
#[derive(Debug, Default)]
struct WaiterTally {
    waits: u64,
    /// Every wait's time, ns (for the percentiles).
    wait_ns: Vec<u64>,
}

/// Waker stacks of one word: wake calls and threads woken.
#[derive(Debug, Default, Clone, Copy)]
struct WakerTally {
    wakes: u64,
    woken: u64,
}

/// Waits of one waiter stack ended by one waker stack.
#[derive(Debug, Default, Clone, Copy)]
struct PairTally {
    waits: u64,
    wait_ns: u64,
}

#[derive(Debug, Default)]
struct WordTally {
    waiters: HashMap<u32, WaiterTally>,
    wakers: HashMap<u32, WakerTally>,
    /// (waiter stack, waker stack) → waits it ended.
    pairs: HashMap<(u32, u32), PairTally>,
}

/// One end of a wake→wait pairing that came out of the timeline before the other (a wake call
/// comes out just before the wait that took its last woken thread, otherwise after its waits).
enum FlowEnd {
    /// The woken wait: its stack and wait time.
    Wait { waiter: Option<u32>, wait_ns: u64 },
    /// The wake call: its stack.
    Wake { waker: Option<u32> },
}

/// Collects stacks through a session and reports them at its end.
#[derive(Default)]
pub struct StackBook {
    ids: HashMap<RawStack, u32>,
    stacks: Vec<RawStack>,
    /// The stack of each call not yet passed by the timeline, by (thread id, return time).
    by_call: HashMap<(u32, u64), u32>,
    flows: HashMap<u64, FlowEnd>,
    timeline: Timeline,
    words: BTreeMap<WordKey, WordTally>,
    captured: u64,
    truncated: u64,
    /// Every frame looked up so far.
    names: FrameNames,
    /// Each stack's frames, once looked up.
    shown: HashMap<u32, Arc<[Frame]>>,
}

impl StackBook {
    /// Interns and books one call stack; returns the stack's id.
    pub fn push_stack(&mut self, call: CallStack) -> u32 {
        self.captured += 1;
        if call.stack.truncated.is_some() {
            self.truncated += 1;
        }
        let next = self.stacks.len() as u32;
        let id = *self.ids.entry(call.stack.clone()).or_insert(next);
        if id == next {
            self.stacks.push(call.stack);
        }
        let tally = self.words.entry(call.word).or_default();
        if call.wait {
            let waiter = tally.waiters.entry(id).or_default();
            waiter.waits += 1;
            waiter
                .wait_ns
                .push(call.end_ns.saturating_sub(call.start_ns));
        } else {
            let waker = tally.wakers.entry(id).or_default();
            waker.wakes += 1;
            waker.woken += call.ret.max(0) as u64;
        }
        self.by_call.insert((call.thread.tid, call.end_ns), id);
        id
    }

    /// The frames of stack `id` (from [`StackBook::push_stack`]), leaf first, looked up now if
    /// they have not been.
    pub fn frames(&mut self, id: u32, modules: &[Arc<ModuleFile>]) -> Arc<[Frame]> {
        if let Some(frames) = self.shown.get(&id) {
            return frames.clone();
        }
        let raw = &self.stacks[id as usize];
        self.names.look_up(raw.frames.iter(), modules);
        let frames: Arc<[Frame]> = self.names.stack(raw).into();
        self.shown.insert(id, frames.clone());
        frames
    }

    /// Takes a decoded record into the pairing.
    pub fn push_record(&mut self, record: &Record) {
        if matches!(record, Record::Wait(_) | Record::Wake(_)) {
            self.timeline.push(record);
            let mut items = Vec::new();
            self.timeline.release(&mut |item| items.push(item));
            self.pair(items);
        }
    }

    fn pair(&mut self, items: Vec<Item>) {
        for item in items {
            let Item::Slice(slice) = item else { continue };
            let stack = self.by_call.remove(&(slice.tid, slice.end_ns));
            match slice.kind {
                CallKind::Wait => {
                    let Some(flow) = slice.flow_in else { continue };
                    let wait_ns = slice.end_ns - slice.start_ns;
                    match self.flows.remove(&flow) {
                        Some(FlowEnd::Wake { waker }) => {
                            self.book_pair(slice.word, stack, waker, wait_ns);
                        }
                        _ => {
                            let end = FlowEnd::Wait {
                                waiter: stack,
                                wait_ns,
                            };
                            self.flows.insert(flow, end);
                        }
                    }
                }
                CallKind::Wake => {
                    for flow in slice.flows_out {
                        match self.flows.remove(&flow) {
                            Some(FlowEnd::Wait { waiter, wait_ns }) => {
                                self.book_pair(slice.word, waiter, stack, wait_ns);
                            }
                            _ => {
                                self.flows.insert(flow, FlowEnd::Wake { waker: stack });
                            }
                        }
                    }
                }
                CallKind::DiedWaiting => {}
            }
        }
    }

    /// Books a wait of stack `waiter` on `word`, `wait_ns` long, ended by a wake of stack
    /// `waker` (either may be unknown: its record was dropped; then nothing is booked).
    fn book_pair(&mut self, word: WordKey, waiter: Option<u32>, waker: Option<u32>, wait_ns: u64) {
        if let (Some(waiter), Some(waker)) = (waiter, waker) {
            let tally = self.words.entry(word).or_default();
            let pair = tally.pairs.entry((waiter, waker)).or_default();
            pair.waits += 1;
            pair.wait_ns += wait_ns;
        }
    }

    /// Ends the pairing, looks the symbols up and reports every word's stacks, the words with
    /// the most waits first.
    pub fn report(mut self, modules: &[Arc<ModuleFile>]) -> StackReport {
        let timeline = std::mem::take(&mut self.timeline);
        let mut items = Vec::new();
        timeline.finish(&mut |item| items.push(item));
        self.pair(items);
        self.report_words(None, modules)
    }

    /// The stacks of `word` so far (the pairs of the calls the pairing has passed), for the
    /// live view; looks up the frames not seen before.
    pub fn word(&mut self, word: WordKey, modules: &[Arc<ModuleFile>]) -> Option<WordStacks> {
        self.report_words(Some(word), modules).words.pop()
    }

    /// The call site of each word's dominant waiter stack (the most wait time) so far, looking
    /// up only those stacks' frames: what names words in the live view.
    pub fn sites(&mut self, modules: &[Arc<ModuleFile>]) -> HashMap<WordKey, String> {
        let top: Vec<(WordKey, u32)> = (self.words.iter())
            .filter_map(|(word, tally)| {
                let (&id, _) = tally
                    .waiters
                    .iter()
                    .max_by_key(|(_, w)| (w.wait_ns.iter().sum::<u64>(), w.waits))?;
                Some((*word, id))
            })
            .collect();
        top.into_iter()
            .map(|(word, id)| (word, site(&self.frames(id, modules))))
            .collect()
    }

    /// Reports the stacks of `only` that word, or of every word, the words with the most waits
    /// first; looks up the frames not seen before.
    fn report_words(&mut self, only: Option<WordKey>, modules: &[Arc<ModuleFile>]) -> StackReport {
        let included = |word: &WordKey| only.is_none_or(|only| only == *word);
        let ids: Vec<u32> = (self.words.iter())
            .filter(|(word, _)| included(word))
            .flat_map(|(_, tally)| tally.waiters.keys().chain(tally.wakers.keys()))
            .copied()
            .collect();
        self.names.look_up(
            ids.iter().flat_map(|&id| &self.stacks[id as usize].frames),
            modules,
        );
        let names = &self.names;
        let shown = |id: u32| {
            let raw = &self.stacks[id as usize];
            let frames = names.stack(raw);
            ShownStack {
                id,
                frames: frames.iter().map(|f| f.to_string()).collect(),
                site: site(&frames),
                truncated: raw.truncated.clone(),
                symbols: frames,
            }
        };
        let mut words: Vec<WordStacks> = Vec::new();
        for (word, tally) in self.words.iter().filter(|(word, _)| included(word)) {
            let mut waiter_stacks: Vec<WaiterStack> = tally
                .waiters
                .iter()
                .map(|(&id, waiter)| {
                    let mut woken_by: Vec<Blame> = tally
                        .pairs
                        .iter()
                        .filter(|((w, _), _)| *w == id)
                        .map(|(&(_, waker), p)| Blame {
                            stack: waker,
                            waits: p.waits,
                            wait_ns: p.wait_ns,
                        })
                        .collect();
                    woken_by.sort_by_key(|b| std::cmp::Reverse(b.wait_ns));
                    WaiterStack {
                        stack: shown(id),
                        waits: waiter.waits,
                        wait_ns: WaitTimes::of(&waiter.wait_ns),
                        woken_by,
                    }
                })
                .collect();
            waiter_stacks.sort_by_key(|w| std::cmp::Reverse((w.wait_ns.total, w.waits)));
            let mut waker_stacks: Vec<WakerStack> = tally
                .wakers
                .iter()
                .map(|(&id, waker)| {
                    let mut ended: Vec<Blame> = tally
                        .pairs
                        .iter()
                        .filter(|((_, k), _)| *k == id)
                        .map(|(&(waiter, _), p)| Blame {
                            stack: waiter,
                            waits: p.waits,
                            wait_ns: p.wait_ns,
                        })
                        .collect();
                    ended.sort_by_key(|b| std::cmp::Reverse(b.wait_ns));
                    WakerStack {
                        stack: shown(id),
                        wakes: waker.wakes,
                        woken: waker.woken,
                        blamed_wait_ns: ended.iter().map(|b| b.wait_ns).sum(),
                        ended,
                    }
                })
                .collect();
            waker_stacks.sort_by_key(|w| std::cmp::Reverse((w.blamed_wait_ns, w.woken)));
            words.push(WordStacks {
                word: *word,
                waiter_stacks,
                waker_stacks,
            });
        }
        words.sort_by_key(|w| {
            std::cmp::Reverse(w.waiter_stacks.iter().map(|s| s.waits).sum::<u64>())
        });
        StackReport {
            captured: self.captured,
            truncated: self.truncated,
            words,
        }
    }
}

/// One symbolized frame: a function (or an inlined call in one), where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The function, demangled; `None` if no symbol covers the address.
    pub function: Option<String>,
    /// `file:line`, where debug information has it.
    pub location: Option<String>,
    /// The file's name (`libc.so.6`) and the offset in it, or `[unknown]` and the address.
    pub module_offset: String,
    /// Whether the frame is a call inlined into the next one.
    pub inlined: bool,
    /// Whether the frame belongs to the C library, the dynamic loader or a language runtime's
    /// locking code (skipped when naming a call site).
    pub runtime: bool,
}

impl std::fmt::Display for Frame {
    /// `function (file:line)`, `function (module+0xoffset)`, or `module+0xoffset`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.function, &self.location) {
            (Some(function), Some(location)) => write!(f, "{function} ({location})"),
            (Some(function), None) => write!(f, "{function} ({})", self.module_offset),
            (None, _) => f.write_str(&self.module_offset),
        }
    }
}

/// The names of frames, each looked up once (blazesym, by file and file offset; JIT code from
/// the process's perf map).
#[derive(Default)]
struct FrameNames {
    symbolizer: Symbolizer,
    perf_maps: PerfMaps,
    frames: HashMap<RawFrame, Vec<Frame>>,
}

/// The perf maps of processes (`/tmp/perf-PID.map`, which JITs such as the JVM with
/// `-XX:+DumpPerfMapAtExit`, V8 with `--perf-basic-prof`, CPython 3.12 with `-X perf` and
/// .NET write): one `START SIZE NAME` line (hex) per generated function. Read once per
/// process, when its first frame outside any file is named; kept sorted by start.
#[derive(Default)]
struct PerfMaps {
    by_pid: HashMap<u32, Vec<(u64, u64, String)>>,
}

impl PerfMaps {
    /// The function of process `pid` at `address`, if its perf map names one.
    fn name(&mut self, pid: u32, address: u64) -> Option<String> {
        let entries = self.by_pid.entry(pid).or_insert_with(|| read_perf_map(pid));
        let index = entries.partition_point(|&(start, _, _)| start <= address);
        let (start, size, name) = entries.get(index.checked_sub(1)?)?;
        (address < start + size).then(|| name.clone())
    }
}

/// The entries of process `pid`'s perf map, sorted by start (empty if it has none): through
/// the process's root while it runs (another mount namespace), else this `/tmp`.
fn read_perf_map(pid: u32) -> Vec<(u64, u64, String)> {
    let text = [
        format!("/proc/{pid}/root/tmp/perf-{pid}.map"),
        format!("/tmp/perf-{pid}.map"),
    ]
    .iter()
    .find_map(|path| std::fs::read_to_string(path).ok())
    .unwrap_or_default();
    let mut entries = parse_perf_map(&text);
    entries.sort_by_key(|&(start, _, _)| start);
    entries
}

/// Parses perf map text: `START SIZE NAME` per line, hex numbers (with or without `0x`), the
/// name the rest of the line; malformed lines are skipped.
fn parse_perf_map(text: &str) -> Vec<(u64, u64, String)> {
    let hex = |field: &str| u64::from_str_radix(field.trim_start_matches("0x"), 16).ok();
    text.lines()
        .filter_map(|line| {
            let mut fields = line.splitn(3, ' ');
            let start = hex(fields.next()?)?;
            let size = hex(fields.next()?)?;
            let name = fields.next()?.trim();
            (!name.is_empty()).then(|| (start, size, name.to_owned()))
        })
        .collect()
}

impl FrameNames {
    /// Looks up the `frames` not looked up before: one batch per file.
    fn look_up<'a>(
        &mut self,
        frames: impl Iterator<Item = &'a RawFrame>,
        modules: &[std::sync::Arc<ModuleFile>],
    ) {
        let mut offsets: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
        let mut outside: Vec<RawFrame> = Vec::new();
        for frame in frames.filter(|f| !self.frames.contains_key(f)) {
            match frame.module {
                Some(module) => offsets.entry(module).or_default().push(frame.offset),
                None => outside.push(*frame),
            }
        }
        for frame in outside {
            let function = self.perf_maps.name(frame.pid, frame.offset);
            let module_offset = match function {
                Some(_) => "[jit]".to_owned(),
                None => format!("[unknown] {:#x}", frame.offset),
            };
            let named = Frame {
                function,
                location: None,
                module_offset,
                inlined: false,
                runtime: false,
            };
            self.frames.insert(frame, vec![named]);
        }
        for (module, mut list) in offsets {
            list.sort_unstable();
            list.dedup();
            let file = &modules[module as usize];
            let short = file
                .path
                .file_name()
                .unwrap_or(OsStr::new("?"))
                .to_string_lossy()
                .into_owned();
            let runtime = is_runtime_file(&file.path);
            let source = Source::Elf(Elf::new(&file.open_path));
            let found = self
                .symbolizer
                .symbolize(&source, Input::FileOffset(&list))
                .unwrap_or_default();
            for (i, &offset) in list.iter().enumerate() {
                let module_offset = format!("{short}+{offset:#x}");
                let frames = match found.get(i) {
                    Some(Symbolized::Sym(sym)) => named_frames(sym, &module_offset, runtime),
                    _ => vec![Frame {
                        function: None,
                        location: None,
                        module_offset,
                        inlined: false,
                        runtime,
                    }],
                };
                let key = RawFrame {
                    module: Some(module),
                    offset,
                    pid: 0,
                };
                self.frames.insert(key, frames);
            }
        }
    }

    /// The frames of `stack`, leaf first (inlined calls before the function they are in), as
    /// looked up.
    fn stack(&self, stack: &RawStack) -> Vec<Frame> {
        stack
            .frames
            .iter()
            .flat_map(|frame| {
                self.frames.get(frame).cloned().unwrap_or_else(|| {
                    vec![Frame {
                        function: None,
                        location: None,
                        module_offset: format!("[unknown] {:#x}", frame.offset),
                        inlined: false,
                        runtime: false,
                    }]
                })
            })
            .collect()
    }
}

/// The frames of a symbol found at `module_offset`: the calls inlined there, innermost first,
/// then the function itself.
fn named_frames(
    sym: &blazesym::symbolize::Sym<'_>,
    module_offset: &str,
    runtime: bool,
) -> Vec<Frame> {
    let location = |info: Option<&blazesym::symbolize::CodeInfo<'_>>| {
        info.map(|c| {
            let file = Path::new(&c.file).display().to_string();
            match c.line {
                Some(line) => format!("{file}:{line}"),
                None => file,
            }
        })
    };
    let runtime_fn = |name: &str, code: Option<&blazesym::symbolize::CodeInfo<'_>>| {
        runtime
            || is_runtime_function(name)
            || code.is_some_and(|c| is_runtime_source(c.dir.as_deref(), &c.file))
    };
    // blazesym lists inlined calls outermost first; frames go leaf first.
    let mut frames: Vec<Frame> = sym
        .inlined
        .iter()
        .rev()
        .map(|inlined| Frame {
            function: Some(inlined.name.to_string()),
            location: location(inlined.code_info.as_ref()),
            module_offset: module_offset.to_owned(),
            inlined: true,
            runtime: runtime_fn(&inlined.name, inlined.code_info.as_ref()),
        })
        .collect();
    frames.push(Frame {
        function: Some(sym.name.to_string()),
        location: location(sym.code_info.as_deref()),
        module_offset: module_offset.to_owned(),
        inlined: false,
        runtime: runtime_fn(&sym.name, sym.code_info.as_deref()),
    });
    frames
}

/// Whether `path` is the C library, the dynamic loader or the C++ runtime.
fn is_runtime_file(path: &Path) -> bool {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    ["libc.so", "libc-", "ld-linux", "libpthread", "libstdc++"]
        .iter()
        .any(|prefix| name.starts_with(prefix))
}

/// Whether `function` is locking code of Rust's std or of the futexscope semaphore's
/// slow paths: frames that say how a thread waits, not where. Qualified paths count by their
/// type (`<std::sys::sync::condvar::futex::Condvar>::wait`).
fn is_runtime_function(function: &str) -> bool {
    let function = function.trim_start_matches(['<', '&']);
    [
        "std::sys::",
        "std::sync::",
        "core::",
        "futexscope_semaphore::",
    ]
    .iter()
    .any(|prefix| function.starts_with(prefix))
}

/// Whether a frame's source file is Rust's standard library (`library/std/src/…` as its line
/// tables name it): with line tables only, its inlined functions have short names
/// (`wait<u32>`) that say nothing of where they come from.
fn is_runtime_source(dir: Option<&Path>, file: &OsStr) -> bool {
    let path = match dir {
        Some(dir) => dir.join(file),
        None => Path::new(file).to_path_buf(),
    };
    let path = path.to_string_lossy();
    [
        "library/std/src/",
        "library/core/src/",
        "library/alloc/src/",
    ]
    .iter()
    .any(|root| path.contains(root))
}

/// The call site of a stack: its first frame outside the runtime, after the runtime frame that
/// leads to it (`pthread_cond_wait ← worker (server.c:123)`); the leaf if all are runtime.
fn site(frames: &[Frame]) -> String {
    let Some(first) = frames.iter().position(|f| !f.runtime) else {
        return frames.first().map(|f| f.to_string()).unwrap_or_default();
    };
    match first.checked_sub(1).map(|i| &frames[i]) {
        Some(entry) => format!(
            "{} ← {}",
            entry.function.as_deref().unwrap_or(&entry.module_offset),
            frames[first]
        ),
        None => frames[first].to_string(),
    }
}

/// Every word's stacks, for the summary, `--json` and the flame graphs.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct StackReport {
    /// Stacks captured (one per wait that slept and per wake that woke).
    pub captured: u64,
    /// Of those, stacks whose walk stopped before the thread's start.
    pub truncated: u64,
    /// Per word, the words with the most waits first.
    pub words: Vec<WordStacks>,
}

/// The stacks of one word.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WordStacks {
    /// The word (a shared futex's stacks come from every process that uses it).
    #[serde(skip)]
    pub word: WordKey,
    /// Stacks that waited on it, most wait time first.
    pub waiter_stacks: Vec<WaiterStack>,
    /// Stacks that woke it, most blamed wait time first.
    pub waker_stacks: Vec<WakerStack>,
}

/// A stack as shown.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ShownStack {
    /// The stack's id, the same in every word (pairs refer to it).
    pub id: u32,
    /// Frames, leaf first, as `function (file:line)` (inlined calls are frames of their own).
    pub frames: Vec<String>,
    /// The call site: the first frame outside the C library and the runtime, with the runtime
    /// function it called.
    pub site: String,
    /// Why the walk stopped before the thread's start, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub truncated: Option<String>,
    /// The frames as found, leaf first (`frames` is their text).
    #[serde(skip)]
    pub symbols: Vec<Frame>,
}

/// Total and percentiles of wait times, ns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct WaitTimes {
    /// Sum.
    pub total: u64,
    /// Median.
    pub p50: u64,
    /// 99th percentile.
    pub p99: u64,
    /// Longest.
    pub max: u64,
}

impl WaitTimes {
    /// Total and exact percentiles (nearest rank) of `times`.
    pub fn of(times: &[u64]) -> WaitTimes {
        let mut sorted = times.to_vec();
        sorted.sort_unstable();
        let rank = |p: f64| {
            let index = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
            sorted[index]
        };
        if sorted.is_empty() {
            return WaitTimes::default();
        }
        WaitTimes {
            total: sorted.iter().sum(),
            p50: rank(0.5),
            p99: rank(0.99),
            max: sorted[sorted.len() - 1],
        }
    }
}

/// Waits of one stack ended by (or ending) another.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Blame {
    /// The other stack's id.
    pub stack: u32,
    /// Waits.
    pub waits: u64,
    /// Their total wait time, ns.
    pub wait_ns: u64,
}

/// A stack that waited on a word.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WaiterStack {
    /// The stack.
    #[serde(flatten)]
    pub stack: ShownStack,
    /// Waits that slept.
    pub waits: u64,
    /// Their wait times.
    pub wait_ns: WaitTimes,
    /// The waker stacks that ended them, most wait time first.
    pub woken_by: Vec<Blame>,
}

/// A stack that woke threads waiting on a word.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WakerStack {
    /// The stack.
    #[serde(flatten)]
    pub stack: ShownStack,
    /// Wake calls that woke at least one thread.
    pub wakes: u64,
    /// Threads they woke.
    pub woken: u64,
    /// Total wait time of the waits it ended.
    pub blamed_wait_ns: u64,
    /// The waiter stacks whose waits it ended, most wait time first.
    pub ended: Vec<Blame>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_times_are_exact_nearest_rank() {
        let times: Vec<u64> = (1..=100).collect();
        let t = WaitTimes::of(&times);
        assert_eq!((t.total, t.p50, t.p99, t.max), (5050, 50, 99, 100));
        assert_eq!(WaitTimes::of(&[]), WaitTimes::default());
    }

    #[test]
    fn the_site_is_the_first_frame_outside_the_runtime() {
        let frame = |name: &str, runtime: bool| Frame {
            function: Some(name.to_owned()),
            location: (!runtime).then(|| "x.c:3".to_owned()),
            module_offset: "x+0x1".to_owned(),
            inlined: false,
            runtime,
        };
        let frames = [
            frame("__futex_abstimed_wait_common", true),
            frame("pthread_cond_wait", true),
            frame("worker", false),
        ];
        assert_eq!(site(&frames), "pthread_cond_wait ← worker (x.c:3)");
    }

    #[test]
    fn jit_frames_are_named_from_the_perf_map() {
        let text = "7f0000001000 40 jit_futex_wait\n0x7f0000002000 0x10 LazyCompile:*run app.js:3\nbad line\n";
        assert_eq!(
            parse_perf_map(text),
            [
                (0x7f00_0000_1000, 0x40, "jit_futex_wait".to_owned()),
                (
                    0x7f00_0000_2000,
                    0x10,
                    "LazyCompile:*run app.js:3".to_owned()
                )
            ]
        );
        // A process that cannot exist (above the kernel's pid limit): its map is in /tmp.
        let pid = (1 << 23) + std::process::id() % 1000;
        let path = format!("/tmp/perf-{pid}.map");
        std::fs::write(&path, text).unwrap();
        let mut maps = PerfMaps::default();
        let named = |maps: &mut PerfMaps, address| maps.name(pid, address);
        assert_eq!(
            named(&mut maps, 0x7f00_0000_1010).as_deref(),
            Some("jit_futex_wait")
        );
        assert_eq!(named(&mut maps, 0x7f00_0000_1040), None, "one past its end");
        assert_eq!(named(&mut maps, 0x7f00_0000_0fff), None);
        std::fs::remove_file(&path).unwrap();
    }
}
