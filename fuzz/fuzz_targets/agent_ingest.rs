//! `cargo fuzz run agent_ingest`: the body is `switchback::fuzzing::agent::ingest`, where the inputs and the
//! invariants checked are described.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchback::fuzzing::agent::ingest(data));
