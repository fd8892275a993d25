//! Declares `bpf_target_arch`, the cfg that picks the table of `abi::syscalls` when this crate
//! is compiled into the eBPF programs (whose own `target_arch` is `bpf`), and gives it a
//! default.
//!
//! `tracer/build.rs` passes `--cfg bpf_target_arch="…"` with the architecture the tracer is
//! built for. When the eBPF crate is built some other way (clippy, an editor) the cfg defaults
//! to the host's architecture, as aya-ebpf's build script does for the same cfg.

use std::env;

fn main() {
    println!(r#"cargo::rustc-check-cfg=cfg(bpf_target_arch, values("x86_64", "aarch64"))"#);
    // Cargo sets this when `--cfg bpf_target_arch=…` is among the rustflags.
    println!("cargo::rerun-if-env-changed=CARGO_CFG_BPF_TARGET_ARCH");
    let target_arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    if target_arch != "bpf" || env::var_os("CARGO_CFG_BPF_TARGET_ARCH").is_some() {
        return;
    }
    let host = env::var("HOST").expect("set by cargo");
    let arch = host.split('-').next().unwrap_or_default();
    println!(r#"cargo::rustc-cfg=bpf_target_arch="{arch}""#);
}
