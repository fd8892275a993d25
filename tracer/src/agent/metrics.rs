//! The agent's metrics in the OpenMetrics text format (prometheus-client): a [`Snapshot`] of
//! the model and of the agent's own cost, encoded at scrape time. Every name is prefixed
//! `futexscope_`; `docs/agent.md` is the reference.

use prometheus_client::{
    encoding::{DescriptorEncoder, MetricEncoder, NoLabelSet, text},
    metrics::MetricType,
    registry::{Registry, Unit},
};

use super::{
    model::{CLASSIC_BOUNDS_NS, Histogram, SeriesKey, Totals},
    otlp::PushStats,
};
use crate::collect::ebpf::Drops;

/// The content type of [`Snapshot::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// One series' values.
#[derive(Clone, Debug)]
pub struct SeriesValues {
    /// Its labels.
    pub key: SeriesKey,
    /// Its counters and histograms.
    pub totals: Totals,
    /// Threads waiting now.
    pub waiters_now: i64,
}

/// The agent's own cost and state.
#[derive(Clone, Debug, Default)]
pub struct AgentStats {
    /// CPU time used by the agent (user + system), in seconds.
    pub cpu_seconds: f64,
    /// Resident memory, in bytes.
    pub resident_bytes: u64,
    /// Futex calls counted per second over the last refresh interval.
    pub calls_per_second: f64,
    /// Futex calls counted since start.
    pub calls: u64,
    /// Words tracked.
    pub words: usize,
    /// Words evicted by the cap.
    pub evictions: u64,
    /// Processes tracked (running or within the grace period).
    pub processes: usize,
    /// Records and map entries the probes lost.
    pub drops: Drops,
    /// OTLP pushes (with `--otlp`).
    pub otlp: Option<PushStats>,
}

/// Everything one scrape shows.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// The per-lock series.
    pub series: Vec<SeriesValues>,
    /// The agent's own numbers.
    pub agent: AgentStats,
    /// `uname -r`.
    pub kernel: String,
    /// What the agent traces, as its start line says.
    pub traces: String,
}

impl Snapshot {
    /// The snapshot in the OpenMetrics text format.
    pub fn encode(self) -> Result<String, std::fmt::Error> {
        let mut registry = Registry::with_prefix("futexscope");
        registry.register_collector(Box::new(self));
        let mut out = String::new();
        text::encode(&mut out, &registry)?;
        Ok(out)
    }
}

type Labels<'a> = [(&'static str, &'a str); 2];

fn labels(key: &SeriesKey) -> Labels<'_> {
    [("comm", key.comm.as_str()), ("lock", key.lock.as_str())]
}

/// A per-series counter: name, help, and how to read it from the totals.
pub(super) type CounterField = (&'static str, &'static str, fn(&Totals) -> u64);

/// The per-series counters (the OTLP push sends the same).
pub(super) const COUNTERS: [CounterField; 9] = [
    ("waits", "Futex wait calls.", |t| t.waits),
    ("wake_calls", "Futex wake calls.", |t| t.wake_calls),
    ("woken", "Threads woken by wake calls.", |t| t.woken),
    ("timeouts", "Waits that timed out (ETIMEDOUT).", |t| {
        t.timeouts
    }),
    (
        "interrupted",
        "Waits interrupted by a signal (EINTR).",
        |t| t.eintr,
    ),
    (
        "value_changed",
        "Waits that found the word changed (EAGAIN): no sleep.",
        |t| t.eagain,
    ),
    (
        "lost_race",
        "Spurious wakeups: woken, then waited again without getting what it waited for.",
        |t| t.lost_race,
    ),
    (
        "no_waker",
        "Spurious wakeups: woken with no wake issued on the word.",
        |t| t.no_waker,
    ),
    ("died_waiting", "Threads that exited inside a wait.", |t| {
        t.died_waiting
    }),
];

impl prometheus_client::collector::Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for (name, help, field) in COUNTERS {
            let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for s in &self.series {
                let l = labels(&s.key);
                metric
                    .encode_family(&l)?
                    .encode_counter::<NoLabelSet, _, u64>(&field(&s.totals), None)?;
            }
        }
        let mut metric = encoder.encode_descriptor(
            "waiters",
            "Threads inside a futex wait now.",
            None,
            MetricType::Gauge,
        )?;
        for s in &self.series {
            let l = labels(&s.key);
            metric.encode_family(&l)?.encode_gauge(&s.waiters_now)?;
        }
        for (name, help, field) in [
            (
                "wait",
                "Time a wait call took, from entry to return.",
                (|t: &Totals| t.wait) as fn(&Totals) -> Histogram,
            ),
            (
                "timeout_drift",
                "How late timed-out waits returned after their deadline.",
                |t: &Totals| t.drift,
            ),
        ] {
            let mut metric = encoder.encode_descriptor(
                name,
                help,
                Some(&Unit::Seconds),
                MetricType::Histogram,
            )?;
            for s in &self.series {
                let l = labels(&s.key);
                encode_histogram(metric.encode_family(&l)?, &field(&s.totals))?;
            }
        }
        self.encode_agent(&mut encoder)
    }
}

impl Snapshot {
    fn encode_agent(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let a = &self.agent;
        let mut metric = encoder.encode_descriptor(
            "dropped",
            "Records and map entries the probes lost, by reason (totals stay exact unless map_full grows).",
            None,
            MetricType::Counter,
        )?;
        for (reason, value) in [
            ("ring_buffer_full", a.drops.ring_buffer_full),
            ("map_full", a.drops.map_full),
            ("shared_key_fallback", a.drops.shared_key_fallback),
        ] {
            metric
                .encode_family(&[("reason", reason)])?
                .encode_counter::<NoLabelSet, _, u64>(&value, None)?;
        }
        let counter = |encoder: &mut DescriptorEncoder, name, help, value: f64| {
            encoder
                .encode_descriptor(name, help, None, MetricType::Counter)?
                .encode_counter::<NoLabelSet, _, u64>(&value, None)
        };
        counter(
            encoder,
            "agent_cpu_seconds",
            "CPU time the agent used (user + system).",
            a.cpu_seconds,
        )?;
        counter(
            encoder,
            "agent_traced_calls",
            "Futex calls the agent counted.",
            a.calls as f64,
        )?;
        counter(
            encoder,
            "agent_evicted_words",
            "Words evicted by the cap on tracked words.",
            a.evictions as f64,
        )?;
        if let Some(otlp) = a.otlp {
            counter(
                encoder,
                "agent_otlp_pushes",
                "OTLP pushes the receiver accepted.",
                otlp.pushes as f64,
            )?;
            counter(
                encoder,
                "agent_otlp_failures",
                "OTLP pushes that failed (retried at the next interval).",
                otlp.failures as f64,
            )?;
        }
        let gauge = |encoder: &mut DescriptorEncoder, name, help, value: f64| {
            encoder
                .encode_descriptor(name, help, None, MetricType::Gauge)?
                .encode_gauge(&value)
        };
        gauge(
            encoder,
            "agent_resident_memory_bytes",
            "Resident memory of the agent.",
            a.resident_bytes as f64,
        )?;
        gauge(
            encoder,
            "agent_traced_calls_per_second",
            "Futex calls counted per second over the last refresh.",
            a.calls_per_second,
        )?;
        gauge(
            encoder,
            "agent_tracked_words",
            "Futex words tracked.",
            a.words as f64,
        )?;
        gauge(
            encoder,
            "agent_tracked_processes",
            "Processes tracked (running, or exited within the grace period).",
            a.processes as f64,
        )?;
        gauge(
            encoder,
            "agent_series",
            "Per-lock series exported.",
            self.series.len() as f64,
        )?;
        let version = env!("CARGO_PKG_VERSION");
        let info: [(&str, &str); 3] = [
            ("version", version),
            ("kernel", &self.kernel),
            ("traces", &self.traces),
        ];
        encoder
            .encode_descriptor(
                "agent",
                "The agent's version, the kernel release and what it traces.",
                None,
                MetricType::Info,
            )?
            .encode_info(&info)
    }
}

/// Encodes `h` (ns) as a classic histogram in seconds.
fn encode_histogram(mut encoder: MetricEncoder<'_>, h: &Histogram) -> Result<(), std::fmt::Error> {
    let buckets: Vec<(f64, u64)> = CLASSIC_BOUNDS_NS
        .iter()
        .map(|&ns| ns as f64 / 1e9)
        .chain([f64::INFINITY])
        .zip(h.buckets)
        .collect();
    encoder.encode_histogram::<NoLabelSet>(h.sum_ns as f64 / 1e9, h.count(), &buckets, None)
}
