//! `cargo fuzz run webhook`: the body is `switchback::fuzzing::webhook::webhook`, where the inputs and the
//! invariants checked are described.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchback::fuzzing::webhook::webhook(data));
