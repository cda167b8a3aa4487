//! Route choice, mirroring and forwarding decisions. No test needs a
//! worker: forwarding is exercised only where it fails before sending
//! (no replica, all ejected, deadline passed), except one test whose
//! replicas are closed loopback ports.

use super::*;
use crate::pool::EJECT_AFTER;
use registry::ServedDeployment;

const EP: &str = "digits";

fn endpoint(
    deployments: &[&str],
    split: &[(&str, u32)],
    mirror: Option<(&str, u32)>,
) -> EndpointRoute {
    EndpointRoute {
        deployments: deployments.iter().map(|d| d.to_string()).collect(),
        weights: Weighted::new(split.iter().map(|(n, w)| (n.to_string(), *w)).collect()),
        mirror: mirror.map(|(d, p)| (d.to_string(), p)),
    }
}

fn router_with(route: EndpointRoute) -> Arc<Router> {
    let router = Arc::new(Router::new(RouterConfig::default()));
    router.set_routes(HashMap::from([(EP.to_string(), route)]));
    router
}

fn choices(router: &Router, n: usize) -> Vec<String> {
    (0..n)
        .map(|_| router.choose(EP, None).expect("a deployment"))
        .collect()
}

fn count(picks: &[String], name: &str) -> usize {
    picks.iter().filter(|p| *p == name).count()
}

fn worker(id: &str, address: &str, deployments: &[&str]) -> WorkerRecord {
    WorkerRecord {
        tls: false,
        id: id.into(),
        address: address.into(),
        deployments: deployments
            .iter()
            .map(|d| ServedDeployment {
                endpoint: EP.into(),
                deployment: d.to_string(),
                capacity: 1,
            })
            .collect(),
    }
}

fn eject(r: &Replica) {
    while !r.is_ejected() {
        r.record_transport_failure();
    }
}

// --- which deployment ---

#[test]
fn choice_follows_the_weights_exactly() {
    let router = router_with(endpoint(
        &["blue", "green"],
        &[("blue", 90), ("green", 10)],
        None,
    ));
    let picks = choices(&router, 100);
    assert_eq!((count(&picks, "blue"), count(&picks, "green")), (90, 10));
    assert!(
        picks.windows(2).all(|p| p != ["green", "green"]),
        "{picks:?}"
    );

    let router = router_with(endpoint(
        &["a", "b", "c"],
        &[("a", 33), ("b", 33), ("c", 34)],
        None,
    ));
    let picks = choices(&router, 100);
    assert_eq!(
        (count(&picks, "a"), count(&picks, "b"), count(&picks, "c")),
        (33, 33, 34)
    );
}

#[test]
fn a_weight_change_applies_to_the_next_pick() {
    let router = router_with(endpoint(
        &["blue", "green"],
        &[("blue", 100), ("green", 0)],
        None,
    ));
    assert_eq!(choices(&router, 5), ["blue"; 5]);
    router.set_routes(HashMap::from([(
        EP.to_string(),
        endpoint(&["blue", "green"], &[("blue", 0), ("green", 100)], None),
    )]));
    assert_eq!(router.choose(EP, None).unwrap(), "green");

    // Mid-rotation: 90/10 turned into 10/90 is exact from the next pick on.
    router.set_routes(HashMap::from([(
        EP.to_string(),
        endpoint(&["blue", "green"], &[("blue", 90), ("green", 10)], None),
    )]));
    choices(&router, 37);
    router.set_routes(HashMap::from([(
        EP.to_string(),
        endpoint(&["blue", "green"], &[("blue", 10), ("green", 90)], None),
    )]));
    let picks = choices(&router, 100);
    assert_eq!(picks[0], "green");
    assert_eq!((count(&picks, "blue"), count(&picks, "green")), (10, 90));
}

#[test]
fn an_unchanged_split_keeps_the_rotation_position() {
    let split = || endpoint(&["blue", "green"], &[("blue", 50), ("green", 50)], None);
    let router = router_with(split());
    assert_eq!(router.choose(EP, None).unwrap(), "blue");
    // The control plane reloads (another endpoint changed): same split,
    // so the rotation goes on instead of restarting at blue.
    router.set_routes(HashMap::from([(EP.to_string(), split())]));
    assert_eq!(router.choose(EP, None).unwrap(), "green");
    // Over many reloads, one after each pick, the split stays exact.
    let mut picks = Vec::new();
    for _ in 0..100 {
        picks.push(router.choose(EP, None).unwrap());
        router.set_routes(HashMap::from([(EP.to_string(), split())]));
    }
    assert_eq!(count(&picks, "green"), 50);
}

#[test]
fn one_endpoints_route_changes_alone() {
    let router = router_with(endpoint(&["blue"], &[("blue", 100)], None));
    let other = || endpoint(&["a", "b"], &[("a", 50), ("b", 50)], None);
    router.set_route("other", Some(other()));
    assert_eq!(router.choose("other", None).unwrap(), "a");
    // The same split again (a change to the endpoint's description, say)
    // keeps the rotation; a new split takes effect at the next pick.
    router.set_route("other", Some(other()));
    assert_eq!(router.choose("other", None).unwrap(), "b");
    router.set_route("other", Some(endpoint(&["a", "b"], &[("b", 100)], None)));
    assert_eq!(router.choose("other", None).unwrap(), "b");
    assert_eq!(router.choose(EP, None).unwrap(), "blue");
    router.set_route("other", None);
    assert_eq!(
        router.choose("other", None).unwrap_err().code(),
        Code::NotFound
    );
    assert_eq!(router.choose(EP, None).unwrap(), "blue");
}

#[test]
fn a_pin_bypasses_the_weights() {
    // green takes no traffic, but can be pinned (a canary under test).
    let router = router_with(endpoint(
        &["blue", "green"],
        &[("blue", 100), ("green", 0)],
        None,
    ));
    for _ in 0..10 {
        assert_eq!(router.choose(EP, Some("green")).unwrap(), "green");
    }
    assert_eq!(router.choose(EP, None).unwrap(), "blue");
}

#[test]
fn a_pin_does_not_advance_the_rotation() {
    let router = router_with(endpoint(
        &["blue", "green"],
        &[("blue", 50), ("green", 50)],
        None,
    ));
    assert_eq!(router.choose(EP, None).unwrap(), "blue");
    for _ in 0..3 {
        assert_eq!(router.choose(EP, Some("blue")).unwrap(), "blue");
    }
    assert_eq!(router.choose(EP, None).unwrap(), "green");
}

#[test]
fn an_unknown_pin_is_not_found() {
    let router = router_with(endpoint(&["blue"], &[("blue", 100)], None));
    let e = router.choose(EP, Some("purple")).unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert_eq!(e.message(), "endpoint 'digits' has no deployment 'purple'");
    // Also where nothing takes traffic: the pin is checked, not the split.
    let router = router_with(endpoint(&["blue"], &[], None));
    assert_eq!(
        router.choose(EP, Some("purple")).unwrap_err().code(),
        Code::NotFound
    );
}

#[test]
fn an_unknown_endpoint_is_not_found() {
    let router = router_with(endpoint(&["blue"], &[("blue", 100)], None));
    let e = router.choose("other", None).unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert_eq!(e.message(), "unknown endpoint 'other'");
    assert_eq!(
        router.choose("other", Some("blue")).unwrap_err().code(),
        Code::NotFound
    );
}

#[test]
fn no_deployment_taking_traffic_is_unavailable() {
    let router = router_with(endpoint(&["blue"], &[("blue", 0)], None));
    let e = router.choose(EP, None).unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    // A pin still works.
    assert_eq!(router.choose(EP, Some("blue")).unwrap(), "blue");
}

// --- mirror ---

#[test]
fn the_mirror_copies_exactly_n_of_each_hundred() {
    for percent in [0, 1, 10, 33, 50, 99, 100] {
        let router = router_with(endpoint(
            &["blue", "shadow"],
            &[("blue", 100)],
            Some(("shadow", percent)),
        ));
        let route = router.route(EP).unwrap();
        let copies: Vec<Option<String>> =
            (0..300).map(|_| router.mirror_for(&route, None)).collect();
        assert!(copies.iter().flatten().all(|d| d == "shadow"));
        for window in copies.windows(100) {
            let n = window.iter().flatten().count();
            assert_eq!(n, percent as usize, "{percent}%");
        }
        // Precisely: the first N of each 100 (copies come in one run, not
        // spread out as the weights are).
        for (i, c) in copies.iter().enumerate() {
            assert_eq!(
                c.is_some(),
                i % 100 < percent as usize,
                "{percent}%, request {i}"
            );
        }
    }
}

#[test]
fn pinned_requests_are_never_mirrored() {
    let router = router_with(endpoint(
        &["blue", "shadow"],
        &[("blue", 100)],
        Some(("shadow", 100)),
    ));
    let route = router.route(EP).unwrap();
    for pin in ["blue", "shadow"] {
        for _ in 0..100 {
            assert_eq!(router.mirror_for(&route, Some(pin)), None);
        }
    }
    assert_eq!(router.mirror_for(&route, None).as_deref(), Some("shadow"));
}

#[test]
fn pinned_requests_take_no_mirror_number() {
    // N of each 100 unpinned requests are copied, however many pinned
    // requests come between them.
    let router = router_with(endpoint(
        &["blue", "shadow"],
        &[("blue", 100)],
        Some(("shadow", 10)),
    ));
    let route = router.route(EP).unwrap();
    let mut copied = 0;
    for i in 0..100 {
        for _ in 0..i % 7 {
            assert_eq!(router.mirror_for(&route, Some("blue")), None);
        }
        copied += usize::from(router.mirror_for(&route, None).is_some());
    }
    assert_eq!(copied, 10);
}

#[test]
fn an_endpoint_without_a_mirror_takes_no_mirror_number() {
    let router = router_with(endpoint(&["blue"], &[("blue", 100)], None));
    let route = router.route(EP).unwrap();
    for _ in 0..10 {
        assert_eq!(router.mirror_for(&route, None), None);
    }
    assert_eq!(router.mirror_seq.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn infer_mirrors_unpinned_requests_only() {
    // No replica is registered, so each request fails at once (and so does
    // its copy); the mirror's sequence number shows which were considered.
    let router = router_with(endpoint(
        &["blue", "shadow"],
        &[("blue", 100)],
        Some(("shadow", 100)),
    ));
    let req = ModelInferRequest::default();
    let e = router
        .infer(EP, Some("blue"), req.clone(), None)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    assert_eq!(router.mirror_seq.load(Ordering::Relaxed), 0);
    let e = router.infer(EP, None, req.clone(), None).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    assert_eq!(router.mirror_seq.load(Ordering::Relaxed), 1);
    // A request refused before routing is not mirrored either.
    let e = router
        .infer(EP, Some("purple"), req, None)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert_eq!(router.mirror_seq.load(Ordering::Relaxed), 1);
}

// --- which replica ---

#[test]
fn set_workers_builds_pools_and_keeps_replicas() {
    let router = router_with(endpoint(&["blue", "green"], &[("blue", 100)], None));
    router.set_workers(&[
        worker("w1", "127.0.0.1:9", &["blue", "green"]),
        worker("w2", "127.0.0.1:10", &["blue"]),
        worker("bad", "not an address", &["blue"]),
    ]);
    let blue = router.pool(EP, "blue").unwrap();
    let green = router.pool(EP, "green").unwrap();
    let ids = |p: &Pool| {
        p.replicas()
            .iter()
            .map(|r| r.id.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&blue), ["w1", "w2"]);
    assert_eq!(ids(&green), ["w1"]);
    // One worker serving two deployments is one replica: one count of
    // requests in flight, one ejection.
    let w1 = blue.replicas()[0].clone();
    assert!(Arc::ptr_eq(&w1, &green.replicas()[0]));
    eject(&w1);
    assert_eq!(green.healthy(), 0);

    // The registry again, w2 gone, green no longer served: w1 keeps its
    // state, the green pool goes.
    router.set_workers(&[worker("w1", "127.0.0.1:9", &["blue"])]);
    let blue_again = router.pool(EP, "blue").unwrap();
    assert!(Arc::ptr_eq(&blue, &blue_again));
    assert!(Arc::ptr_eq(&w1, &blue_again.replicas()[0]));
    assert!(blue_again.replicas()[0].is_ejected());
    assert!(router.pool(EP, "green").is_none());

    // Same id at a new address: a new replica, not ejected.
    router.set_workers(&[worker("w1", "127.0.0.1:11", &["blue"])]);
    let r = &router.pool(EP, "blue").unwrap().replicas()[0];
    assert!(!Arc::ptr_eq(&w1, r));
    assert!(!r.is_ejected());
}

#[tokio::test]
async fn forward_without_a_registered_replica_is_unavailable() {
    let router = router_with(endpoint(&["blue"], &[("blue", 100)], None));
    let e = router
        .forward(EP, "blue", ModelInferRequest::default(), None)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    assert_eq!(e.message(), "no replica of deployment 'blue' is registered");
}

#[tokio::test]
async fn forward_with_every_replica_ejected_is_unavailable_at_once() {
    let router = router_with(endpoint(&["blue"], &[("blue", 100)], None));
    router.set_workers(&[
        worker("w1", "127.0.0.1:9", &["blue"]),
        worker("w2", "127.0.0.1:10", &["blue"]),
    ]);
    let pool = router.pool(EP, "blue").unwrap();
    pool.replicas().iter().for_each(|r| eject(r));
    let e = router
        .forward(EP, "blue", ModelInferRequest::default(), None)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    assert_eq!(e.message(), "no healthy replica of deployment 'blue'");
    // Nothing was sent, so nothing was counted.
    assert!(pool.replicas().iter().all(|r| r.outstanding() == 0));
}

#[tokio::test]
async fn forward_past_its_deadline_sends_nothing() {
    let router = router_with(endpoint(&["blue"], &[("blue", 100)], None));
    router.set_workers(&[worker("w1", "127.0.0.1:9", &["blue"])]);
    let e = router
        .forward(
            EP,
            "blue",
            ModelInferRequest::default(),
            Some(Instant::now()),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::DeadlineExceeded);
    let r = &router.pool(EP, "blue").unwrap().replicas()[0];
    assert!(!r.is_ejected());
    assert_eq!(r.outstanding(), 0);
}

/// host:port of a loopback port that refuses connections: bound by the
/// system, then released.
fn refused_address() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    l.local_addr().unwrap().to_string()
}

#[tokio::test]
async fn forward_retries_once_on_another_replica_and_ejects() {
    // Two replicas whose ports refuse connections: each request fails on
    // the first, is retried once on the second, and fails there too.
    let router = router_with(endpoint(&["blue"], &[("blue", 100)], None));
    router.set_workers(&[
        worker("w1", &refused_address(), &["blue"]),
        worker("w2", &refused_address(), &["blue"]),
    ]);
    let pool = router.pool(EP, "blue").unwrap();
    let ejected = || pool.replicas().iter().filter(|r| r.is_ejected()).count();
    let send = || router.forward(EP, "blue", ModelInferRequest::default(), None);
    for n in 1..EJECT_AFTER {
        let e = send().await.unwrap_err();
        assert_eq!(e.code(), Code::Unavailable);
        assert!(
            e.message()
                .starts_with("no healthy replica of 'blue' answered: "),
            "{}",
            e.message()
        );
        // Had a request gone twice to one replica, it would be out by now.
        assert_eq!(ejected(), 0, "after {n} requests");
    }
    send().await.unwrap_err();
    assert_eq!(ejected(), 2, "each replica failed EJECT_AFTER times");
    assert!(pool.replicas().iter().all(|r| r.outstanding() == 0));
    let e = send().await.unwrap_err();
    assert_eq!(e.message(), "no healthy replica of deployment 'blue'");
}

#[tokio::test]
async fn forward_with_one_replica_tries_it_once() {
    let router = router_with(endpoint(&["blue"], &[("blue", 100)], None));
    router.set_workers(&[worker("w1", &refused_address(), &["blue"])]);
    let r = router.pool(EP, "blue").unwrap().replicas()[0].clone();
    for _ in 1..EJECT_AFTER {
        router
            .forward(EP, "blue", ModelInferRequest::default(), None)
            .await
            .unwrap_err();
    }
    assert!(!r.is_ejected(), "retried on the replica that failed");
    router
        .forward(EP, "blue", ModelInferRequest::default(), None)
        .await
        .unwrap_err();
    assert!(r.is_ejected());
}

// --- what is retried ---

fn with_cause(s: Status) -> Status {
    let mut s = s;
    s.set_source(Arc::new(std::io::Error::from(
        std::io::ErrorKind::ConnectionReset,
    )));
    s
}

#[test]
fn transport_failures_and_unavailable_are_retried() {
    assert!(never_reached(&Status::unavailable("worker draining")));
    assert!(never_reached(&with_cause(Status::unavailable("refused"))));
    // A worker dying mid-request.
    assert!(never_reached(&with_cause(Status::cancelled(
        "stream reset"
    ))));
    assert!(never_reached(&with_cause(Status::unknown("h2 error"))));
}

#[test]
fn answers_from_a_model_and_deadlines_are_not_retried() {
    for s in [
        Status::invalid_argument("bad shape"),
        Status::internal("model failed"),
        Status::resource_exhausted("too large"),
        Status::cancelled("cancelled"),
        Status::deadline_exceeded("late"),
        with_cause(Status::deadline_exceeded("late")),
    ] {
        assert!(!never_reached(&s), "{s:?}");
    }
}
