//! Placeholder: filled by the postgres work.
