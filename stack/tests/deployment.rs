//! The deployment files against the service table: Prometheus scrapes every service at its
//! address (one machine and compose), compose and Kubernetes give each service the address
//! the table says, and no scrape job points at a service under another name.

#![allow(clippy::expect_used, clippy::unwrap_used)] // a test fails loudly

use serde_norway::Value;
use stack::{SERVICES, Service};
use std::path::PathBuf;

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path)
}

fn yaml_documents(path: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_norway::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap_or_else(|e| panic!("{path}: {e}")))
        .collect()
}

/// `(job_name, targets, labels.service)` for every static scrape target of a Prometheus file.
fn scrape_targets(path: &str) -> Vec<(String, String, Option<String>)> {
    let doc = yaml_documents(path).remove(0);
    let mut out = Vec::new();
    for job in doc["scrape_configs"].as_sequence().expect("scrape_configs") {
        let name = job["job_name"].as_str().expect("job_name").to_owned();
        for config in job["static_configs"].as_sequence().into_iter().flatten() {
            let label = config["labels"]["service"].as_str().map(str::to_owned);
            for target in config["targets"].as_sequence().into_iter().flatten() {
                let target = target.as_str().expect("target").to_owned();
                out.push((name.clone(), target, label.clone()));
            }
        }
    }
    out
}

fn check_scrapes(path: &str, host: impl Fn(&Service) -> String) {
    let targets = scrape_targets(path);
    for s in SERVICES {
        let want = format!("{}:{}", host(s), s.port);
        let jobs: Vec<_> = targets.iter().filter(|(job, ..)| job == s.name).collect();
        assert_eq!(
            jobs.iter().map(|(_, t, _)| t.as_str()).collect::<Vec<_>>(),
            vec![want.as_str()],
            "{path}: job {} must scrape exactly {want}",
            s.name
        );
        assert_eq!(
            jobs[0].2.as_deref(),
            Some(s.name),
            "{path}: job {} needs labels.service",
            s.name
        );
    }
    for (job, target, _) in &targets {
        if let Some(s) = SERVICES
            .iter()
            .find(|s| *target == format!("{}:{}", host(s), s.port))
        {
            assert_eq!(
                job, s.name,
                "{path}: job {job} scrapes {}'s address {target}",
                s.name
            );
        }
    }
}

#[test]
fn prometheus_scrapes_every_service_at_its_address() {
    check_scrapes("observability/prometheus/prometheus.yml", |_| {
        stack::LOOPBACK.to_owned()
    });
    check_scrapes("observability/prometheus/prometheus.compose.yml", |s| {
        s.name.to_owned()
    });
}

#[test]
fn compose_gives_every_service_its_address() {
    let compose = yaml_documents("compose/compose.yaml").remove(0);
    for s in SERVICES {
        let env = &compose["services"][s.name]["environment"];
        assert_eq!(
            env[s.address_variable].as_str(),
            Some(format!("0.0.0.0:{}", s.port).as_str()),
            "compose/compose.yaml: {}.environment.{}",
            s.name,
            s.address_variable
        );
    }
}

#[test]
fn kubernetes_exposes_every_service_on_its_port() {
    for s in SERVICES {
        let path = match s.kind {
            stack::Kind::Gateway => "k8s/base/gateway/rollout.yaml".to_owned(),
            stack::Kind::Worker => format!("k8s/base/workers/{}.yaml", s.name),
        };
        let ports: Vec<u64> = yaml_documents(&path)
            .iter()
            .flat_map(|d| {
                d["spec"]["template"]["spec"]["containers"]
                    .as_sequence()
                    .cloned()
            })
            .flatten()
            .filter(|c| c["name"].as_str() == Some(s.name))
            .flat_map(|c| c["ports"].as_sequence().cloned().unwrap_or_default())
            .filter_map(|p| p["containerPort"].as_u64())
            .collect();
        assert_eq!(
            ports,
            vec![u64::from(s.port)],
            "{path}: container {}'s ports",
            s.name
        );
    }
}
