//! Replays synthetic canary traffic through both analysis methods and prints the comparison table
//! (time to detect, requests harmed before the decision, false rollbacks), then the wall time the
//! replay took. The figures are simulated seconds and counts, deterministic for the seed; only the
//! last line depends on the machine.
//!
//! `cargo bench -p switchback --bench analysis` (the CLI prints the same table as
//! `switchback bench analysis`). Set `SWITCHBACK_REPLAY_SEED` to replay another seed.

use std::time::Instant;

/// The seed the committed figures in `docs/analysis.md` come from.
const DEFAULT_SEED: u64 = 20_240_404;

fn main() {
    let seed = std::env::var("SWITCHBACK_REPLAY_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SEED);
    let started = Instant::now();
    let table = switchback::analysis::replay_table(seed);
    let took = started.elapsed();
    print!("{table}");
    println!("\nreplay wall time: {:.2} s", took.as_secs_f64());
}
