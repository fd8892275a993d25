//! `futexscope kernel-report`: a fixed battery of futex experiments that says how the running
//! kernel's futexes wake, time out and get interrupted, and how the futexscope semaphore's
//! waiters fare on it, traced by futexscope's own probes when the kernel and privileges allow;
//! and `kernel-diff`, which compares such reports.

mod diff;
mod experiments;
mod facts;
mod semaphore;

use std::{
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicU32, AtomicU64, Ordering},
    },
};

use serde::{Deserialize, Serialize};

pub use diff::{DiffRow, diff_rows, render_diff};
pub use semaphore::{ContendedSemaphore, SemaphoreWakeOrder, TracedWakeups, Wakeups};

use crate::{collect::ebpf::Probes, errors::Chain, sys};

/// Version of the JSON layout; bumped on any incompatible change.
pub const SCHEMA_VERSION: u32 = 2;

/// Errors of the kernel report.
#[derive(Debug, thiserror::Error)]
pub enum KernelReportError {
    /// An experiment could not run as designed.
    #[error("experiment `{experiment}` failed: {reason}")]
    Experiment {
        /// Which experiment.
        experiment: &'static str,
        /// What went wrong.
        reason: String,
    },
    /// A report file could not be read or written.
    #[error("cannot access report file `{path}`")]
    Io {
        /// The file.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A report file is not a kernel report of this schema.
    #[error("`{path}` is not a futexscope kernel report of schema {SCHEMA_VERSION}: {reason}")]
    BadReport {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

/// How much of the battery to run.
#[derive(Clone, Copy, Debug)]
pub struct Battery {
    /// Fewer trials and samples: seconds instead of tens of seconds, coarse figures.
    pub quick: bool,
}

impl Battery {
    fn pick(self, quick: usize, full: usize) -> usize {
        if self.quick { quick } else { full }
    }
}

/// Everything the battery found.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// [`SCHEMA_VERSION`] of the producer.
    pub schema_version: u32,
    /// Whether the short battery ran.
    pub quick: bool,
    /// Facts about the kernel, compared exactly.
    pub facts: facts::Facts,
    /// Wake order of waiters on one word.
    pub wake_order: experiments::WakeOrder,
    /// Time from a wake call to the woken thread running.
    pub wake_latency: experiments::WakeLatency,
    /// How late timed waits return.
    pub timeout_overshoot: Vec<experiments::Overshoot>,
    /// What a signal does to a futex wait.
    pub eintr: Vec<experiments::EintrCase>,
    /// `futex_waitv` behaviour, when the kernel has it.
    pub waitv: Option<experiments::Waitv>,
    /// Requeue behaviour (FUTEX_CMP_REQUEUE, and futex2 `futex_requeue` when present).
    pub requeue: experiments::Requeue,
    /// Wake order of futexscope semaphore waiters: single-permit, then multi-permit.
    pub semaphore_wake_order: Vec<SemaphoreWakeOrder>,
    /// Stolen and spurious wakeups of a contended futexscope semaphore: single-permit
    /// acquires, then multi-permit ones.
    pub contended_semaphore: Vec<ContendedSemaphore>,
    /// The probes' own counts against what the experiments counted.
    pub probes: ProbeCheck,
}

/// futexscope's probes as witnesses of the battery.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProbeCheck {
    /// Whether the probes loaded and attached.
    pub available: bool,
    /// Why not, when they did not.
    pub error: Option<String>,
    /// Per experiment word: what the experiment counted and what the probes counted.
    pub words: Vec<WordCheck>,
}

/// One futex word's counts, from the experiment and from the probes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WordCheck {
    /// The experiment that used the word.
    pub experiment: String,
    /// Wait calls the experiment made on it.
    pub waits: u64,
    /// Waits the probes counted.
    pub probe_waits: u64,
    /// Waits that timed out, as the experiment saw them.
    pub timeouts: u64,
    /// Timeouts the probes counted.
    pub probe_timeouts: u64,
    /// Waits interrupted by a signal, as the experiment saw them.
    pub eintr: u64,
    /// EINTR returns the probes counted.
    pub probe_eintr: u64,
}

/// A futex word used by one experiment, counting what happens to waits on it.
pub(crate) struct Word {
    experiment: &'static str,
    value: AtomicU32,
    waits: AtomicU64,
    timeouts: AtomicU64,
    eintr: AtomicU64,
}

impl Word {
    /// The futex word itself.
    pub(crate) fn atomic(&self) -> &AtomicU32 {
        &self.value
    }

    /// Counts the outcome of one wait call on this word.
    pub(crate) fn count<T>(&self, result: &Result<T, i32>) {
        // Relaxed: plain event counters, read after every thread using the word was joined.
        self.waits.fetch_add(1, Ordering::Relaxed);
        match result {
            Err(libc::ETIMEDOUT) => self.timeouts.fetch_add(1, Ordering::Relaxed),
            Err(libc::EINTR) => self.eintr.fetch_add(1, Ordering::Relaxed),
            _ => 0,
        };
    }

    /// `FUTEX_WAIT` (or another wait op) on this word, counted.
    pub(crate) fn wait(
        &self,
        op: i32,
        expected: u32,
        timeout: Option<&libc::timespec>,
        val3: u32,
    ) -> Result<libc::c_long, i32> {
        let result = sys::futex(&self.value, op, expected, timeout, None, val3);
        self.count(&result);
        result
    }
}

/// Hands out experiment words and keeps every one alive until the probes were read, so no
/// two experiments share an address.
#[derive(Default)]
pub(crate) struct Words(Vec<Arc<Word>>);

impl Words {
    /// A new zeroed word for `experiment`.
    pub(crate) fn new_word(&mut self, experiment: &'static str) -> Arc<Word> {
        let word = Arc::new(Word {
            experiment,
            value: AtomicU32::new(0),
            waits: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
            eintr: AtomicU64::new(0),
        });
        self.0.push(Arc::clone(&word));
        word
    }
}

/// Runs the battery. The probes trace this process when they load; when they cannot (no
/// privilege, no BPF in this kernel) the experiments still run and the report says why.
pub fn run(battery: Battery) -> Result<Report, KernelReportError> {
    let mut probes = Probes::load().and_then(|mut probes| {
        probes.trace_tgid(std::process::id())?;
        Ok(probes)
    });
    let facts = facts::collect(probes.as_ref().err().map(|e| Chain(e).to_string()));
    let mut words = Words::default();
    let wake_order = experiments::wake_order(battery, &mut words)?;
    let wake_latency = experiments::wake_latency(battery, &mut words)?;
    let timeout_overshoot = experiments::timeout_overshoot(battery, &mut words)?;
    let eintr = experiments::eintr(battery, &mut words)?;
    let waitv = if facts.futex_waitv {
        Some(experiments::waitv(&mut words)?)
    } else {
        None
    };
    let requeue = experiments::requeue(facts.futex2_requeue, &mut words)?;
    // After every experiment word is allocated, so no semaphore's futex word can share an
    // address with one of them.
    let semaphore_wake_order = vec![
        semaphore::wake_order(battery, 1)?,
        semaphore::wake_order(battery, 2)?,
    ];
    // The contended semaphore is watched through the markers of this binary's semaphore,
    // attached only now: their uprobes (a trap per hit) would slow the wake-order race above.
    let mut traced = match probes.as_mut() {
        Ok(probes) => semaphore::attach_own_markers(probes).map(|()| probes),
        Err(err) => Err(format!("probes unavailable: {}", Chain(err))),
    };
    let mut contended_semaphore = Vec::new();
    for (permits, tokens) in [(2, 1), (4, 2)] {
        let probes = traced.as_deref_mut().map_err(|why| why.as_str());
        contended_semaphore.push(semaphore::contended(battery, probes, permits, tokens)?);
    }
    let probes = match probes {
        Ok(probes) => check_against_probes(&probes, &words),
        Err(err) => ProbeCheck {
            available: false,
            error: Some(Chain(&err).to_string()),
            words: Vec::new(),
        },
    };
    Ok(Report {
        schema_version: SCHEMA_VERSION,
        quick: battery.quick,
        facts,
        wake_order,
        wake_latency,
        timeout_overshoot,
        eintr,
        waitv,
        requeue,
        semaphore_wake_order,
        contended_semaphore,
        probes,
    })
}

fn check_against_probes(probes: &Probes, words: &Words) -> ProbeCheck {
    let stats = match probes.futex_stats() {
        Ok(stats) => stats,
        Err(err) => {
            return ProbeCheck {
                available: false,
                error: Some(Chain(&err).to_string()),
                words: Vec::new(),
            };
        }
    };
    let tgid = std::process::id();
    let checks = words
        .0
        .iter()
        .map(|word| {
            let seen = stats
                .iter()
                .find(|(key, _)| key.tgid == tgid && key.uaddr == word.value.as_ptr() as u64)
                .map(|(_, s)| s);
            // Relaxed: every thread that used the word has been joined.
            WordCheck {
                experiment: word.experiment.to_string(),
                waits: word.waits.load(Ordering::Relaxed),
                probe_waits: seen.map_or(0, |s| s.waits),
                timeouts: word.timeouts.load(Ordering::Relaxed),
                probe_timeouts: seen.map_or(0, |s| s.timeouts),
                eintr: word.eintr.load(Ordering::Relaxed),
                probe_eintr: seen.map_or(0, |s| s.eintr),
            }
        })
        .collect();
    ProbeCheck {
        available: true,
        error: None,
        words: checks,
    }
}

impl Report {
    /// The report as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report always serialises")
    }

    /// Parses a report, checking its schema version.
    pub fn from_json(text: &str, path: &str) -> Result<Report, KernelReportError> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| KernelReportError::BadReport {
                path: path.into(),
                reason: e.to_string(),
            })?;
        let version = value
            .get("schema_version")
            .and_then(serde_json::Value::as_u64);
        if version != Some(u64::from(SCHEMA_VERSION)) {
            return Err(KernelReportError::BadReport {
                path: path.into(),
                reason: format!(
                    "schema_version is {version:?}; regenerate it with this futexscope"
                ),
            });
        }
        serde_json::from_value(value).map_err(|e| KernelReportError::BadReport {
            path: path.into(),
            reason: e.to_string(),
        })
    }

    /// Reads a report file.
    pub fn read(path: &Path) -> Result<Report, KernelReportError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| KernelReportError::Io {
            path: shown.clone(),
            source,
        })?;
        Report::from_json(&text, &shown)
    }

    /// Writes the report as JSON to `path`.
    pub fn write(&self, path: &Path) -> Result<(), KernelReportError> {
        std::fs::write(path, self.to_json() + "\n").map_err(|source| KernelReportError::Io {
            path: path.display().to_string(),
            source,
        })
    }

    /// A human-readable summary.
    pub fn render(&self) -> String {
        let battery = if self.quick {
            "quick battery, coarse figures"
        } else {
            "full battery"
        };
        let mut text = format!(
            "futexscope kernel-report: Linux {} ({battery})\n",
            self.facts.kernel_release
        );
        text.push_str(&render_diff(
            &[("this kernel".to_string(), self.clone())],
            true,
        ));
        text
    }
}

/// `kernel-diff`: reads the report files and renders them side by side, each column named
/// after its file without `.json`; only differing rows unless `all`.
pub fn diff_files(paths: &[std::path::PathBuf], all: bool) -> Result<String, KernelReportError> {
    let reports = paths
        .iter()
        .map(|path| {
            let name = path.file_name().map_or_else(
                || path.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            );
            let label = name.strip_suffix(".json").unwrap_or(&name).to_string();
            Ok((label, Report::read(path)?))
        })
        .collect::<Result<Vec<_>, KernelReportError>>()?;
    Ok(render_diff(&reports, all))
}

/// A distribution of nanosecond figures.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Distribution {
    /// Number of samples.
    pub samples: usize,
    /// Smallest.
    pub min_ns: i64,
    /// Median.
    pub p50_ns: i64,
    /// 90th percentile.
    pub p90_ns: i64,
    /// 99th percentile.
    pub p99_ns: i64,
    /// Largest.
    pub max_ns: i64,
}

impl Distribution {
    /// Summarises `samples` (empty gives all zeros).
    pub fn of(mut samples: Vec<i64>) -> Distribution {
        samples.sort_unstable();
        let at = |q: f64| -> i64 {
            if samples.is_empty() {
                return 0;
            }
            let index = ((samples.len() - 1) as f64 * q).round() as usize;
            samples[index]
        };
        Distribution {
            samples: samples.len(),
            min_ns: at(0.0),
            p50_ns: at(0.5),
            p90_ns: at(0.9),
            p99_ns: at(0.99),
            max_ns: at(1.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Distribution;

    #[test]
    fn distribution_percentiles_pick_the_nearest_sample() {
        let d = Distribution::of((1..=100).rev().collect());
        assert_eq!((d.samples, d.min_ns, d.max_ns), (100, 1, 100));
        assert_eq!((d.p50_ns, d.p90_ns, d.p99_ns), (51, 90, 99));
        assert_eq!(Distribution::of(Vec::new()).samples, 0);
    }
}
