//! Placeholder: filled by the languages work.

fn main() {}
