//! What the worker has learnt about its own model's speed: a recent mean
//! execution time per batch size, and when each instance's running batch
//! is expected to end. From these it predicts how long a new request would
//! wait, so that one whose deadline cannot be met is refused at arrival
//! (cheaply, while it can still go elsewhere) instead of taking a queue
//! slot and expiring there.
//!
//! Lock-free on purpose: instance threads record after each batch and
//! every caller reads on arrival; a lost update between two racing writers
//! only delays the mean by one sample.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Weight of the newest sample in the running mean (1/8: a load change
/// shows within a few dozen batches, one slow batch moves it little).
const NEW_SAMPLE_SHIFT: u32 = 3;

pub(crate) struct ServiceTimes {
    /// Mean execution in ns per batch-size bucket (bucket k holds sizes in
    /// (2^(k-1), 2^k]); 0 = never seen.
    mean_ns: Vec<AtomicU64>,
    /// Per instance: ns since `epoch` at which its batch should end; 0 = idle.
    busy_until: Vec<AtomicU64>,
    epoch: Instant,
}

/// A prediction, kept for the refusal's message.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Wait {
    /// Until the request's batch would be done.
    pub total: Duration,
    pub rows_ahead: usize,
    pub rows_per_s: f64,
}

fn bucket(rows: usize) -> usize {
    rows.max(1).next_power_of_two().trailing_zeros() as usize
}

impl ServiceTimes {
    pub fn new(max_batch: usize, instances: usize) -> Self {
        ServiceTimes {
            mean_ns: (0..=bucket(max_batch.max(1)))
                .map(|_| AtomicU64::new(0))
                .collect(),
            busy_until: (0..instances).map(|_| AtomicU64::new(0)).collect(),
            epoch: Instant::now(),
        }
    }

    fn ns_since_epoch(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.epoch).as_nanos() as u64
    }

    /// Instance `i` starts a batch of `rows` now.
    pub fn started(&self, i: usize, rows: usize, now: Instant) {
        let end = self.ns_since_epoch(now) + self.estimate_ns(rows).unwrap_or(0);
        if let Some(b) = self.busy_until.get(i) {
            b.store(end.max(1), Ordering::Relaxed);
        }
    }

    /// Instance `i` is free.
    pub fn idle(&self, i: usize) {
        if let Some(b) = self.busy_until.get(i) {
            b.store(0, Ordering::Relaxed);
        }
    }

    /// Instance `i` ran `rows` in `took`, and is free.
    pub fn finished(&self, i: usize, rows: usize, took: Duration) {
        self.idle(i);
        let Some(slot) = self.mean_ns.get(bucket(rows)) else {
            return;
        };
        // Sizes share a bucket: scale to the bucket's top so the mean is of
        // one size (per-row cost is near flat within a factor of two).
        let top = 1usize << bucket(rows);
        let ns = (took.as_nanos() as u64).saturating_mul(top as u64) / rows.max(1) as u64;
        let old = slot.load(Ordering::Relaxed);
        let new = if old == 0 {
            ns
        } else {
            old - (old >> NEW_SAMPLE_SHIFT) + (ns >> NEW_SAMPLE_SHIFT)
        };
        slot.store(new.max(1), Ordering::Relaxed);
    }

    /// Expected execution of a batch of `rows` (`estimate_ns`).
    pub fn estimate(&self, rows: usize) -> Option<Duration> {
        self.estimate_ns(rows).map(Duration::from_nanos)
    }

    /// Expected execution of a batch of `rows`, from its bucket, else from
    /// the nearest smaller bucket seen, per row (an over-estimate for a
    /// larger batch, whose per-row cost is lower), else the nearest larger.
    fn estimate_ns(&self, rows: usize) -> Option<u64> {
        let k = bucket(rows).min(self.mean_ns.len() - 1);
        let per_row_at = |j: usize| {
            let v = self.mean_ns[j].load(Ordering::Relaxed);
            (v > 0).then(|| v as f64 / (1u64 << j) as f64)
        };
        let per_row = (0..=k)
            .rev()
            .find_map(per_row_at)
            .or_else(|| (k + 1..self.mean_ns.len()).find_map(per_row_at))?;
        Some((per_row * rows.max(1) as f64) as u64)
    }

    /// How long a request of `rows`, arriving `now` behind `rows_ahead`
    /// queued rows, would take to be answered: what the busy instances have
    /// left plus the queue's work, shared among the instances, then its own
    /// batch. Batches form from what is queued, up to `max_batch` rows.
    /// `None` when nothing is ahead (the request runs at once, whatever its
    /// deadline) or nothing has been measured yet.
    pub fn predict(
        &self,
        rows: usize,
        rows_ahead: usize,
        max_batch: usize,
        now: Instant,
    ) -> Option<Wait> {
        let t = self.ns_since_epoch(now);
        let (mut left_ns, mut busy) = (0u64, 0usize);
        for b in &self.busy_until {
            let end = b.load(Ordering::Relaxed);
            if end > 0 {
                busy += 1;
                left_ns += end.saturating_sub(t);
            }
        }
        let instances = self.busy_until.len().max(1);
        if rows_ahead == 0 && busy < instances {
            return None;
        }
        let batch = (rows_ahead + rows).clamp(1, max_batch.max(1));
        let per_batch = self.estimate_ns(batch)? as f64;
        let queue_ns = rows_ahead as f64 / batch as f64 * per_batch;
        let wait = (left_ns as f64 + queue_ns) / instances as f64;
        Some(Wait {
            total: Duration::from_nanos((wait + per_batch) as u64),
            rows_ahead,
            rows_per_s: batch as f64 * 1e9 / per_batch * instances as f64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn nothing_measured_or_nothing_ahead_predicts_nothing() {
        let s = ServiceTimes::new(32, 1);
        let now = Instant::now();
        assert_eq!(s.predict(1, 100, 32, now), None, "no measurement yet");
        s.finished(0, 32, 4 * MS);
        assert_eq!(s.predict(1, 0, 32, now), None, "idle, empty queue");
        assert!(s.predict(1, 100, 32, now).is_some());
    }

    #[test]
    fn queued_work_is_shared_by_the_instances() {
        let now = Instant::now();
        let one = ServiceTimes::new(32, 1);
        let two = ServiceTimes::new(32, 2);
        for s in [&one, &two] {
            s.finished(0, 32, 4 * MS);
        }
        // 320 rows ahead = 10 batches of 4 ms, then its own batch.
        let w = one.predict(1, 320, 32, now).unwrap();
        assert_eq!(w.total, 44 * MS);
        assert_eq!(w.rows_ahead, 320);
        assert!((w.rows_per_s - 8000.0).abs() < 1e-6, "{}", w.rows_per_s);
        assert_eq!(two.predict(1, 320, 32, now).unwrap().total, 24 * MS);
    }

    #[test]
    fn a_busy_instance_counts_what_its_batch_has_left() {
        let s = ServiceTimes::new(32, 1);
        s.finished(0, 32, 4 * MS);
        let now = Instant::now();
        s.started(0, 32, now);
        // Empty queue, but the only instance is busy for 4 ms more.
        assert_eq!(s.predict(1, 0, 32, now).unwrap().total, 4 * MS + MS / 8);
        s.finished(0, 32, 4 * MS);
        assert_eq!(s.predict(1, 0, 32, now), None);
    }

    #[test]
    fn unseen_sizes_are_estimated_per_row_from_the_nearest_seen() {
        let s = ServiceTimes::new(64, 1);
        s.finished(0, 8, 2 * MS); // 250 µs a row at 8
        let now = Instant::now();
        // A 64-row batch unseen: 64 × 250 µs (an over-estimate).
        assert_eq!(s.predict(1, 64, 64, now).unwrap().total, 32 * MS);
        // A 1-row batch unseen, smaller than anything seen: per row at 8.
        assert_eq!(s.predict(1, 1, 1, now).unwrap().total, MS / 2);
    }

    #[test]
    fn the_mean_follows_a_change_of_speed() {
        let s = ServiceTimes::new(32, 1);
        s.finished(0, 32, 4 * MS);
        for _ in 0..64 {
            s.finished(0, 32, 8 * MS);
        }
        let w = s.predict(1, 32, 32, Instant::now()).unwrap();
        assert!(w.total > 15 * MS && w.total <= 16 * MS, "{:?}", w.total);
    }
}
