#![no_main]
//! See `tasklet_fuzz::http`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| tasklet_fuzz::http::check(data));
