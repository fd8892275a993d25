//! futexscope leaves the traced command's output alone: `run -- xz -c FILE > OUT` must give the
//! same archive as `xz` alone (xz, a real program nobody here wrote, compresses with threads
//! that wait on futexes); futexscope's report goes to stderr, or to `-o FILE`.

use std::{
    fs::File,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

fn temp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("futexscope-output-{}-{name}", std::process::id()))
}

/// A few MiB that compress to something, but not to nothing, in a file named after `test`.
fn input(test: &str) -> PathBuf {
    let path = temp(&format!("{test}-input"));
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let data: Vec<u8> = (0..2 << 20)
        .map(|i| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            // Runs of text with noise: xz's threads have real work.
            if i % 7 == 0 {
                state as u8
            } else {
                b"futex "[i % 6]
            }
        })
        .collect();
    std::fs::write(&path, data).expect("write the input");
    path
}

/// Runs `futexscope run OPTIONS -- xz -T2 -c INPUT` with its stdout in `archive`.
fn traced_xz(options: &[&str], input: &Path, archive: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_futexscope"))
        .arg("run")
        .args(options)
        .args(["--", "xz", "-T2", "-c"])
        .arg(input)
        .stdin(Stdio::null())
        .stdout(File::create(archive).expect("create the archive"))
        .stderr(Stdio::piped())
        .output()
        .expect("run futexscope")
}

/// The archive decompresses to exactly the input.
fn assert_intact(archive: &Path, input: &Path) {
    let unpacked = Command::new("xz")
        .args(["-d", "-c"])
        .arg(archive)
        .output()
        .expect("run xz -d");
    assert!(
        unpacked.status.success(),
        "the archive is corrupt: {}",
        String::from_utf8_lossy(&unpacked.stderr)
    );
    assert!(
        unpacked.stdout == std::fs::read(input).expect("read the input"),
        "the archive does not decompress to the input"
    );
}

#[test]
#[ignore = "needs root"]
fn the_commands_stdout_is_untouched_and_the_report_goes_to_stderr() {
    let (input, archive) = (input("stderr"), temp("plain.xz"));
    for view in ["plain", "quiet"] {
        let output = traced_xz(&["--view", view], &input, &archive);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{stderr}");
        assert_intact(&archive, &input);
        assert!(stderr.contains("futexscope summary"), "{view}: {stderr}");
        assert!(stderr.contains("WAITS"), "the table, on stderr: {stderr}");
    }
    let _ = std::fs::remove_file(&archive);
    let _ = std::fs::remove_file(&input);
}

#[test]
#[ignore = "needs root"]
fn dash_o_puts_the_report_in_a_file() {
    let (input, archive, report) = (input("o"), temp("o.xz"), temp("report.txt"));
    let output = traced_xz(
        &["--view", "plain", "-o", report.to_str().expect("UTF-8")],
        &input,
        &archive,
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert_intact(&archive, &input);
    let text = std::fs::read_to_string(&report).expect("the report file");
    assert!(text.contains("futexscope summary"), "{text}");
    assert!(
        !stderr.contains("futexscope summary"),
        "the summary is in the file only: {stderr}"
    );
    for path in [&input, &archive, &report] {
        let _ = std::fs::remove_file(path);
    }
}
