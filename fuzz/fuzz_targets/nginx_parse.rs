//! `cargo fuzz run nginx_parse`: the body is `switchback::fuzzing::nginx::parse`, where the inputs and the
//! invariants checked are described.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchback::fuzzing::nginx::parse(data));
