//! Placeholder: filled by the postgres work.

fn main() {}
