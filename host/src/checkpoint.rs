//! Low watermarks: the basis of every checkpoint.
//!
//! Items are numbered in the order a source sends them. The delivery engine
//! acknowledges items as their outputs are delivered, in any order; a source
//! may only checkpoint up to the first item that is not acknowledged. A
//! [`Watermark`] turns acknowledgements in any order into that position.

use std::collections::BTreeSet;

/// The lowest sequence number not yet acknowledged, over a sequence that
/// starts at a given number.
#[derive(Debug, Clone)]
pub struct Watermark {
    /// Every number below this is acknowledged.
    next: u64,
    /// Acknowledged numbers above `next`.
    ahead: BTreeSet<u64>,
}

impl Watermark {
    /// A watermark over numbers starting at `first`.
    pub fn starting_at(first: u64) -> Watermark {
        Watermark {
            next: first,
            ahead: BTreeSet::new(),
        }
    }

    /// Records that `seq` is done; returns whether the watermark moved.
    pub fn ack(&mut self, seq: u64) -> bool {
        if seq < self.next {
            return false;
        }
        if seq != self.next {
            self.ahead.insert(seq);
            return false;
        }
        self.next += 1;
        while self.ahead.remove(&self.next) {
            self.next += 1;
        }
        true
    }

    /// The first number not acknowledged: everything below it is done.
    pub fn next(&self) -> u64 {
        self.next
    }

    /// How many numbers above the watermark are acknowledged (waiting for a
    /// gap to close).
    pub fn pending(&self) -> usize {
        self.ahead.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moves_only_over_contiguous_acknowledgements() {
        let mut mark = Watermark::starting_at(10);
        assert!(!mark.ack(12));
        assert!(!mark.ack(11));
        assert_eq!(mark.next(), 10);
        assert!(mark.ack(10));
        assert_eq!(mark.next(), 13);
        assert_eq!(mark.pending(), 0);
        assert!(!mark.ack(5), "an old number changes nothing");
        assert_eq!(mark.next(), 13);
    }
}
