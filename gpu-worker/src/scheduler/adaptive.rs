//! SLO-adaptive batching (`--max-queue-delay-us auto --slo-p99-ms S`):
//! the queue delay and the batch size worth waiting for, picked from the
//! execution-time curve the worker measures for its own model
//! (`ServiceTimes`) and the arrival rate it sees, and re-picked every
//! `WINDOW` as the load changes.
//!
//! The plan: the smallest batch whose throughput keeps the instances at
//! most `TARGET_UTILISATION` busy at the current rate. A smaller one would
//! let the queue grow; a larger one only adds waiting. The delay is what
//! gathering that batch takes at the current rate, never more than the
//! room the SLO leaves after the batch's own run and one run ahead of it.
//! A batch reaching the target size goes at once; the delay is only the
//! bound on waiting for it.
//!
//! A rate is a poor guide when arrivals depend on answers (a closed-loop
//! client sends its next request only after its last answer: waiting for a
//! second row then gathers nothing). So there is no waiting unless at least
//! a tenth of the rows arrived while others were queued or running (there
//! was something to batch with), and the plan is also judged by what it
//! did. When most waits run out without the batch filling, waiting stops
//! for a while, and the while doubles each time a retry fares no better
//! (64 windows at most): a closed-loop client is held in one window of 64.
//! When more than 1 % of requests miss the SLO, the room for waiting is
//! halved; it creeps back in windows that keep within it.

use std::time::{Duration, Instant};

/// How often the plan is reconsidered.
pub(crate) const WINDOW: Duration = Duration::from_millis(100);
/// Busy fraction the chosen batch size must keep the instances under.
const TARGET_UTILISATION: f64 = 0.7;
/// Share of the SLO the plan budgets for: the rest absorbs the error of
/// the estimates and the timer (tokio's resolution is 1 ms).
const SLO_MARGIN: f64 = 0.8;
/// Fraction of requests over the SLO that the plan tolerates (its p99).
const LATE_ALLOWED: f64 = 0.01;
/// Longest pause, in windows, of waiting after waits that gathered nothing.
const MAX_PAUSE: u32 = 64;
/// Shorter delays are not worth a timer.
const MIN_DELAY: Duration = Duration::from_micros(50);

/// How batches are dispatched now: at once when `batch` rows are queued,
/// else when the oldest request has waited `delay`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub delay: Duration,
    pub batch: usize,
}

impl Plan {
    /// No waiting: a batch is whatever is queued when an instance is free.
    pub const GREEDY: Plan = Plan {
        delay: Duration::ZERO,
        batch: 1,
    };
}

/// The plan for `rate` rows a second, given `exec` (expected execution of
/// a batch of n rows, `None` before anything is measured). `scale` (0..=1)
/// shrinks the delay after the plan did badly.
pub(crate) fn plan(
    rate: f64,
    exec: impl Fn(usize) -> Option<Duration>,
    max_batch: usize,
    instances: usize,
    slo: Duration,
    scale: f64,
) -> Plan {
    if max_batch <= 1 || rate <= 0.0 {
        return Plan::GREEDY;
    }
    let budget = slo.mul_f64(SLO_MARGIN);
    let sizes = (0..)
        .map(|k| 1usize << k)
        .take_while(|&b| b < max_batch)
        .chain([max_batch]);
    // (size, run time, busy fraction at this rate) for each size that fits.
    let mut fits = Vec::new();
    for b in sizes {
        let Some(t) = exec(b) else {
            return Plan::GREEDY;
        };
        // Its own run plus one ahead of it: a batch this big cannot keep
        // within the SLO even without waiting.
        if 2 * t > budget {
            break;
        }
        let busy = rate * t.as_secs_f64() / (b * instances.max(1)) as f64;
        fits.push((b, t, busy));
        if busy <= TARGET_UTILISATION {
            break;
        }
    }
    // None keeps up with room to spare: the most throughput the curve
    // allows, or as near (within 5 %) with a smaller batch, which fills
    // sooner. Where batching gains nothing, that is no waiting at all.
    let least = fits.iter().map(|f| f.2).fold(f64::INFINITY, f64::min);
    let chosen = match fits.last() {
        Some(&last) if last.2 <= TARGET_UTILISATION => Some(last),
        _ => fits.iter().copied().find(|f| f.2 <= least * 1.05),
    };
    let Some((batch, t, _)) = chosen else {
        return Plan::GREEDY;
    };
    if batch == 1 {
        return Plan::GREEDY;
    }
    // Twice the mean time for the missing rows to arrive, so that the
    // batch fills before the delay runs out more often than not.
    let fill = 2.0 * (batch - 1) as f64 / rate;
    let room = (budget - 2 * t).as_secs_f64() * scale.clamp(0.0, 1.0);
    // Whole microseconds: finer is below any timer's reach.
    let delay = Duration::from_micros((fill.min(room) * 1e6).round() as u64);
    if delay < MIN_DELAY {
        return Plan::GREEDY;
    }
    Plan { delay, batch }
}

/// The actor's side: counts what arrives and how waits ended, and re-plans
/// once a window.
pub(crate) struct Controller {
    slo: Duration,
    window_start: Instant,
    rows: usize,
    /// Of those, rows that arrived while others were queued or running.
    overlapped: usize,
    /// Rows a second, smoothed over windows.
    rate: f64,
    /// Share of the SLO's room the delay may take (halved by late windows).
    scale: f64,
    /// Windows left without waiting, after waits that gathered nothing,
    /// and the length of the next such pause.
    paused: u32,
    backoff: u32,
    /// Dispatches this window that waited for the delay to run out with the
    /// batch short of its target, and those that reached it.
    expired: usize,
    filled: usize,
    pub plan: Plan,
}

/// What the instances saw since the last window: requests answered, and
/// how many of them over the SLO.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Outcomes {
    pub answered: usize,
    pub late: usize,
}

impl Controller {
    pub fn new(slo: Duration, now: Instant) -> Self {
        Controller {
            slo,
            window_start: now,
            rows: 0,
            overlapped: 0,
            rate: 0.0,
            scale: 1.0,
            paused: 0,
            backoff: 1,
            expired: 0,
            filled: 0,
            plan: Plan::GREEDY,
        }
    }

    pub fn slo(&self) -> Duration {
        self.slo
    }

    /// `rows` arrived; `overlapped` when others were queued or running.
    pub fn arrived(&mut self, rows: usize, overlapped: bool) {
        self.rows += rows;
        if overlapped {
            self.overlapped += rows;
        }
    }

    /// A batch left while the plan had it wait: `expired` when the delay
    /// ran out before it reached the target.
    pub fn dispatched(&mut self, expired: bool) {
        if expired {
            self.expired += 1;
        } else {
            self.filled += 1;
        }
    }

    /// Whether a window has passed, so `replan` is due.
    pub fn due(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.window_start) >= WINDOW
    }

    /// Ends the window: updates the rate and the scale from what happened
    /// and makes the new plan. Returns it when it changed.
    pub fn replan(
        &mut self,
        now: Instant,
        outcomes: Outcomes,
        exec: impl Fn(usize) -> Option<Duration>,
        max_batch: usize,
        instances: usize,
    ) -> Option<Plan> {
        let secs = now
            .saturating_duration_since(self.window_start)
            .as_secs_f64();
        if secs <= 0.0 {
            return None;
        }
        let seen = self.rows as f64 / secs;
        // Half the weight to the newest window: a step in load shows in a
        // few hundred milliseconds. After a long idle gap the window is
        // long and the rate falls with it.
        self.rate = if self.rate == 0.0 {
            seen
        } else {
            (self.rate + seen) / 2.0
        };
        let waits = self.expired + self.filled;
        if waits >= 4 && self.expired * 2 > waits {
            self.paused = self.backoff;
            self.backoff = (self.backoff * 2).min(MAX_PAUSE);
        } else if waits >= 4 {
            self.backoff = 1;
        }
        let late = outcomes.answered >= 20
            && outcomes.late as f64 > LATE_ALLOWED * outcomes.answered as f64;
        self.scale = if late {
            self.scale / 2.0
        } else {
            (self.scale + 0.05).min(1.0)
        };
        let alone = self.overlapped * 10 < self.rows;
        self.window_start = now;
        self.rows = 0;
        self.overlapped = 0;
        self.expired = 0;
        self.filled = 0;
        let next = if self.paused > 0 {
            self.paused -= 1;
            Plan::GREEDY
        } else if alone {
            Plan::GREEDY
        } else {
            plan(self.rate, exec, max_batch, instances, self.slo, self.scale)
        };
        (next != self.plan).then(|| {
            self.plan = next;
            next
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const US: Duration = Duration::from_micros(1);
    const MS: Duration = Duration::from_millis(1);

    /// 100 µs a batch plus 25 µs a row: 125 µs at 1, 300 µs at 8.
    fn curve(n: usize) -> Option<Duration> {
        Some(100 * US + 25 * US * n as u32)
    }

    #[test]
    fn nothing_measured_or_no_traffic_waits_for_nothing() {
        assert_eq!(plan(5000.0, |_| None, 8, 1, 10 * MS, 1.0), Plan::GREEDY);
        assert_eq!(plan(0.0, curve, 8, 1, 10 * MS, 1.0), Plan::GREEDY);
        assert_eq!(plan(5000.0, curve, 1, 1, 10 * MS, 1.0), Plan::GREEDY);
    }

    #[test]
    fn a_light_load_runs_each_request_at_once() {
        // 1,000 rows/s on 125 µs runs: 12.5 % busy without batching.
        assert_eq!(plan(1000.0, curve, 8, 1, 10 * MS, 1.0), Plan::GREEDY);
    }

    #[test]
    fn the_smallest_batch_that_keeps_up_is_waited_for() {
        // 10,000 rows/s: batch 1 would be 125 % busy, 2 75 %, 4 50 %.
        let p = plan(10_000.0, curve, 8, 1, 10 * MS, 1.0);
        assert_eq!(p.batch, 4);
        // Twice the time for 3 more rows at 10,000/s.
        assert_eq!(p.delay, 600 * US);
        // Two instances share 16,000/s: batch 2 keeps each 60 % busy.
        assert_eq!(plan(16_000.0, curve, 8, 2, 10 * MS, 1.0).batch, 2);
        // And 10,000/s without batching (62.5 % each).
        assert_eq!(plan(10_000.0, curve, 8, 2, 10 * MS, 1.0), Plan::GREEDY);
    }

    #[test]
    fn the_slo_bounds_the_wait_and_the_batch() {
        // 1.5 ms SLO: 1.2 ms budget; batch 4 leaves 800 µs, fill is 600.
        let p = plan(10_000.0, curve, 8, 1, 1500 * US, 1.0);
        assert_eq!((p.batch, p.delay), (4, 600 * US));
        // 1 ms SLO: 800 µs budget; batch 4 (2 × 200 µs) leaves 400 µs.
        let p = plan(10_000.0, curve, 8, 1, MS, 1.0);
        assert_eq!((p.batch, p.delay), (4, 400 * US));
        // Over capacity at every size that fits the SLO: the largest that
        // fits, 8 (2 × 300 µs ≤ 800 µs; 16 would take 2 × 500), waiting
        // the fill time of 140 µs.
        let p = plan(100_000.0, curve, 32, 1, MS, 1.0);
        assert_eq!((p.batch, p.delay), (8, 140 * US));
        // A model that runs n rows in n times one row's time gains nothing
        // from batching: however heavy the load, no waiting.
        let flat = |n: usize| Some(100 * US * n as u32);
        assert_eq!(plan(100_000.0, flat, 32, 1, 10 * MS, 1.0), Plan::GREEDY);
        // Not even one row fits: no waiting.
        assert_eq!(plan(10_000.0, curve, 8, 1, 200 * US, 1.0), Plan::GREEDY);
    }

    #[test]
    fn a_shrunk_scale_shrinks_the_delay_down_to_none() {
        // Room 1.6 ms − 400 µs = 1.2 ms, a quarter of it: 300 µs.
        let p = plan(10_000.0, curve, 8, 1, 2 * MS, 0.25);
        assert_eq!((p.batch, p.delay), (4, 300 * US));
        assert_eq!(plan(10_000.0, curve, 8, 1, 2 * MS, 0.01), Plan::GREEDY);
    }

    fn window(c: &mut Controller, now: &mut Instant, rows: usize, o: Outcomes) -> Option<Plan> {
        c.arrived(rows, true);
        *now += WINDOW;
        assert!(c.due(*now));
        c.replan(*now, o, curve, 8, 1)
    }

    #[test]
    fn the_rate_is_measured_per_window_and_followed() {
        let mut now = Instant::now();
        let mut c = Controller::new(10 * MS, now);
        assert!(!c.due(now));
        // 1,000 rows in 100 ms = 10,000/s.
        let p = window(&mut c, &mut now, 1000, Outcomes::default()).unwrap();
        assert_eq!(p.batch, 4);
        assert_eq!(window(&mut c, &mut now, 1000, Outcomes::default()), None);
        // The load falls to 100/s: the rate halves toward it, soon below
        // what needs batching.
        for _ in 0..6 {
            window(&mut c, &mut now, 10, Outcomes::default());
        }
        assert_eq!(c.plan, Plan::GREEDY);
    }

    #[test]
    fn arrivals_that_never_overlap_are_not_held() {
        let mut now = Instant::now();
        let mut c = Controller::new(10 * MS, now);
        // 10,000 rows/s, each arriving to an empty queue and idle instances
        // (one closed-loop client): nothing to wait for.
        for _ in 0..1000 {
            c.arrived(1, false);
        }
        now += WINDOW;
        assert_eq!(c.replan(now, Outcomes::default(), curve, 8, 1), None);
        // A tenth overlapping is enough to try.
        for i in 0..1000 {
            c.arrived(1, i % 10 == 0);
        }
        now += WINDOW;
        let p = c.replan(now, Outcomes::default(), curve, 8, 1).unwrap();
        assert_eq!(p.batch, 4);
    }

    #[test]
    fn waits_that_gather_nothing_stop_waiting_and_retries_back_off() {
        let mut now = Instant::now();
        let mut c = Controller::new(10 * MS, now);
        window(&mut c, &mut now, 1000, Outcomes::default());
        assert_eq!(c.plan.batch, 4);
        // Every wait runs out short of the batch (a closed-loop client).
        let mut waiting = 0;
        for _ in 0..40 {
            if c.plan != Plan::GREEDY {
                waiting += 1;
                for _ in 0..10 {
                    c.dispatched(true);
                }
            }
            window(&mut c, &mut now, 1000, Outcomes::default());
        }
        // The first window, then retries after pauses of 1, 2, 4, 8 and
        // 16 windows (the next pause is 32).
        assert_eq!(waiting, 6, "windows spent waiting");
        // Waits that fill end the back-off: the next pause is one window.
        while c.plan == Plan::GREEDY {
            window(&mut c, &mut now, 1000, Outcomes::default());
        }
        for _ in 0..10 {
            c.dispatched(false);
        }
        window(&mut c, &mut now, 1000, Outcomes::default());
        for _ in 0..10 {
            c.dispatched(true);
        }
        window(&mut c, &mut now, 1000, Outcomes::default());
        assert_eq!(c.plan, Plan::GREEDY);
        window(&mut c, &mut now, 1000, Outcomes::default());
        assert_eq!(c.plan.batch, 4, "paused one window only");
    }

    #[test]
    fn requests_over_the_slo_halve_the_room_and_good_windows_restore_it() {
        let mut now = Instant::now();
        // 2 ms SLO, 10,000/s: batch 4, room 1.2 ms × scale, fill 600 µs.
        let mut c = Controller::new(2 * MS, now);
        window(&mut c, &mut now, 1000, Outcomes::default());
        assert_eq!(c.plan.delay, 600 * US);
        let bad = Outcomes {
            answered: 800,
            late: 40,
        };
        window(&mut c, &mut now, 1000, bad);
        assert_eq!(c.plan.delay, 600 * US, "room halved to 600 µs");
        window(&mut c, &mut now, 1000, bad);
        assert_eq!(c.plan.delay, 300 * US);
        let good = Outcomes {
            answered: 800,
            late: 1,
        };
        for _ in 0..20 {
            window(&mut c, &mut now, 1000, good);
        }
        assert_eq!(c.plan.delay, 600 * US, "back to the fill time");
    }
}
