//! `--pprof FILE`: blocked time as a pprof profile (google/pprof `profile.proto`, gzipped), the
//! shape of Go's block and mutex profiles: sample types `contentions/count` and
//! `delay/nanoseconds`, one sample per waiter stack and word, labelled with the word. `go tool
//! pprof`, Pyroscope and Parca open it.
//!
//! Each distinct address is a `Location` whose `Line`s are its function and the calls inlined
//! into it (innermost first, as the format wants); functions are keyed by name and file.
//! There are no mappings: the frames are already symbolized, and the address is the offset in
//! the file the frame's module names.

use std::{
    collections::HashMap,
    io::{self, Write},
};

use flate2::{Compression, write::GzEncoder};

use super::protobuf::Message;
use crate::aggregate::stacks::{Frame, StackReport, WordStacks};

/// Field numbers of profile.proto.
mod field {
    /// `Profile`.
    pub(super) const SAMPLE_TYPE: u32 = 1;
    pub(super) const SAMPLE: u32 = 2;
    pub(super) const LOCATION: u32 = 4;
    pub(super) const FUNCTION: u32 = 5;
    pub(super) const STRING_TABLE: u32 = 6;
    pub(super) const TIME_NANOS: u32 = 9;
    pub(super) const DURATION_NANOS: u32 = 10;
    pub(super) const PERIOD_TYPE: u32 = 11;
    pub(super) const PERIOD: u32 = 12;
    pub(super) const COMMENT: u32 = 13;
    pub(super) const DEFAULT_SAMPLE_TYPE: u32 = 14;
    /// `ValueType`.
    pub(super) const TYPE: u32 = 1;
    pub(super) const UNIT: u32 = 2;
    /// `Sample`.
    pub(super) const LOCATION_ID: u32 = 1;
    pub(super) const VALUE: u32 = 2;
    pub(super) const LABEL: u32 = 3;
    /// `Label`.
    pub(super) const KEY: u32 = 1;
    pub(super) const STR: u32 = 2;
    pub(super) const NUM: u32 = 3;
    /// `Location`.
    pub(super) const ID: u32 = 1;
    pub(super) const ADDRESS: u32 = 3;
    pub(super) const LINE: u32 = 4;
    /// `Line`.
    pub(super) const FUNCTION_ID: u32 = 1;
    pub(super) const LINE_NUMBER: u32 = 2;
    /// `Function`.
    pub(super) const NAME: u32 = 2;
    pub(super) const SYSTEM_NAME: u32 = 3;
    pub(super) const FILENAME: u32 = 4;
}

/// When and for how long the profile was taken.
#[derive(Clone, Copy, Debug)]
pub struct Period {
    /// Start, ns since the Unix epoch.
    pub start_unix_ns: u64,
    /// Length, ns.
    pub duration_ns: u64,
}

/// The profile being built: its string table, functions and locations.
#[derive(Default)]
struct Builder {
    strings: HashMap<String, u64>,
    string_table: Vec<String>,
    functions: HashMap<(String, String), u64>,
    function_messages: Vec<Message>,
    locations: HashMap<String, u64>,
    location_messages: Vec<Message>,
}

impl Builder {
    fn string(&mut self, text: &str) -> u64 {
        if self.string_table.is_empty() {
            self.string_table.push(String::new());
            self.strings.insert(String::new(), 0);
        }
        if let Some(&index) = self.strings.get(text) {
            return index;
        }
        let index = self.string_table.len() as u64;
        self.string_table.push(text.to_owned());
        self.strings.insert(text.to_owned(), index);
        index
    }

    fn function(&mut self, name: &str, file: &str) -> u64 {
        if let Some(&id) = self.functions.get(&(name.to_owned(), file.to_owned())) {
            return id;
        }
        let id = self.function_messages.len() as u64 + 1;
        let (name_index, file_index) = (self.string(name), self.string(file));
        let mut function = Message::default();
        function
            .uint(field::ID, id)
            .uint(field::NAME, name_index)
            .uint(field::SYSTEM_NAME, name_index)
            .uint(field::FILENAME, file_index);
        self.function_messages.push(function);
        self.functions
            .insert((name.to_owned(), file.to_owned()), id);
        id
    }

    /// The location of one address: `frames` are its calls, innermost (inlined) first and the
    /// function that holds the address last.
    fn location(&mut self, frames: &[&Frame]) -> u64 {
        let Some(outer) = frames.last() else {
            return 0;
        };
        if let Some(&id) = self.locations.get(&outer.module_offset) {
            return id;
        }
        let id = self.location_messages.len() as u64 + 1;
        let mut location = Message::default();
        location.uint(field::ID, id).uint(
            field::ADDRESS,
            address(&outer.module_offset).unwrap_or_default(),
        );
        for frame in frames {
            let (file, line) = file_line(frame.location.as_deref());
            let name = frame.function.as_deref().unwrap_or(&frame.module_offset);
            let function = self.function(name, file);
            let mut line_message = Message::default();
            line_message
                .uint(field::FUNCTION_ID, function)
                .uint(field::LINE_NUMBER, line);
            location.message(field::LINE, &line_message);
        }
        self.location_messages.push(location);
        self.locations.insert(outer.module_offset.clone(), id);
        id
    }
}

/// The offset of a frame's `module+0xoffset`.
fn address(module_offset: &str) -> Option<u64> {
    let (_, hex) = module_offset.rsplit_once("+0x")?;
    u64::from_str_radix(hex, 16).ok()
}

/// A frame's `file:line` as file and line (0: unknown).
fn file_line(location: Option<&str>) -> (&str, u64) {
    match location {
        None => ("", 0),
        Some(location) => match location.rsplit_once(':') {
            Some((file, line)) if line.parse::<u64>().is_ok() => {
                (file, line.parse().unwrap_or_default())
            }
            _ => (location, 0),
        },
    }
}

/// Writes the blocked time of `report` as a gzipped pprof profile: one sample per waiter stack
/// and word, with its waits (`contentions`) and their total time (`delay`), labelled `futex`
/// (the word and `label`'s name for it) and `pid` (for a process-private word). `comment` is
/// stored in the profile (what was sampled).
pub fn write(
    report: &StackReport,
    label: impl Fn(&WordStacks) -> String,
    period: Period,
    comment: &str,
    out: impl io::Write,
) -> io::Result<()> {
    let mut builder = Builder::default();
    let mut profile = Message::default();
    for (kind, unit) in [("contentions", "count"), ("delay", "nanoseconds")] {
        let mut value_type = Message::default();
        value_type
            .uint(field::TYPE, builder.string(kind))
            .uint(field::UNIT, builder.string(unit));
        profile.message(field::SAMPLE_TYPE, &value_type);
    }
    let (futex_key, pid_key) = (builder.string("futex"), builder.string("pid"));
    for word in &report.words {
        let word_name = format!("{} {}", word.word.describe(), label(word));
        let word_name = builder.string(word_name.trim_end());
        for waiter in &word.waiter_stacks {
            let mut sample = Message::default();
            // Leaf first; the calls inlined at an address come before the function holding it.
            let mut group: Vec<&Frame> = Vec::new();
            for frame in &waiter.stack.symbols {
                group.push(frame);
                if !frame.inlined {
                    sample.uint(field::LOCATION_ID, builder.location(&group));
                    group.clear();
                }
            }
            if !group.is_empty() {
                sample.uint(field::LOCATION_ID, builder.location(&group));
            }
            sample
                .uint(field::VALUE, waiter.waits)
                .uint(field::VALUE, waiter.wait_ns.total);
            let mut futex = Message::default();
            futex
                .uint(field::KEY, futex_key)
                .uint(field::STR, word_name);
            sample.message(field::LABEL, &futex);
            if let crate::decode::WordKey::Process { pid, .. } = word.word {
                let mut pid_label = Message::default();
                pid_label
                    .uint(field::KEY, pid_key)
                    .uint(field::NUM, u64::from(pid));
                sample.message(field::LABEL, &pid_label);
            }
            profile.message(field::SAMPLE, &sample);
        }
    }
    for location in &builder.location_messages {
        profile.message(field::LOCATION, location);
    }
    for function in &builder.function_messages {
        profile.message(field::FUNCTION, function);
    }
    let mut period_type = Message::default();
    period_type
        .uint(field::TYPE, builder.string("contentions"))
        .uint(field::UNIT, builder.string("count"));
    let (comment, delay) = (builder.string(comment), builder.string("delay"));
    profile
        .uint(field::TIME_NANOS, period.start_unix_ns)
        .uint(field::DURATION_NANOS, period.duration_ns)
        .message(field::PERIOD_TYPE, &period_type)
        .uint(field::PERIOD, 1)
        .uint(field::COMMENT, comment)
        .uint(field::DEFAULT_SAMPLE_TYPE, delay);
    for text in &builder.string_table {
        profile.text(field::STRING_TABLE, text);
    }
    let mut gzip = GzEncoder::new(out, Compression::default());
    gzip.write_all(profile.bytes())?;
    gzip.finish()?.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_and_line_split_at_the_last_colon() {
        assert_eq!(file_line(Some("a/b.c:12")), ("a/b.c", 12));
        assert_eq!(file_line(Some("b.c")), ("b.c", 0));
        assert_eq!(file_line(None), ("", 0));
        assert_eq!(address("libc.so.6+0x9a0f0"), Some(0x9a0f0));
        assert_eq!(address("[unknown] 0x10"), None);
    }
}
