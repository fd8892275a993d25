//! Builds the C++ shim of the `qt` peer (qt_shim.cpp) against Qt 6's QtCore, found with
//! pkg-config. Without Qt the build fails and names the Debian package to install.

fn main() {
    println!("cargo::rerun-if-changed=qt_shim.cpp");
    let qt = match pkg_config::Config::new()
        .atleast_version("6.2")
        // The link flags are printed below, after the shim that needs them.
        .cargo_metadata(false)
        .probe("Qt6Core")
    {
        Ok(qt) => qt,
        Err(error) => panic!(
            "sem-bench's `qt` peer needs Qt 6 (QtCore, found with pkg-config): install Debian's \
             qt6-base-dev and pkg-config (`cargo xtask setup` does).\npkg-config said: {error}"
        ),
    };
    let mut build = cc::Build::new();
    build
        .cpp(true)
        // Qt 6's headers need C++17, and a library built with -reduce-relocations (Debian's)
        // wants position-independent code.
        .std("c++17")
        .pic(true)
        .warnings(true)
        .file("qt_shim.cpp");
    for path in &qt.include_paths {
        build.include(path);
    }
    for (name, value) in &qt.defines {
        build.define(name, value.as_deref());
    }
    build.compile("futexscope_qt_shim");
    for path in &qt.link_paths {
        println!("cargo::rustc-link-search=native={}", path.display());
    }
    for lib in &qt.libs {
        println!("cargo::rustc-link-lib={lib}");
    }
}
