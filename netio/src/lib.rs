//! # tasklet-netio
//!
//! Cooperative sockets for tasklets, built on the hub's readiness API
//! ([`tasklet_runtime::hub::IoSource`]).
