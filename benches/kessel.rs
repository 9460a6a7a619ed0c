//! Placeholder: filled by the kessel work.

fn main() {}
