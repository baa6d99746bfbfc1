//! `cargo fuzz run render`: the body is `switchback::fuzzing::render::render`, where the inputs and the
//! invariants checked are described.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchback::fuzzing::render::render(data));
