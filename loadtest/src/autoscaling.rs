//! A capacity plan as autoscaling targets: `loadtest plan --emit-autoscaling
//! DIR` writes a kustomize Component that deploy/k8s overlays can include
//! (`components: [path/to/DIR]`). It replaces the gateway's CPU-based
//! HorizontalPodAutoscaler, and gives the workers one, by KEDA `prometheus`
//! triggers on the fleet's request rate (the workers' `switchboard_worker_requests_total`),
//! with the per-replica rate the plan measured less its headroom as the
//! threshold and the plan's replicas for the target rate as the maximum.

use crate::sweep::Plan;
use anyhow::{Result, bail};
use std::path::Path;

/// What the autoscalers are given, derived from a plan.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Targets {
    /// Requests/s one replica is asked to carry: capacity × (1 − headroom).
    pub per_replica_rate: f64,
    pub min_replicas: u64,
    /// The plan's replicas for the target rate (with headroom).
    pub max_replicas: u64,
}

pub fn targets(plan: &Plan) -> Result<Targets> {
    let per_replica_rate = plan.capacity_per_replica_per_s * (1.0 - plan.headroom.clamp(0.0, 0.95));
    if plan.replicas == 0 || per_replica_rate <= 0.0 {
        bail!("the plan met no rate within the SLO: no autoscaling targets to write");
    }
    Ok(Targets {
        per_replica_rate,
        // Two gateways at least where the plan needs two (one may be drained).
        min_replicas: plan.replicas.min(2),
        max_replicas: plan.replicas,
    })
}

/// The files of the Component, by name.
pub fn files(plan: &Plan, prometheus_url: &str) -> Result<Vec<(&'static str, String)>> {
    let t = targets(plan)?;
    let rate = t.per_replica_rate.floor().max(1.0) as u64;
    let header = format!(
        "# Written by `switchboard loadtest plan --emit-autoscaling`: {}\n\
         # Target {:.0}/s at p99 <= {:.1} ms; {rate}/s per replica ({:.0}/s measured, {:.0} % headroom).\n",
        plan.explanation,
        plan.target_rate_per_s,
        plan.slo_p99_ms,
        plan.capacity_per_replica_per_s,
        plan.headroom * 100.0
    );
    let kustomization = format!(
        "{header}apiVersion: kustomize.config.k8s.io/v1alpha1\nkind: Component\n\
         resources:\n  - scaledobjects.yaml\npatches:\n  - path: delete-gateway-hpa.yaml\n"
    );
    let delete = format!(
        "{header}# KEDA makes its own HPA for the gateway: the base's CPU-based one goes.\n\
         $patch: delete\napiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata:\n  name: gateway\n"
    );
    let scaled = |name: &str, min: u64| {
        format!(
            "apiVersion: keda.sh/v1alpha1\nkind: ScaledObject\nmetadata:\n  name: {name}\nspec:\n  \
             scaleTargetRef:\n    name: {name}\n  minReplicaCount: {min}\n  maxReplicaCount: {max}\n  \
             pollingInterval: 15\n  triggers:\n    - type: prometheus\n      metadata:\n        \
             serverAddress: {prometheus_url}\n        \
             query: sum(rate(switchboard_worker_requests_total[1m]))\n        \
             threshold: \"{rate}\"\n",
            max = t.max_replicas
        )
    };
    let objects = format!(
        "{header}# Each replica (a gateway, a worker) carries at most {rate}/s; the plan's\n\
         # {max} replicas carry the target rate.\n{}---\n{}",
        scaled("gateway", t.min_replicas),
        scaled("worker", 1),
        max = t.max_replicas
    );
    Ok(vec![
        ("kustomization.yaml", kustomization),
        ("delete-gateway-hpa.yaml", delete),
        ("scaledobjects.yaml", objects),
    ])
}

pub fn write(dir: &Path, plan: &Plan, prometheus_url: &str) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    for (name, text) in files(plan, prometheus_url)? {
        std::fs::write(dir.join(name), text)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sweep::SweepResult;

    fn plan_of(capacity: f64, target: f64) -> Plan {
        let sweep = SweepResult {
            slo_p99_ms: 20.0,
            max_error_rate: 0.0,
            capacity_per_s: capacity,
            capacity_at_least: false,
            steps: vec![],
        };
        crate::sweep::plan(target, 0.2, sweep)
    }

    #[test]
    fn targets_follow_the_plan() {
        // 4461/s measured, 20 % headroom: 3568.8/s each, 5000/s needs 2.
        let p = plan_of(4461.0, 5000.0);
        let t = targets(&p).unwrap();
        assert_eq!(t.max_replicas, 2);
        assert_eq!(t.min_replicas, 2);
        assert!((t.per_replica_rate - 3568.8).abs() < 1e-6);
        let f = files(&p, "http://prometheus:9090").unwrap();
        let so = &f
            .iter()
            .find(|(n, _)| *n == "scaledobjects.yaml")
            .unwrap()
            .1;
        assert!(so.contains("threshold: \"3568\""), "{so}");
        assert!(so.contains("maxReplicaCount: 2"), "{so}");
        assert!(plan_of(0.0, 5000.0).replicas == 0 && targets(&plan_of(0.0, 5000.0)).is_err());
    }
}
