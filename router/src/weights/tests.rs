use super::*;
use std::collections::BTreeMap;

fn weighted(split: &[(&str, u32)]) -> Weighted {
    Weighted::new(split.iter().map(|(n, w)| (n.to_string(), *w)).collect())
}

fn picks(w: &Weighted, n: usize) -> Vec<String> {
    (0..n)
        .map(|_| w.next().expect("a deployment in rotation").to_string())
        .collect()
}

fn count(picks: &[String], name: &str) -> usize {
    picks.iter().filter(|p| *p == name).count()
}

fn traffic(split: &[(&str, u32)]) -> BTreeMap<String, u32> {
    split.iter().map(|(n, w)| (n.to_string(), *w)).collect()
}

#[test]
fn ninety_ten_is_exact_in_every_window_of_a_hundred() {
    let w = weighted(&[("blue", 90), ("green", 10)]);
    let p = picks(&w, 300);
    // Not only each aligned block: the rotation has period 100, so any
    // 100 consecutive requests follow the weights exactly.
    for window in p.windows(100) {
        assert_eq!(count(window, "blue"), 90);
        assert_eq!(count(window, "green"), 10);
    }
}

#[test]
fn thirds_are_exact_in_every_window_of_a_hundred() {
    let w = weighted(&[("a", 33), ("b", 33), ("c", 34)]);
    let p = picks(&w, 300);
    for window in p.windows(100) {
        assert_eq!(
            (count(window, "a"), count(window, "b"), count(window, "c")),
            (33, 33, 34)
        );
    }
}

#[test]
fn every_two_way_split_is_exact_per_hundred() {
    for green in 1..100 {
        let w = weighted(&[("blue", 100 - green), ("green", green)]);
        let p = picks(&w, 100);
        assert_eq!(count(&p, "green"), green as usize, "split {green}");
        assert_eq!(count(&p, "blue"), 100 - green as usize, "split {green}");
    }
}

#[test]
fn ninety_ten_interleaves_smoothly() {
    let w = weighted(&[("blue", 90), ("green", 10)]);
    let p = picks(&w, 200);
    let green: Vec<usize> = (0..p.len()).filter(|&i| p[i] == "green").collect();
    assert_eq!(green.len(), 20);
    assert!(
        p.windows(2).all(|pair| pair != ["green", "green"]),
        "two green picks in a row: {p:?}"
    );
    // Not bunched anywhere: one green in every 10.
    assert!(
        green.windows(2).all(|g| g[1] - g[0] == 10),
        "green at {green:?}"
    );
}

#[test]
fn no_prefix_strays_from_the_weights() {
    // Smooth: after k picks a deployment has had its share of k, give or
    // take one pick, for two-way splits within half a pick.
    let check = |split: &[(&str, u32)], tolerance_percent: i64| {
        let w = weighted(split);
        let p = picks(&w, 100);
        for k in 1..=p.len() {
            for (name, weight) in split {
                let got = count(&p[..k], name) as i64 * 100;
                let share = k as i64 * i64::from(*weight);
                assert!(
                    (got - share).abs() <= tolerance_percent,
                    "{split:?}: after {k} picks '{name}' had {} (share {})",
                    got / 100,
                    share as f64 / 100.0
                );
            }
        }
    };
    for green in 1..100 {
        check(&[("blue", 100 - green), ("green", green)], 50);
    }
    check(&[("a", 33), ("b", 33), ("c", 34)], 100);
    check(&[("a", 70), ("b", 20), ("c", 10)], 100);
}

#[test]
fn fifty_fifty_alternates() {
    let w = weighted(&[("blue", 50), ("green", 50)]);
    let p = picks(&w, 10);
    assert!(p.windows(2).all(|pair| pair[0] != pair[1]), "{p:?}");
}

#[test]
fn zero_weights_are_out_of_rotation() {
    let w = weighted(&[("b", 0), ("a", 100)]);
    assert!(picks(&w, 10).iter().all(|p| p == "a"));
    assert_eq!(w.entries(), vec![("a", 100)]);
    assert!(!w.is_empty());
}

#[test]
fn entries_are_sorted_by_name() {
    let w = weighted(&[("green", 10), ("blue", 90)]);
    assert_eq!(w.entries(), vec![("blue", 90), ("green", 10)]);
}

#[test]
fn nothing_in_rotation_picks_nothing() {
    assert_eq!(Weighted::new(vec![]).next(), None);
    let all_zero = weighted(&[("a", 0), ("b", 0)]);
    assert!(all_zero.is_empty());
    assert_eq!(all_zero.next(), None);
}

#[test]
fn validation_accepts_a_split_summing_to_a_hundred() {
    let t = traffic(&[("a", 60), ("b", 40)]);
    assert_eq!(validate(&t, &["a", "b"]), Ok(()));
    // Deployments left out of the map are allowed (they get 0).
    let t = traffic(&[("a", 100)]);
    assert_eq!(validate(&t, &["a", "b"]), Ok(()));
    let t = traffic(&[("a", 100), ("b", 0)]);
    assert_eq!(validate(&t, &["a", "b"]), Ok(()));
}

#[test]
fn validation_rejects_a_bad_sum() {
    let t = traffic(&[("a", 50), ("b", 40)]);
    assert_eq!(validate(&t, &["a", "b"]), Err(WeightError::BadSum(90)));
    let t = traffic(&[("a", 60), ("b", 41)]);
    assert_eq!(validate(&t, &["a", "b"]), Err(WeightError::BadSum(101)));
    let t = traffic(&[("a", 0)]);
    assert_eq!(validate(&t, &["a"]), Err(WeightError::BadSum(0)));
    // Summed without wrapping: u32::MAX + 1 is not 0 (nor a panic).
    let t = traffic(&[("a", u32::MAX), ("b", 1)]);
    assert_eq!(validate(&t, &["a", "b"]), Err(WeightError::BadSum(1 << 32)));
}

#[test]
fn validation_rejects_an_unknown_deployment() {
    let t = traffic(&[("c", 100)]);
    assert_eq!(
        validate(&t, &["a"]),
        Err(WeightError::UnknownDeployment("c".into()))
    );
    // Even when the sum is right and the other names are known.
    let t = traffic(&[("a", 50), ("zz", 50)]);
    assert_eq!(
        validate(&t, &["a", "b"]),
        Err(WeightError::UnknownDeployment("zz".into()))
    );
    // An endpoint with no deployments accepts no names at all.
    let t = traffic(&[("a", 100)]);
    assert_eq!(
        validate(&t, &[]),
        Err(WeightError::UnknownDeployment("a".into()))
    );
}

#[test]
fn validation_accepts_an_empty_map() {
    let t = traffic(&[]);
    assert_eq!(validate(&t, &[]), Ok(()));
    // Also when the endpoint has deployments: the split then sends
    // nothing anywhere (unlike {"a": 0}, which is BadSum(0)).
    assert_eq!(validate(&t, &["a", "b"]), Ok(()));
}

#[test]
fn validation_errors_read_well() {
    assert_eq!(
        WeightError::BadSum(90).to_string(),
        "traffic weights sum to 90; they must sum to 100"
    );
    assert_eq!(
        WeightError::UnknownDeployment("c".into()).to_string(),
        "traffic names unknown deployment 'c'"
    );
}
