//! CRD conversion: the shipped rules, lossless round trips over generated objects (proptest),
//! multi-hop through the hub, failures that name the object, and the rule checks.

#![allow(clippy::expect_used, clippy::unwrap_used)] // a failed step should fail the test loudly

mod support;

use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_json::{Map, Value, json};
use support::{fixture, repo_path, server::TestServer};
use tollgate_engine::conversion::PRESERVED_ANNOTATION;
use tollgate_engine::{Store, policy};

fn shipped() -> Store {
    policy::load_dir(&repo_path("policies")).expect("shipped policies")
}

fn convert(store: &Store, object: &Value, to: &str) -> Value {
    let map = object.as_object().cloned().expect("object");
    let from = map["apiVersion"]
        .as_str()
        .expect("apiVersion")
        .rsplit('/')
        .next()
        .expect("version")
        .to_string();
    let group = map["apiVersion"]
        .as_str()
        .expect("apiVersion")
        .rsplit_once('/')
        .expect("group")
        .0
        .to_string();
    let kind = map["kind"].as_str().expect("kind").to_string();
    let rules = store.conversion_for(&group, &kind).expect("rules");
    Value::Object(rules.convert(map, &from, to).expect("converts"))
}

fn review(objects: Vec<Value>, desired: &str) -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "ConversionReview",
        "request": {"uid": "conv-1", "desiredAPIVersion": desired, "objects": objects}
    })
}

#[tokio::test]
async fn fixtures_convert_over_tls_exactly_as_recorded() {
    let server = TestServer::start().await;
    for name in [
        "convert-down",
        "convert-up",
        "convert-mixed",
        "convert-unknown-version",
    ] {
        let (status, body) = server
            .post_json("/convert", &fixture(&format!("{name}.json")))
            .await;
        assert_eq!(status, 200, "{name}");
        assert_eq!(body, fixture(&format!("{name}.expected.json")), "{name}");
    }
    server.finish().await;
}

#[test]
fn down_conversion_moves_fields_and_preserves_what_v1alpha1_cannot_hold() {
    let store = shipped();
    let v1 = fixture("convert-down.json")["request"]["objects"][0].clone();
    let down = convert(&store, &v1, "v1alpha1");
    assert_eq!(down["apiVersion"], "payments.example.com/v1alpha1");
    assert_eq!(
        down["spec"],
        json!({"provider": "stripe", "url": "https://api.stripe.example/v1", "secretName": "stripe-credentials",
               "timeoutSeconds": 30, "maxRetries": 3, "replicas": 2})
    );
    // Only annotations change in metadata; status travels along.
    let mut meta = down["metadata"].clone();
    let preserved = meta["annotations"]
        .as_object_mut()
        .expect("annotations")
        .remove(PRESERVED_ANNOTATION);
    assert!(preserved.is_some());
    meta.as_object_mut().expect("meta").remove("annotations");
    assert_eq!(meta, v1["metadata"]);
    assert_eq!(down["status"], v1["status"]);
    let up = convert(&store, &down, "v1");
    assert_eq!(
        up, v1,
        "the annotation disappears once the data is back in place"
    );
}

#[test]
fn an_update_through_v1alpha1_keeps_v1_only_fields() {
    let store = shipped();
    let v1 = fixture("convert-down.json")["request"]["objects"][0].clone();
    let mut read = convert(&store, &v1, "v1alpha1");
    read["spec"]["replicas"] = json!(4);
    read["spec"]["maxRetries"] = json!(7);
    let written = convert(&store, &read, "v1");
    assert_eq!(written["spec"]["currencies"], json!(["USD", "EUR"]));
    assert_eq!(
        written["spec"]["retry"],
        json!({"maxAttempts": 7, "backoffSeconds": 5})
    );
    assert_eq!(written["spec"]["replicas"], 4);
    assert!(written["metadata"].get("annotations").is_none());
}

#[test]
fn review_keeps_count_order_and_objects_already_in_the_desired_version() {
    let store = shipped();
    let body = serde_json::to_vec(&fixture("convert-mixed.json")).expect("json");
    let out =
        serde_json::to_value(tollgate::http::conversion_review(&store, &body).expect("review"))
            .expect("json");
    let objects = out["response"]["convertedObjects"]
        .as_array()
        .expect("objects");
    let input = fixture("convert-mixed.json")["request"]["objects"].clone();
    assert_eq!(objects.len(), 2);
    assert_eq!(
        objects[0], input[0],
        "already in v1alpha1: returned unchanged"
    );
    assert_eq!(objects[1]["metadata"]["name"], "pg-stripe");
    assert_eq!(objects[1]["apiVersion"], "payments.example.com/v1alpha1");
}

#[tokio::test]
async fn failures_name_the_object_and_the_server_stays_up() {
    let server = TestServer::start().await;
    let good = fixture("convert-up.json")["request"]["objects"][0].clone();
    let mut corrupt = good.clone();
    corrupt["metadata"]["annotations"][PRESERVED_ANNOTATION] = json!("{broken");
    let mut other_kind = good.clone();
    other_kind["kind"] = json!("Refund");
    let mut nameless = good.clone();
    nameless["apiVersion"] = json!("billing.example.com/v1alpha1");
    let cases = [
        (
            vec![good.clone(), json!("not an object")],
            "payments.example.com/v1",
            "object 1 (\"<unnamed>\")",
            "not a JSON object",
        ),
        (
            vec![other_kind],
            "payments.example.com/v1",
            "object 0 (\"pg-legacy\")",
            "no conversion rules for kind \"Refund\"",
        ),
        (
            vec![good.clone(), nameless],
            "payments.example.com/v1",
            "object 1 (\"pg-legacy\")",
            "is not in group",
        ),
        (
            vec![corrupt],
            "payments.example.com/v1",
            "object 0 (\"pg-legacy\")",
            "is not valid",
        ),
        (
            vec![good.clone()],
            "payments.example.com/v9",
            "object 0 (\"pg-legacy\")",
            "version \"v9\"",
        ),
    ];
    for (objects, desired, who, why) in cases {
        let (status, body) = server
            .post_json("/convert", &review(objects, desired))
            .await;
        assert_eq!(status, 200);
        let response = &body["response"];
        assert_eq!(response["uid"], "conv-1");
        assert_eq!(response["result"]["status"], "Failure");
        let message = response["result"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(who) && message.contains(why), "{message}");
        assert_eq!(response["convertedObjects"], json!([]));
    }
    let malformed = server
        .client()
        .post(server.url("/convert"))
        .header("content-type", "application/json")
        .body("{\"kind\": ")
        .send()
        .await
        .expect("sent");
    assert_eq!(malformed.status().as_u16(), 400);
    let (_, ok) = server
        .post_json("/convert", &fixture("convert-up.json"))
        .await;
    assert_eq!(ok["response"]["result"]["status"], "Success");
    server.finish().await;
}

#[tokio::test]
async fn answers_v1beta1_conversion_reviews_in_v1beta1() {
    let server = TestServer::start().await;
    let mut review = fixture("convert-up.json");
    review["apiVersion"] = json!("apiextensions.k8s.io/v1beta1");
    let (_, body) = server.post_json("/convert", &review).await;
    assert_eq!(body["apiVersion"], "apiextensions.k8s.io/v1beta1");
    assert_eq!(body["response"]["result"]["status"], "Success");
    server.finish().await;
}

#[tokio::test]
async fn a_2000_object_review_converts_while_other_requests_are_answered() {
    let server = TestServer::start().await;
    let v1 = fixture("convert-down.json")["request"]["objects"][0].clone();
    let objects: Vec<Value> = (0..2000)
        .map(|i| {
            let mut o = v1.clone();
            o["metadata"]["name"] = json!(format!("pg-{i}"));
            o
        })
        .collect();
    let big = review(objects, "payments.example.com/v1alpha1");
    // With the budget the apiserver gives conversion webhooks (its `?timeout=30s`): this test
    // binary's other tests share the two cores of a CI machine and a debug build.
    let (converted, health) = tokio::join!(server.post_json("/convert?timeout=30s", &big), async {
        server
            .client()
            .get(server.url("/healthz"))
            .send()
            .await
            .map(|r| r.status().as_u16())
    });
    assert_eq!(health.expect("healthz"), 200);
    let objects = converted.1["response"]["convertedObjects"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(objects.len(), 2000);
    assert_eq!(objects[1999]["metadata"]["name"], "pg-1999");
    assert!(
        objects
            .iter()
            .all(|o| o["apiVersion"] == "payments.example.com/v1alpha1")
    );
    server.finish().await;
}

const THREE_VERSIONS: &str = r#"
apiVersion: tollgate.dev/v1alpha1
kind: Policy
metadata: {name: widgets}
spec:
  match: {group: example.com, kind: Widget, resource: widgets, versions: [v1]}
  schema:
    properties:
      spec:
        properties:
          size: {type: integer}
          owner: {type: object, properties: {name: {type: string}, team: {type: string}}}
          colour: {type: string}
  conversion:
    hub: v1
    spokes:
      v1alpha1:
        fields:
          - {spoke: spec.ownerName, hub: spec.owner.name}
        schema:
          properties:
            spec:
              properties:
                size: {type: integer}
                ownerName: {type: string}
                legacyMode: {type: boolean}
      v1beta1:
        fields:
          - {spoke: spec.dimensions.size, hub: spec.size}
          - {spoke: spec.team, hub: spec.owner.team}
        schema:
          properties:
            spec:
              properties:
                dimensions: {type: object, properties: {size: {type: integer}}}
                team: {type: string}
                owner: {type: object, properties: {name: {type: string}}}
                colour: {type: string}
"#;

fn three_versions() -> Store {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("widgets.yaml"), THREE_VERSIONS).expect("write");
    policy::load_dir(dir.path()).expect("policy")
}

#[test]
fn multi_hop_goes_through_the_hub_and_back_without_loss() {
    let store = three_versions();
    let alpha = json!({
        "apiVersion": "example.com/v1alpha1", "kind": "Widget",
        "metadata": {"name": "w", "labels": {"a": "b"}},
        "spec": {"size": 3, "ownerName": "ana", "legacyMode": true, "extra": [1, 2]},
        "status": {"phase": "Ready"}
    });
    let beta = convert(&store, &alpha, "v1beta1");
    assert_eq!(beta["spec"]["dimensions"], json!({"size": 3}));
    assert_eq!(beta["spec"]["owner"], json!({"name": "ana"}));
    assert_eq!(beta["spec"]["extra"], json!([1, 2]));
    assert!(beta["spec"].get("legacyMode").is_none());
    assert_eq!(convert(&store, &beta, "v1alpha1"), alpha);
    let hub = convert(&store, &beta, "v1");
    assert_eq!(convert(&store, &hub, "v1alpha1"), alpha);
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        (-1.0e6f64..1.0e6).prop_map(|f| json!(f)),
        "[a-zA-Z0-9 ./~:-]{0,12}".prop_map(Value::String),
    ]
}

fn any_json() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-zA-Z/~.]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Each known field is absent, a well-typed value, or anything at all; unknown fields are mixed in.
fn maybe(known: BoxedStrategy<Value>) -> impl Strategy<Value = Option<Value>> {
    prop_oneof![Just(None), known.prop_map(Some), any_json().prop_map(Some)]
}

fn extras() -> impl Strategy<Value = BTreeMap<String, Value>> {
    prop::collection::btree_map("x[a-zA-Z]{0,6}", any_json(), 0..3)
}

fn object_from(fields: Vec<(&str, Option<Value>)>, extra: BTreeMap<String, Value>) -> Value {
    let mut map: Map<String, Value> = extra.into_iter().collect();
    for (k, v) in fields {
        if let Some(v) = v {
            map.insert(k.to_string(), v);
        }
    }
    Value::Object(map)
}

fn metadata() -> impl Strategy<Value = Value> {
    let map = || {
        prop::option::of(prop::collection::btree_map(
            "[a-z.]{1,6}(/[a-z]{1,5})?",
            "[a-z0-9]{0,6}",
            0..3,
        ))
    };
    (map(), map(), 1i64..100).prop_map(|(labels, annotations, generation)| {
        let mut m = json!({"name": "pg", "namespace": "ns", "uid": "u", "resourceVersion": "7", "generation": generation});
        if let Some(l) = labels {
            m["labels"] = json!(l);
        }
        if let Some(a) = annotations {
            m["annotations"] = json!(a);
        }
        m
    })
}

fn v1_object() -> impl Strategy<Value = Value> {
    let string = || "[a-z:/.]{0,10}".prop_map(Value::String).boxed();
    let int = || (0i64..200).prop_map(|n| json!(n)).boxed();
    let retry = (maybe(int()), maybe(int()), extras())
        .prop_map(|(m, b, x)| object_from(vec![("maxAttempts", m), ("backoffSeconds", b)], x))
        .boxed();
    let secret = (maybe(string()), extras())
        .prop_map(|(n, x)| object_from(vec![("name", n)], x))
        .boxed();
    let currencies = prop::collection::vec("[A-Z]{3}".prop_map(Value::String), 0..3)
        .prop_map(Value::Array)
        .boxed();
    let spec = (
        (
            maybe(string()),
            maybe(string()),
            maybe(secret),
            maybe(int()),
        ),
        (maybe(retry), maybe(currencies), maybe(int()), extras()),
    )
        .prop_map(|((p, e, s, t), (r, c, n, x))| {
            object_from(
                vec![
                    ("provider", p),
                    ("endpoint", e),
                    ("credentialsSecretRef", s),
                    ("timeoutSeconds", t),
                    ("retry", r),
                    ("currencies", c),
                    ("replicas", n),
                ],
                x,
            )
        });
    (
        metadata(),
        prop::option::of(spec),
        prop::option::of(any_json()),
        extras(),
    )
        .prop_map(|(meta, spec, status, top)| {
            let mut o = object_from(vec![("spec", spec), ("status", status)], top);
            o["apiVersion"] = json!("payments.example.com/v1");
            o["kind"] = json!("PaymentGateway");
            o["metadata"] = meta;
            o
        })
}

fn v1alpha1_object() -> impl Strategy<Value = Value> {
    let string = || "[a-z:/.]{0,10}".prop_map(Value::String).boxed();
    let int = || (0i64..200).prop_map(|n| json!(n)).boxed();
    let spec = (
        (maybe(string()), maybe(string()), maybe(string())),
        (maybe(int()), maybe(int()), maybe(int()), extras()),
    )
        .prop_map(|((p, u, s), (t, m, r, x))| {
            object_from(
                vec![
                    ("provider", p),
                    ("url", u),
                    ("secretName", s),
                    ("timeoutSeconds", t),
                    ("maxRetries", m),
                    ("replicas", r),
                ],
                x,
            )
        });
    (
        metadata(),
        prop::option::of(spec),
        prop::option::of(any_json()),
        extras(),
    )
        .prop_map(|(meta, spec, status, top)| {
            let mut o = object_from(vec![("spec", spec), ("status", status)], top);
            o["apiVersion"] = json!("payments.example.com/v1alpha1");
            o["kind"] = json!("PaymentGateway");
            o["metadata"] = meta;
            o
        })
}

fn widget(version: &'static str) -> impl Strategy<Value = Value> {
    let spec = prop::collection::btree_map(
        prop_oneof![
            Just("size".to_string()),
            Just("ownerName".to_string()),
            Just("legacyMode".to_string()),
            Just("dimensions".to_string()),
            Just("team".to_string()),
            Just("owner".to_string()),
            Just("colour".to_string()),
            "x[a-z]{0,3}",
        ],
        any_json(),
        0..6,
    );
    (metadata(), spec, prop::option::of(any_json())).prop_map(move |(meta, spec, status)| {
        let mut o = json!({"apiVersion": format!("example.com/{version}"), "kind": "Widget", "metadata": meta,
                           "spec": Value::Object(spec.into_iter().collect())});
        if let Some(s) = status {
            o["status"] = s;
        }
        o
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn v1_to_v1alpha1_and_back_is_the_identity(object in v1_object()) {
        let store = shipped();
        let down = convert(&store, &object, "v1alpha1");
        prop_assert_eq!(&down["metadata"]["name"], &object["metadata"]["name"]);
        prop_assert_eq!(convert(&store, &down, "v1"), object);
    }

    #[test]
    fn v1alpha1_to_v1_and_back_is_the_identity(object in v1alpha1_object()) {
        let store = shipped();
        let up = convert(&store, &object, "v1");
        let back = convert(&store, &up, "v1alpha1");
        prop_assert_eq!(back, object);
    }

    #[test]
    fn repeated_round_trips_are_stable(object in v1_object()) {
        let store = shipped();
        let once = convert(&store, &object, "v1alpha1");
        let twice = convert(&store, &convert(&store, &once, "v1"), "v1alpha1");
        prop_assert_eq!(twice, once);
    }

    #[test]
    fn every_pair_of_three_versions_round_trips(object in widget("v1alpha1"), other in widget("v1beta1"), hub in widget("v1")) {
        let store = three_versions();
        for (original, from) in [(&object, "v1alpha1"), (&other, "v1beta1"), (&hub, "v1")] {
            for to in ["v1alpha1", "v1beta1", "v1"] {
                if to == from { continue; }
                let there = convert(&store, original, to);
                prop_assert_eq!(&convert(&store, &there, from), original, "{} -> {} -> {}", from, to, from);
            }
        }
    }
}

#[test]
fn check_rejects_rules_that_cannot_be_lossless_with_file_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = r#"apiVersion: tollgate.dev/v1alpha1
kind: Policy
metadata: {name: bad-conversion}
spec:
  match: {group: example.com, kind: Gadget, resource: gadgets, versions: [v1]}
  schema:
    properties:
      spec:
        properties:
          size: {type: integer}
          name: {type: string}
          tags: {type: array}
  conversion:
    hub: v1
    spokes:
      v1alpha1:
        fields:
          - {spoke: spec.sizeText, hub: spec.size}
          - {spoke: spec.unknown, hub: spec.name}
          - {spoke: spec.label, hub: spec.missing}
          - {spoke: "spec.tags[0]", hub: "spec.tags[0]"}
          - {spoke: spec.title, hub: spec.name}
          - {spoke: metadata.name, hub: spec.name}
        schema:
          properties:
            spec:
              properties:
                sizeText: {type: string}
                label: {type: string}
                title: {type: string}
                tags: {type: array}
                name: {type: string}
"#;
    std::fs::write(dir.path().join("gadget.yaml"), text).expect("write");
    let err = policy::load_dir(dir.path())
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    for expected in [
        "gadget.yaml:18: spec.conversion.spokes.v1alpha1.fields[0]: spec.sizeText has type \"string\" but spec.size has type \"integer\"",
        "gadget.yaml:19: spec.conversion.spokes.v1alpha1.fields[1]: spec.unknown is not declared in the v1alpha1 schema",
        "gadget.yaml:20: spec.conversion.spokes.v1alpha1.fields[2]: spec.missing is not declared in the hub schema",
        "gadget.yaml:21: spec.conversion.spokes.v1alpha1.fields[3]: spec.tags[0]: array elements cannot be moved",
        "gadget.yaml:22: spec.conversion.spokes.v1alpha1.fields[4]: spec.name is also declared in the v1alpha1 schema",
        "gadget.yaml:23: spec.conversion.spokes.v1alpha1.fields[5]: metadata.name: only fields outside metadata",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
}

#[test]
fn check_rejects_a_hub_outside_the_policy_and_duplicate_rule_sets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = |name: &str, hub: &str| {
        format!(
            "apiVersion: tollgate.dev/v1alpha1\nkind: Policy\nmetadata: {{name: {name}}}\nspec:\n  match: {{group: g, kind: K, resource: ks, versions: [v1]}}\n  schema: {{}}\n  conversion:\n    hub: {hub}\n    spokes:\n      v0: {{schema: {{}}}}\n"
        )
    };
    std::fs::write(dir.path().join("a.yaml"), policy("a", "v2")).expect("write");
    let err = policy::load_dir(dir.path())
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains("a.yaml:8: spec.conversion.hub \"v2\" must be one of spec.match.versions"),
        "{err}"
    );
    std::fs::write(dir.path().join("a.yaml"), policy("a", "v1")).expect("write");
    std::fs::write(dir.path().join("b.yaml"), policy("b", "v1")).expect("write");
    let err = policy::load_dir(dir.path())
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains("conversion rules for g/K are already declared by policy \"a\""),
        "{err}"
    );
}
