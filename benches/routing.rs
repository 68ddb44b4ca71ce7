//! Placeholder; the benchmark harness fills this in.
fn main() {}
