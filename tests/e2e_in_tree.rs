//! The in-tree differential test: the policies in tests/in_tree/policies compiled by `tollgate
//! manifests --in-tree` into ValidatingAdmissionPolicies and a MutatingAdmissionPolicy and
//! installed in the real kube-apiserver with no admission webhook at all, and the same objects
//! judged by `tollgate review` (its mutating answer applied, then its validating one) as the
//! webhook judges them. Allowed or denied, every violation (field path and message), every
//! warning, and the object as it would be stored must agree, case by case: CREATE and UPDATE,
//! transition rules, `optionalOldSelf`, immutable fields, ratcheting of values stored before
//! the policies, letting an object go, warn mode and defaults.

#![allow(clippy::expect_used, clippy::unwrap_used)] // a failed step should fail the test loudly

mod support;

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::time::Duration;

use http_body_util::BodyExt;
use kube::Client;
use kube::api::{Api, DynamicObject, PostParams};
use kube::core::ApiResource;
use serde_json::{Value, json};
use support::cluster::Cluster;

const NS: &str = "intree";
const POLICIES: &str = "tests/in_tree/policies";
const GROUP: &str = "intree.tollgate.test";

/// The shipped example and its suite (policies/tests), replayed in-tree too.
const EXAMPLE_POLICIES: &str = "policies";
const EXAMPLE_SUITE: &str = "policies/tests/paymentgateway.yaml";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Gizmo,
    Gadget,
    PaymentGateway,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Gizmo => "Gizmo",
            Kind::Gadget => "Gadget",
            Kind::PaymentGateway => "PaymentGateway",
        }
    }
    fn plural(self) -> &'static str {
        match self {
            Kind::Gizmo => "gizmos",
            Kind::Gadget => "gadgets",
            Kind::PaymentGateway => "paymentgateways",
        }
    }
    fn group(self) -> &'static str {
        match self {
            Kind::PaymentGateway => "payments.example.com",
            _ => GROUP,
        }
    }
    fn namespace(self) -> &'static str {
        match self {
            Kind::PaymentGateway => "payments",
            _ => NS,
        }
    }
    fn policies(self) -> &'static str {
        match self {
            Kind::PaymentGateway => EXAMPLE_POLICIES,
            _ => POLICIES,
        }
    }
    fn api(self, client: &Client) -> Api<DynamicObject> {
        Api::namespaced_with(
            client.clone(),
            self.namespace(),
            &ApiResource {
                group: self.group().into(),
                version: "v1".into(),
                api_version: format!("{}/v1", self.group()),
                kind: self.name().into(),
                plural: self.plural().into(),
            },
        )
    }
}

fn object(kind: Kind, name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": format!("{GROUP}/v1"),
        "kind": kind.name(),
        "metadata": {"name": name, "namespace": NS},
        "spec": spec,
    })
}

/// An edit of a stored object: the UPDATE sent.
type Edit = fn(&mut Value);

struct Case {
    name: String,
    kind: Kind,
    /// Who sends it (impersonated); `None` is the harness's admin.
    user: Option<String>,
    /// Stored before the policies are installed; `None` for a CREATE.
    old: Option<Value>,
    /// The object sent (CREATE), or the stored object edited by `edit` (UPDATE).
    new: Value,
    edit: Option<Edit>,
}

fn base() -> Value {
    json!({
        "owner": "ana",
        "size": 10,
        "ratio": 0.5,
        "tags": ["a", "b"],
        "limits": {"cpu": 2},
        "parts": [{"name": "p1", "weight": 1}],
        "window": {"start": 1, "end": 5},
        "phase": "new",
        "level": 1,
    })
}

/// Values for each field of the gizmo's spec (`None` removes it), valid and not.
fn variations() -> Vec<(&'static str, Vec<Option<Value>>)> {
    vec![
        (
            "owner",
            vec![
                None,
                Some(json!("")),
                Some(json!("Ana")),
                Some(json!("abcdefghijklmnopqrstuvwxyz")),
                Some(json!(7)),
                Some(json!(null)),
            ],
        ),
        (
            "size",
            vec![
                Some(json!(-5)),
                Some(json!(50)),
                None,
                Some(json!(0)),
                Some(json!(101)),
                Some(json!(100)),
                Some(json!(2.5)),
                Some(json!(4.0)),
                Some(json!("10")),
            ],
        ),
        (
            "ratio",
            vec![
                Some(json!(1)),
                Some(json!(0.99)),
                Some(json!(-0.1)),
                Some(json!(0)),
                Some(json!("half")),
            ],
        ),
        (
            "mode",
            vec![
                Some(json!("slow")),
                Some(json!("medium")),
                Some(json!(null)),
            ],
        ),
        (
            "url",
            vec![
                Some(json!("https://x")),
                Some(json!("http://x")),
                Some(json!("")),
            ],
        ),
        (
            "tags",
            vec![
                Some(json!(["x"])),
                Some(json!(["a", "b", "c", "d"])),
                Some(json!([])),
                Some(json!(["a", "a"])),
                Some(json!(["a", "b", "c", "d", "e"])),
                Some(json!(["toolongtag"])),
                Some(json!([1])),
                Some(json!("a")),
            ],
        ),
        (
            "limits",
            vec![
                Some(json!({})),
                Some(json!({"cpu": -1})),
                Some(json!({"a": 1, "b": 2, "c": 3, "d": 4})),
                Some(json!({"x.y/z": -1})),
                Some(json!({"cpu": "2"})),
            ],
        ),
        ("min", vec![Some(json!(3))]),
        (
            "note",
            vec![
                Some(json!(null)),
                Some(json!("short")),
                Some(json!("far too long a note")),
            ],
        ),
        (
            "port",
            vec![Some(json!(8080)), Some(json!("http")), Some(json!(true))],
        ),
        (
            "retry",
            vec![
                Some(json!({})),
                Some(json!({"attempts": 9})),
                Some(json!({"backoff": "random"})),
                Some(json!({"jitter": true})),
                Some(json!("fast")),
            ],
        ),
        (
            "parts",
            vec![
                Some(json!([])),
                Some(json!([{"name": "q1"}])),
                Some(json!([{"weight": 1}])),
                Some(json!([{"name": "p1", "weight": -1}, {"name": "x"}])),
                Some(json!([{"name": "p1"}, "p2"])),
            ],
        ),
        (
            "window",
            vec![
                Some(json!({})),
                Some(json!({"start": 5, "end": 5})),
                Some(json!({"start": 200, "end": 5})),
                Some(json!({"start": 1})),
            ],
        ),
        ("colour", vec![Some(json!("red"))]),
        (
            "id",
            vec![
                Some(json!("6f1c3e2a-0b7d-4c1e-9a55-2f7d1c0e9b11")),
                Some(json!("6F1C3E2A0B7D4C1E9A552F7D1C0E9B11")),
                Some(json!("not-a-uuid")),
                Some(json!(12)),
            ],
        ),
        (
            "blob",
            vec![
                Some(json!("aGVsbG8=")),
                Some(json!("aGVsbG8")),
                Some(json!("!!!!")),
            ],
        ),
        ("secret", vec![Some(json!("anything at all"))]),
        (
            "contact",
            vec![
                Some(json!({"email": "a@b"})),
                Some(json!({"phone": "1"})),
                Some(json!({"email": "nope", "phone": "1234567890123"})),
                Some(json!({"email": null})),
                Some(json!(null)),
            ],
        ),
        (
            "shape",
            vec![
                Some(json!("abc")),
                Some(json!("abcd")),
                Some(json!(7)),
                Some(json!(3)),
                Some(json!(true)),
            ],
        ),
        (
            "unit",
            vec![
                Some(json!("kg")),
                Some(json!("kilo")),
                Some(json!("g")),
                Some(json!("mass")),
            ],
        ),
        ("plain", vec![Some(json!("x")), Some(json!(3))]),
        (
            "env",
            vec![
                Some(json!({"HOME": "x", "PATH": "/usr/local/bin"})),
                Some(json!({"HOME": "toolong"})),
                Some(json!({"home": "x"})),
                Some(json!({"A": 1, "X_A": "y"})),
                Some(json!({"X_B": "ab"})),
                Some(json!({"PATH": "/bin", "TERM": "vt"})),
            ],
        ),
        (
            "step",
            vec![
                Some(json!(10)),
                Some(json!(12)),
                Some(json!(15.0)),
                Some(json!(7.5)),
            ],
        ),
        (
            "tier",
            vec![
                Some(json!("gold")),
                Some(json!("bronze")),
                Some(json!(5)),
                Some(json!("silverish")),
            ],
        ),
        (
            "template",
            vec![
                Some(json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"a": "b"}})),
                Some(json!({"apiVersion": "apps/v1", "kind": "Deployment"})),
                Some(json!({"kind": "ConfigMap"})),
                Some(json!({"apiVersion": "a/b/c", "kind": "Config_Map"})),
                Some(json!({"apiVersion": "", "kind": 3})),
                Some(json!({"apiVersion": "/v1", "kind": "9lives"})),
            ],
        ),
        (
            "flags",
            vec![
                Some(json!(["a", "b"])),
                Some(json!(["a", "a"])),
                Some(json!(["a", "b", "a", "b", "a"])),
                Some(json!([{"x": 1}, {"x": 1}, {"x": 2}])),
            ],
        ),
        (
            "ports",
            vec![
                Some(json!([{"name": "http", "port": 80}])),
                Some(json!([{"name": "http", "port": 80}, {"name": "http", "port": 81}])),
                Some(json!([{"port": 80}, {"port": 81}])),
                Some(json!([{"name": "a"}, "b"])),
                Some(json!([{"name": "a", "port": 0}, {"name": "b", "port": 2}, {"name": "a"}])),
            ],
        ),
        ("level", vec![Some(json!(5)), Some(json!("high")), None]),
        ("phase", vec![Some(json!("done")), Some(json!(3))]),
        ("extra", vec![Some(json!({"a": 1})), Some(json!(null))]),
    ]
}

fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
    let create = |name: String, kind: Kind, new: Value| Case {
        name,
        kind,
        user: None,
        old: None,
        new,
        edit: None,
    };
    cases.push(create(
        "valid".into(),
        Kind::Gizmo,
        object(Kind::Gizmo, "valid", base()),
    ));
    let mut minimal = json!({"owner": "bo", "size": 1});
    cases.push(create(
        "minimal".into(),
        Kind::Gizmo,
        object(Kind::Gizmo, "minimal", minimal.clone()),
    ));
    minimal["retry"] = json!({"attempts": 1});
    cases.push(create(
        "minimal-retry".into(),
        Kind::Gizmo,
        object(Kind::Gizmo, "minimal-retry", minimal),
    ));
    for (field, values) in variations() {
        for (idx, value) in values.into_iter().enumerate() {
            let name = format!("{}-{idx}", field.to_lowercase());
            let mut spec = base();
            match value {
                Some(v) => spec[field] = v,
                None => {
                    spec.as_object_mut().unwrap().remove(field);
                }
            }
            cases.push(create(
                name.clone(),
                Kind::Gizmo,
                object(Kind::Gizmo, &name, spec),
            ));
        }
    }
    // Several failures at once, and a spec that is not an object.
    let mut many = base();
    many["owner"] = json!("X");
    many["size"] = json!(0);
    many["tags"] = json!(["a", "a"]);
    many["limits"] = json!({"cpu": -1});
    cases.push(create(
        "many".into(),
        Kind::Gizmo,
        object(Kind::Gizmo, "many", many),
    ));
    cases.push(create("no-spec".into(), Kind::Gizmo, json!({"apiVersion": format!("{GROUP}/v1"), "kind": "Gizmo", "metadata": {"name": "no-spec", "namespace": NS}})));
    cases.push(create(
        "spec-string".into(),
        Kind::Gizmo,
        object(Kind::Gizmo, "spec-string", json!("x")),
    ));
    let long = "a-name-that-is-longer-than-thirty-characters";
    cases.push(create(
        long.into(),
        Kind::Gizmo,
        object(Kind::Gizmo, long, base()),
    ));
    let mut exempt = object(Kind::Gizmo, "exempt", json!({"size": 0}));
    exempt["metadata"]["labels"] = json!({"exempt": "yes"});
    cases.push(create("exempt".into(), Kind::Gizmo, exempt));
    let mut skipped = object(Kind::Gizmo, "skipped", json!({"size": 0}));
    skipped["metadata"]["labels"] = json!({"skip-policy": "yes"});
    cases.push(create("skipped".into(), Kind::Gizmo, skipped));
    let mut labelled = object(Kind::Gizmo, "labelled", base());
    labelled["metadata"]["labels"] = json!({"tier": "silver", "team": "x"});
    cases.push(create("labelled".into(), Kind::Gizmo, labelled));
    // Warn mode.
    for (idx, spec) in [
        json!({"colour": "red"}),
        json!({"colour": "blue"}),
        json!({"count": 9}),
        json!({"colour": "blue", "count": 9}),
    ]
    .into_iter()
    .enumerate()
    {
        let name = format!("gadget-{idx}");
        cases.push(create(
            name.clone(),
            Kind::Gadget,
            object(Kind::Gadget, &name, spec),
        ));
    }
    // UPDATEs of objects stored before the policies existed.
    let update = |name: &str, kind: Kind, old_spec: Value, edit: Edit| Case {
        name: name.into(),
        kind,
        user: None,
        old: Some(object(kind, name, old_spec)),
        new: Value::Null,
        edit: Some(edit),
    };
    let spec_of = |f: fn(&mut Value)| {
        let mut spec = base();
        f(&mut spec);
        spec
    };
    cases.push(update("u-same", Kind::Gizmo, base(), |_| {}));
    cases.push(update("u-grow", Kind::Gizmo, base(), |o| {
        o["spec"]["size"] = json!(20)
    }));
    cases.push(update("u-shrink", Kind::Gizmo, base(), |o| {
        o["spec"]["size"] = json!(5)
    }));
    cases.push(update("u-owner", Kind::Gizmo, base(), |o| {
        o["spec"]["owner"] = json!("bea")
    }));
    cases.push(update("u-owner-gone", Kind::Gizmo, base(), |o| {
        o["spec"].as_object_mut().unwrap().remove("owner");
    }));
    cases.push(update(
        "u-done",
        Kind::Gizmo,
        spec_of(|s| s["phase"] = json!("done")),
        |o| o["spec"]["phase"] = json!("new"),
    ));
    cases.push(update(
        "u-done-stays",
        Kind::Gizmo,
        spec_of(|s| s["phase"] = json!("done")),
        |o| o["spec"]["level"] = json!(3),
    ));
    cases.push(update("u-level-down", Kind::Gizmo, base(), |o| {
        o["spec"]["level"] = json!(0)
    }));
    cases.push(update(
        "u-level-new",
        Kind::Gizmo,
        spec_of(|s| {
            s.as_object_mut().unwrap().remove("level");
        }),
        |o| o["spec"]["level"] = json!(0),
    ));
    // Ratcheting: values stored before the policy, left alone or changed.
    let bad = || {
        spec_of(|s| {
            s["ratio"] = json!(3);
            s["tags"] = json!(["a", "a"]);
            s["limits"] = json!({"cpu": -1});
        })
    };
    cases.push(update("r-untouched", Kind::Gizmo, bad(), |o| {
        o["spec"]["size"] = json!(11)
    }));
    cases.push(update("r-changed", Kind::Gizmo, bad(), |o| {
        o["spec"]["ratio"] = json!(4)
    }));
    cases.push(update("r-fixed", Kind::Gizmo, bad(), |o| {
        o["spec"]["ratio"] = json!(0.1)
    }));
    cases.push(update("r-list", Kind::Gizmo, bad(), |o| {
        o["spec"]["tags"] = json!(["b", "b"])
    }));
    cases.push(update("r-map", Kind::Gizmo, bad(), |o| {
        o["spec"]["limits"]["mem"] = json!(-2)
    }));
    cases.push(update(
        "r-rule",
        Kind::Gizmo,
        spec_of(|s| s["window"] = json!({"start": 9, "end": 2})),
        |o| o["spec"]["size"] = json!(12),
    ));
    cases.push(update(
        "r-rule-touched",
        Kind::Gizmo,
        spec_of(|s| s["window"] = json!({"start": 9, "end": 2})),
        |o| o["spec"]["window"]["end"] = json!(3),
    ));
    cases.push(update(
        "r-item-rule",
        Kind::Gizmo,
        spec_of(|s| s["parts"] = json!([{"name": "x"}])),
        |o| o["spec"]["size"] = json!(12),
    ));
    cases.push(update("r-missing", Kind::Gizmo, json!({"size": 10}), |o| {
        o["spec"]["size"] = json!(12)
    }));
    cases.push(update(
        "r-gadget",
        Kind::Gadget,
        json!({"colour": "blue"}),
        |o| o["spec"]["count"] = json!(1),
    ));
    // Map lists: items correlate with their old selves by key, wherever they moved.
    let ports = |p: Value| spec_of_value(p);
    fn spec_of_value(ports: Value) -> Value {
        let mut spec = base();
        spec["ports"] = ports;
        spec
    }
    let two = json!([{"name": "a", "port": 10}, {"name": "b", "port": 20}]);
    cases.push(update("m-down", Kind::Gizmo, ports(two.clone()), |o| {
        o["spec"]["ports"][1]["port"] = json!(5)
    }));
    cases.push(update("m-up", Kind::Gizmo, ports(two.clone()), |o| {
        o["spec"]["ports"][1]["port"] = json!(25)
    }));
    cases.push(update(
        "m-moved-down",
        Kind::Gizmo,
        ports(two.clone()),
        |o| {
            o["spec"]["ports"] = json!([{"name": "b", "port": 15}, {"name": "a", "port": 10}]);
        },
    ));
    cases.push(update(
        "m-moved",
        Kind::Gizmo,
        ports(json!([{"name": "a", "port": 0}, {"name": "b", "port": 20}])),
        |o| {
            o["spec"]["ports"] = json!([{"name": "b", "port": 20}, {"name": "a", "port": 0}]);
        },
    ));
    cases.push(update(
        "m-dup-kept",
        Kind::Gizmo,
        ports(json!([{"name": "a"}, {"name": "a"}])),
        |o| o["spec"]["size"] = json!(11),
    ));
    cases.push(update("m-dup-new", Kind::Gizmo, ports(two), |o| {
        o["spec"]["ports"][1]["name"] = json!("a")
    }));
    cases.push(update(
        "s-dup-kept",
        Kind::Gizmo,
        spec_of(|s| s["flags"] = json!(["x", "x"])),
        |o| o["spec"]["flags"] = json!(["y", "y"]),
    ));
    // Letting go: a stored object nobody could update any more loses its finalizer.
    cases.push(update(
        "go-finalizer",
        Kind::Gizmo,
        json!({"size": 0}),
        |o| {
            o["metadata"]["finalizers"] = json!([]);
        },
    ));
    cases.push(update(
        "go-finalizer-and-spec",
        Kind::Gizmo,
        json!({"size": 0}),
        |o| {
            o["metadata"]["finalizers"] = json!([]);
            o["spec"]["size"] = json!(-1);
        },
    ));
    // Restores: the reconciler's user setting a new marker is judged on the state it returns
    // to (no transition rule); anyone else, or an old marker, is judged as usual.
    let restore: Edit = |o| {
        o["spec"]["size"] = json!(5);
        o["metadata"]["annotations"] = json!({"tollgate.dev/restored": "rev-2"});
    };
    cases.push(update(
        "restore-by-reconciler",
        Kind::Gizmo,
        base(),
        restore,
    ));
    cases.push(update("restore-by-another", Kind::Gizmo, base(), restore));
    cases.push(update("restore-old-marker", Kind::Gizmo, base(), restore));
    for case in &mut cases {
        if let Some(old) = &mut case.old {
            if case.name.starts_with("go-") {
                old["metadata"]["finalizers"] = json!(["intree.tollgate.test/hold"]);
            }
            if case.name == "restore-old-marker" {
                old["metadata"]["annotations"] = json!({"tollgate.dev/restored": "rev-2"});
            }
        }
        case.user = match case.name.as_str() {
            "restore-by-reconciler" | "restore-old-marker" => Some(RESTORER.into()),
            "restore-by-another" => Some("mallory".into()),
            _ => None,
        };
    }
    cases
}

/// The reconciler's username `manifests --url` and `review` trust with restores by default.
const RESTORER: &str = "system:serviceaccount:tollgate:tollgate-reconciler";

#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    allowed: bool,
    violations: BTreeSet<String>,
    warnings: BTreeSet<String>,
    /// As it would be stored (allowed cases): spec and labels.
    stored: Option<Value>,
}

fn stored_view(object: &Value) -> Value {
    normalised(&json!({"spec": object["spec"], "labels": object["metadata"]["labels"]}))
}

/// Numbers as the apiserver writes them back: a whole `4.0` is stored as `4`.
fn normalised(value: &Value) -> Value {
    match value {
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 9.0e15 => json!(f as i64),
            _ => value.clone(),
        },
        Value::Array(items) => Value::Array(items.iter().map(normalised).collect()),
        Value::Object(members) => Value::Object(
            members
                .iter()
                .map(|(k, v)| (k.clone(), normalised(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// The `"<path>: <message>"` items of a denial or warning: what follows `after`, split.
fn items(text: &str, after: &str) -> Vec<String> {
    let listed = text.split_once(after).map_or(text, |(_, rest)| rest);
    listed.split("; ").map(str::to_string).collect()
}

async fn apiserver_outcome(client: &Client, case: &Case, new: &Value) -> Outcome {
    let kind = case.kind;
    let base = format!(
        "/apis/{}/v1/namespaces/{}/{}",
        kind.group(),
        kind.namespace(),
        kind.plural()
    );
    let request = match &case.old {
        None => http::Request::post(format!("{base}?dryRun=All")),
        Some(_) => http::Request::put(format!(
            "{base}/{}?dryRun=All",
            new["metadata"]["name"].as_str().unwrap_or_default()
        )),
    };
    let mut request = request.header("Content-Type", "application/json");
    if let Some(user) = &case.user {
        request = request.header("Impersonate-User", user);
    }
    let request = request.body(serde_json::to_vec(new).unwrap()).unwrap();
    let response = client.send(request.map(Into::into)).await.unwrap();
    let mut warnings = BTreeSet::new();
    for warning in response.headers().get_all("warning") {
        // `299 - "text"`, the text's quotes and backslashes escaped.
        let text = warning.to_str().unwrap_or_default();
        let quoted = text.strip_prefix("299 - ").unwrap_or(text);
        let inner = quoted
            .strip_prefix('"')
            .and_then(|t| t.strip_suffix('"'))
            .unwrap_or(quoted);
        let text = inner.replace("\\\"", "\"").replace("\\\\", "\\");
        warnings.extend(items(&text, "': "));
    }
    let status = response.status();
    let body: Value =
        serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap();
    if status.is_success() {
        return Outcome {
            allowed: true,
            violations: BTreeSet::new(),
            warnings,
            stored: Some(stored_view(&body)),
        };
    }
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("ValidatingAdmissionPolicy"),
        "{}: refused by something else: {body}",
        case.name
    );
    Outcome {
        allowed: false,
        violations: items(message, "denied request: ")
            .into_iter()
            .map(|i| {
                i.split_once(" is invalid: ")
                    .map_or(i.clone(), |(_, v)| v.to_string())
            })
            .collect(),
        warnings,
        stored: None,
    }
}

fn review(dir: &Path, case: &Case, object: &Value, old: Option<&Value>, mutate: bool) -> Value {
    let review = json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "00000000-0000-0000-0000-000000000001",
            "kind": {"group": case.kind.group(), "version": "v1", "kind": case.kind.name()},
            "resource": {"group": case.kind.group(), "version": "v1", "resource": case.kind.plural()},
            "name": object["metadata"]["name"],
            "namespace": case.kind.namespace(),
            "operation": if old.is_some() { "UPDATE" } else { "CREATE" },
            "userInfo": match &case.user {
                Some(user) => json!({"username": user, "groups": ["system:authenticated"]}),
                None => json!({"username": "kubernetes-admin", "groups": ["system:masters", "system:authenticated"]}),
            },
            "object": object,
            "oldObject": old.cloned().unwrap_or(Value::Null),
        }
    });
    let file = dir.join("review.json");
    std::fs::write(&file, serde_json::to_vec(&review).unwrap()).unwrap();
    support::review(Path::new(case.kind.policies()), &file, mutate)
}

fn tollgate_outcome(dir: &Path, case: &Case, new: &Value, old: Option<&Value>) -> Outcome {
    let mut object = new.clone();
    let mutated = review(dir, case, new, old, true);
    if let Some(patch) = support::server::decode_patch(&mutated) {
        json_patch::patch(&mut object, &patch).unwrap();
    }
    let answer = review(dir, case, &object, old, false)["response"].clone();
    let allowed = answer["allowed"].as_bool().unwrap();
    let warnings = answer["warnings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect();
    Outcome {
        allowed,
        violations: if allowed {
            BTreeSet::new()
        } else {
            items(
                answer["status"]["message"].as_str().unwrap_or_default(),
                " is invalid: ",
            )
            .into_iter()
            .collect()
        },
        warnings,
        stored: allowed.then(|| stored_view(&object)),
    }
}

/// The shipped suite's admission cases (its conversion cases stay with the webhook; DELETE is
/// judged by neither).
fn suite_cases() -> Vec<Case> {
    let suites = tollgate_engine::suite::load(&support::repo_path(EXAMPLE_SUITE))
        .unwrap_or_else(|e| panic!("{EXAMPLE_SUITE}: {e:?}"));
    let mut cases = Vec::new();
    for case in suites.iter().flat_map(|s| &s.cases) {
        let Some((operation, object, old)) = case.admission() else {
            continue;
        };
        if operation == tollgate_engine::suite::Operation::Delete {
            continue;
        }
        cases.push(Case {
            name: format!("suite: {}", case.name),
            kind: Kind::PaymentGateway,
            user: Some(case.user_info.username.clone()).filter(|u| !u.is_empty()),
            old: old.cloned(),
            new: object.clone(),
            edit: None,
        });
    }
    // A CREATE of a name some UPDATE stores first would be refused as existing.
    let stored: BTreeSet<String> = cases
        .iter()
        .filter_map(|c| c.old.as_ref())
        .map(stored_key)
        .collect();
    for case in cases.iter_mut().filter(|c| c.old.is_none()) {
        if stored.contains(&stored_key(&case.new)) {
            let name = format!(
                "{}-c",
                case.new["metadata"]["name"].as_str().unwrap_or_default()
            );
            case.new["metadata"]["name"] = json!(name);
        }
    }
    cases
}

/// The example CRD with every version's schema accepting anything (only the admission
/// policies judge) and no conversion webhook.
fn permissive_example_crd() -> Value {
    let text =
        std::fs::read_to_string(support::repo_path("deploy/crd-paymentgateway.yaml")).unwrap();
    let mut crd = tollgate_engine::policy::yaml::parse_documents(&text).unwrap()[0]
        .value
        .clone();
    crd["spec"].as_object_mut().unwrap().remove("conversion");
    for version in crd["spec"]["versions"].as_array_mut().unwrap() {
        version["schema"] = json!({"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}});
    }
    crd
}

/// Where a stored object is kept: several cases may update the same one.
fn stored_key(object: &Value) -> String {
    format!(
        "{}/{}",
        object["kind"].as_str().unwrap_or_default(),
        object["metadata"]["name"].as_str().unwrap_or_default()
    )
}

fn manifests(policies: &str) -> Vec<Value> {
    support::documents(&support::tollgate_stdout([
        "manifests",
        "--in-tree",
        "--policies",
        policies,
        "--url",
        "https://127.0.0.1:9",
        "--no-ca-bundle",
    ]))
}

#[tokio::test]
async fn in_tree_policies_judge_every_case_as_the_webhook_does() {
    let Some(cluster) = Cluster::start().await else {
        return;
    };
    let client = cluster.client.clone();
    support::create_namespace(&client, NS).await;
    support::create_namespace(&client, Kind::PaymentGateway.namespace()).await;
    let crds = std::fs::read_to_string(support::repo_path("tests/in_tree/crds.yaml")).unwrap();
    for crd in tollgate_engine::policy::yaml::parse_documents(&crds).unwrap() {
        support::create_document(&client, &crd.value, false).await;
    }
    support::create_document(&client, &permissive_example_crd(), false).await;
    // The users the corpus impersonates may write what they send.
    for doc in [
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
               "metadata": {"name": "in-tree-writers"},
               "rules": [{"apiGroups": [GROUP, "payments.example.com"], "resources": ["*"], "verbs": ["*"]}]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
               "metadata": {"name": "in-tree-writers"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "in-tree-writers"},
               "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:authenticated"}]}),
    ] {
        support::create_document(&client, &doc, false).await;
    }
    let corpus = cases();
    assert!(corpus.len() >= 100, "the corpus has {} cases", corpus.len());
    let suite = suite_cases();
    assert!(
        suite.len() >= 10,
        "the suite has {} admission cases",
        suite.len()
    );
    let cases: Vec<Case> = corpus.into_iter().chain(suite).collect();
    for kind in [Kind::Gizmo, Kind::Gadget, Kind::PaymentGateway] {
        support::until_served(kind.name(), kind.api(&client), Duration::from_secs(30)).await;
    }
    let mut stored = HashMap::new();
    for case in &cases {
        if let Some(old) = &case.old {
            if let Some(kept) = stored.get(&stored_key(old)) {
                let kept: &Value = kept;
                assert_eq!(
                    kept["spec"], old["spec"],
                    "{}: one name, two old objects",
                    case.name
                );
                continue;
            }
            let object: DynamicObject = serde_json::from_value(old.clone()).unwrap();
            let created = case
                .kind
                .api(&client)
                .create(&PostParams::default(), &object)
                .await
                .unwrap_or_else(|e| panic!("{}: the old object stores: {e}", case.name));
            stored.insert(stored_key(old), serde_json::to_value(created).unwrap());
        }
    }

    // Everything compiles: no webhook configuration is rendered, so none judges. (The example
    // converts between versions: that stays with the webhook, in its CRD's conversion stanza.)
    let docs: Vec<Value> = [POLICIES, EXAMPLE_POLICIES]
        .into_iter()
        .flat_map(manifests)
        .filter(|d| d["kind"] != "CustomResourceDefinition")
        .collect();
    let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    assert!(
        !kinds.iter().any(|k| k.ends_with("WebhookConfiguration")),
        "{kinds:?}"
    );
    for kind in [
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
        "MutatingAdmissionPolicy",
        "MutatingAdmissionPolicyBinding",
    ] {
        assert!(kinds.contains(&kind), "no {kind} in {kinds:?}");
    }
    for doc in &docs {
        support::create_document(&client, doc, false).await;
    }
    // In force once every policy's refusal, warning or default arrives from the apiserver.
    let first = |name: &str| {
        cases
            .iter()
            .find(|c| c.name.starts_with(name) && c.old.is_none())
            .unwrap_or_else(|| panic!("no case {name}"))
    };
    let (gizmo, gadget, gateway) = (first("valid"), first("gadget-1"), first("suite: a minimal"));
    let refusal = |kind: Kind, name: &str, spec: Value| Case {
        name: name.into(),
        kind,
        user: None,
        old: None,
        new: object(kind, name, spec),
        edit: None,
    };
    let probes = [
        refusal(Kind::Gizmo, "probe", json!({"size": 0})),
        refusal(
            Kind::PaymentGateway,
            "a-probe-with-a-name-longer-than-forty-characters",
            gateway.new["spec"].clone(),
        ),
    ];
    support::eventually(
        "the admission policies are in force",
        Duration::from_secs(60),
        || {
            let client = client.clone();
            let probes = &probes;
            async move {
                for probe in probes {
                    let mut sent = probe.new.clone();
                    sent["apiVersion"] = json!(format!("{}/v1", probe.kind.group()));
                    sent["metadata"]["namespace"] = json!(probe.kind.namespace());
                    if apiserver_outcome(&client, probe, &sent).await.allowed {
                        return Err(format!("{} admitted", probe.name));
                    }
                }
                let defaulted = apiserver_outcome(&client, gizmo, &gizmo.new).await.stored;
                if defaulted.is_none_or(|s| s["labels"]["tier"] != "gold") {
                    return Err("no gizmo default".into());
                }
                let defaulted = apiserver_outcome(&client, gateway, &gateway.new)
                    .await
                    .stored;
                if defaulted
                    .is_none_or(|s| s["labels"]["app.kubernetes.io/managed-by"] != "tollgate")
                {
                    return Err("no gateway default".into());
                }
                if apiserver_outcome(&client, gadget, &gadget.new)
                    .await
                    .warnings
                    .is_empty()
                {
                    return Err("no gadget warning".into());
                }
                Ok(())
            }
        },
    )
    .await;
    // The UPDATE-only (ratcheting) policies arrive with the others; give the apiserver's
    // informers a moment more.
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Some verdicts the corpus is built to reach: agreement on these is not agreement by accident.
    let expected: HashMap<&str, bool> = [
        ("valid", true),
        ("many", false),
        ("u-shrink", false),
        ("u-owner", false),
        ("u-level-down", false),
        ("r-untouched", true),
        ("r-changed", false),
        ("go-finalizer", true),
        ("restore-by-reconciler", true),
        ("restore-by-another", false),
        ("restore-old-marker", false),
        ("gadget-1", true),
        ("exempt", true),
        ("skipped", true),
        ("m-down", false),
        ("m-up", true),
        ("m-moved-down", false),
        ("m-moved", true),
        ("m-dup-kept", true),
        ("m-dup-new", false),
        ("s-dup-kept", true),
        ("shape-1", false),
        ("shape-2", true),
        ("unit-0", false),
        ("unit-1", true),
        ("plain-1", false),
        ("step-2", true),
        ("step-3", false),
        ("env-0", false),
        ("env-1", false),
        ("env-2", false),
        ("env-5", true),
    ]
    .into_iter()
    .collect();
    let scratch = tempfile::tempdir().unwrap();
    let mut disagreements = Vec::new();
    let (mut denied, mut warned) = (0, 0);
    for case in &cases {
        let old = case.old.as_ref().and_then(|o| stored.get(&stored_key(o)));
        let new = match (old, case.edit) {
            (Some(old), Some(edit)) => {
                let mut new = old.clone();
                edit(&mut new);
                new
            }
            (Some(old), None) => {
                let mut new = case.new.clone();
                new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
                new
            }
            (None, _) => case.new.clone(),
        };
        let apiserver = apiserver_outcome(&client, case, &new).await;
        let tollgate = tollgate_outcome(scratch.path(), case, &new, old);
        if let Some(allowed) = expected.get(case.name.as_str()) {
            assert_eq!(apiserver.allowed, *allowed, "{}: {apiserver:?}", case.name);
        }
        denied += usize::from(!apiserver.allowed);
        warned += usize::from(!apiserver.warnings.is_empty());
        if apiserver != tollgate {
            disagreements.push(format!(
                "{}:\n  in-tree: {apiserver:?}\n  webhook: {tollgate:?}",
                case.name
            ));
        }
    }
    let agreed = cases.len() - disagreements.len();
    eprintln!(
        "in-tree vs webhook: {agreed}/{} cases agree ({denied} denied, {warned} with warnings)",
        cases.len()
    );
    assert!(
        denied >= 40 && warned >= 5,
        "a corpus that exercises little"
    );
    assert!(
        disagreements.is_empty(),
        "{} of {} cases disagree:\n{}",
        disagreements.len(),
        cases.len(),
        disagreements.join("\n")
    );
}
