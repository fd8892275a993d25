//! `futexscope kernel-diff`: reports side by side. Facts are compared exactly, wake orders by
//! their verdict; timing figures are compared as distributions (medians more than 2× and
//! 10 µs apart differ), rates with a tolerance (more than 2× and 0.1 apart differ), and
//! figures measured under emulation are marked.

use super::{
    Distribution, Report, Wakeups,
    experiments::{TimedOp, WakeOrder},
};

/// Medians closer than this never count as different (scheduler noise).
const TIMING_FLOOR_NS: i64 = 10_000;
/// Rates closer than this never count as different (run-to-run scheduling noise).
const RATE_FLOOR: f64 = 0.1;

/// One line of the comparison.
#[derive(Clone, Debug, PartialEq)]
pub struct DiffRow {
    /// What is compared, e.g. `facts.futex_waitv`.
    pub key: String,
    /// The value in each report, in order.
    pub cells: Vec<String>,
    /// Whether the reports differ on it.
    pub differs: bool,
}

enum Cell {
    /// Compared exactly.
    Fact(String),
    /// A verdict compared exactly, shown with the counts behind it.
    Verdict { verdict: String, shown: String },
    /// Compared as a distribution.
    Timing(Distribution),
    /// `count` of `of` `what` (and a remark), compared as the ratio with a tolerance.
    Rate { count: u64, of: u64, what: String },
}

fn wake_order_cell(w: &WakeOrder) -> Cell {
    let mut shown = format!(
        "{} ({} fifo, {} lifo, {} other of {}",
        w.verdict, w.fifo, w.lifo, w.other, w.trials
    );
    if w.other > 0 {
        // Who tends to win shows even when no order is consistent.
        let first: Vec<String> = w.first_woken.iter().map(usize::to_string).collect();
        shown.push_str(&format!("; first woken by park order {}", first.join("/")));
    }
    shown.push(')');
    Cell::Verdict {
        verdict: w.verdict.clone(),
        shown,
    }
}

fn rows_of(report: &Report) -> Vec<(String, Cell)> {
    let mut rows = Vec::new();
    let mut fact = |key: &str, value: String| rows.push((key.to_string(), Cell::Fact(value)));
    let f = &report.facts;
    fact("facts.kernel_release", f.kernel_release.clone());
    fact("facts.preempt_rt", f.preempt_rt.to_string());
    fact("facts.cpus", f.cpus.to_string());
    fact("facts.emulated", f.emulated.to_string());
    fact("facts.futex_waitv", f.futex_waitv.to_string());
    fact("facts.futex2_wake", f.futex2_wake.to_string());
    fact("facts.futex2_wait", f.futex2_wait.to_string());
    fact("facts.futex2_requeue", f.futex2_requeue.to_string());
    fact("facts.futex_wake_op", f.futex_wake_op.to_string());
    fact(
        "facts.default_timer_slack_ns",
        f.default_timer_slack_ns.to_string(),
    );
    fact("facts.bpf.bpf_syscall", f.bpf.bpf_syscall.to_string());
    fact("facts.bpf.btf", f.bpf.btf.to_string());
    fact("facts.bpf.uprobes", f.bpf.uprobes.to_string());
    fact("facts.bpf.kprobes", f.bpf.kprobes.to_string());
    fact("facts.bpf.probes_loaded", f.bpf.probes_loaded.to_string());
    rows.push((
        "wake_order.plain_waiters".into(),
        wake_order_cell(&report.wake_order),
    ));
    for s in &report.semaphore_wake_order {
        rows.push((
            format!("wake_order.semaphore.acquire_{}", s.tokens),
            wake_order_cell(&s.order),
        ));
    }
    let mut fact = |key: &str, value: String| rows.push((key.to_string(), Cell::Fact(value)));
    for case in &report.eintr {
        let key = format!(
            "eintr.{}.{}",
            if case.timed { "timed" } else { "untimed" },
            if case.sa_restart {
                "sa_restart"
            } else {
                "no_sa_restart"
            }
        );
        fact(&key, case.verdict.clone());
    }
    match &report.waitv {
        Some(v) => {
            fact(
                "waitv.returns_woken_index",
                v.returns_woken_index.to_string(),
            );
            fact(
                "waitv.mismatch_gives_eagain",
                v.mismatch_gives_eagain.to_string(),
            );
            fact(
                "waitv.deadline_gives_etimedout",
                v.deadline_gives_etimedout.to_string(),
            );
        }
        None => fact("waitv", "absent".into()),
    }
    let requeue = |r: &super::experiments::RequeueOutcome| {
        format!(
            "returned {}, {} from target, mismatch {}",
            r.returned,
            r.woken_from_target,
            if r.mismatch_gives_eagain {
                "EAGAIN"
            } else {
                "not EAGAIN"
            }
        )
    };
    fact("requeue.cmp_requeue", requeue(&report.requeue.cmp_requeue));
    fact(
        "requeue.futex2_requeue",
        report
            .requeue
            .futex2_requeue
            .as_ref()
            .map_or("absent".into(), requeue),
    );
    let p = &report.probes;
    fact(
        "probes.cross_check",
        if p.available {
            let agree =
                |same: fn(&super::WordCheck) -> bool| p.words.iter().filter(|w| same(w)).count();
            let words = p.words.len();
            format!(
                "agree: waits {}/{words}, timeouts {}/{words}, eintr {}/{words}",
                agree(|w| w.waits == w.probe_waits),
                agree(|w| w.timeouts == w.probe_timeouts),
                agree(|w| w.eintr == w.probe_eintr)
            )
        } else {
            format!(
                "probes unavailable: {}",
                p.error.as_deref().unwrap_or("unknown reason")
            )
        },
    );
    for c in &report.contended_semaphore {
        let key = format!("semaphore.contended.acquire_{}_of_{}", c.tokens, c.permits);
        match &c.wakeups {
            Wakeups::Measured(t) => {
                let rate = |count, of, what: &str| Cell::Rate {
                    count,
                    of,
                    what: what.into(),
                };
                rows.push((
                    format!("{key}.slept"),
                    rate(t.slept_acquires, c.acquires, "acquires"),
                ));
                rows.push((
                    format!("{key}.stolen"),
                    rate(t.stolen, t.slept_acquires, "slept acquires"),
                ));
                let in_flight = if t.spurious > 0 {
                    format!(", {} with a wake call in flight", t.spurious_wake_in_flight)
                } else {
                    String::new()
                };
                rows.push((
                    format!("{key}.spurious"),
                    rate(
                        t.spurious,
                        t.slept_acquires,
                        &format!("slept acquires{in_flight}"),
                    ),
                ));
                let disagreements = t.disagreements(c.acquires);
                let check = if disagreements.is_empty() {
                    "agree".to_string()
                } else {
                    disagreements.join("; ")
                };
                rows.push((format!("{key}.cross_check"), Cell::Fact(check)));
            }
            Wakeups::NotMeasured { reason } => {
                for part in ["slept", "stolen", "spurious"] {
                    rows.push((format!("{key}.{part}"), Cell::Fact("not measured".into())));
                }
                rows.push((
                    format!("{key}.cross_check"),
                    Cell::Fact(format!("not measured: {reason}")),
                ));
            }
        }
    }
    rows.push((
        "wake_latency.same_cpu".into(),
        Cell::Timing(report.wake_latency.same_cpu.clone()),
    ));
    match &report.wake_latency.cross_cpu {
        Some(d) => rows.push(("wake_latency.cross_cpu".into(), Cell::Timing(d.clone()))),
        None => rows.push((
            "wake_latency.cross_cpu".into(),
            Cell::Fact("one CPU".into()),
        )),
    }
    for o in &report.timeout_overshoot {
        let op = match o.op {
            TimedOp::WaitRelative => "wait_relative",
            TimedOp::WaitBitsetAbsolute => "wait_bitset_absolute",
        };
        let slack = if o.timer_slack_ns == 1 {
            "slack_1ns"
        } else {
            "default_slack"
        };
        rows.push((
            format!("overshoot.{op}.{}.{slack}", duration(o.timeout_ns as i64)),
            Cell::Timing(o.overshoot.clone()),
        ));
    }
    rows
}

fn duration(ns: i64) -> String {
    let abs = ns.unsigned_abs();
    if abs >= 1_000_000 {
        format!("{:.1}ms", ns as f64 / 1e6)
    } else if abs >= 1_000 {
        format!("{:.1}us", ns as f64 / 1e3)
    } else {
        format!("{ns}ns")
    }
}

fn show(cell: Option<&Cell>, emulated: bool) -> String {
    match cell {
        None => "-".into(),
        Some(Cell::Fact(text)) => text.clone(),
        Some(Cell::Verdict { shown, .. }) => shown.clone(),
        Some(Cell::Rate { count, of, what }) => format!(
            "{} ({count} of {of} {what}){}",
            ratio(*count, *of).map_or("-".into(), |r| format!("{r:.3}")),
            if emulated { " [emulated]" } else { "" }
        ),
        Some(Cell::Timing(d)) => format!(
            "p50 {} p99 {} (n={}){}",
            duration(d.p50_ns),
            duration(d.p99_ns),
            d.samples,
            if emulated { " [emulated]" } else { "" }
        ),
    }
}

fn timings_differ(a: &Distribution, b: &Distribution) -> bool {
    let (low, high) = (a.p50_ns.min(b.p50_ns), a.p50_ns.max(b.p50_ns));
    high - low > TIMING_FLOOR_NS && high > 2 * low.max(1)
}

fn ratio(count: u64, of: u64) -> Option<f64> {
    (of > 0).then(|| count as f64 / of as f64)
}

fn rates_differ(a: Option<f64>, b: Option<f64>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => {
            let (low, high) = (a.min(b), a.max(b));
            high - low > RATE_FLOOR && high > 2.0 * low
        }
        (None, None) => false,
        _ => true,
    }
}

fn cells_differ(a: Option<&Cell>, b: Option<&Cell>) -> bool {
    match (a, b) {
        (Some(Cell::Fact(x)), Some(Cell::Fact(y))) => x != y,
        (Some(Cell::Verdict { verdict: x, .. }), Some(Cell::Verdict { verdict: y, .. })) => x != y,
        (Some(Cell::Timing(x)), Some(Cell::Timing(y))) => timings_differ(x, y),
        (
            Some(Cell::Rate {
                count: c1, of: o1, ..
            }),
            Some(Cell::Rate {
                count: c2, of: o2, ..
            }),
        ) => rates_differ(ratio(*c1, *o1), ratio(*c2, *o2)),
        (None, None) => false,
        _ => true,
    }
}

/// Every compared row of `reports`, in the first report's order (rows only some have last).
pub fn diff_rows(reports: &[Report]) -> Vec<DiffRow> {
    let all: Vec<Vec<(String, Cell)>> = reports.iter().map(rows_of).collect();
    let mut keys: Vec<String> = Vec::new();
    for rows in &all {
        for (key, _) in rows {
            if !keys.contains(key) {
                keys.push(key.clone());
            }
        }
    }
    keys.into_iter()
        .map(|key| {
            let cells: Vec<Option<&Cell>> = all
                .iter()
                .map(|rows| rows.iter().find(|(k, _)| *k == key).map(|(_, c)| c))
                .collect();
            let differs = cells.windows(2).any(|pair| cells_differ(pair[0], pair[1]))
                || (cells.len() > 2 && cells.iter().skip(1).any(|c| cells_differ(cells[0], *c)));
            let shown = cells
                .iter()
                .zip(reports)
                .map(|(c, r)| show(*c, r.facts.emulated))
                .collect();
            DiffRow {
                key,
                cells: shown,
                differs,
            }
        })
        .collect()
}

/// A text table of `reports` (label, report); only differing rows unless `all`.
pub fn render_diff(reports: &[(String, Report)], all: bool) -> String {
    let bare: Vec<Report> = reports.iter().map(|(_, r)| r.clone()).collect();
    let rows: Vec<DiffRow> = diff_rows(&bare)
        .into_iter()
        .filter(|r| all || r.differs)
        .collect();
    let mut header = vec!["".to_string()];
    header.extend(reports.iter().map(|(label, _)| label.clone()));
    let mut table: Vec<Vec<String>> = vec![header];
    for row in &rows {
        let mut line = vec![format!(
            "{}{}",
            if row.differs && all { "* " } else { "" },
            row.key
        )];
        line.extend(row.cells.iter().cloned());
        table.push(line);
    }
    let widths: Vec<usize> = (0..table[0].len())
        .map(|col| {
            table
                .iter()
                .map(|line| line[col].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut text = String::new();
    for line in &table {
        let cells: Vec<String> = line
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        text.push_str(cells.join("  ").trim_end());
        text.push('\n');
    }
    if rows.is_empty() {
        text.push_str("no differences\n");
    } else if all && reports.len() > 1 {
        text.push_str("(* marks rows that differ)\n");
    }
    if reports.iter().any(|(_, r)| r.facts.emulated) {
        text.push_str("[emulated]: timing and rates measured under software CPU emulation (QEMU TCG), not comparable with hardware\n");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::{Distribution, rates_differ, timings_differ};

    fn median(ns: i64) -> Distribution {
        Distribution {
            samples: 1,
            min_ns: ns,
            p50_ns: ns,
            p90_ns: ns,
            p99_ns: ns,
            max_ns: ns,
        }
    }

    #[test]
    fn timings_differ_only_beyond_twice_and_the_noise_floor() {
        assert!(
            !timings_differ(&median(1_000), &median(9_000)),
            "within 10 µs"
        );
        assert!(
            !timings_differ(&median(100_000), &median(190_000)),
            "within 2x"
        );
        assert!(timings_differ(&median(100_000), &median(250_000)));
        assert!(timings_differ(&median(250_000), &median(100_000)));
    }

    #[test]
    fn rates_differ_only_beyond_twice_and_the_floor() {
        assert!(!rates_differ(Some(0.0), Some(0.09)), "within 0.1");
        assert!(!rates_differ(Some(0.5), Some(0.9)), "within 2x");
        assert!(rates_differ(Some(0.1), Some(0.3)));
        assert!(rates_differ(Some(0.9), Some(0.0)));
        assert!(rates_differ(None, Some(0.0)), "no samples against some");
        assert!(!rates_differ(None, None));
    }
}
