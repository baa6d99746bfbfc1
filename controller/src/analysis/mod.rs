//! Canary analysis: health signals of the canary and baseline pods → a verdict (DESIGN §3.5). Pure:
//! counters in, verdict out; no I/O, no clock (time is passed in).

pub mod verdict;

pub use verdict::{Evidence, Verdict};
