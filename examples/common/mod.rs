//! Code shared by the examples (`mod common;` in each example that uses it),
//! as `tests/common` is for the integration tests.

// Each example uses a different subset of these helpers.
#![allow(dead_code)]

pub mod args;
pub mod workers;
