#![no_main]
//! The scheduler against its model: see `tasklet_fuzz::scheduler`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| tasklet_fuzz::scheduler::check(data));
