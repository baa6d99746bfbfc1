//! Render + validate figures on a large generated config (filled in with the validate gates).

fn main() {}
