//! Percentile maths for the reports: samples kept in a plain `Vec` and sorted once
//! when summarised (nearest-rank percentiles). A bench run of thousands of viewers for
//! minutes holds a few million `u32`s, which is cheaper than being clever.

use serde::Serialize;

/// Collected samples, in microseconds.
#[derive(Debug, Default, Clone)]
pub struct Samples {
    values: Vec<u32>,
}

impl Samples {
    /// Adds one sample (saturating at about 71 minutes).
    pub fn record_us(&mut self, us: u64) {
        self.values.push(u32::try_from(us).unwrap_or(u32::MAX));
    }

    /// Adds every sample of `other`.
    pub fn extend(&mut self, other: &Samples) {
        self.values.extend_from_slice(&other.values);
    }

    /// How many samples there are.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Takes the samples out, leaving this empty.
    pub fn take(&mut self) -> Samples {
        std::mem::take(self)
    }

    /// p50/p90/p99/max in milliseconds; `None` without samples.
    pub fn summary(&self) -> Option<Percentiles> {
        if self.values.is_empty() {
            return None;
        }
        let mut sorted = self.values.clone();
        sorted.sort_unstable();
        let ms = |us: u32| f64::from(us) / 1000.0;
        Some(Percentiles {
            count: sorted.len() as u64,
            p50_ms: ms(nearest_rank(&sorted, 50.0)),
            p90_ms: ms(nearest_rank(&sorted, 90.0)),
            p99_ms: ms(nearest_rank(&sorted, 99.0)),
            max_ms: ms(sorted[sorted.len() - 1]),
        })
    }
}

/// A latency distribution summary.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Percentiles {
    /// Number of samples.
    pub count: u64,
    /// Median, ms.
    pub p50_ms: f64,
    /// 90th percentile, ms.
    pub p90_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Largest sample, ms.
    pub max_ms: f64,
}

/// Nearest-rank percentile of a sorted, non-empty slice: the smallest value such that
/// at least `p` % of the samples are ≤ it.
pub fn nearest_rank(sorted: &[u32], p: f64) -> u32 {
    debug_assert!(!sorted.is_empty());
    let n = sorted.len();
    let rank = ((p / 100.0) * n as f64).ceil() as usize;
    sorted[rank.clamp(1, n) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_textbook_cases() {
        // The Wikipedia example: 15, 20, 35, 40, 50.
        let v = [15, 20, 35, 40, 50];
        assert_eq!(nearest_rank(&v, 5.0), 15);
        assert_eq!(nearest_rank(&v, 30.0), 20);
        assert_eq!(nearest_rank(&v, 40.0), 20);
        assert_eq!(nearest_rank(&v, 50.0), 35);
        assert_eq!(nearest_rank(&v, 100.0), 50);
        assert_eq!(nearest_rank(&v, 0.0), 15);
        assert_eq!(nearest_rank(&[7], 99.0), 7);
    }

    #[test]
    fn summary_of_one_to_a_thousand() {
        let mut s = Samples::default();
        assert!(s.summary().is_none());
        // Out of order on purpose; values are µs, the summary is ms.
        for v in (1..=1000u64).rev() {
            s.record_us(v * 1000);
        }
        let p = s.summary().unwrap();
        assert_eq!(p.count, 1000);
        assert_eq!(p.p50_ms, 500.0);
        assert_eq!(p.p90_ms, 900.0);
        assert_eq!(p.p99_ms, 990.0);
        assert_eq!(p.max_ms, 1000.0);
    }

    #[test]
    fn saturates_and_merges() {
        let mut a = Samples::default();
        a.record_us(u64::MAX);
        let mut b = Samples::default();
        b.record_us(1000);
        b.extend(&a);
        assert_eq!(b.len(), 2);
        let taken = b.take();
        assert!(b.is_empty());
        assert_eq!(
            taken.summary().unwrap().max_ms,
            f64::from(u32::MAX) / 1000.0
        );
    }
}
