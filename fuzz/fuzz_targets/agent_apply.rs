//! `cargo fuzz run agent_apply`: the body is `switchback::fuzzing::agent::apply`, where the inputs and the
//! invariants checked are described.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchback::fuzzing::agent::apply(data));
