//! Helpers shared by the integration tests: the tracer's test helpers (one copy, in
//! `tracer/tests/common`), and where to find the `futexscope` binary.

#[path = "../../../../tracer/tests/common/mod.rs"]
mod tracer_common;

pub use tracer_common::*;

/// The `futexscope` binary of this build: `target/<profile>/futexscope`, next to the `deps`
/// directory that holds this test. Cargo builds a package's binaries only for that package's
/// own tests, so `cargo xtask test` builds them first (`cargo build --workspace --bins`);
/// without it this panics saying how to build it.
#[allow(
    dead_code,
    reason = "tests that only load the probes do not run the command"
)]
pub fn futexscope_exe() -> &'static str {
    static PATH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PATH.get_or_init(|| {
        let test = std::env::current_exe().expect("path of this test binary");
        let path = test
            .parent()
            .and_then(std::path::Path::parent)
            .expect("the test binary lies in target/<profile>/deps")
            .join("futexscope");
        assert!(
            path.exists(),
            "`{}` is missing: build it first with `cargo build -p futexscope --bin futexscope` \
             (`cargo xtask test` does)",
            path.display()
        );
        path.into_os_string()
            .into_string()
            .expect("a UTF-8 path to futexscope")
    })
}
