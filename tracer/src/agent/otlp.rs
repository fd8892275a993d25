//! `--otlp URL`: the agent pushes the metrics `/metrics` serves to an OpenTelemetry collector
//! (or any OTLP/HTTP receiver), every `--otlp-interval` and once more at shutdown.
//!
//! The counts are already aggregated (the probes' maps), and the OpenTelemetry SDK cannot carry
//! aggregates: its instruments record single measurements, there is no observable histogram,
//! and its exporters' data types cannot be built from outside the SDK. So the request is built
//! from opentelemetry-proto's generated messages (the same types opentelemetry-otlp sends),
//! encoded with prost and POSTed as OTLP/HTTP protobuf with hyper's client on the agent's own
//! runtime: no second runtime, no TLS stack.
//!
//! - **Names**: each metric is named as its `/metrics` family without `_total`, so a receiver
//!   that translates OTLP to Prometheus names (unit suffix, `_total` on monotonic sums) stores
//!   the names `/metrics` shows.
//! - **Temporality**: cumulative, the counters as monotonic sums; the histograms have the
//!   classic bounds of `/metrics` (exact at the probes' bucket edges).
//! - **Failures**: counted, logged once each time the outcome changes (not every interval), and
//!   retried at the next interval with the counts of then.

use std::{
    cell::RefCell,
    collections::HashMap,
    fmt,
    rc::Rc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use http_body_util::{BodyExt, Full};
use hyper::{
    Request, StatusCode, Uri,
    body::Bytes,
    header::{CONTENT_TYPE, HOST},
};
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::{
    collector::metrics::v1::{ExportMetricsServiceRequest, ExportMetricsServiceResponse},
    common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value},
    metrics::v1::{
        AggregationTemporality, Gauge, Histogram as OtlpHistogram, HistogramDataPoint, Metric,
        NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, metric, number_data_point,
    },
    resource::v1::Resource,
};
use prost::Message;

use super::{
    Agent,
    metrics::{COUNTERS, Snapshot},
    model::{CLASSIC_BOUNDS_LOG2_SECONDS, Histogram, SeriesKey, Totals},
};

/// Where and how often to push.
#[derive(Clone, Debug)]
pub struct OtlpOptions {
    /// The receiver.
    pub endpoint: Endpoint,
    /// Time between pushes.
    pub interval: Duration,
}

/// An `http://` OTLP/HTTP metrics URL.
#[derive(Clone, Debug)]
pub struct Endpoint {
    uri: Uri,
    /// `host:port`, to connect to and for the `Host` header.
    authority: String,
}

/// Why a `--otlp` URL cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    /// Not a URL.
    #[error("not a URL: {0}")]
    Invalid(#[from] hyper::http::uri::InvalidUri),
    /// `https://`: this build has no TLS.
    #[error(
        "https is not supported (futexscope has no TLS): push over http:// to a collector on this host or a private network, and let it forward over TLS"
    )]
    Https,
    /// No `http://` scheme or no host.
    #[error("give an http:// URL with a host, e.g. http://127.0.0.1:4318/v1/metrics")]
    NotHttp,
}

impl std::str::FromStr for Endpoint {
    type Err = EndpointError;

    /// Parses `http://host[:port][/path]`; the port defaults to 80 and an empty path to
    /// OTLP's `/v1/metrics`.
    fn from_str(url: &str) -> Result<Endpoint, EndpointError> {
        let uri: Uri = url.parse()?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => return Err(EndpointError::Https),
            _ => return Err(EndpointError::NotHttp),
        }
        let authority = uri.authority().ok_or(EndpointError::NotHttp)?;
        if authority.host().is_empty() {
            return Err(EndpointError::NotHttp);
        }
        let authority = format!(
            "{}:{}",
            authority.host(),
            authority.port_u16().unwrap_or(80)
        );
        let path = match uri.path_and_query().map(|p| p.as_str()) {
            None | Some("/") => "/v1/metrics",
            Some(path) => path,
        };
        let uri = Uri::builder()
            .scheme("http")
            .authority(authority.as_str())
            .path_and_query(path)
            .build()
            .map_err(|_| EndpointError::NotHttp)?;
        Ok(Endpoint { uri, authority })
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.uri.fmt(f)
    }
}

/// Pushes so far, shown as `futexscope_agent_otlp_*` metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PushStats {
    /// Pushes the receiver accepted.
    pub pushes: u64,
    /// Pushes that failed (no connection, an error status, data points rejected).
    pub failures: u64,
}

/// Why one push failed.
#[derive(Debug, thiserror::Error)]
enum PushError {
    #[error("cannot connect to {authority}: {source}")]
    Connect {
        authority: String,
        source: std::io::Error,
    },
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    #[error("the receiver answered {status}: {body}")]
    Status { status: StatusCode, body: String },
    #[error("the receiver rejected {points} data points: {message}")]
    Rejected { points: i64, message: String },
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// How long one push may take: a receiver that does not answer must not hold up the next push
/// or the shutdown.
const PUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// The pusher: what it sends, and what it remembers between pushes.
pub(super) struct Pusher {
    options: OtlpOptions,
    resource: Resource,
    starts: Starts,
    /// The error of the last push, if it failed (logged once until the outcome changes).
    last_error: Option<String>,
}

impl Pusher {
    /// A pusher for `options`, describing this host (`kernel`: `uname -r`).
    pub(super) fn new(options: OtlpOptions, kernel: &str) -> Pusher {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_default();
        let resource = Resource {
            attributes: vec![
                string("service.name", "futexscope-agent"),
                // One agent per host: the host name identifies the instance (Prometheus's
                // OTLP translation makes it the `instance` label).
                string("service.instance.id", &host),
                string("service.version", env!("CARGO_PKG_VERSION")),
                string("host.name", &host),
                string("os.type", "linux"),
                string("os.version", kernel),
            ],
            ..Resource::default()
        };
        Pusher {
            options,
            resource,
            starts: Starts::new(now_ns()),
            last_error: None,
        }
    }

    /// Pushes every interval (the first one interval after start) until `stop` fires, then
    /// once more with the counts of then, so the last counts arrive. A push under way when
    /// `stop` fires is abandoned for that final one.
    pub(super) async fn run(
        mut self,
        agent: Rc<RefCell<Agent>>,
        mut stop: tokio::sync::oneshot::Receiver<()>,
    ) {
        let interval = self.options.interval;
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = &mut stop => break,
            }
            let snapshot = agent.borrow_mut().snapshot();
            tokio::select! {
                () = self.push(snapshot, &agent) => {}
                _ = &mut stop => break,
            }
        }
        let snapshot = agent.borrow_mut().snapshot_now();
        self.push(snapshot, &agent).await;
    }

    /// Pushes `snapshot`, counts the outcome in `agent`, and logs it if it changed.
    async fn push(&mut self, snapshot: Snapshot, agent: &RefCell<Agent>) {
        let request = self.request(&snapshot, now_ns());
        let outcome =
            match tokio::time::timeout(PUSH_TIMEOUT, post(&self.options.endpoint, request)).await {
                Ok(outcome) => outcome,
                Err(_) => Err(PushError::Timeout(PUSH_TIMEOUT)),
            };
        {
            let mut agent = agent.borrow_mut();
            let stats = agent.otlp.get_or_insert_default();
            match &outcome {
                Ok(()) => stats.pushes += 1,
                Err(_) => stats.failures += 1,
            }
        }
        let error = outcome.err().map(|e| e.to_string());
        if error != self.last_error {
            match &error {
                Some(err) => eprintln!(
                    "futexscope agent: OTLP push to {} failed: {err} (retrying every {:?}; logged again only if the error changes)",
                    self.options.endpoint, self.options.interval
                ),
                None => eprintln!(
                    "futexscope agent: OTLP push to {} works again",
                    self.options.endpoint
                ),
            }
            self.last_error = error;
        }
    }

    /// The OTLP request for `snapshot`, taken at `now` (ns since the epoch).
    fn request(&mut self, snapshot: &Snapshot, now: u64) -> ExportMetricsServiceRequest {
        self.starts.update(snapshot, now);
        let starts = &self.starts;
        let series_point = |key: &SeriesKey| Point {
            attributes: vec![string("comm", &key.comm), string("lock", &key.lock)],
            start: starts.series.get(key).map_or(starts.agent, |s| s.0),
            now,
        };
        let mut metrics = Vec::new();
        for (name, help, field) in COUNTERS {
            metrics.push(sum(
                &format!("futexscope_{name}"),
                help,
                "",
                snapshot
                    .series
                    .iter()
                    .map(|s| series_point(&s.key).int(count(field(&s.totals))))
                    .collect(),
            ));
        }
        metrics.push(gauge(
            "futexscope_waiters",
            "Threads inside a futex wait now.",
            "",
            snapshot
                .series
                .iter()
                .map(|s| series_point(&s.key).int(s.waiters_now))
                .collect(),
        ));
        for (name, help, field) in [
            (
                "futexscope_wait_seconds",
                "Time a wait call took, from entry to return.",
                (|t: &Totals| t.wait.clone()) as fn(&Totals) -> Histogram,
            ),
            (
                "futexscope_timeout_drift_seconds",
                "How late timed-out waits returned after their deadline.",
                |t: &Totals| t.drift.clone(),
            ),
        ] {
            let points = snapshot
                .series
                .iter()
                .map(|s| series_point(&s.key).histogram(&field(&s.totals)))
                .collect();
            metrics.push(Metric {
                name: name.into(),
                description: help.into(),
                unit: "s".into(),
                data: Some(metric::Data::Histogram(OtlpHistogram {
                    data_points: points,
                    aggregation_temporality: AggregationTemporality::Cumulative as i32,
                })),
                ..Metric::default()
            });
        }
        metrics.extend(self.agent_metrics(snapshot, now));
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(self.resource.clone()),
                scope_metrics: vec![ScopeMetrics {
                    scope: Some(InstrumentationScope {
                        name: "futexscope".into(),
                        version: env!("CARGO_PKG_VERSION").into(),
                        ..InstrumentationScope::default()
                    }),
                    metrics,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        }
    }

    /// The agent's own metrics, as `/metrics` has them.
    fn agent_metrics(&self, snapshot: &Snapshot, now: u64) -> Vec<Metric> {
        let a = &snapshot.agent;
        let point = |attributes: Vec<KeyValue>| Point {
            attributes,
            start: self.starts.agent,
            now,
        };
        let one = |value: Value| vec![point(Vec::new()).value(value)];
        let mut metrics = vec![
            sum(
                "futexscope_dropped",
                "Records and map entries the probes lost, by reason (totals stay exact unless map_full grows).",
                "",
                [
                    ("ring_buffer_full", a.drops.ring_buffer_full),
                    ("map_full", a.drops.map_full),
                    ("shared_key_fallback", a.drops.shared_key_fallback),
                ]
                .into_iter()
                .map(|(reason, n)| point(vec![string("reason", reason)]).int(count(n)))
                .collect(),
            ),
            sum(
                "futexscope_agent_cpu_seconds",
                "CPU time the agent used (user + system).",
                "s",
                one(Value::Double(a.cpu_seconds)),
            ),
            sum(
                "futexscope_agent_traced_calls",
                "Futex calls the agent counted.",
                "",
                one(Value::Int(count(a.calls))),
            ),
            sum(
                "futexscope_agent_evicted_words",
                "Words evicted by the cap on tracked words.",
                "",
                one(Value::Int(count(a.evictions))),
            ),
            gauge(
                "futexscope_agent_resident_memory_bytes",
                "Resident memory of the agent.",
                "By",
                one(Value::Int(count(a.resident_bytes))),
            ),
            gauge(
                "futexscope_agent_traced_calls_per_second",
                "Futex calls counted per second over the last refresh.",
                "",
                one(Value::Double(a.calls_per_second)),
            ),
            gauge(
                "futexscope_agent_tracked_words",
                "Futex words tracked.",
                "",
                one(Value::Int(count(a.words))),
            ),
            gauge(
                "futexscope_agent_tracked_processes",
                "Processes tracked (running, or exited within the grace period).",
                "",
                one(Value::Int(count(a.processes))),
            ),
            gauge(
                "futexscope_agent_series",
                "Per-lock series exported.",
                "",
                one(Value::Int(count(snapshot.series.len()))),
            ),
            gauge(
                "futexscope_agent_info",
                "The agent's version, the kernel release and what it traces.",
                "",
                vec![
                    point(vec![
                        string("version", env!("CARGO_PKG_VERSION")),
                        string("kernel", &snapshot.kernel),
                        string("traces", &snapshot.traces),
                    ])
                    .int(1),
                ],
            ),
        ];
        if let Some(otlp) = a.otlp {
            metrics.extend([
                sum(
                    "futexscope_agent_otlp_pushes",
                    "OTLP pushes the receiver accepted.",
                    "",
                    one(Value::Int(count(otlp.pushes))),
                ),
                sum(
                    "futexscope_agent_otlp_failures",
                    "OTLP pushes that failed (retried at the next interval).",
                    "",
                    one(Value::Int(count(otlp.failures))),
                ),
            ]);
        }
        metrics
    }
}

/// When each cumulative series started counting: the agent's counters at its start, a
/// per-lock series at the push before the one that first saw it (again if it was dropped and
/// came back with lower counts), so a receiver sees a reset as a reset.
struct Starts {
    agent: u64,
    /// The previous push (the agent's start before the first).
    last_push: u64,
    /// Per series: its start and the totals last pushed.
    series: HashMap<SeriesKey, (u64, Totals)>,
}

impl Starts {
    fn new(agent: u64) -> Starts {
        Starts {
            agent,
            last_push: agent,
            series: HashMap::new(),
        }
    }

    fn update(&mut self, snapshot: &Snapshot, now: u64) {
        let mut series = HashMap::with_capacity(snapshot.series.len());
        for s in &snapshot.series {
            let start = match self.series.get(&s.key) {
                Some((start, before)) if !went_down(&s.totals, before) => *start,
                _ => self.last_push,
            };
            series.insert(s.key.clone(), (start, s.totals.clone()));
        }
        self.series = series;
        self.last_push = now;
    }
}

/// Whether any count of `now` is below `before` (the series was dropped and started again).
fn went_down(now: &Totals, before: &Totals) -> bool {
    COUNTERS
        .iter()
        .any(|(_, _, field)| field(now) < field(before))
        || now.wait.count() < before.wait.count()
        || now.drift.count() < before.drift.count()
}

/// A data point's labels and times.
struct Point {
    attributes: Vec<KeyValue>,
    start: u64,
    now: u64,
}

/// A number data point's value.
enum Value {
    Int(i64),
    Double(f64),
}

impl Point {
    fn int(self, value: i64) -> NumberDataPoint {
        self.value(Value::Int(value))
    }

    fn value(self, value: Value) -> NumberDataPoint {
        NumberDataPoint {
            attributes: self.attributes,
            start_time_unix_nano: self.start,
            time_unix_nano: self.now,
            value: Some(match value {
                Value::Int(v) => number_data_point::Value::AsInt(v),
                Value::Double(v) => number_data_point::Value::AsDouble(v),
            }),
            ..NumberDataPoint::default()
        }
    }

    /// `h` (ns) with the classic bounds of `/metrics`, in seconds; OTLP's bucket counts are
    /// per bucket (not cumulative), as [`Histogram`] keeps them, the last one above the last
    /// bound.
    fn histogram(self, h: &Histogram) -> HistogramDataPoint {
        HistogramDataPoint {
            attributes: self.attributes,
            start_time_unix_nano: self.start,
            time_unix_nano: self.now,
            count: h.count(),
            sum: Some(h.sum_ns as f64 / 1e9),
            bucket_counts: h.buckets.to_vec(),
            explicit_bounds: CLASSIC_BOUNDS_LOG2_SECONDS
                .iter()
                .map(|&e| 2f64.powi(e))
                .collect(),
            ..HistogramDataPoint::default()
        }
    }
}

fn sum(name: &str, help: &str, unit: &str, points: Vec<NumberDataPoint>) -> Metric {
    Metric {
        name: name.into(),
        description: help.into(),
        unit: unit.into(),
        data: Some(metric::Data::Sum(Sum {
            data_points: points,
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
            is_monotonic: true,
        })),
        ..Metric::default()
    }
}

fn gauge(name: &str, help: &str, unit: &str, points: Vec<NumberDataPoint>) -> Metric {
    Metric {
        name: name.into(),
        description: help.into(),
        unit: unit.into(),
        data: Some(metric::Data::Gauge(Gauge {
            data_points: points,
        })),
        ..Metric::default()
    }
}

fn string(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..KeyValue::default()
    }
}

/// `n` as OTLP's signed integer (no count comes near 2^63).
fn count(n: impl TryInto<i64>) -> i64 {
    n.try_into().unwrap_or(i64::MAX)
}

/// Nanoseconds since the epoch.
fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// POSTs `request` to `endpoint` as OTLP/HTTP protobuf over a fresh HTTP/1.1 connection (one
/// push every few seconds does not need a pool).
async fn post(endpoint: &Endpoint, request: ExportMetricsServiceRequest) -> Result<(), PushError> {
    let stream = tokio::net::TcpStream::connect(endpoint.authority.as_str())
        .await
        .map_err(|source| PushError::Connect {
            authority: endpoint.authority.clone(),
            source,
        })?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    // The connection is driven beside the request; it ends when `sender` is dropped.
    tokio::task::spawn_local(async move {
        let _ = connection.await;
    });
    let http_request = Request::post(endpoint.uri.clone())
        .header(HOST, endpoint.authority.as_str())
        .header(CONTENT_TYPE, "application/x-protobuf")
        .body(Full::new(Bytes::from(request.encode_to_vec())))
        .expect("a POST with a valid URI and static headers");
    let response = sender.send_request(http_request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    if !status.is_success() {
        let text = String::from_utf8_lossy(&body);
        return Err(PushError::Status {
            status,
            body: text.trim().chars().take(200).collect(),
        });
    }
    // An empty body, or one that is not protobuf (some receivers answer JSON or nothing), is
    // full success; a partial success names what was rejected.
    if let Ok(answer) = ExportMetricsServiceResponse::decode(body)
        && let Some(partial) = answer.partial_success
        && partial.rejected_data_points > 0
    {
        return Err(PushError::Rejected {
            points: partial.rejected_data_points,
            message: partial.error_message,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::metrics::{AgentStats, SeriesValues};

    fn snapshot(waits: u64) -> Snapshot {
        let mut totals = Totals {
            waits,
            ..Totals::default()
        };
        totals.wait.buckets[0] = waits;
        Snapshot {
            series: vec![SeriesValues {
                key: SeriesKey {
                    comm: "app".into(),
                    lock: "anon".into(),
                },
                totals,
                waiters_now: 0,
            }],
            agent: AgentStats::default(),
            kernel: "6.1.0".into(),
            traces: "every process".into(),
        }
    }

    #[test]
    fn urls_default_to_port_80_and_the_otlp_path_and_https_is_refused() {
        let e: Endpoint = "http://collector:4318".parse().unwrap();
        assert_eq!(e.to_string(), "http://collector:4318/v1/metrics");
        let e: Endpoint = "http://127.0.0.1/api/v1/otlp/v1/metrics".parse().unwrap();
        assert_eq!(e.authority, "127.0.0.1:80");
        assert_eq!(e.uri.path(), "/api/v1/otlp/v1/metrics");
        assert!(matches!(
            "https://collector:4318".parse::<Endpoint>(),
            Err(EndpointError::Https)
        ));
        assert!(matches!(
            "collector:4318".parse::<Endpoint>(),
            Err(EndpointError::NotHttp)
        ));
    }

    fn pusher() -> Pusher {
        Pusher::new(
            OtlpOptions {
                endpoint: "http://127.0.0.1:1".parse().unwrap(),
                interval: Duration::from_secs(1),
            },
            "6.1.0",
        )
    }

    fn waits_start(request: &ExportMetricsServiceRequest) -> (i64, u64) {
        let metric = request.resource_metrics[0].scope_metrics[0]
            .metrics
            .iter()
            .find(|m| m.name == "futexscope_waits")
            .expect("futexscope_waits");
        let Some(metric::Data::Sum(sum)) = &metric.data else {
            panic!("a sum");
        };
        assert!(sum.is_monotonic);
        let point = &sum.data_points[0];
        let Some(number_data_point::Value::AsInt(v)) = point.value else {
            panic!("an int");
        };
        (v, point.start_time_unix_nano)
    }

    #[test]
    fn a_series_keeps_its_start_until_a_count_goes_down() {
        let mut p = pusher();
        let agent_start = p.starts.agent;
        let first = p.request(&snapshot(5), agent_start + 10);
        assert_eq!(waits_start(&first), (5, agent_start));
        let second = p.request(&snapshot(7), agent_start + 20);
        assert_eq!(waits_start(&second), (7, agent_start));
        // Dropped and counted again from zero: it started after the previous push.
        let reset = p.request(&snapshot(2), agent_start + 30);
        assert_eq!(waits_start(&reset), (2, agent_start + 20));
    }

    #[test]
    fn histograms_carry_the_classic_bounds_in_seconds_and_per_bucket_counts() {
        let mut p = pusher();
        let request = p.request(&snapshot(3), 1);
        let metric = request.resource_metrics[0].scope_metrics[0]
            .metrics
            .iter()
            .find(|m| m.name == "futexscope_wait_seconds")
            .expect("futexscope_wait_seconds");
        assert_eq!(metric.unit, "s");
        let Some(metric::Data::Histogram(h)) = &metric.data else {
            panic!("a histogram");
        };
        assert_eq!(
            h.aggregation_temporality,
            AggregationTemporality::Cumulative as i32
        );
        let point = &h.data_points[0];
        assert_eq!(point.explicit_bounds.len() + 1, point.bucket_counts.len());
        assert_eq!(point.explicit_bounds[0], 2f64.powi(-20));
        assert_eq!(point.bucket_counts[0], 3);
        assert_eq!(point.count, 3);
    }
}
