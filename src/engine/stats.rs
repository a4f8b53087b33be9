//! Run-time statistics of a job, computed from its recorded task durations.

/// How many recent successful durations are kept per job.
pub(super) const KEPT: u32 = 1024;

/// Chronos' histogram keys, computed exactly from the kept durations (milliseconds).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Histogram {
    pub p75: f64,
    pub p95: f64,
    pub p98: f64,
    pub p99: f64,
    pub p999: f64,
    pub median: f64,
    /// The arithmetic mean (Chronos printed the median under this key; we don't).
    pub mean: f64,
    pub count: usize,
    pub min: f64,
    pub max: f64,
    /// The sample standard deviation, as Codahale's snapshots compute it (0 below two values).
    pub stddev: f64,
}

impl Histogram {
    pub fn of(values: impl Iterator<Item = f64>) -> Histogram {
        let mut sorted: Vec<f64> = values.filter(|v| v.is_finite()).collect();
        if sorted.is_empty() {
            return Histogram::default();
        }
        sorted.sort_by(f64::total_cmp);
        let q = |quantile: f64| quantile_of(&sorted, quantile);
        let n = sorted.len() as f64;
        let mean = sorted.iter().sum::<f64>() / n;
        let stddev = if sorted.len() < 2 {
            0.0
        } else {
            (sorted.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
        };
        Histogram {
            p75: q(0.75),
            p95: q(0.95),
            p98: q(0.98),
            p99: q(0.99),
            p999: q(0.999),
            median: q(0.5),
            mean,
            count: sorted.len(),
            min: sorted[0],
            max: sorted[sorted.len() - 1],
            stddev,
        }
    }

    /// The value for one of Chronos' keys (`99thPercentile`, …, `median`, `mean`, `count`).
    pub fn get(&self, key: &str) -> Option<f64> {
        Some(match key {
            "75thPercentile" => self.p75,
            "95thPercentile" => self.p95,
            "98thPercentile" => self.p98,
            "99thPercentile" => self.p99,
            "median" => self.median,
            "mean" => self.mean,
            "count" => self.count as f64,
            _ => return None,
        })
    }
}

/// Linear interpolation between closest ranks, as Codahale's snapshots do (position `q·(n+1)`).
fn quantile_of(sorted: &[f64], quantile: f64) -> f64 {
    let n = sorted.len();
    let pos = quantile * (n as f64 + 1.0);
    if pos < 1.0 {
        return sorted[0];
    }
    if pos >= n as f64 {
        return sorted[n - 1];
    }
    let lower = sorted[pos as usize - 1];
    let upper = sorted[pos as usize];
    lower + (pos - pos.floor()) * (upper - lower)
}

#[cfg(test)]
mod tests {
    use super::Histogram;

    #[test]
    fn histogram_table() {
        let cases: &[(&[f64], f64, f64, usize)] = &[
            (&[], 0.0, 0.0, 0),
            (&[5.0], 5.0, 5.0, 1),
            (&[1.0, 2.0, 3.0, 4.0], 2.5, 2.5, 4),
            (&[10.0, 1.0, 1.0], 1.0, 4.0, 3),
        ];
        for (values, median, mean, count) in cases {
            let h = Histogram::of(values.iter().copied());
            assert_eq!(
                (h.median, h.mean, h.count),
                (*median, *mean, *count),
                "{values:?}"
            );
        }
    }

    #[test]
    fn percentiles_are_ordered_and_bounded() {
        let h = Histogram::of((1..=100).map(f64::from));
        assert!(h.median <= h.p75 && h.p75 <= h.p95 && h.p95 <= h.p98 && h.p98 <= h.p99);
        assert!(h.p99 <= h.p999 && h.p999 <= 100.0 && h.median >= 50.0);
        // Sample standard deviation of 1..=100: sqrt(100·101/12).
        assert!(
            (h.stddev - (100.0f64 * 101.0 / 12.0).sqrt()).abs() < 1e-9,
            "{}",
            h.stddev
        );
        assert_eq!(Histogram::of([7.0].into_iter()).stddev, 0.0);
        assert_eq!(h.get("99thPercentile"), Some(h.p99));
        assert_eq!(h.get("bogus"), None);
    }
}

/// A Prometheus-style histogram over fixed bucket bounds: recording is a short scan of a fixed
/// array, and it never grows.
#[derive(Debug, Clone, PartialEq)]
pub struct Buckets {
    /// Upper bounds, ascending; an implicit `+Inf` bucket follows.
    pub bounds: &'static [f64],
    /// Observations per bucket (not cumulative), one more than `bounds` for `+Inf`.
    pub counts: Vec<u64>,
    pub sum: f64,
    pub count: u64,
}

/// Seconds from a task's instant to its launch: a healthy scheduler launches within milliseconds.
pub(super) const LAG_BOUNDS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// Seconds one store commit takes: SQLite takes about a millisecond, PostgreSQL a few.
pub(super) const COMMIT_BOUNDS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

impl Buckets {
    pub fn new(bounds: &'static [f64]) -> Buckets {
        Buckets {
            bounds,
            counts: vec![0; bounds.len() + 1],
            sum: 0.0,
            count: 0,
        }
    }

    /// Counts one observation, in the first bucket whose bound is at least `value`.
    pub fn observe(&mut self, value: f64) {
        let value = if value.is_finite() { value.max(0.0) } else { 0.0 };
        let bucket = self.bounds.partition_point(|bound| *bound < value);
        self.counts[bucket] += 1;
        self.sum += value;
        self.count += 1;
    }

    /// `(upper bound, observations at or below it)`, the `+Inf` bucket last as `f64::INFINITY`.
    pub fn cumulative(&self) -> impl Iterator<Item = (f64, u64)> + '_ {
        let bounds = self.bounds.iter().copied().chain(std::iter::once(f64::INFINITY));
        bounds.zip(self.counts.iter().scan(0, |total, n| {
            *total += n;
            Some(*total)
        }))
    }
}

#[cfg(test)]
mod bucket_tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_that_holds_them_and_add_up() {
        let mut b = Buckets::new(&[0.1, 1.0]);
        for value in [0.05, 0.1, 0.5, 1.0, 7.0, f64::NAN, -3.0] {
            b.observe(value);
        }
        // NaN and negatives count as 0: 0.05, 0.1, NaN, -3 in the first; 0.5, 1.0; 7.0.
        let cumulative: Vec<(f64, u64)> = b.cumulative().collect();
        assert_eq!(cumulative, [(0.1, 4), (1.0, 6), (f64::INFINITY, 7)]);
        assert_eq!(b.count, 7);
        assert!((b.sum - 8.65).abs() < 1e-9, "{}", b.sum);
    }
}
