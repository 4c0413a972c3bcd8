//! The mutate patch is noted while defaulting; on the shipped policy and objects with any mix of
//! fields missing or null it must be exactly the patch a comparison of the two objects gives.

#![allow(clippy::expect_used, clippy::unwrap_used)] // a failed step should fail the test loudly

use std::path::Path;

use proptest::prelude::*;
use serde_json::{Value, json};
use tollgate_engine::cel::RequestInfo;
use tollgate_engine::evaluate;
use tollgate_engine::policy::{OperationName, Store, Target};

fn shipped() -> Store {
    tollgate_engine::load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies"))
        .expect("shipped policies")
}

fn full_object() -> Value {
    json!({
        "apiVersion": "payments.example.com/v1",
        "kind": "PaymentGateway",
        "metadata": {"name": "pg", "namespace": "payments", "labels": {"team": "a"}},
        "spec": {
            "provider": "stripe",
            "endpoint": "https://api.stripe.example/v1",
            "credentialsSecretRef": {"name": "s"},
            "timeoutSeconds": 30,
            "retry": {"maxAttempts": 3, "backoffSeconds": 1},
            "currencies": ["USD"],
            "replicas": 2
        }
    })
}

const PATHS: [&str; 9] = [
    "/metadata",
    "/metadata/labels",
    "/metadata/labels/team",
    "/spec/timeoutSeconds",
    "/spec/retry",
    "/spec/retry/maxAttempts",
    "/spec/retry/backoffSeconds",
    "/spec/currencies",
    "/spec/replicas",
];

/// 0: keep, 1: remove, 2: set to null.
fn vary(mut object: Value, choices: &[u8]) -> Value {
    for (path, choice) in PATHS.iter().zip(choices) {
        let (parent, key) = path.rsplit_once('/').unwrap();
        let Some(Value::Object(map)) =
            object.pointer_mut(if parent.is_empty() { "" } else { parent })
        else {
            continue;
        };
        match choice {
            1 => {
                map.remove(key);
            }
            2 => {
                map.insert(key.to_string(), Value::Null);
            }
            _ => {}
        }
    }
    object
}

proptest! {
    #[test]
    fn the_noted_patch_is_the_compared_patch(choices in prop::collection::vec(0u8..3, PATHS.len())) {
        let store = shipped();
        let object = vary(full_object(), &choices);
        let target = Target {
            group: "payments.example.com",
            version: "v1",
            kind: "PaymentGateway",
            operation: OperationName::Create,
            namespace: Some("payments"),
            object: Some((&object).into()),
            old_object: None,
            request: RequestInfo { name: "pg", username: "u", groups: &[], dry_run: false },
            restore: false,
        };
        let mut after = object.clone();
        let patch = evaluate::defaults_for(&store, &target).apply(&mut after);
        prop_assert_eq!(&patch, &json_patch::diff(&object, &after));
        prop_assert_eq!(&patch, &evaluate::default_patch(&store, &target));
        // What the webhook sends: the same patch, written from the defaulted copy directly.
        let written = evaluate::defaults_for(&store, &target)
            .patch_json((&object).into())
            .unwrap();
        let expected = (!patch.0.is_empty()).then(|| serde_json::to_vec(&patch).unwrap());
        prop_assert_eq!(written, expected);
        let mut patched = object.clone();
        prop_assert!(json_patch::patch(&mut patched, &patch).is_ok());
        prop_assert_eq!(patched, after);
    }
}
