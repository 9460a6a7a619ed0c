//! Placeholder: filled by the languages work.
