//! `spec.rollout`: compiled with defaults, and every mistake reported with its line.

use std::path::Path;

use tollgate_engine::policy::{self, CompiledPolicy, PolicyError};
use tollgate_engine::rollout::{HealthRule, Rollout, WorkloadKind};

const HEAD: &str = "apiVersion: tollgate.dev/v1alpha1
kind: Policy
metadata:
  name: widgets
spec:
  match: {group: example.com, kind: Widget, resource: widgets, versions: [v1]}
  schema:
    type: object
    properties:
      spec:
        type: object
        properties:
          replicas: {type: integer}
          selector: {type: object}
          name: {type: string}
";

fn load(rollout: &str) -> (Vec<CompiledPolicy>, Vec<PolicyError>) {
    let text = format!("{HEAD}  rollout:\n{rollout}");
    let mut policies = Vec::new();
    let mut errors = Vec::new();
    policy::load_text(Path::new("w.yaml"), &text, &mut policies, &mut errors);
    (policies, errors)
}

fn messages(errors: &[PolicyError]) -> Vec<String> {
    errors.iter().map(ToString::to_string).collect()
}

#[test]
fn workload_rule_gets_the_documented_defaults() {
    let (policies, errors) =
        load("    health:\n      workload: {kind: Deployment, nameFrom: metadata.name}\n");
    assert!(errors.is_empty(), "{:?}", messages(&errors));
    let rollout = policies[0].rollout.clone();
    let Some(Rollout {
        health: HealthRule::Workload { kind, name_from },
        progress_deadline_seconds,
        revision_history_limit,
        auto_rollback,
    }) = rollout
    else {
        panic!("expected a workload rule, got {rollout:?}");
    };
    assert_eq!(kind, WorkloadKind::Deployment);
    assert_eq!(name_from.to_string(), "metadata.name");
    assert_eq!(
        (
            progress_deadline_seconds,
            revision_history_limit,
            auto_rollback
        ),
        (600, 10, true)
    );
}

#[test]
fn pods_and_condition_rules_compile() {
    let (policies, errors) = load(
        "    health:\n      pods: {selectorFrom: spec.selector, minReadyFrom: spec.replicas}\n    progressDeadlineSeconds: 5\n    revisionHistoryLimit: 3\n    autoRollback: false\n",
    );
    assert!(errors.is_empty(), "{:?}", messages(&errors));
    let rollout = policies[0].rollout.clone();
    assert!(matches!(
        rollout,
        Some(Rollout {
            health: HealthRule::Pods {
                min_ready_from: Some(_),
                ..
            },
            progress_deadline_seconds: 5,
            revision_history_limit: 3,
            auto_rollback: false,
        })
    ));
    let (policies, errors) =
        load("    health:\n      condition: {type: Available, failureTypes: [Degraded]}\n");
    assert!(errors.is_empty(), "{:?}", messages(&errors));
    assert!(matches!(
        &policies[0].rollout,
        Some(Rollout { health: HealthRule::Condition { type_, failure_types }, .. })
            if type_ == "Available" && failure_types == &["Degraded".to_string()]
    ));
}

#[test]
fn exactly_one_health_rule_is_required() {
    for health in [
        "    health: {}\n",
        "    health:\n      workload: {kind: Deployment, nameFrom: metadata.name}\n      condition: {type: Ready}\n",
    ] {
        let (policies, errors) = load(health);
        assert!(policies.is_empty());
        assert_eq!(
            messages(&errors),
            ["w.yaml:17: spec.rollout.health must give exactly one of workload, pods or condition"],
            "{health}"
        );
    }
}

#[test]
fn paths_must_be_declared_with_the_right_type() {
    let (_, errors) = load(
        "    health:\n      pods: {selectorFrom: spec.missing, minReadyFrom: spec.name}\n    revisionHistoryLimit: 0\n    progressDeadlineSeconds: 0\n",
    );
    assert_eq!(
        messages(&errors),
        [
            "w.yaml:18: spec.rollout.health.pods.selectorFrom: spec.missing is not declared in spec.schema",
            "w.yaml:18: spec.rollout.health.pods.minReadyFrom: spec.name has type \"string\" in spec.schema, expected \"integer\"",
            "w.yaml:20: spec.rollout.progressDeadlineSeconds must be at least 1",
            "w.yaml:19: spec.rollout.revisionHistoryLimit must be at least 1 (the current revision is always kept)",
        ]
    );
    let (_, errors) = load("    health:\n      workload: {kind: Job, nameFrom: metadata.name}\n");
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].to_string().contains("unknown variant `Job`"),
        "{}",
        errors[0]
    );
}

#[test]
fn one_rollout_section_per_kind() {
    let dir = std::env::temp_dir().join(format!("tollgate-rollout-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    for name in ["a", "b"] {
        let text = HEAD.replace("name: widgets", &format!("name: {name}"))
            + "  rollout:\n    health:\n      condition: {type: Ready}\n";
        std::fs::write(dir.join(format!("{name}.yaml")), text).unwrap_or_else(|e| panic!("{e}"));
    }
    let err = policy::load_dir(&dir)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        err.contains(
            "a rollout section for example.com/Widget is already declared by policy \"a\""
        ),
        "{err}"
    );
}
