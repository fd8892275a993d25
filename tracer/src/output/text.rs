//! Plain-text rendering: the lines printed each interval when stderr is not a terminal, and the
//! final summary table.

use std::fmt::Write;

use super::summary::{Drops, Ending, Summary};
use crate::aggregate::table::Row;

/// Column headers of the futex table, in display order.
pub const HEADERS: [&str; 18] = [
    "PID", "FUTEX", "LABEL", "WAITERS", "MAX", "WAITS", "WAKES", "WOKEN", "TMOUT", "EINTR",
    "EAGAIN", "LOST", "NOWAKE", "WAIT50", "WAIT99", "DRIFT50", "DRIFT99", "DRIFTMAX",
];

/// The cells of one row, in [`HEADERS`] order.
pub fn cells(row: &Row) -> [String; 18] {
    [
        row.tgid.to_string(),
        format!("{:#x}", row.uaddr),
        if row.label.is_empty() {
            "-".to_owned()
        } else {
            row.label.clone()
        },
        row.waiters_now.to_string(),
        row.max_waiters.to_string(),
        row.waits.to_string(),
        row.wake_calls.to_string(),
        row.woken.to_string(),
        row.timeouts.to_string(),
        row.spurious.eintr.to_string(),
        row.spurious.eagain.to_string(),
        row.spurious.lost_race.to_string(),
        row.spurious.no_waker.to_string(),
        duration(row.wait_ns.p50),
        duration(row.wait_ns.p99),
        duration(row.drift_ns.p50),
        duration(row.drift_ns.p99),
        duration(row.drift_ns.max),
    ]
}

/// A duration in ns as a short human string (`850ns`, `12.3us`, `4.1ms`, `2.0s`); `-` if none.
pub fn duration(ns: Option<u64>) -> String {
    let Some(ns) = ns else { return "-".to_owned() };
    let ns = ns as f64;
    if ns < 1e3 {
        format!("{ns}ns")
    } else if ns < 1e6 {
        format!("{:.1}us", ns / 1e3)
    } else if ns < 1e9 {
        format!("{:.1}ms", ns / 1e6)
    } else {
        format!("{:.1}s", ns / 1e9)
    }
}

/// Formats rows as an aligned table with a header line. Labels longer than 40 characters
/// are shortened from the left (the end of a symbol says most).
pub fn table(rows: &[Row]) -> String {
    let mut lines: Vec<[String; 18]> = vec![HEADERS.map(str::to_owned)];
    lines.extend(rows.iter().map(|row| {
        let mut cells = cells(row);
        cells[2] = shorten(&cells[2], 40);
        cells
    }));
    let widths: Vec<usize> = (0..HEADERS.len())
        .map(|c| {
            lines
                .iter()
                .map(|l| l[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for line in &lines {
        let mut text = String::new();
        for (column, cell) in line.iter().enumerate() {
            if column > 0 {
                text.push_str("  ");
            }
            // Text columns align left, numbers right.
            if column == 1 || column == 2 {
                let _ = write!(text, "{cell:<width$}", width = widths[column]);
            } else {
                let _ = write!(text, "{cell:>width$}", width = widths[column]);
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    }
    out
}

/// Keeps the last `max` characters of `text`, marking the cut with `…`.
pub fn shorten(text: &str, max: usize) -> String {
    let count = text.chars().count();
    if count <= max {
        return text.to_owned();
    }
    let tail: String = text.chars().skip(count - max + 1).collect();
    format!("…{tail}")
}

/// A line about drops, or `None` when nothing was dropped.
pub fn drops_line(drops: &Drops) -> Option<String> {
    if !drops.any() {
        return None;
    }
    let mut line = format!(
        "DROPPED: {} event records (ring buffer full; totals stay exact), {} words or threads not recorded (map full; totals incomplete)",
        drops.ring_buffer_full, drops.map_full
    );
    if drops.shared_key_fallback > 0 {
        line.push_str(&format!(
            ", {} non-private futex operations keyed by process (their mapping could not be looked up: wakes from other processes on them are not paired)",
            drops.shared_key_fallback
        ));
    }
    if drops.stack_ring_full > 0 {
        line += &format!(
            ", {} stacks (stack ring buffer full; those calls have no stack)",
            drops.stack_ring_full
        );
    }
    Some(line)
}

/// What is printed each interval when stderr is not a terminal: a status line, then the `top`
/// busiest rows (already sorted) as a table.
pub fn interval(elapsed_s: f64, rows: &[Row], events: u64, drops: &Drops, top: usize) -> String {
    let waits: u64 = rows.iter().map(|r| r.waits).sum();
    let wakes: u64 = rows.iter().map(|r| r.wake_calls).sum();
    let timeouts: u64 = rows.iter().map(|r| r.timeouts).sum();
    let spurious: u64 = rows.iter().map(|r| r.spurious.total()).sum();
    let mut out = format!(
        "[{elapsed_s:7.1}s] {} futex words, {waits} waits, {wakes} wake calls, {timeouts} timeouts, {spurious} spurious, {events} events, {} dropped\n",
        rows.len(),
        drops.ring_buffer_full + drops.map_full + drops.stack_ring_full,
    );
    if !rows.is_empty() {
        out.push_str(&table(&rows[..rows.len().min(top)]));
    }
    out
}

/// How the trace ended, in words.
pub fn ending(ending: &Ending) -> String {
    match ending {
        Ending::Exited { code } => format!("the command exited with status {code}"),
        Ending::Killed { signal } => format!("the command was killed by signal {signal}"),
        Ending::Gone => "the traced process exited".to_owned(),
        Ending::Duration => "the duration elapsed".to_owned(),
        Ending::Interrupted => "interrupted".to_owned(),
    }
}

/// The final summary, as text.
pub fn summary(summary: &Summary) -> String {
    let mut out = format!(
        "\nfutexscope summary: `{}` (pid {}) traced for {:.2}s; {}\n",
        summary.target,
        pid_list(&summary.pids),
        summary.seconds,
        ending(&summary.ending)
    );
    for note in &summary.notes {
        let _ = writeln!(out, "note: {note}");
    }
    let _ = writeln!(
        out,
        "{} futex words, {} event records, {} dropped",
        summary.futexes.len(),
        summary.events,
        summary.drops.ring_buffer_full + summary.drops.map_full
    );
    if let Some(line) = drops_line(&summary.drops) {
        out.push_str(&line);
        out.push('\n');
    }
    if !summary.futexes.is_empty() {
        out.push_str(&table(&summary.futexes));
    }
    out
}

/// The traced pids, the first ones only when a command started many processes (the JSON
/// summary lists every one).
fn pid_list(pids: &[u32]) -> String {
    const SHOWN: usize = 4;
    let shown: Vec<String> = pids.iter().take(SHOWN).map(u32::to_string).collect();
    match pids.len().checked_sub(SHOWN) {
        Some(more) if more > 0 => format!("{} and {more} more", shown.join(", ")),
        _ => shown.join(", "),
    }
}

#[cfg(test)]
mod tests {
    use futexscope_probes_common::maps::FutexStats;

    use super::*;

    fn row(uaddr: u64, waits: u64, label: &str) -> Row {
        let mut stats = FutexStats {
            waits,
            eintr: 2,
            max_waiters: 3,
            ..FutexStats::ZERO
        };
        stats.wait_hist[futexscope_probes_common::maps::time_bucket(2000)] = waits;
        stats.wait_sum_ns = 2000 * waits;
        stats.wait_max_ns = 2000;
        Row::new(
            crate::decode::WordKey::process(42, uaddr),
            &[],
            &stats,
            label.to_owned(),
        )
    }

    #[test]
    fn durations_pick_a_unit() {
        assert_eq!(duration(None), "-");
        assert_eq!(duration(Some(512)), "512ns");
        assert_eq!(duration(Some(2048)), "2.0us");
        assert_eq!(duration(Some(4_194_304)), "4.2ms");
        assert_eq!(duration(Some(2_147_483_648)), "2.1s");
    }

    #[test]
    fn table_aligns_columns() {
        let text = table(&[row(0x1000, 5, "SEM"), row(0x7fff_0000_1000, 12345, "")]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("PID  FUTEX"), "{text}");
        // The WAITS column ends at the same place on every line.
        let end = |line: &str, needle: &str| line.find(needle).unwrap() + needle.len();
        assert_eq!(end(lines[0], "WAITS"), end(lines[1], " 5"));
        assert_eq!(end(lines[0], "WAITS"), end(lines[2], "12345"));
        assert!(lines[1].contains("SEM"));
        assert!(
            lines[2].contains(" - "),
            "missing label shown as -: {}",
            lines[2]
        );
        assert!(lines[1].contains("2.0us"), "wait p50: {}", lines[1]);
    }

    #[test]
    fn long_labels_keep_their_end() {
        assert_eq!(shorten("abc", 5), "abc");
        assert_eq!(shorten("demo::PRODUCER_SLOTS+4", 10), "…R_SLOTS+4");
    }

    #[test]
    fn drops_are_never_silent() {
        assert_eq!(drops_line(&Drops::default()), None);
        let line = drops_line(&Drops {
            ring_buffer_full: 7,
            map_full: 0,
            ..Drops::default()
        })
        .unwrap();
        assert!(line.contains("7 event records"), "{line}");
        let text = interval(
            1.0,
            &[],
            0,
            &Drops {
                ring_buffer_full: 7,
                map_full: 1,
                ..Drops::default()
            },
            5,
        );
        assert!(text.contains("8 dropped"), "{text}");
    }

    #[test]
    fn summary_says_how_it_ended_and_lists_notes() {
        let text = summary(&Summary {
            target: "prog".into(),
            pids: vec![42],
            seconds: 1.0,
            ending: Ending::Exited { code: 1 },
            events: 0,
            drops: Drops::default(),
            notes: vec!["no futexscope markers in `prog`: tracing futex calls only".into()],
            futexes: vec![row(0x10, 1, "")],
        });
        assert!(text.contains("exited with status 1"), "{text}");
        assert!(text.contains("note: no futexscope markers"), "{text}");
        assert!(text.contains("0x10"), "{text}");
    }

    #[test]
    fn many_pids_are_counted_not_listed() {
        assert_eq!(pid_list(&[7]), "7");
        assert_eq!(pid_list(&[1, 2, 3, 4]), "1, 2, 3, 4");
        assert_eq!(pid_list(&[1, 2, 3, 4, 5, 6]), "1, 2, 3, 4 and 2 more");
    }
}
