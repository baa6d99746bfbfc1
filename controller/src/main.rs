//! The `switchback` command line.

fn main() {}
