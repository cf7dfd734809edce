//! Build script of tasklet-runtime: notices a ThreadSanitizer build.

fn main() {
    // `-Zsanitizer=thread` (nightly) makes rustc report `sanitize="thread"`,
    // which cargo passes on here: the runtime then announces every tasklet
    // switch to TSan (src/tsan.rs). No other build is affected.
    println!("cargo::rustc-check-cfg=cfg(tasklet_tsan)");
    let sanitizers = std::env::var("CARGO_CFG_SANITIZE").unwrap_or_default();
    if sanitizers.split(',').any(|s| s == "thread") {
        println!("cargo::rustc-cfg=tasklet_tsan");
    }
    println!("cargo::rerun-if-changed=build.rs");
}
