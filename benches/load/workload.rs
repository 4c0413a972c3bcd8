//! What the benchmark sends: the repository's review fixtures (compact, as the apiserver sends
//! them), the same objects grown to a given size, conversion reviews of many objects, and policy
//! directories holding the example plus many policies for other kinds.

use std::path::{Path, PathBuf};

use anyhow::Context;
use bytes::Bytes;
use serde_json::{Value, json};

use crate::driver::Call;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn example_policies() -> PathBuf {
    repo().join("policies")
}

fn fixture(name: &str) -> anyhow::Result<Value> {
    let path = repo().join("tests/fixtures").join(name);
    let text = std::fs::read(&path).with_context(|| path.display().to_string())?;
    Ok(serde_json::from_slice(&text)?)
}

fn call(path: &str, review: &Value, expect: &'static str) -> anyhow::Result<Call> {
    Ok(Call {
        path: format!("{path}?timeout=10s"),
        body: Bytes::from(serde_json::to_vec(review)?),
        expect,
    })
}

/// An allowed PaymentGateway CREATE (every check runs, nothing is denied).
pub fn validate() -> anyhow::Result<Call> {
    call(
        "/validate",
        &fixture("validate-allow.json")?,
        "\"allowed\":true",
    )
}

/// A PaymentGateway CREATE that breaks the schema: the answer names each violated field.
pub fn deny() -> anyhow::Result<Call> {
    call(
        "/validate",
        &fixture("validate-deny.json")?,
        "\"allowed\":false",
    )
}

/// An UPDATE that keeps the immutable fields and passes the CEL transition rules.
pub fn update() -> anyhow::Result<Call> {
    call(
        "/validate",
        &fixture("update-allowed.json")?,
        "\"allowed\":true",
    )
}

/// A CREATE missing every defaulted field: the answer is a JSON Patch.
pub fn mutate() -> anyhow::Result<Call> {
    call(
        "/mutate",
        &fixture("mutate-defaults.json")?,
        "\"patchType\":\"JSONPatch\"",
    )
}

/// A ConversionReview of `objects` v1alpha1 PaymentGateways to the v1 hub.
pub fn convert(objects: usize) -> anyhow::Result<Call> {
    let mut review = fixture("convert-up.json")?;
    let template = review["request"]["objects"][0].clone();
    let many: Vec<Value> = (0..objects)
        .map(|i| {
            let mut object = template.clone();
            object["metadata"]["name"] = json!(format!("pg-{i}"));
            object
        })
        .collect();
    review["request"]["objects"] = Value::Array(many);
    call("/convert", &review, "\"status\":\"Success\"")
}

/// The validate and mutate reviews with the object grown to about `bytes` by annotations of
/// 1 KiB each (what large objects usually carry: last-applied configuration, tool metadata).
pub fn sized(bytes: usize) -> anyhow::Result<(Call, Call)> {
    let grow = |mut review: Value| -> Value {
        let object = &mut review["request"]["object"];
        let current = serde_json::to_vec(object).map_or(0, |v| v.len());
        let mut annotations = serde_json::Map::new();
        let value = "v".repeat(1000);
        for i in 0..bytes.saturating_sub(current) / 1050 {
            annotations.insert(format!("bench.tollgate.dev/pad-{i:05}"), json!(value));
        }
        object["metadata"]["annotations"] = Value::Object(annotations);
        review
    };
    Ok((
        call(
            "/validate",
            &grow(fixture("validate-allow.json")?),
            "\"allowed\":true",
        )?,
        call(
            "/mutate",
            &grow(fixture("mutate-defaults.json")?),
            "\"patchType\":\"JSONPatch\"",
        )?,
    ))
}

/// The example policy plus `count - 1` policies for other kinds, each with a schema, a default,
/// an immutable field and a CEL rule, so the set costs what real policies cost to hold.
pub fn policy_dir(dir: &Path, count: usize) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::copy(
        example_policies().join("paymentgateway.yaml"),
        dir.join("paymentgateway.yaml"),
    )?;
    for i in 1..count {
        let text = format!(
            r#"apiVersion: tollgate.dev/v1alpha1
kind: Policy
metadata:
  name: widget{i}
spec:
  match:
    group: bench{i}.example.com
    kind: Widget{i}
    resource: widget{i}s
    versions: ["v1"]
    scope: Namespaced
    operations: ["CREATE", "UPDATE"]
  immutable:
    - spec.owner
  schema:
    type: object
    required: ["spec"]
    properties:
      spec:
        type: object
        required: ["owner", "size"]
        x-kubernetes-validations:
          - rule: "self.size <= self.limit"
            message: "size must not exceed limit"
        properties:
          owner: {{type: string, maxLength: 63}}
          size: {{type: integer, minimum: 1}}
          limit: {{type: integer, default: 100}}
          tier: {{type: string, enum: ["gold", "silver"], default: "silver"}}
"#
        );
        std::fs::write(dir.join(format!("widget{i}.yaml")), text)?;
    }
    Ok(())
}
