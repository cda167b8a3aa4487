//! A closed-loop load of one-row digits requests through a gateway, for the
//! fault tests: it counts answers and keeps every failure, so a test can
//! wait for progress, break something, and then require that nothing
//! failed.

use super::connect;
use client::f32_request;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

pub struct Load {
    ok: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<Vec<String>>>,
}

impl Load {
    /// `clients` callers of `digits` through `url` with `key`, each sending
    /// its next request when the last is answered.
    pub async fn start(url: &str, key: &str, clients: usize) -> Load {
        let ok = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for _ in 0..clients {
            let client = connect(url, Some(key)).await;
            let (ok, stop) = (ok.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                let mut failures = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let req = f32_request("digits", "input", &[vec![2.0; 64]], true).unwrap();
                    match client.infer(req).await {
                        Ok(_) => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => failures.push(e.to_string()),
                    }
                }
                failures
            }));
        }
        Load { ok, stop, tasks }
    }

    /// Answers so far.
    pub fn answered(&self) -> usize {
        self.ok.load(Ordering::Relaxed)
    }

    /// Whether `more` answers arrive within `within`.
    pub async fn goes_on(&self, more: usize, within: Duration) -> bool {
        let target = self.answered() + more;
        let until = std::time::Instant::now() + within;
        while self.answered() < target && std::time::Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.answered() >= target
    }

    /// Stops the callers; every failure they saw.
    pub async fn stop(self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        let mut failures = Vec::new();
        for t in self.tasks {
            failures.extend(t.await.unwrap());
        }
        failures
    }
}

impl super::Cluster {
    /// Waits until the gateway reports `n` healthy replicas of
    /// `endpoint`'s deployment `deployment`.
    pub async fn wait_healthy(&self, endpoint: &str, deployment: &str, n: u32, within: Duration) {
        let admin = self.admin().await;
        super::wait_until(
            &format!("{n} healthy replicas of {endpoint}/{deployment}"),
            within,
            || {
                let admin = admin.clone();
                async move {
                    admin.get_endpoint(endpoint).await.is_ok_and(|e| {
                        e.deployments
                            .iter()
                            .any(|d| d.name == deployment && d.replicas_healthy == n)
                    })
                }
            },
        )
        .await;
    }
}
