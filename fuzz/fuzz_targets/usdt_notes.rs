//! Feeds arbitrary bytes to the stapsdt note parser: it must return `Ok` or `Err`, never panic,
//! and every register it reports must lie inside the kernel's register frame.
#![no_main]

/// The parser, compiled from the tracer's own source so the fuzzer needs none of the
/// tracer's eBPF build.
#[path = "../../tracer/src/usdt.rs"]
#[expect(dead_code, reason = "only the parser entry point is fuzzed")]
mod usdt;

use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    if let Ok(sites) = usdt::parse_sites(Path::new("fuzz-input"), data) {
        for arg in sites.iter().flat_map(|site| &site.args) {
            if let usdt::ArgLocation::Register(register) = arg.location {
                assert!(register.pt_regs_offset() < 256);
            }
        }
    }
});
