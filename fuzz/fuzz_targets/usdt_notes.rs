//! Feeds arbitrary bytes to the stapsdt note parser (`futexscope-stapsdt`): it must return `Ok`
//! or `Err`, never panic, and every register it reports must lie inside the kernel's register
//! frame.
#![no_main]

use futexscope_stapsdt::{ArgLocation, parse_sites, sites};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Every provider's notes, then only futexscope's (the filtered path skips other notes).
    let all = parse_sites(data);
    let ours = sites(data, "futexscope");
    for found in [all, ours].into_iter().flatten() {
        for arg in found.sites.iter().flat_map(|site| &site.args) {
            if let ArgLocation::Register(register) = arg.location {
                assert!(register.pt_regs_offset() < 256);
            }
        }
    }
});
