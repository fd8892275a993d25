//! What the agent tests share: processes stopped when a test ends however it ends, a
//! temporary directory, a free loopback port, a plain HTTP GET and a bounded wait.

#![allow(dead_code, reason = "each agent test uses part of it")]

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    path::PathBuf,
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
    head.starts_with("HTTP/1.1 200").then(|| body.to_owned())
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
