//! Replays the fuzz corpus (`fuzz/corpus/<target>/`, committed) and the
//! inputs of past fuzz findings (`fuzz/regressions/<target>/`) through the
//! same checks the cargo-fuzz targets run (`fuzz/src/`, included here with
//! `#[path]`), on stable Rust and without libFuzzer: every input the fuzzer
//! found interesting stays a test. `scripts/fuzz.sh` runs the fuzzer itself.

#[allow(dead_code)]
#[path = "../fuzz/src/lib.rs"]
mod checks;

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// Runs `check` on every file of the target's corpus and regressions;
/// returns how many inputs ran.
fn replay(target: &str, check: fn(&[u8])) -> usize {
    let mut n = 0;
    for dir in ["corpus", "regressions"] {
        let dir = root().join(dir).join(target);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut files: Vec<PathBuf> = entries.map(|e| e.unwrap().path()).collect();
        files.sort();
        for f in files {
            let data = std::fs::read(&f).unwrap();
            let name = f.file_name().unwrap().to_string_lossy().into_owned();
            if let Err(p) = std::panic::catch_unwind(|| check(&data)) {
                panic!(
                    "{target}: {} failed: {}",
                    shown(&f),
                    message(p.as_ref(), &name)
                );
            }
            n += 1;
        }
    }
    n
}

fn shown(f: &Path) -> String {
    f.strip_prefix(env!("CARGO_MANIFEST_DIR"))
        .unwrap_or(f)
        .display()
        .to_string()
}

fn message(p: &(dyn std::any::Any + Send), name: &str) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| format!("non-string panic on {name}"))
}

#[test]
fn corpus_lines_codec() {
    assert!(replay("lines_codec", checks::codecs::check_lines) > 0);
}

#[test]
fn corpus_length_delimited_codec() {
    assert!(
        replay(
            "length_delimited_codec",
            checks::codecs::check_length_delimited
        ) > 0
    );
}

#[test]
fn corpus_resp_codec() {
    assert!(replay("resp_codec", checks::codecs::check_resp) > 0);
}

#[test]
fn corpus_http_framing() {
    assert!(replay("http_framing", checks::http::check) > 0);
}

#[test]
fn corpus_scheduler() {
    assert!(replay("scheduler", checks::scheduler::check) > 0);
}
