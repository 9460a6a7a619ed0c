//! Placeholder: filled by the kessel work.
