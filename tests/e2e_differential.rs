//! The differential test: the same schema installed as a CRD in the real kube-apiserver and
//! loaded as a tollgate policy (`schemaFrom` the same file), the same objects judged by both —
//! `dryRun=All&fieldValidation=Strict` creates and replaces against the CRD, `tollgate review`
//! (the binary) against the policy. Verdicts, the set of field paths and the defaulted object
//! must agree for every case. The one deliberate difference (forbidden `null`s, which `/mutate`
//! leaves and the apiserver drops) is named in `without_pruned_nulls` and the README.
//!
//! Two stages: the loose CRD (tests/differential/crd-loose.yaml), then the tight one, with the
//! objects the UPDATE cases start from stored under the loose schema — ratcheting.

#![allow(clippy::expect_used, clippy::unwrap_used)] // a failed step should fail the test loudly

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, Error};
use serde_json::{Value, json};
use support::cluster::Cluster;

const NS: &str = "diff";
const BASE: &str = "/apis/diff.tollgate.test/v1/namespaces/diff/widgets";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Loose,
    Tight,
}

impl Stage {
    fn crd(self) -> &'static str {
        match self {
            Stage::Loose => "tests/differential/crd-loose.yaml",
            Stage::Tight => "tests/differential/crd-tight.yaml",
        }
    }
    fn policies(self) -> &'static str {
        match self {
            Stage::Loose => "tests/differential/loose",
            Stage::Tight => "tests/differential/tight",
        }
    }
}

struct Case {
    name: String,
    stage: Stage,
    /// Stored (under the loose schema) before the stage's UPDATE; `None` for a CREATE.
    old: Option<Value>,
    new: Value,
}

#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    allowed: bool,
    fields: BTreeSet<String>,
    /// The object as it would be stored (allowed cases only): `spec` after defaulting.
    spec: Option<Value>,
}

fn widget(name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "diff.tollgate.test/v1",
        "kind": "Widget",
        "metadata": {"name": name, "namespace": NS},
        "spec": spec,
    })
}

fn base_spec() -> Value {
    json!({
        "size": 10,
        "ratio": 0.5,
        "mode": "fast",
        "team_name": "tango",
        "tags": ["a", "b"],
        "ports": [{"name": "http", "port": 80}, {"name": "https", "port": 443}],
        "window": {"start": 1, "end": 2},
    })
}

/// One field of the base spec set to each of these values (`null` included).
fn field_variations() -> Vec<(&'static str, Vec<Value>)> {
    vec![
        (
            "size",
            vec![
                json!(1),
                json!(99),
                json!(100),
                json!(0),
                json!(-1),
                json!("3"),
                json!(2.5),
                json!(null),
            ],
        ),
        (
            "ratio",
            vec![json!(0), json!(0.01), json!(1), json!(1.5), json!(-0.5)],
        ),
        ("replicas", vec![json!(0), json!(-1), json!(null), json!(5)]),
        (
            "mode",
            vec![json!("safe"), json!("slow"), json!(null), json!("")],
        ),
        (
            "note",
            vec![json!(null), json!("short"), json!("x".repeat(21))],
        ),
        (
            "label",
            vec![json!(null), json!("abcdefghij"), json!("abcdefghijk")],
        ),
        (
            "port",
            vec![
                json!(80),
                json!("http"),
                json!(true),
                json!(1.5),
                json!(null),
            ],
        ),
        ("team_name", vec![json!("tiger"), json!("alpha"), json!("")]),
        ("dash-field", vec![json!(3), json!(7), json!(12)]),
        ("namespace", vec![json!("default"), json!("kube-system")]),
        (
            "id",
            vec![
                json!("123e4567-e89b-12d3-a456-426614174000"),
                json!("123E4567E89B12D3A456426614174000"),
                json!("nope"),
            ],
        ),
        (
            "address",
            vec![
                json!("10.0.0.1"),
                json!("010.0.0.1"),
                json!("::1"),
                json!("300.1.1.1"),
            ],
        ),
        (
            "network",
            vec![json!("10.0.0.0/8"), json!("10.0.0.0/40"), json!("10.0.0.0")],
        ),
        (
            "since",
            vec![
                json!("2024-01-02T03:04:05Z"),
                json!("2024-01-02T03:04:05.5+01:00"),
                json!("2024-01-02"),
                json!("yesterday"),
            ],
        ),
        (
            "every",
            vec![json!("1h30m"), json!("5 days"), json!("soon"), json!("")],
        ),
        (
            "host",
            vec![
                json!("example.com"),
                json!("-bad.example"),
                json!("localhost"),
            ],
        ),
        (
            "blob",
            vec![json!("aGVsbG8="), json!("aGVsbG8"), json!("!!")],
        ),
        (
            "mail",
            vec![
                json!("a@b.c"),
                json!("user.name+tag@example.com"),
                json!("Name <a@example.com>"),
                json!("\"quoted name\"@example.com"),
                json!("a@[127.0.0.1]"),
                json!("plain"),
                json!("@example.com"),
                json!("a@"),
                json!("a b@example.com"),
                json!("a@b@c"),
                json!("a@b.c (comment)"),
                json!("team: a@b.c;"),
                json!("a..b@c.d"),
                json!("a@[300.1.1.1]"),
            ],
        ),
        (
            "link",
            vec![
                json!("https://example.com/x?y=1#f"),
                json!("/relative/path"),
                json!("mailto:a@b.c"),
                json!("http://[::1]:80/"),
                json!("relative/path"),
                json!("http://exa mple.com"),
                json!("http://example.com/%zz"),
                json!("#fragment"),
                json!("*"),
                json!("http://a:1:2/"),
                json!("http://ex%41mple.com/"),
                json!("http://[127.0.0.1]/"),
                json!("http://user:p%zz@host/"),
            ],
        ),
        ("code", vec![json!("USD"), json!("usd"), json!("EURO")]),
        (
            "tags",
            vec![
                json!([]),
                json!(["a", "a"]),
                json!(["a", "b", "a", "b", "c"]),
                json!(["a", "b", "c", "d", "e", "f"]),
                json!([1]),
            ],
        ),
        (
            "ports",
            vec![
                json!([{"name": "a", "port": 1}]),
                json!([{"name": "a", "port": 1}, {"name": "a", "port": 2}]),
                json!([{"port": 1}]),
                json!([{"name": "a", "port": 0}]),
                json!([{"name": "a"}, 3]),
            ],
        ),
        (
            "limits",
            vec![
                json!({"cpu": "1"}),
                json!({"cpu": "muchtoolong"}),
                json!({"a": "1", "b": "1", "c": "1", "d": "1", "e": "1"}),
                json!({"cpu": 1}),
            ],
        ),
        (
            "template",
            vec![
                json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"a": "b"}}),
                json!({"kind": "ConfigMap"}),
                json!({"apiVersion": "v1"}),
                json!({"apiVersion": "", "kind": "ConfigMap"}),
                json!({"apiVersion": "a/b/c", "kind": "ConfigMap"}),
                json!({"apiVersion": "v1", "kind": "Not_A_Kind"}),
            ],
        ),
        (
            "extra",
            vec![json!({"anything": [1, {"deep": true}]}), json!({})],
        ),
        (
            "retry",
            vec![
                json!({}),
                json!({"attempts": 11}),
                json!({"attempts": null}),
                json!(null),
            ],
        ),
        (
            "window",
            vec![
                json!({"start": 3, "end": 2}),
                json!({"start": 1}),
                json!({"start": 1, "end": 5}),
            ],
        ),
        (
            "url",
            vec![json!("https://example.com/x"), json!("not a url")],
        ),
        ("memory", vec![json!("512Mi"), json!("2Gi"), json!("lots")]),
        ("stage", vec![json!("done"), json!("building")]),
        ("minReplicas", vec![json!(1), json!(5)]),
    ]
}

fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
    let mut number = 0;
    let mut next_name = |prefix: &str| {
        number += 1;
        format!("{prefix}-{number}")
    };
    cases.push(Case {
        name: next_name("create-base"),
        stage: Stage::Loose,
        old: None,
        new: widget("placeholder", base_spec()),
    });
    let variations = field_variations();
    let mut singles = Vec::new();
    for (field, values) in &variations {
        for value in values {
            let mut spec = base_spec();
            spec[*field] = value.clone();
            singles.push((field.to_string(), value.clone()));
            cases.push(Case {
                name: next_name(&format!("create-{field}")),
                stage: Stage::Loose,
                old: None,
                new: widget("placeholder", spec),
            });
        }
        // Each field of the base spec also left out.
        let mut spec = base_spec();
        if spec.as_object_mut().unwrap().remove(*field).is_some() {
            cases.push(Case {
                name: next_name(&format!("create-without-{field}")),
                stage: Stage::Loose,
                old: None,
                new: widget("placeholder", spec),
            });
        }
    }
    // Generated variations: neighbouring single-field changes together, so one object carries
    // several violations (and several defaults) at once.
    for pair in singles
        .chunks(2)
        .filter(|p| p.len() == 2 && p[0].0 != p[1].0)
    {
        let mut spec = base_spec();
        for (field, value) in pair {
            spec[field.as_str()] = value.clone();
        }
        cases.push(Case {
            name: next_name("create-pair"),
            stage: Stage::Loose,
            old: None,
            new: widget("placeholder", spec),
        });
    }
    for stride in [3usize, 5, 7] {
        for (i, window) in singles.windows(stride).enumerate().step_by(stride * 2) {
            let mut spec = base_spec();
            for (field, value) in window {
                spec[field.as_str()] = value.clone();
            }
            cases.push(Case {
                name: next_name(&format!("create-mix{stride}-{i}")),
                stage: Stage::Loose,
                old: None,
                new: widget("placeholder", spec),
            });
        }
    }
    // UPDATEs under the loose schema: transition rules, list-map correlation, optionalOldSelf.
    let update = |spec_old: Value, change: &dyn Fn(&mut Value)| {
        let mut spec_new = spec_old.clone();
        change(&mut spec_new);
        (spec_old, spec_new)
    };
    let with = |field: &str, value: Value| {
        let mut spec = base_spec();
        spec[field] = value;
        spec
    };
    let loose_updates: Vec<(&str, (Value, Value))> = vec![
        (
            "replicas-halved",
            update(with("replicas", json!(8)), &|s| s["replicas"] = json!(4)),
        ),
        (
            "replicas-dropped",
            update(with("replicas", json!(8)), &|s| s["replicas"] = json!(2)),
        ),
        (
            "replicas-raised",
            update(with("replicas", json!(8)), &|s| s["replicas"] = json!(9)),
        ),
        (
            "port-renumbered",
            update(base_spec(), &|s| s["ports"][0]["port"] = json!(81)),
        ),
        (
            "ports-reordered",
            update(
                base_spec(),
                &|s| {
                    s["ports"] =
                        json!([{"name": "https", "port": 443}, {"name": "http", "port": 80}])
                },
            ),
        ),
        (
            "ports-reordered-and-renumbered",
            update(
                base_spec(),
                &|s| {
                    s["ports"] =
                        json!([{"name": "https", "port": 444}, {"name": "http", "port": 80}])
                },
            ),
        ),
        (
            "port-added",
            update(base_spec(), &|s| {
                s["ports"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!({"name": "admin", "port": 9000}))
            }),
        ),
        (
            "stage-undone",
            update(with("stage", json!("done")), &|s| {
                s["stage"] = json!("building")
            }),
        ),
        (
            "stage-finished",
            update(with("stage", json!("building")), &|s| {
                s["stage"] = json!("done")
            }),
        ),
        (
            "stage-set",
            update(base_spec(), &|s| s["stage"] = json!("done")),
        ),
        (
            "size-invalid",
            update(base_spec(), &|s| s["size"] = json!(0)),
        ),
        (
            "mode-cleared",
            update(base_spec(), &|s| {
                s.as_object_mut().unwrap().remove("mode");
            }),
        ),
    ];
    for (label, (old, new)) in loose_updates {
        let name = next_name(&format!("update-{label}"));
        cases.push(Case {
            name,
            stage: Stage::Loose,
            old: Some(widget("placeholder", old)),
            new: widget("placeholder", new),
        });
    }
    // UPDATEs after the schema was tightened: values stored under the loose schema that the
    // tight one refuses are ratcheted while they stay as they are.
    let stale = || {
        let mut spec = base_spec();
        spec["label"] = json!("abcdefgh");
        spec["size"] = json!(70);
        spec["tags"] = json!(["a", "b", "c"]);
        spec["code"] = json!("OLD");
        spec
    };
    let tight_updates: Vec<(&str, (Value, Value))> = vec![
        (
            "stale-untouched-other-field",
            update(stale(), &|s| s["mode"] = json!("safe")),
        ),
        (
            "stale-label-lengthened",
            update(stale(), &|s| s["label"] = json!("abcdefghi")),
        ),
        (
            "stale-label-fixed",
            update(stale(), &|s| s["label"] = json!("abc")),
        ),
        (
            "stale-size-changed",
            update(stale(), &|s| s["size"] = json!(60)),
        ),
        (
            "stale-tags-grown",
            update(stale(), &|s| s["tags"] = json!(["a", "b", "c", "d"])),
        ),
        (
            "stale-tags-fixed",
            update(stale(), &|s| s["tags"] = json!(["a"])),
        ),
        (
            "stale-code-kept-label-changed",
            update(stale(), &|s| s["label"] = json!("xy")),
        ),
        (
            "stale-code-changed",
            update(stale(), &|s| s["code"] = json!("NEW")),
        ),
        (
            "stale-port-added",
            update(stale(), &|s| {
                s["ports"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!({"name": "admin", "port": 9000}))
            }),
        ),
        (
            "valid-label-too-long",
            update(base_spec(), &|s| s["label"] = json!("abcdef")),
        ),
    ];
    for (label, (old, new)) in tight_updates {
        let name = next_name(&format!("tight-update-{label}"));
        cases.push(Case {
            name,
            stage: Stage::Tight,
            old: Some(widget("placeholder", old)),
            new: widget("placeholder", new),
        });
    }
    for (label, spec) in [("stale", stale()), ("base", base_spec())] {
        cases.push(Case {
            name: next_name(&format!("tight-create-{label}")),
            stage: Stage::Tight,
            old: None,
            new: widget("placeholder", spec),
        });
    }
    // Finalizers: an object stored with a finalizer and a value the tight schema refuses.
    let mut held = widget("placeholder", stale());
    held["metadata"]["finalizers"] = json!(["diff.tollgate.test/hold"]);
    let mut released = held.clone();
    released["metadata"]["finalizers"] = json!([]);
    cases.push(Case {
        name: next_name("tight-update-finalizer-removed"),
        stage: Stage::Tight,
        old: Some(held),
        new: released,
    });
    // Every case gets its own object name, the case's name.
    for case in &mut cases {
        // Object names are DNS subdomains.
        case.name = case.name.to_lowercase().replace('_', "-");
        for object in case.old.iter_mut().chain(std::iter::once(&mut case.new)) {
            object["metadata"]["name"] = json!(case.name);
        }
    }
    cases
}

async fn apply_crd(client: &Client, file: &str) {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(file)).unwrap();
    let crd: Value = tollgate_engine::policy::yaml::parse_documents(&text)
        .unwrap()
        .remove(0)
        .value;
    let api: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(client.clone());
    api.patch(
        "widgets.diff.tollgate.test",
        &PatchParams::apply("e2e-differential").force(),
        &Patch::Apply(&crd),
    )
    .await
    .expect("the CRD applies");
}

/// Sends `object` to the apiserver (dry run, strict field validation) and reads its verdict.
async fn apiserver_outcome(client: &Client, case: &Case, stored: Option<&Value>) -> Outcome {
    let mut body = case.new.clone();
    let request = match stored {
        None => http::Request::post(format!("{BASE}?dryRun=All&fieldValidation=Strict")),
        Some(stored) => {
            body["metadata"]["resourceVersion"] = stored["metadata"]["resourceVersion"].clone();
            http::Request::put(format!(
                "{BASE}/{}?dryRun=All&fieldValidation=Strict",
                case.name
            ))
        }
    };
    let request = request
        .header("Content-Type", "application/json")
        .body(serde_json::to_vec(&body).unwrap())
        .unwrap();
    match client.request::<Value>(request).await {
        Ok(object) => Outcome {
            allowed: true,
            fields: BTreeSet::new(),
            spec: Some(object["spec"].clone()),
        },
        Err(Error::Api(status)) => Outcome {
            allowed: false,
            fields: status
                .details
                .map(|d| d.causes.into_iter().map(|c| c.field).collect())
                .unwrap_or_default(),
            spec: None,
        },
        Err(other) => panic!("{}: the apiserver did not answer: {other}", case.name),
    }
}

fn run_review(dir: &Path, policies: &str, review: &Value, mutate: bool) -> Value {
    let file = dir.join("review.json");
    std::fs::write(&file, serde_json::to_vec(review).unwrap()).unwrap();
    support::review(Path::new(policies), &file, mutate)
}

/// Judges `case` with `tollgate review`: its mutating answer applied, then its validating one.
fn tollgate_outcome(dir: &Path, case: &Case, stored: Option<&Value>) -> Outcome {
    let operation = if stored.is_some() { "UPDATE" } else { "CREATE" };
    let review = |object: &Value| {
        json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "00000000-0000-0000-0000-000000000001",
                "kind": {"group": "diff.tollgate.test", "version": "v1", "kind": "Widget"},
                "resource": {"group": "diff.tollgate.test", "version": "v1", "resource": "widgets"},
                "name": case.name,
                "namespace": NS,
                "operation": operation,
                "userInfo": {"username": "e2e"},
                "object": object,
                "oldObject": stored.cloned().unwrap_or(Value::Null),
            }
        })
    };
    let policies = case.stage.policies();
    let mutated = run_review(dir, policies, &review(&case.new), true);
    let mut object = case.new.clone();
    if let Some(patch) = mutated["response"]["patch"].as_str() {
        use base64::Engine;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(patch)
            .unwrap();
        let patch: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
        json_patch::patch(&mut object, &patch).unwrap();
    }
    let validated = run_review(dir, policies, &review(&object), false);
    let response = &validated["response"];
    let allowed = response["allowed"].as_bool().unwrap();
    let fields = if allowed {
        BTreeSet::new()
    } else {
        let message = response["status"]["message"].as_str().unwrap_or_default();
        let listed = message.split_once(" is invalid: ").map_or("", |(_, l)| l);
        listed
            .split("; ")
            .filter_map(|violation| violation.split_once(": ").map(|(path, _)| path.to_string()))
            // The apiserver names a failure of the whole object with a nil path.
            .map(|path| {
                if path == "(object)" {
                    "<nil>".to_string()
                } else {
                    path
                }
            })
            .collect()
    };
    Outcome {
        allowed,
        fields,
        spec: allowed.then(|| object["spec"].clone()),
    }
}

/// `null` members the apiserver pruned (not `nullable`, no default) are left by `/mutate`,
/// which never deletes what a user sent; the apiserver drops them before any webhook sees the
/// object. Compared without them.
fn without_pruned_nulls(tollgate: &Value, apiserver: &Value) -> Value {
    match (tollgate, apiserver) {
        (Value::Object(t), Value::Object(a)) => Value::Object(
            t.iter()
                .filter(|(k, v)| !v.is_null() || a.contains_key(*k))
                .map(|(k, v)| {
                    (
                        k.clone(),
                        without_pruned_nulls(v, a.get(k).unwrap_or(&Value::Null)),
                    )
                })
                .collect(),
        ),
        (Value::Array(t), Value::Array(a)) => Value::Array(
            t.iter()
                .enumerate()
                .map(|(i, v)| without_pruned_nulls(v, a.get(i).unwrap_or(&Value::Null)))
                .collect(),
        ),
        (other, _) => other.clone(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tollgate_judges_every_case_as_the_apiserver_judges_the_crd() {
    let Some(cluster) = Cluster::start().await else {
        return;
    };
    let client = cluster.client.clone();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": NS}})).unwrap(),
        )
        .await
        .expect("namespace");
    apply_crd(&client, Stage::Loose.crd()).await;
    let cases = cases();
    assert!(cases.len() >= 150, "the corpus has {} cases", cases.len());
    let scratch = tempfile::tempdir().unwrap();

    // The loose schema's CRD serves once a create round-trips.
    support::eventually("the loose CRD serves", Duration::from_secs(30), || {
        let client = client.clone();
        async move {
            let probe = Case {
                name: "probe".into(),
                stage: Stage::Loose,
                old: None,
                new: widget("probe", base_spec()),
            };
            if apiserver_outcome(&client, &probe, None).await.allowed {
                Ok(())
            } else {
                Err("a valid widget is refused".to_string())
            }
        }
    })
    .await;

    // Every UPDATE starts from an object stored under the loose schema, read back as stored.
    let widgets = Api::<kube::api::DynamicObject>::namespaced_with(
        client.clone(),
        NS,
        &kube::core::ApiResource {
            group: "diff.tollgate.test".into(),
            version: "v1".into(),
            api_version: "diff.tollgate.test/v1".into(),
            kind: "Widget".into(),
            plural: "widgets".into(),
        },
    );
    let mut stored = std::collections::HashMap::new();
    for case in &cases {
        if let Some(old) = &case.old {
            let object: kube::api::DynamicObject = serde_json::from_value(old.clone()).unwrap();
            let created = widgets
                .create(&PostParams::default(), &object)
                .await
                .unwrap_or_else(|e| panic!("{}: the old object stores: {e}", case.name));
            stored.insert(case.name.clone(), serde_json::to_value(created).unwrap());
        }
    }

    let mut disagreements = Vec::new();
    let mut compared = 0;
    for stage in [Stage::Loose, Stage::Tight] {
        if stage == Stage::Tight {
            apply_crd(&client, Stage::Tight.crd()).await;
            // The tightened schema is in force once the apiserver refuses what only it forbids.
            support::eventually("the tight CRD serves", Duration::from_secs(30), || {
                let client = client.clone();
                async move {
                    let mut spec = base_spec();
                    spec["code"] = json!("OLD");
                    let probe = Case {
                        name: "probe-tight".into(),
                        stage: Stage::Tight,
                        old: None,
                        new: widget("probe-tight", spec),
                    };
                    if apiserver_outcome(&client, &probe, None).await.allowed {
                        Err("code OLD is still admitted".to_string())
                    } else {
                        Ok(())
                    }
                }
            })
            .await;
        }
        for case in cases.iter().filter(|c| c.stage == stage) {
            let old = stored.get(&case.name);
            let expected = apiserver_outcome(&client, case, old).await;
            let got = tollgate_outcome(scratch.path(), case, old);
            compared += 1;
            let same_spec = match (&got.spec, &expected.spec) {
                (Some(t), Some(a)) => without_pruned_nulls(t, a) == *a,
                (t, a) => t.is_none() && a.is_none(),
            };
            let agrees =
                got.allowed == expected.allowed && got.fields == expected.fields && same_spec;
            if !agrees {
                disagreements.push(format!(
                    "{}\n  object:    {}\n  apiserver: allowed={} fields={:?} spec={}\n  tollgate:  allowed={} fields={:?} spec={}",
                    case.name,
                    case.new["spec"],
                    expected.allowed,
                    expected.fields,
                    expected.spec.unwrap_or_default(),
                    got.allowed,
                    got.fields,
                    got.spec.unwrap_or_default(),
                ));
            }
        }
    }
    println!(
        "differential corpus: {compared} cases, {} agree, {} disagree",
        compared - disagreements.len(),
        disagreements.len()
    );
    assert!(
        disagreements.is_empty(),
        "{} of {compared} cases disagree:\n{}",
        disagreements.len(),
        disagreements.join("\n")
    );
    drop(cluster);
}
