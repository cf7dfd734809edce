//! Build script of the facade crate.

fn main() {
    // With the `hook` feature, the integration tests check that a shared
    // library (zlib) reaches the hooks: that needs the test executables to
    // export their symbols (see docs/hooks.md, "Linking").
    if std::env::var_os("CARGO_FEATURE_HOOK").is_some() {
        println!("cargo:rustc-link-arg-tests=-Wl,--export-dynamic");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
