//! `cargo fuzz run agent_report`: the body is `switchback::fuzzing::agent::report`, where the inputs and the
//! invariants checked are described.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchback::fuzzing::agent::report(data));
