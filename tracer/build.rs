//! Builds the eBPF programs in `probes/ebpf` and leaves the object at
//! `$OUT_DIR/futexscope-probes`, where `src/probes.rs` embeds it, so the `futexscope` binary is
//! one self-contained file.
//!
//! The eBPF crate is its own workspace (it only builds for `bpfel-unknown-none`), compiled with
//! the nightly toolchain, `-Z build-std=core` and bpf-linker. `cargo xtask setup` installs those.
//! (aya-build does the same but requires the eBPF crate to be a member of this workspace.)

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo"));
    let probes = manifest_dir.join("../probes");
    for watched in [
        "ebpf/src",
        "ebpf/Cargo.toml",
        "ebpf/Cargo.lock",
        "common/src",
        "common/Cargo.toml",
        "common/build.rs",
    ] {
        println!("cargo:rerun-if-changed={}", probes.join(watched).display());
    }

    // The architecture the programs will trace is the one this binary runs on: the eBPF crate
    // (target_arch "bpf") gets it as `bpf_target_arch`, which picks aya-ebpf's `pt_regs` and the
    // syscall numbers in `futexscope_probes_common::abi::syscalls`.
    let traced_arch = env::var("CARGO_CFG_TARGET_ARCH").expect("set by cargo");
    let target_dir = out_dir.join("ebpf-target");
    let mut cargo = Command::new("rustup");
    cargo
        .args(["run", "nightly", "cargo", "build", "--release", "--locked"])
        .args(["--target", "bpfel-unknown-none", "-Z", "build-std=core"])
        .arg("--manifest-path")
        .arg(probes.join("ebpf/Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir)
        .env(
            "CARGO_ENCODED_RUSTFLAGS",
            format!(
                "-Cdebuginfo=2\x1f-Clink-arg=--btf\x1f-Ctarget-cpu=v3\x1f--cfg=bpf_target_arch=\"{traced_arch}\""
            ),
        );
    // Variables of the outer (stable, host) build that must not leak into the eBPF build.
    for var in [
        "RUSTC",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTC_WRAPPER",
        "RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
    ] {
        cargo.env_remove(var);
    }
    let status = cargo
        .status()
        .unwrap_or_else(|err| fail(&format!("cannot run `rustup` ({err})")));
    if !status.success() {
        fail("building the eBPF programs failed (see the errors above)");
    }
    let object = target_dir.join("bpfel-unknown-none/release/futexscope-probes");
    std::fs::copy(&object, out_dir.join("futexscope-probes"))
        .unwrap_or_else(|err| fail(&format!("cannot copy {}: {err}", object.display())));
}

fn fail(what: &str) -> ! {
    let linker = Path::new(&env::var("HOME").unwrap_or_default()).join(".cargo/bin/bpf-linker");
    panic!(
        "{what}\nThe eBPF build needs the nightly toolchain with rust-src and bpf-linker ({}): run `cargo xtask setup`.",
        if linker.exists() {
            "bpf-linker is installed"
        } else {
            "bpf-linker is missing"
        }
    );
}
