//! Criterion benchmarks of the pure parts (being written).
fn main() {}
