#![no_main]
//! See `tasklet_fuzz::codecs`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| tasklet_fuzz::codecs::check_resp(data));
