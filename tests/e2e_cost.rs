//! The CEL cost budget, judged by both: each rule of the corpus is put on the items of a list
//! whose `maxItems` makes the rule's total just exceed the apiserver's per-rule limit by
//! tollgate's own estimate. The apiserver then refuses the CRD with a factor printed to six
//! decimals, so a single unit of difference in the estimate shows: its refusal must be word
//! for word what `tollgate check` prints for the same schema as a policy. Rules over the limit
//! on their own, and messageExpressions (which the apiserver does not multiply), are compared
//! at a cardinality of one.

#![allow(clippy::expect_used, clippy::unwrap_used)] // a failed step should fail the test loudly

mod support;

use std::collections::BTreeSet;

use kube::Error;
use serde_json::{Value, json};
use support::cluster::Cluster;

const LIMIT: u64 = 10_000_000;

struct CostCase {
    name: &'static str,
    rule: &'static str,
    message_expression: Option<&'static str>,
    optional_old_self: bool,
    /// The subject is an item of a plain list, where old and new items do not pair up,
    /// instead of a value of a map.
    in_list: bool,
}

const fn rule(name: &'static str, rule: &'static str) -> CostCase {
    CostCase {
        name,
        rule,
        message_expression: None,
        optional_old_self: false,
        in_list: false,
    }
}

const fn message(name: &'static str, rule: &'static str, message: &'static str) -> CostCase {
    CostCase {
        name,
        rule,
        message_expression: Some(message),
        optional_old_self: false,
        in_list: false,
    }
}

fn corpus() -> Vec<CostCase> {
    vec![
        rule("int-compare", "self.port > 0"),
        rule("string-equals", "self.name == 'abc'"),
        rule("starts-with", "self.name.startsWith('a')"),
        rule("starts-with-unbounded", "self.free.startsWith(self.name)"),
        rule("matches", "self.name.matches('^[a-z]+$')"),
        rule("matches-unbounded", "self.free.matches('^[a-z]+$')"),
        rule("matches-global", "matches(self.name, '^[a-z]+$')"),
        rule("contains", "self.name.contains('x')"),
        rule("ends-with", "self.name.endsWith(self.mode)"),
        rule("all", "self.tags.all(t, t.size() < 10)"),
        rule("all-unbounded", "self.freeTags.all(t, t.size() < 10)"),
        rule("exists", "self.tags.exists(t, t == 'x')"),
        rule("exists-one", "self.tags.exists_one(t, t == 'x')"),
        rule("map", "self.tags.map(t, t + '!').size() > 0"),
        rule(
            "map-filter",
            "self.tags.map(t, t.startsWith('a'), t + '!').size() > 0",
        ),
        rule(
            "filter",
            "self.tags.filter(t, t.startsWith('a')).size() < 5",
        ),
        rule(
            "list-map-all",
            "self.ports.all(p, p.port > 0 && p.name.size() > 0)",
        ),
        rule("join", "self.ports.map(p, p.name).join(',').size() < 100"),
        rule("map-keys", "self.labels.all(k, self.labels[k].size() < 10)"),
        rule(
            "map-keys-unbounded",
            "self.freeLabels.all(k, k.size() < 10)",
        ),
        rule("concat", "'name: ' + self.name != ''"),
        rule("concat-unbounded", "self.name + self.free != ''"),
        rule("string-of-int", "string(self.port) != ''"),
        rule("int-or-string", "self.size == 1 || self.size == 'x'"),
        rule("duration", "self.ttl > duration('1s')"),
        rule("timestamp", "self.at < timestamp('2030-01-01T00:00:00Z')"),
        rule("bytes-size", "size(self.data) < 50"),
        rule("underscore-name", "self.team_name.startsWith('t')"),
        rule("escaped-name", "self.dash__dash__field.size() > 0"),
        rule("nested", "self.nested.inner.value.size() < 5"),
        rule("matrix", "self.matrix.all(r, r.all(c, c > 0))"),
        rule(
            "pairs",
            "self.tags.all(a, self.tags.all(b, a != b || a == b))",
        ),
        rule(
            "pairs-unbounded",
            "self.freeTags.all(a, self.freeTags.all(b, a == b))",
        ),
        rule("lower-ascii", "self.name.lowerAscii() == self.name"),
        rule("upper-ascii", "self.name.upperAscii() != ''"),
        rule("trim", "self.name.trim() == self.name"),
        rule("replace", "self.name.replace('a', 'bb').size() < 100"),
        rule("split", "self.name.split('.').size() < 5"),
        rule("substring", "self.name.substring(1).size() > 0"),
        rule("index-of", "self.name.indexOf('x') >= -1"),
        rule("char-at", "self.name.charAt(0) != 'x'"),
        rule("is-sorted", "self.tags.isSorted()"),
        rule("list-index-of", "self.tags.indexOf('x') >= -1"),
        rule("sum", "self.ports.map(p, p.port).sum() < 100000"),
        rule(
            "url",
            "isURL(self.url) && url(self.url).getScheme() == 'https'",
        ),
        rule("ip", "isIP(self.ip) && ip(self.ip).family() == 4"),
        rule("cidr", "cidr('10.0.0.0/8').containsIP(self.ip)"),
        rule(
            "quantity",
            "isQuantity(self.quantity) && quantity(self.quantity).isGreaterThan(quantity('1'))",
        ),
        rule("semver", "isSemver(self.name)"),
        rule("find", "self.name.find('[0-9]+') == ''"),
        rule("find-all", "self.name.findAll('[0-9]').size() < 3"),
        rule("sets-contains", "sets.contains(self.tags, ['a'])"),
        rule(
            "sets-equivalent",
            "sets.equivalent(self.tags, self.freeTags)",
        ),
        rule("sets-intersects", "sets.intersects(self.tags, ['a', 'b'])"),
        rule("in-list", "self.port in [80, 443]"),
        rule("in-field-list", "'x' in self.tags"),
        rule("in-map", "'x' in self.labels"),
        rule("has", "has(self.nested) && has(self.nested.inner)"),
        rule("index-list", "self.tags[0] == 'a'"),
        rule("index-map", "self.labels['a'] == 'b'"),
        rule("index-object-list", "self.ports[0].name == 'http'"),
        rule("enum", "self.mode == 'fast'"),
        rule(
            "conditional",
            "self.name.size() <= 63 ? self.free == 'a' : true",
        ),
        rule("dyn", "dyn(self.port) > 0"),
        rule("literal-list", "[1, 2, 3].all(i, i > 0)"),
        rule("literal-map", "{'a': 1}.all(k, k == 'a')"),
        rule("format", "'%s'.format([self.name]) != ''"),
        rule("quote", "strings.quote(self.name) != ''"),
        rule("arithmetic", "self.port + 1 > 0 && self.ratio * 2.0 < 1.0"),
        rule("add-list", "self.tags + ['x'] != []"),
        rule("add-bytes", "self.data + b'x' != b''"),
        rule("bool", "self.on == true"),
        rule("transition", "self.name == oldSelf.name"),
        rule("slice", "self.tags.slice(0, 2).size() < 3"),
        rule("distinct", "self.tags.distinct().size() > 0"),
        rule("reverse", "self.tags.reverse().size() > 0"),
        rule("sort", "self.tags.sort().size() > 0"),
        rule("range", "lists.range(3).size() == 3"),
        rule("size-unbounded-list", "self.freeTags.size() < 10"),
        rule("string-less", "self.name < self.free"),
        rule("not-equals", "self.name != self.free"),
        message(
            "message-of-int",
            "self.port > 0",
            "'port ' + string(self.port)",
        ),
        message("message-bounded", "self.port > 0", "'name ' + self.name"),
        message("message-unbounded", "self.port > 0", "self.free + '!'"),
        CostCase {
            name: "optional-old-self",
            rule: "!oldSelf.hasValue() || self.name == oldSelf.value().name",
            message_expression: None,
            optional_old_self: true,
            in_list: false,
        },
        CostCase {
            name: "transition-in-a-list",
            rule: "self.name == oldSelf.name",
            message_expression: None,
            optional_old_self: false,
            in_list: true,
        },
        CostCase {
            name: "optional-old-self-unused",
            rule: "self.port > 0",
            message_expression: None,
            optional_old_self: true,
            in_list: false,
        },
        CostCase {
            name: "list-item",
            rule: "self.tags.all(t, t.size() < 10)",
            message_expression: None,
            optional_old_self: false,
            in_list: true,
        },
    ]
}

/// The value each rule judges: one item of the list the cardinality comes from.
fn subject(case: &CostCase) -> Value {
    let mut rule = json!({"rule": case.rule});
    if let Some(message) = case.message_expression {
        rule["messageExpression"] = json!(message);
    }
    if case.optional_old_self {
        rule["optionalOldSelf"] = json!(true);
    }
    json!({
        "type": "object",
        "x-kubernetes-validations": [rule],
        "properties": {
            "name": {"type": "string", "maxLength": 63},
            "free": {"type": "string"},
            "mode": {"type": "string", "enum": ["fast", "safe"]},
            "port": {"type": "integer"},
            "ratio": {"type": "number"},
            "on": {"type": "boolean"},
            "tags": {"type": "array", "maxItems": 10, "items": {"type": "string", "maxLength": 16}},
            "freeTags": {"type": "array", "items": {"type": "string"}},
            "ports": {
                "type": "array",
                "maxItems": 8,
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["name"],
                "items": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {
                        "name": {"type": "string", "maxLength": 15},
                        "port": {"type": "integer"},
                    },
                },
            },
            "labels": {
                "type": "object",
                "maxProperties": 20,
                "additionalProperties": {"type": "string", "maxLength": 63},
            },
            "freeLabels": {"type": "object", "additionalProperties": {"type": "string"}},
            "size": {"x-kubernetes-int-or-string": true},
            "ttl": {"type": "string", "format": "duration"},
            "at": {"type": "string", "format": "date-time"},
            "data": {"type": "string", "format": "byte", "maxLength": 100},
            "team_name": {"type": "string", "maxLength": 20},
            "dash-field": {"type": "string", "maxLength": 20},
            "nested": {"type": "object", "properties": {"inner": {"type": "object", "properties": {
                "value": {"type": "string", "maxLength": 5},
            }}}},
            "matrix": {"type": "array", "maxItems": 4, "items": {
                "type": "array", "maxItems": 4, "items": {"type": "integer"},
            }},
            "quantity": {"type": "string", "maxLength": 20},
            "url": {"type": "string", "maxLength": 100},
            "ip": {"type": "string", "maxLength": 45},
        },
    })
}

/// The whole schema: the subject as the values of `spec.wrap` (a map, or a list), at most
/// `cardinality` of them.
fn schema(case: &CostCase, cardinality: u64) -> Value {
    let wrap = if case.in_list {
        json!({"type": "array", "maxItems": cardinality, "items": subject(case)})
    } else {
        json!({"type": "object", "maxProperties": cardinality, "additionalProperties": subject(case)})
    };
    json!({
        "type": "object",
        "properties": {"spec": {"type": "object", "properties": {"wrap": wrap}}},
    })
}

/// How many items make tollgate's estimate just exceed the limit (1 when nothing would).
fn cardinality(case: &CostCase) -> u64 {
    let cost = tollgate_engine::cel::estimated_cost(case.rule, &subject(case))
        .unwrap_or_else(|e| panic!("{}: {e}", case.name));
    if cost == 0 || cost > LIMIT / 2 {
        1
    } else {
        LIMIT / cost + 1
    }
}

fn crd(case: &CostCase, cardinality: u64) -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.cost.tollgate.test"},
        "spec": {
            "group": "cost.tollgate.test",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
            "scope": "Namespaced",
            "versions": [{
                "name": "v1",
                "served": true,
                "storage": true,
                "schema": {"openAPIV3Schema": schema(case, cardinality)},
            }],
        },
    })
}

/// Where an error points (`rule`, `messageExpression`, `optionalOldSelf` or the whole
/// `schema`) and what it says.
type Refusal = (String, String);

/// The part of a message both word alike: the apiserver quotes the rule and writes paths its
/// own way.
fn normalized(message: &str) -> String {
    for phrase in [
        "oldSelf cannot be used on the uncorrelatable portion of the schema",
        "may not be set if oldSelf is not used in rule",
    ] {
        if message.contains(phrase) {
            return phrase.to_string();
        }
    }
    message.trim_start_matches("Forbidden: ").to_string()
}

fn place(field: &str) -> String {
    if field.ends_with("optionalOldSelf") {
        "optionalOldSelf".into()
    } else if field.ends_with("rule") {
        "rule".into()
    } else if field.ends_with("messageExpression") {
        "messageExpression".into()
    } else if field.ends_with("openAPIV3Schema") || field == "spec.schema" {
        "schema".into()
    } else {
        format!("other {field}")
    }
}

async fn apiserver_refusals(
    client: &kube::Client,
    case: &CostCase,
    cardinality: u64,
) -> BTreeSet<Refusal> {
    let request =
        http::Request::post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions?dryRun=All")
            .header("Content-Type", "application/json")
            .body(serde_json::to_vec(&crd(case, cardinality)).unwrap())
            .unwrap();
    match client.request::<Value>(request).await {
        Ok(_) => BTreeSet::new(),
        Err(Error::Api(status)) => status
            .details
            .map(|d| d.causes)
            .unwrap_or_default()
            .into_iter()
            .map(|cause| (place(&cause.field), normalized(&cause.message)))
            .collect(),
        Err(other) => panic!("{}: the apiserver did not answer: {other}", case.name),
    }
}

/// `tollgate check` over one policy per case: the refusals of each, by case name.
fn tollgate_refusals(
    cases: &[(CostCase, u64)],
) -> std::collections::HashMap<String, BTreeSet<Refusal>> {
    let dir = tempfile::tempdir().unwrap();
    for (case, cardinality) in cases {
        let policy = json!({
            "apiVersion": "tollgate.dev/v1alpha1",
            "kind": "Policy",
            "metadata": {"name": case.name},
            "spec": {
                "match": {"group": "cost.tollgate.test", "kind": "Widget", "resource": "widgets", "versions": ["v1"]},
                "schema": schema(case, *cardinality),
            },
        });
        std::fs::write(
            dir.path().join(format!("{}.yaml", case.name)),
            serde_json::to_string_pretty(&policy).unwrap(),
        )
        .unwrap();
    }
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["check", "--policies"])
        .arg(dir.path())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let mut refusals: std::collections::HashMap<String, BTreeSet<Refusal>> = cases
        .iter()
        .map(|(case, _)| (case.name.to_string(), BTreeSet::new()))
        .collect();
    for line in text.lines() {
        // "  DIR/NAME.yaml:LINE: spec.schema.…: message"
        let Some((file, rest)) = line.trim().split_once(".yaml:") else {
            continue;
        };
        let name = file.rsplit('/').next().unwrap_or_default();
        let Some((_line, rest)) = rest.split_once(": ") else {
            continue;
        };
        let Some((field, message)) = rest.split_once(": ") else {
            continue;
        };
        if let Some(set) = refusals.get_mut(name) {
            set.insert((place(field), normalized(message)));
        }
    }
    refusals
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tollgate_refuses_exactly_the_rules_the_apiserver_refuses_for_their_cost() {
    let Some(cluster) = Cluster::start().await else {
        return;
    };
    let client = cluster.client.clone();
    let cases: Vec<(CostCase, u64)> = corpus()
        .into_iter()
        .map(|case| {
            let k = cardinality(&case);
            (case, k)
        })
        .collect();
    let tollgate = tollgate_refusals(&cases);
    let mut disagreements = Vec::new();
    let mut exact = 0;
    for (case, cardinality) in &cases {
        let expected = apiserver_refusals(&client, case, *cardinality).await;
        let got = &tollgate[case.name];
        if *cardinality > 1 {
            exact += 1;
        }
        if *got != expected {
            disagreements.push(format!(
                "{} (rule {:?}, {} items)\n  apiserver: {expected:?}\n  tollgate:  {got:?}",
                case.name, case.rule, cardinality
            ));
        }
    }
    println!(
        "cost corpus: {} cases ({exact} compared to the unit at the limit), {} disagree",
        cases.len(),
        disagreements.len()
    );
    assert!(
        disagreements.is_empty(),
        "{} of {} cases disagree:\n{}",
        disagreements.len(),
        cases.len(),
        disagreements.join("\n")
    );
    drop(cluster);
}
