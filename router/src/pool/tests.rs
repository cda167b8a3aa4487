//! The pool's choices, without a network: a replica's channel connects on
//! first use, and nothing here calls one.

use super::*;

fn replica(id: &str) -> Arc<Replica> {
    // Port 9 (discard) on loopback: never contacted by these tests.
    Arc::new(
        Replica::new(id.into(), "127.0.0.1:9".into(), 1 << 20, None, None).expect("valid address"),
    )
}

fn pool(ids: &[&str]) -> (Pool, Vec<Arc<Replica>>) {
    let replicas: Vec<Arc<Replica>> = ids.iter().map(|id| replica(id)).collect();
    let pool = Pool::default();
    pool.set(replicas.clone());
    (pool, replicas)
}

fn picked(pool: &Pool, exclude: Option<&str>) -> Option<String> {
    pool.pick(exclude).map(|r| r.id.clone())
}

fn eject(r: &Replica) {
    for _ in 0..EJECT_AFTER {
        r.record_transport_failure();
    }
    assert!(r.is_ejected());
}

#[test]
fn in_flight_guard_counts_until_dropped() {
    let r = replica("a");
    assert_eq!(r.outstanding(), 0);
    let first = r.start();
    let second = r.start();
    assert_eq!(r.outstanding(), 2);
    drop(first);
    assert_eq!(r.outstanding(), 1);
    drop(second);
    assert_eq!(r.outstanding(), 0);
}

#[test]
fn picks_the_least_outstanding() {
    let (pool, r) = pool(&["a", "b", "c"]);
    let _a = [r[0].start(), r[0].start()];
    let _c = r[2].start();
    assert_eq!(picked(&pool, None).as_deref(), Some("b"));
    let b = [r[1].start(), r[1].start()];
    // a 2, b 2, c 1.
    assert_eq!(picked(&pool, None).as_deref(), Some("c"));
    drop(b);
    assert_eq!(picked(&pool, None).as_deref(), Some("b"));
}

#[test]
fn picking_does_not_count_a_request() {
    // Only `start` counts: a pick alone leaves the next pick unchanged.
    let (pool, _r) = pool(&["a", "b"]);
    assert_eq!(picked(&pool, None).as_deref(), Some("a"));
    assert_eq!(picked(&pool, None).as_deref(), Some("a"));
}

#[test]
fn ties_go_to_the_first_replica_in_the_list() {
    let (pool, r) = pool(&["b", "a", "c"]);
    assert_eq!(picked(&pool, None).as_deref(), Some("b"));
    let _b = r[0].start();
    let _a = r[1].start();
    assert_eq!(picked(&pool, None).as_deref(), Some("c"));
    let _c = r[2].start();
    assert_eq!(picked(&pool, None).as_deref(), Some("b"));
}

#[test]
fn ejected_after_eject_after_consecutive_failures() {
    let (pool, r) = pool(&["a", "b"]);
    let _b = r[1].start();
    for n in 1..EJECT_AFTER {
        assert!(!r[0].record_transport_failure(), "ejected after {n}");
        assert!(!r[0].is_ejected());
        assert_eq!(picked(&pool, None).as_deref(), Some("a"));
    }
    assert!(
        r[0].record_transport_failure(),
        "not ejected after EJECT_AFTER"
    );
    assert!(r[0].is_ejected());
    assert_eq!(pool.healthy(), 1);
    // Skipped although it has the fewest requests in flight.
    assert_eq!(r[0].outstanding(), 0);
    assert_eq!(r[1].outstanding(), 1);
    for _ in 0..3 {
        assert_eq!(picked(&pool, None).as_deref(), Some("b"));
    }
}

#[test]
fn three_failures_in_a_row_eject_as_documented() {
    // README, Decisions: "ejected after 3 consecutive such failures".
    let r = replica("a");
    assert!(!r.record_transport_failure());
    assert!(!r.record_transport_failure());
    assert!(r.record_transport_failure());
    assert!(r.is_ejected());
}

#[test]
fn ejection_is_reported_once() {
    let r = replica("a");
    let reports: Vec<bool> = (0..EJECT_AFTER + 3)
        .map(|_| r.record_transport_failure())
        .collect();
    let expected: Vec<bool> = (1..=EJECT_AFTER + 3).map(|n| n == EJECT_AFTER).collect();
    assert_eq!(reports, expected);
    assert!(r.is_ejected());
}

#[test]
fn a_success_resets_the_failure_count() {
    let r = replica("a");
    for _ in 1..EJECT_AFTER {
        r.record_transport_failure();
    }
    r.record_success();
    // The count starts again.
    assert_ejected_by_exactly_eject_after_failures(&r);
}

#[test]
fn a_success_does_not_readmit() {
    // Only a health check readmits: a late answer from a request that was
    // in flight when the replica was ejected leaves it ejected.
    let (pool, r) = pool(&["a"]);
    eject(&r[0]);
    r[0].record_success();
    assert!(r[0].is_ejected());
    assert_eq!(picked(&pool, None), None);
}

#[test]
fn readmission_makes_a_replica_pickable_again() {
    let (pool, r) = pool(&["a", "b"]);
    let _b = r[1].start();
    eject(&r[0]);
    assert_eq!(picked(&pool, None).as_deref(), Some("b"));
    r[0].readmit();
    assert!(!r[0].is_ejected());
    assert_eq!(pool.healthy(), 2);
    assert_eq!(picked(&pool, None).as_deref(), Some("a"));
}

#[test]
fn readmission_starts_the_failure_count_afresh() {
    let r = replica("a");
    eject(&r);
    r.readmit();
    assert_ejected_by_exactly_eject_after_failures(&r);
}

/// EJECT_AFTER - 1 failures in a row leave `r` in the pool; the
/// EJECT_AFTER-th ejects it (and says so).
fn assert_ejected_by_exactly_eject_after_failures(r: &Replica) {
    for _ in 1..EJECT_AFTER {
        assert!(!r.record_transport_failure());
        assert!(!r.is_ejected());
    }
    assert!(r.record_transport_failure());
    assert!(r.is_ejected());
}

#[test]
fn all_ejected_picks_nothing() {
    let (pool, r) = pool(&["a", "b"]);
    r.iter().for_each(|r| eject(r));
    assert_eq!(pool.healthy(), 0);
    // No fallback to an ejected replica, with or without an exclusion.
    assert_eq!(picked(&pool, None), None);
    assert_eq!(picked(&pool, Some("a")), None);
    r[1].readmit();
    assert_eq!(picked(&pool, None).as_deref(), Some("b"));
}

#[test]
fn empty_pool_picks_nothing() {
    let pool = Pool::default();
    assert_eq!(picked(&pool, None), None);
    assert_eq!(pool.healthy(), 0);
}

#[test]
fn retry_excludes_the_replica_that_failed() {
    let (pool, r) = pool(&["a", "b", "c"]);
    let _c = r[2].start();
    // a is the least busy, but it just failed: the retry goes to b.
    assert_eq!(picked(&pool, None).as_deref(), Some("a"));
    assert_eq!(picked(&pool, Some("a")).as_deref(), Some("b"));
    let _b = [r[1].start(), r[1].start()];
    assert_eq!(picked(&pool, Some("a")).as_deref(), Some("c"));
    // An id that is not in the pool excludes nothing.
    assert_eq!(picked(&pool, Some("zz")).as_deref(), Some("a"));
}

#[test]
fn retry_with_no_other_healthy_replica_picks_nothing() {
    let (pool, r) = pool(&["a", "b"]);
    eject(&r[1]);
    assert_eq!(picked(&pool, Some("a")), None);
    let (single, _) = self::pool(&["a"]);
    assert_eq!(picked(&single, Some("a")), None);
}

#[test]
fn set_replaces_the_replicas() {
    let (pool, _) = pool(&["a", "b"]);
    pool.set(vec![replica("c")]);
    let ids: Vec<String> = pool.replicas().iter().map(|r| r.id.clone()).collect();
    assert_eq!(ids, ["c"]);
    assert_eq!(picked(&pool, None).as_deref(), Some("c"));
}
