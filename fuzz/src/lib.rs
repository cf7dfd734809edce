//! The properties the fuzz targets check, one module per target. Each
//! `check` function takes the raw fuzz input and panics when a property
//! fails; `fuzz_targets/*.rs` are one-line libFuzzer wrappers around them,
//! and `tests/fuzz_corpus.rs` in the main workspace includes this file with
//! `#[path]` and replays the committed corpus (`fuzz/corpus/<target>/`) plus
//! the regression inputs of past findings through the same functions on
//! stable Rust, so every input the fuzzer found interesting stays a test.

pub mod codecs;
pub mod http;
pub mod input;
pub mod scheduler;
