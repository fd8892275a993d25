//! What the agent tests share: processes stopped when a test ends however it ends, a
//! temporary directory, a free loopback port, a plain HTTP GET, a bounded wait, the servers
//! they start and their query API, and copies of the workload under names of their own.

#![allow(dead_code, reason = "each agent test uses part of it")]

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::Child,
    time::{Duration, Instant},
};

/// Processes stopped with SIGTERM (then killed) when the test ends, however it ends.
pub struct Reaper(pub Vec<Child>);

impl Drop for Reaper {
    fn drop(&mut self) {
        for child in &mut self.0 {
            // SAFETY: kill(2) with a pid this test spawned and has not reaped yet.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(5);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A temporary directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A temporary file, removed on drop.
pub struct TempFile(pub PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The Prometheus server the tests start: Debian 13's 2.53 (OTLP receiver, native histograms),
/// which `cargo xtask setup` unpacks here; `FUTEXSCOPE_PROMETHEUS` names another binary.
pub fn prometheus_exe() -> PathBuf {
    let path = std::env::var_os("FUTEXSCOPE_PROMETHEUS").map_or_else(
        || PathBuf::from("/opt/futexscope-test/prometheus-2.53/usr/bin/prometheus"),
        PathBuf::from,
    );
    assert!(
        path.is_file(),
        "no Prometheus at {}: run `cargo xtask setup` as root",
        path.display()
    );
    path
}

/// The OTLP receiver the OTLP tests push to: Debian 13's VictoriaMetrics 1.112 (OTLP/HTTP
/// metrics in, Prometheus's query API out), which `cargo xtask setup` unpacks here;
/// `FUTEXSCOPE_VICTORIA_METRICS` names another binary.
pub fn victoria_metrics_exe() -> PathBuf {
    let path = std::env::var_os("FUTEXSCOPE_VICTORIA_METRICS").map_or_else(
        || PathBuf::from("/opt/futexscope-test/victoria-metrics-1.112/usr/bin/victoria-metrics"),
        PathBuf::from,
    );
    assert!(
        path.is_file(),
        "no VictoriaMetrics at {}: run `cargo xtask setup` as root",
        path.display()
    );
    path
}

/// A free port on loopback.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// `GET path` from `127.0.0.1:port`; the body, or None if the server is not answering.
pub fn http_get(port: u16, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    if !head.starts_with("HTTP/1.1 200") {
        return None;
    }
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    if chunked {
        dechunk(body)
    } else {
        Some(body.to_owned())
    }
}

/// The body of a chunked response (large answers of the servers' query APIs come chunked).
fn dechunk(mut body: &str) -> Option<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n")?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        if size == 0 {
            return Some(out);
        }
        out.push_str(rest.get(..size)?);
        body = rest.get(size..)?.strip_prefix("\r\n")?;
    }
}

/// Waits until `check` returns Some, for at most `limit`.
pub fn eventually<T>(limit: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// `query` percent-encoded for a URL.
fn encode(query: &str) -> String {
    query
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'.' | b'-' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The instant vector `query` evaluates to in the Prometheus query API at `port`: each sample's
/// labels and value.
pub fn query(port: u16, query: &str) -> Vec<(serde_json::Value, f64)> {
    let Some(body) = http_get(port, &format!("/api/v1/query?query={}", encode(query))) else {
        return Vec::new();
    };
    let json: serde_json::Value = serde_json::from_str(&body).expect("the query API answers JSON");
    json["data"]["result"]
        .as_array()
        .map(|results| {
            results
                .iter()
                .map(|r| {
                    let value = r["value"][1].as_str().and_then(|v| v.parse().ok());
                    (r["metric"].clone(), value.unwrap_or(f64::NAN))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The single value of `q`, once the server has it and it equals `want` (or what it last was).
pub fn settles_to(port: u16, q: &str, want: f64) -> f64 {
    let mut last = f64::NAN;
    eventually(Duration::from_secs(30), || {
        last = query(port, q).first().map_or(f64::NAN, |s| s.1);
        (last == want).then_some(())
    });
    last
}

/// A copy of the workload binary named `name`, so its processes have a name (comm) no other
/// process on the machine has.
pub fn workload_named(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::copy(env!("CARGO_BIN_EXE_futexscope-workload"), &path).expect("copy the workload");
    path
}
