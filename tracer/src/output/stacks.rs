//! The outputs of `--stacks`: the top call sites in the summary, the stacks in `--json`,
//! folded stacks of blocked time (`--folded`) and their flame graph (`--flamegraph`).

use std::{collections::HashMap, fmt::Write as _, io};

use crate::{
    aggregate::{
        stacks::{StackReport, WordStacks},
        table::Row,
    },
    decode::WordKey,
};

/// Which calls have a stack, as the summary, the JSON and the pprof profile say: every one
/// (measured: ~2 µs of kernel time per stack, next to a wait that slept, which costs a context
/// switch and more; see docs/overhead.md).
pub const SAMPLING: &str = "every wait that slept and every wake that woke (not sampled; \
    stacks that found the stack ring buffer full are dropped and counted)";

/// Words whose sites the summary shows, and sites per word and side.
const SUMMARY_WORDS: usize = 5;
const SUMMARY_SITES: usize = 3;

/// The summary's section on call sites: for the words with the most waits, their top waiter
/// and waker sites, and what was truncated.
pub fn summary(report: &StackReport, label: impl Fn(&WordStacks) -> String) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\ncall sites ({} stacks captured, {} truncated; stacks of {SAMPLING}):",
        report.captured, report.truncated
    );
    for word in report.words.iter().take(SUMMARY_WORDS) {
        let _ = writeln!(out, "  {} {}", shown_word(word.word), label(word));
        for waiter in word.waiter_stacks.iter().take(SUMMARY_SITES) {
            let _ = writeln!(
                out,
                "    waits {:>7}  {:>10} ms (p99 {:.3} ms)  {}",
                waiter.waits,
                format!("{:.3}", waiter.wait_ns.total as f64 / 1e6),
                waiter.wait_ns.p99 as f64 / 1e6,
                waiter.stack.site
            );
        }
        for waker in word.waker_stacks.iter().take(SUMMARY_SITES) {
            let _ = writeln!(
                out,
                "    wakes {:>7}  woke {:>5}  ended {:.3} ms of waits  {}",
                waker.wakes,
                waker.woken,
                waker.blamed_wait_ns as f64 / 1e6,
                waker.stack.site
            );
        }
    }
    out
}

/// The call site of each word's dominant waiter stack (the one with the most wait time).
pub fn sites(report: &StackReport) -> HashMap<WordKey, String> {
    report
        .words
        .iter()
        .filter_map(|word| {
            let top = word.waiter_stacks.first()?;
            Some((word.word, top.stack.site.clone()))
        })
        .collect()
}

/// Names the words that have no label of their own by their dominant waiter call site
/// (`sites`).
pub fn label_by_site(rows: &mut [Row], sites: &HashMap<WordKey, String>) {
    for row in rows.iter_mut().filter(|row| row.label.is_empty()) {
        if let Some(site) = sites.get(&row.word) {
            row.label = format!("waited at {site}");
        }
    }
}

/// How the summary names a word: `pid N 0xADDRESS`, or a shared futex's file key.
fn shown_word(word: WordKey) -> String {
    match word {
        WordKey::Process { pid, uaddr } => format!("pid {pid} {uaddr:#x}"),
        shared => shared.describe(),
    }
}

/// The report as JSON values keyed by word, to put into the summary's rows.
pub fn json_by_word(report: &StackReport) -> HashMap<WordKey, serde_json::Value> {
    report
        .words
        .iter()
        .map(|word| {
            let value = serde_json::json!({
                "waiter_stacks": word.waiter_stacks,
                "waker_stacks": word.waker_stacks,
            });
            (word.word, value)
        })
        .collect()
}

/// Adds `waiter_stacks` and `waker_stacks` to each word of the summary JSON `summary` (its
/// `futexes` rows, serialized from `rows` in the same order), and the capture counts at the
/// top.
pub fn add_to_json(summary: &mut serde_json::Value, rows: &[Row], report: &StackReport) {
    let mut by_word = json_by_word(report);
    if let Some(json_rows) = summary
        .get_mut("futexes")
        .and_then(|rows| rows.as_array_mut())
    {
        for (row, json_row) in rows.iter().zip(json_rows) {
            let (waiters, wakers) = match by_word.remove(&row.word) {
                Some(value) => (
                    value["waiter_stacks"].clone(),
                    value["waker_stacks"].clone(),
                ),
                None => (serde_json::json!([]), serde_json::json!([])),
            };
            if let Some(json_row) = json_row.as_object_mut() {
                json_row.insert("waiter_stacks".to_owned(), waiters);
                json_row.insert("waker_stacks".to_owned(), wakers);
            }
        }
    }
    if let Some(top) = summary.as_object_mut() {
        top.insert(
            "stacks".to_owned(),
            serde_json::json!({
                "captured": report.captured,
                "truncated": report.truncated,
                "sampling": "all",
            }),
        );
    }
}

/// Folded stacks of blocked time: one line per waiter stack and word, root first, the word as
/// the last frame (`futex 0x… LABEL`), then the wait time in ns. A truncated stack starts with
/// a `[truncated]` frame. Frames never hold `;` (replaced by `,`).
pub fn folded(report: &StackReport, label: impl Fn(&WordStacks) -> String) -> Vec<String> {
    let mut lines = Vec::new();
    for word in &report.words {
        let word_frame = clean(&format!("futex {} {}", word.word.describe(), label(word)));
        for waiter in &word.waiter_stacks {
            if waiter.wait_ns.total == 0 {
                continue;
            }
            let mut frames: Vec<String> = Vec::new();
            if waiter.stack.truncated.is_some() {
                frames.push("[truncated]".to_owned());
            }
            frames.extend(waiter.stack.frames.iter().rev().map(|f| clean(f)));
            frames.push(word_frame.clone());
            lines.push(format!("{} {}", frames.join(";"), waiter.wait_ns.total));
        }
    }
    lines.sort();
    lines
}

/// Makes `frame` safe for the folded format: no `;` or line breaks, no trailing spaces.
fn clean(frame: &str) -> String {
    frame
        .replace(';', ",")
        .replace(['\n', '\r'], " ")
        .trim_end()
        .to_owned()
}

/// Writes the flame graph of blocked time (the folded stacks) as SVG.
pub fn flamegraph(lines: &[String], out: impl io::Write) -> io::Result<()> {
    let mut options = inferno::flamegraph::Options::default();
    options.title = "futexscope: blocked time by waiter stack".to_owned();
    options.count_name = "ns".to_owned();
    if lines.is_empty() {
        // inferno refuses an empty profile; an empty graph still says "nothing waited".
        let mut out = out;
        return writeln!(
            out,
            "<svg xmlns=\"http://www.w3.org/2000/svg\"><text y=\"20\">no waits with stacks</text></svg>"
        );
    }
    inferno::flamegraph::from_lines(&mut options, lines.iter().map(String::as_str), out)
        .map_err(io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::stacks::{ShownStack, WaitTimes, WaiterStack};

    fn report() -> StackReport {
        StackReport {
            captured: 1,
            truncated: 0,
            words: vec![WordStacks {
                word: WordKey::process(7, 0x10),
                waiter_stacks: vec![WaiterStack {
                    stack: ShownStack {
                        id: 0,
                        frames: vec!["leaf (a.c:1)".into(), "root; x (a.c:2)".into()],
                        site: "leaf".into(),
                        truncated: None,
                        symbols: vec![],
                    },
                    waits: 2,
                    wait_ns: WaitTimes {
                        total: 30,
                        p50: 10,
                        p99: 20,
                        max: 20,
                    },
                    woken_by: vec![],
                }],
                waker_stacks: vec![],
            }],
        }
    }

    #[test]
    fn folded_lines_are_root_first_with_the_word_last() {
        let lines = folded(&report(), |_| "L".into());
        assert_eq!(lines, ["root, x (a.c:2);leaf (a.c:1);futex 0x10 L 30"]);
        let mut svg = Vec::new();
        flamegraph(&lines, &mut svg).unwrap();
        assert!(String::from_utf8(svg).unwrap().contains("leaf (a.c:1)"));
    }

    #[test]
    fn words_without_a_label_are_named_by_their_dominant_waiter_site() {
        let mut rows = [
            crate::aggregate::table::tests::row(0x10, 2, 0),
            crate::aggregate::table::tests::row(0x20, 1, 0),
        ]
        .map(|row| Row {
            word: WordKey::process(7, row.uaddr),
            ..row
        });
        rows[1].label = "SEM".into();
        let mut report = report();
        report.words.push(WordStacks {
            word: WordKey::process(7, 0x20),
            ..report.words[0].clone()
        });
        label_by_site(&mut rows, &sites(&report));
        assert_eq!(rows[0].label, "waited at leaf");
        assert_eq!(rows[1].label, "SEM", "a word's own label stays");
    }

    #[test]
    fn json_rows_get_their_stacks() {
        let rows = [
            crate::aggregate::table::tests::row(0x10, 2, 0),
            crate::aggregate::table::tests::row(0x20, 1, 0),
        ]
        .map(|row| Row {
            word: WordKey::process(7, row.uaddr),
            ..row
        });
        let mut summary = serde_json::json!({"futexes": [{}, {}]});
        add_to_json(&mut summary, &rows, &report());
        assert_eq!(summary["futexes"][0]["waiter_stacks"][0]["waits"], 2);
        assert_eq!(
            summary["futexes"][1]["waiter_stacks"],
            serde_json::json!([])
        );
        assert_eq!(summary["stacks"]["captured"], 1);
    }
}
