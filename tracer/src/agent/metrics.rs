//! The agent's metrics (prometheus-client): a [`Snapshot`] of the model and of the agent's own
//! cost, encoded at scrape time in the OpenMetrics text format ([`Snapshot::encode`]: classic
//! histogram buckets) or in Prometheus's protobuf format ([`Snapshot::encode_protobuf`]: each
//! histogram with both its classic and its native buckets). Every name is prefixed
//! `futexscope_`; `docs/agent.md` is the reference.

use prometheus_client::{
    encoding::{
        DescriptorEncoder, MetricEncoder, NativeHistogram, NativeHistogramBuckets, NoLabelSet,
        prometheus_protobuf, text,
    },
    metrics::MetricType,
    registry::{Registry, Unit},
};

use futexscope_probes_common::maps::{TIME_SCHEMA, TIME_ZERO_LOG2_SECONDS};

use super::{
    model::{CLASSIC_BOUNDS_LOG2_SECONDS, Histogram, SeriesKey, Totals},
    otlp::PushStats,
};
use crate::collect::ebpf::Drops;

/// The content type of [`Snapshot::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The content type of [`Snapshot::encode_protobuf`]'s output: length-delimited
/// `io.prometheus.client.MetricFamily` messages.
pub const PROTOBUF_CONTENT_TYPE: &str =
    "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited";

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
    /// The snapshot in the OpenMetrics text format (histograms with classic buckets only).
    pub fn encode(self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        text::encode(&mut out, &self.registry())?;
        Ok(out)
    }

    /// The snapshot in Prometheus's protobuf exposition format ([`PROTOBUF_CONTENT_TYPE`]),
    /// histograms with their classic and native buckets.
    pub fn encode_protobuf(self) -> Result<Vec<u8>, prometheus_protobuf::EncodeError> {
        prometheus_protobuf::encode_to_vec(&self.registry())
    }

    fn registry(self) -> Registry {
        let mut registry = Registry::with_prefix("futexscope");
        registry.register_collector(Box::new(self));
        registry
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
                (|t: &Totals| &t.wait) as fn(&Totals) -> &Histogram,
            ),
            (
                "timeout_drift",
                "How late timed-out waits returned after their deadline.",
                |t: &Totals| &t.drift,
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
                encode_histogram(metric.encode_family(&l)?, field(&s.totals))?;
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

/// Encodes `h` (ns) as a histogram in seconds: classic buckets at powers of two, and native
/// buckets of schema 3 with a zero bucket up to 2^-24 s, exactly the kernel's buckets (the
/// text format keeps only the classic ones).
fn encode_histogram(mut encoder: MetricEncoder<'_>, h: &Histogram) -> Result<(), std::fmt::Error> {
    let buckets: Vec<(f64, u64)> = CLASSIC_BOUNDS_LOG2_SECONDS
        .iter()
        .map(|&e| 2f64.powi(e))
        .chain([f64::INFINITY])
        .zip(h.buckets)
        .collect();
    let (zero_count, native) = h.native_buckets();
    let (spans, deltas) = spans_and_deltas(&native);
    encoder.encode_histogram_with_native::<NoLabelSet>(
        h.sum_ns as f64 / 1e9,
        h.count(),
        &buckets,
        None,
        NativeHistogram {
            schema: TIME_SCHEMA as i32,
            zero_threshold: 2f64.powi(TIME_ZERO_LOG2_SECONDS),
            zero_count,
            negative: NativeHistogramBuckets {
                spans: &[],
                deltas: &[],
            },
            positive: NativeHistogramBuckets {
                spans: &spans,
                deltas: &deltas,
            },
            created: None,
        },
    )
}

/// The sparse form of native buckets `(index, count)` (increasing index, non-zero counts):
/// spans `(offset from the end of the previous span, or the first index; length)` of
/// consecutive indices, and each count as its difference from the previous one. With no
/// buckets, one empty span marks the histogram as native (as the format asks).
fn spans_and_deltas(buckets: &[(i32, u64)]) -> (Vec<(i32, u32)>, Vec<i64>) {
    let mut spans: Vec<(i32, u32)> = Vec::new();
    let mut deltas = Vec::with_capacity(buckets.len());
    let (mut next, mut previous) = (None, 0i64);
    for &(index, count) in buckets {
        match next {
            Some(n) if n == index => spans.last_mut().expect("a span is open").1 += 1,
            Some(n) => spans.push((index - n, 1)),
            None => spans.push((index, 1)),
        }
        next = Some(index + 1);
        let count = count as i64;
        deltas.push(count - previous);
        previous = count;
    }
    if spans.is_empty() {
        spans.push((0, 0));
    }
    (spans, deltas)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use futexscope_probes_common::maps::{FutexKey, FutexStats, time_bucket};
    use prometheus_client::encoding::prometheus_protobuf::prometheus_data_model as pb;

    use super::*;
    use crate::agent::model::{Limits, Model, ProcessInfo, SharedFile, WordReading};

    #[test]
    fn spans_cover_consecutive_indices_and_deltas_chain() {
        let (spans, deltas) = spans_and_deltas(&[(-45, 4), (-44, 1), (0, 3), (1, 1), (3, 2)]);
        assert_eq!(spans, vec![(-45, 2), (43, 2), (1, 1)]);
        assert_eq!(deltas, vec![4, -3, 2, -2, 1]);
        assert_eq!(spans_and_deltas(&[]), (vec![(0, 0)], vec![]));
    }

    /// One process, `w`, alive, its words unnamed.
    struct OneProcess;

    impl ProcessInfo for OneProcess {
        fn comm(&mut self, _: u32) -> Option<String> {
            Some("w".into())
        }
        fn alive(&mut self, _: u32) -> bool {
            true
        }
        fn symbol(&mut self, _: u32, _: u64) -> Option<String> {
            None
        }
        fn shared_file(&mut self, _: u32, _: u32, _: u64) -> Option<SharedFile> {
            None
        }
        fn forget(&mut self, _: u32) {}
    }

    /// A snapshot of one word, through the model, with one wait of each of `ns`.
    fn snapshot(ns: &[u64]) -> Snapshot {
        let mut stats = FutexStats::ZERO;
        for &v in ns {
            stats.wait_hist[time_bucket(v)] += 1;
            stats.wait_sum_ns += v;
        }
        let mut model = Model::new(Limits {
            top_words: 10,
            max_words: 10,
            grace: Duration::from_secs(1),
        });
        model.refresh(
            &[(FutexKey::process(1, 8), WordReading::of(&stats))],
            &[],
            &mut OneProcess,
            Instant::now(),
        );
        let (key, series) = model.series().next().expect("one series");
        Snapshot {
            series: vec![SeriesValues {
                key: key.clone(),
                totals: series.totals.clone(),
                waiters_now: 0,
            }],
            ..Snapshot::default()
        }
    }

    #[test]
    fn protobuf_histograms_carry_classic_and_native_buckets_and_text_the_classic_ones() {
        // Three 20 ms waits (native bucket -45: (2^(-46/8), 2^(-45/8)] s = (18.6, 20.3] ms),
        // one of 1 s (bucket 0) and one of 0 ns (the zero bucket).
        let ns = [20_000_000, 20_000_000, 20_000_000, 1_000_000_000, 0];
        let registry = snapshot(&ns).registry();
        let families = prometheus_protobuf::encode(&registry).expect("encodes");
        let family = families
            .iter()
            .find(|f| f.name == "futexscope_wait_seconds")
            .expect("the wait histogram");
        assert_eq!(family.r#type, pb::MetricType::Histogram as i32);
        let h = family.metric[0].histogram.as_ref().expect("a histogram");
        assert_eq!(h.sample_count, 5);
        assert!((h.sample_sum - 1.06).abs() < 1e-12, "{}", h.sample_sum);
        assert_eq!((h.schema, h.zero_count), (3, 1));
        assert_eq!(h.zero_threshold, 2f64.powi(-24));
        let spans: Vec<(i32, u32)> = h
            .positive_span
            .iter()
            .map(|s| (s.offset, s.length))
            .collect();
        assert_eq!(spans, vec![(-45, 1), (44, 1)]);
        assert_eq!(h.positive_delta, vec![3, -2]);
        // Classic: cumulative, 20 ms <= 2^-4 s (62.5 ms), 1 s <= 2^0 s.
        let classic: Vec<(f64, u64)> = h
            .bucket
            .iter()
            .map(|b| (b.upper_bound, b.cumulative_count))
            .collect();
        assert_eq!(classic.first(), Some(&(2f64.powi(-20), 1)));
        assert!(classic.contains(&(2f64.powi(-4), 4)), "{classic:?}");
        assert!(classic.contains(&(1.0, 5)), "{classic:?}");
        // Names as in the text format.
        let names: Vec<&str> = families.iter().map(|f| f.name.as_str()).collect();
        for name in [
            "futexscope_waits_total",
            "futexscope_timeout_drift_seconds",
            "futexscope_agent_info",
        ] {
            assert!(names.contains(&name), "{name} missing from {names:?}");
        }
        let text = snapshot(&ns).encode().expect("encodes");
        assert!(
            text.contains(
                "futexscope_wait_seconds_bucket{le=\"0.0625\",comm=\"w\",lock=\"anon\"} 4"
            ),
            "{text}"
        );
        assert!(
            text.contains("futexscope_wait_seconds_count{comm=\"w\",lock=\"anon\"} 5"),
            "{text}"
        );
    }
}
