//! The snapshot's one-endpoint changes: keys follow their endpoint, and a
//! view handed out before a change does not see it.

use super::*;

fn endpoint(name: &str, keys: [&str; 2]) -> EndpointRecord {
    EndpointRecord {
        name: name.into(),
        auth_mode: AuthMode::Key,
        description: String::new(),
        deployments: Default::default(),
        traffic: Default::default(),
        mirror: None,
        keys: keys.map(|k| KeyRecord {
            hash: k.into(),
            created_unix: 0,
        }),
    }
}

#[test]
fn a_change_replaces_one_endpoint_and_its_keys() {
    let mut snap = Snapshot::build(
        1,
        vec![endpoint("a", ["a1", "a2"]), endpoint("b", ["b1", "b2"])],
        vec![],
    );
    let before = snap.clone();
    // Key regenerated in slot 1.
    snap.set("a", Some(endpoint("a", ["a1", "a3"])));
    assert_eq!(snap.keys.get("a3"), Some(&("a".to_string(), 1)));
    assert!(!snap.keys.contains_key("a2"));
    assert_eq!(snap.keys.len(), 4);
    snap.set("b", None);
    assert!(!snap.endpoints.contains_key("b"));
    assert!(!snap.keys.contains_key("b1") && !snap.keys.contains_key("b2"));
    assert_eq!(snap.keys.len(), 2);
    // The earlier view is untouched (readers holding it see no change).
    assert_eq!(before.keys.get("a2"), Some(&("a".to_string(), 1)));
    assert!(before.endpoints.contains_key("b"));
    assert_eq!(before.keys.len(), 4);
}

#[test]
fn records_keep_their_json_form() {
    // As stored before deployments and traffic became sorted vectors.
    let stored = r#"{"name":"digits","auth_mode":"key","description":"","deployments":{"blue":{"model_uri":"m.onnx","instances":1,"max_batch_size":32,"max_queue_delay_us":0,"max_queue_size":0,"preferred_batch_sizes":[]},"a":{"model_uri":"a.onnx","instances":1,"max_batch_size":8,"max_queue_delay_us":0,"max_queue_size":0,"preferred_batch_sizes":[]}},"traffic":{"blue":90,"a":10},"mirror":null,"keys":[{"hash":"h1","created_unix":1},{"hash":"h2","created_unix":2}]}"#;
    let e: EndpointRecord = serde_json::from_str(stored).unwrap();
    assert_eq!(e.deployments.keys().collect::<Vec<_>>(), ["a", "blue"]);
    assert_eq!(e.traffic.get("blue"), Some(&90));
    let again: serde_json::Value = serde_json::to_value(&e).unwrap();
    assert_eq!(again["traffic"], serde_json::json!({"a": 10, "blue": 90}));
    assert_eq!(again["deployments"]["blue"]["model_uri"], "m.onnx");
}
