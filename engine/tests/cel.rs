//! CEL rules: schema `x-kubernetes-validations` (with transition rules) and policy-level
//! `validations` / `matchConditions`, compiled at load and joined to the one denial.

use std::path::Path;

use serde_json::{Value, json};
use tollgate_engine::cel::RequestInfo;
use tollgate_engine::document::Document;
use tollgate_engine::evaluate::{self, Verdict};
use tollgate_engine::instance::Instance;
use tollgate_engine::policy::{self, CompiledPolicy, OperationName, PolicyError, Store, Target};

fn policy(extra_spec: &str, schema_rules: &str) -> String {
    format!(
        "apiVersion: tollgate.dev/v1alpha1
kind: Policy
metadata:
  name: widgets
spec:
  match: {{group: example.com, kind: Widget, resource: widgets, versions: [v1]}}
{extra_spec}  schema:
    type: object
    properties:
      spec:
        type: object
        properties:
          size: {{type: integer, default: 1}}
          limit: {{type: integer}}
          secret: {{type: string}}
{schema_rules}"
    )
}

fn load(text: &str) -> (Vec<CompiledPolicy>, Vec<PolicyError>) {
    let mut policies = Vec::new();
    let mut errors = Vec::new();
    policy::load_text(Path::new("w.yaml"), text, &mut policies, &mut errors);
    (policies, errors)
}

fn compiled(text: &str) -> Store {
    let dir = std::env::temp_dir().join(format!(
        "tollgate-cel-{}-{}",
        std::process::id(),
        text.len()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(dir.join("p.yaml"), text).unwrap_or_else(|e| panic!("{e}"));
    let store = policy::load_dir(&dir).unwrap_or_else(|e| panic!("{e}"));
    let _ = std::fs::remove_dir_all(&dir);
    store
}

fn widget(spec: Value) -> Value {
    json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w", "namespace": "ns"}, "spec": spec})
}

/// The verdict on `object` (and `old`), the same whether they come as `Value`s or as
/// documents read from a review.
fn judge(store: &Store, object: &Value, old: Option<&Value>, user: &str) -> Verdict {
    let on_values = judge_instances(store, object.into(), old.map(Into::into), user);
    let object_doc = Document::from_value(object).unwrap_or_default();
    let old_doc = old.map(|o| Document::from_value(o).unwrap_or_default());
    let on_documents = judge_instances(
        store,
        object_doc.root().into(),
        old_doc.as_ref().map(|d| d.root().into()),
        user,
    );
    assert_eq!(on_documents, on_values, "{object} (old {old:?})");
    on_values
}

fn judge_instances(
    store: &Store,
    object: Instance<'_>,
    old: Option<Instance<'_>>,
    user: &str,
) -> Verdict {
    let groups = vec![std::borrow::Cow::Borrowed("team-a")];
    let target = Target {
        group: "example.com",
        version: "v1",
        kind: "Widget",
        operation: if old.is_some() {
            OperationName::Update
        } else {
            OperationName::Create
        },
        namespace: Some("ns"),
        object: Some(object),
        old_object: old,
        request: RequestInfo {
            name: "w",
            username: user,
            groups: &groups,
            dry_run: false,
        },
        restore: false,
    };
    evaluate::validate(store, &target)
}

fn denials(verdict: &Verdict) -> Vec<String> {
    verdict.denials.iter().map(ToString::to_string).collect()
}

const CROSS_FIELD: &str = "        x-kubernetes-validations:
          - rule: \"!has(self.limit) || self.size <= self.limit\"
            message: size must not exceed limit
            fieldPath: .size
";

#[test]
fn cross_field_rules_join_the_one_sorted_denial() {
    let text = policy("", CROSS_FIELD).replace(
        "limit: {type: integer}",
        "limit: {type: integer, maximum: 5}",
    );
    let store = compiled(&text);
    let verdict = judge(
        &store,
        &widget(json!({"size": 9, "limit": 7})),
        None,
        "alice",
    );
    assert_eq!(
        denials(&verdict),
        [
            "spec.limit: must be less than or equal to 5",
            "spec.size: size must not exceed limit"
        ]
    );
    assert!(
        judge(
            &store,
            &widget(json!({"size": 2, "limit": 3})),
            None,
            "alice"
        )
        .is_allowed()
    );
    // The schema default (size 1) is in place before the rule runs.
    assert!(judge(&store, &widget(json!({"limit": 1})), None, "alice").is_allowed());
}

#[test]
fn transition_rules_run_on_update_only_unless_old_self_is_optional() {
    let rules = "          x-kubernetes-validations:
            - rule: \"self >= oldSelf\"
              message: size may only grow
";
    let text = policy("", "").replace(
        "size: {type: integer, default: 1}",
        &format!(
            "size:\n            type: integer\n{}",
            rules
                .replace("          x-", "            x-")
                .replace("            - rule", "              - rule")
                .replace("              message", "                message")
        ),
    );
    let store = compiled(&text);
    let old = widget(json!({"size": 5}));
    // The denials of an UPDATE from size 5 to `size`.
    let resized = |store: &Store, size: i64| {
        denials(&judge(
            store,
            &widget(json!({ "size": size })),
            Some(&old),
            "alice",
        ))
    };
    assert_eq!(resized(&store, 4), ["spec.size: size may only grow"]);
    assert!(resized(&store, 6).is_empty());
    assert!(
        judge(&store, &widget(json!({"size": 1})), None, "alice").is_allowed(),
        "no oldSelf on CREATE: the transition rule does not run"
    );

    // optionalOldSelf: oldSelf is an optional, empty on CREATE (as Kubernetes binds it).
    let optional = text
        .replace(
            "message: size may only grow",
            "message: size may only grow\n                optionalOldSelf: true",
        )
        .replace(
            "self >= oldSelf",
            "!oldSelf.hasValue() || self >= oldSelf.value()",
        );
    let store = compiled(&optional);
    assert!(judge(&store, &widget(json!({"size": 1})), None, "alice").is_allowed());
    assert!(!judge(&store, &widget(json!({"size": 1})), Some(&old), "alice").is_allowed());

    // Both kinds on one node: each sees the old value, the optional one wrapped.
    let both = text.replace(
        "message: size may only grow\n",
        "message: size may only grow\n              \
         - rule: \"!oldSelf.hasValue() || self <= oldSelf.value() * 2\"\n                \
         message: size may at most double\n                optionalOldSelf: true\n",
    );
    let store = compiled(&both);
    assert!(judge(&store, &widget(json!({"size": 1})), None, "alice").is_allowed());
    assert!(resized(&store, 10).is_empty());
    assert_eq!(resized(&store, 4), ["spec.size: size may only grow"]);
    assert_eq!(resized(&store, 11), ["spec.size: size may at most double"]);
}

#[test]
fn messages_never_echo_values_unless_the_policy_asks() {
    let rules = "        x-kubernetes-validations:
          - rule: \"self.secret.startsWith('ok-')\"
          - rule: \"self.secret.size() < 20\"
            messageExpression: \"'secret must be shorter than ' + '20' + ' characters'\"
";
    let store = compiled(&policy("", rules));
    let verdict = judge(
        &store,
        &widget(json!({"secret": "top-secret-value"})),
        None,
        "alice",
    );
    assert_eq!(
        denials(&verdict),
        ["spec: failed rule: self.secret.startsWith('ok-')"],
        "the rule is named, the value never"
    );
    let long = format!("ok-{}", "x".repeat(22));
    let verdict = judge(&store, &widget(json!({"secret": long})), None, "alice");
    assert_eq!(
        denials(&verdict),
        ["spec: secret must be shorter than 20 characters"]
    );
    assert!(!denials(&verdict).join("").contains(&long));
}

#[test]
fn warn_mode_turns_cel_violations_into_warnings() {
    let store = compiled(&policy("  enforcement: warn\n", CROSS_FIELD));
    let verdict = judge(
        &store,
        &widget(json!({"size": 9, "limit": 7})),
        None,
        "alice",
    );
    assert!(verdict.is_allowed());
    assert_eq!(
        verdict.warnings,
        ["policy \"widgets\" (warn): spec.size: size must not exceed limit"]
    );
}

#[test]
fn policy_level_validations_see_object_old_object_and_request() {
    let spec = "  validations:
    - expression: \"request.userInfo.username != 'mallory'\"
      message: mallory may not touch widgets
    - expression: \"request.operation != 'UPDATE' || object.spec.size >= oldObject.spec.size\"
      messageExpression: \"'size may not shrink on ' + request.operation\"
    - expression: \"'team-a' in request.userInfo.groups && request.namespace == 'ns' && request.name == 'w'\"
";
    let store = compiled(&policy(spec, ""));
    assert!(judge(&store, &widget(json!({"size": 2})), None, "alice").is_allowed());
    assert_eq!(
        denials(&judge(&store, &widget(json!({"size": 2})), None, "mallory")),
        ["(object): mallory may not touch widgets"]
    );
    let old = widget(json!({"size": 3}));
    assert_eq!(
        denials(&judge(
            &store,
            &widget(json!({"size": 2})),
            Some(&old),
            "alice"
        )),
        ["(object): size may not shrink on UPDATE"]
    );
}

#[test]
fn match_conditions_gate_the_policy_and_fail_closed_on_errors() {
    let spec = "  matchConditions:
    - name: only-big
      expression: \"object.spec.size > 10\"
  validations:
    - expression: \"object.spec.size < 100\"
      message: too big
";
    let store = compiled(&policy(spec, ""));
    assert!(
        judge(&store, &widget(json!({"size": 500})), None, "alice")
            .denials
            .len()
            == 1
    );
    let small = widget(json!({"size": 5, "limit": "not checked"}));
    assert!(
        judge(&store, &small, None, "alice").is_allowed(),
        "the condition does not hold"
    );

    let failing = policy(
        "  matchConditions:\n    - name: broken\n      expression: \"object.spec.missing.deeper == 1\"\n",
        "",
    );
    let store = compiled(&failing);
    let verdict = judge(&store, &widget(json!({"size": 1})), None, "alice");
    let text = denials(&verdict).join("");
    assert!(
        text.contains("matchCondition \"broken\" could not be evaluated"),
        "{text}"
    );
}

#[test]
fn expressions_that_do_not_compile_are_load_errors_at_their_line() {
    let bad_schema = policy(
        "",
        "        x-kubernetes-validations:\n          - rule: \"self.size <\"\n",
    );
    let (_, errors) = load(&bad_schema);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].line, 17, "{}", errors[0]);
    assert!(
        errors[0]
            .message
            .starts_with("spec.schema.properties.spec.x-kubernetes-validations.0.rule: "),
        "{}",
        errors[0]
    );

    let bad_policy = policy(
        "  matchConditions:\n    - {name: c, expression: \"object.(\"}\n  validations:\n    - expression: \"1 +\"\n",
        "",
    );
    let (policies, errors) = load(&bad_policy);
    assert!(policies.is_empty());
    let lines: Vec<(usize, bool)> = errors
        .iter()
        .map(|e| (e.line, e.message.contains("failed to compile")))
        .collect();
    assert_eq!(lines, [(8, true), (10, true)], "{errors:?}");
    assert!(
        errors[0]
            .message
            .starts_with("spec.matchConditions.0.expression: ")
    );
}

#[test]
fn rules_over_the_cost_budget_are_refused_at_load() {
    // An unbounded list walked twice over: the apiserver's CRD cost estimate refuses it too.
    let costly = policy("", "").replace(
        "          secret: {type: string}",
        "          secret: {type: string}
          tags:
            type: array
            items: {type: string}
            x-kubernetes-validations:
              - rule: \"self.all(a, self.all(b, self.all(c, a + b + c != '')))\"",
    );
    let (_, errors) = load(&costly);
    let found: Vec<(usize, &str)> = errors
        .iter()
        .map(|e| (e.line, e.message.as_str()))
        .collect();
    let rule = "spec.schema.properties.spec.properties.tags.x-kubernetes-validations.0.rule";
    let advice = "(try simplifying the rule, or adding maxItems, maxProperties, and maxLength where arrays, maps, and strings are declared)";
    assert_eq!(
        found,
        [
            (
                20,
                format!("{rule}: estimated rule cost exceeds budget by factor of more than 100x {advice}").as_str()
            ),
            (
                20,
                format!("{rule}: contributed to estimated rule cost total exceeding cost limit for entire OpenAPIv3 schema").as_str()
            ),
            (
                7,
                format!("spec.schema: x-kubernetes-validations estimated rule cost total for entire OpenAPIv3 schema exceeds budget by factor of more than 100x {advice}").as_str()
            ),
        ]
    );

    // A string built from a number has no bound: the apiserver refuses it in a message too.
    let message = policy(
        "",
        "        x-kubernetes-validations:
          - rule: \"self.size > 0\"
            messageExpression: \"'size ' + string(self.size)\"
",
    );
    let (_, errors) = load(&message);
    // Over the schema's total too: the message, then the total, are named.
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert!(
        errors[0].message.starts_with(
            "spec.schema.properties.spec.x-kubernetes-validations.0.messageExpression: estimated messageExpression cost exceeds budget by factor of more than 100x"
        ),
        "{}",
        errors[0]
    );

    // Bounded, the same walk fits: ten items of at most 8 characters.
    let bounded = costly.replace(
        "            type: array\n            items: {type: string}",
        "            type: array\n            maxItems: 10\n            items: {type: string, maxLength: 8}",
    );
    let (_, errors) = load(&bounded);
    assert!(errors.is_empty(), "{errors:?}");
}

#[test]
fn old_self_is_refused_where_old_and_new_values_do_not_pair_up() {
    // Items of a list that is not a map list have no old self to compare with.
    let text = policy(
        "",
        "          tags:
            type: array
            items:
              type: string
              maxLength: 8
              x-kubernetes-validations:
                - rule: \"self == oldSelf\"
          limits:
            type: object
            x-kubernetes-validations:
              - rule: \"self.size() < 3\"
                optionalOldSelf: true
",
    );
    let (_, errors) = load(&text);
    let mut messages: Vec<&str> = errors.iter().map(|e| e.message.as_str()).collect();
    messages.sort_unstable();
    assert_eq!(
        messages,
        [
            "spec.schema.properties.spec.properties.limits.x-kubernetes-validations.0.optionalOldSelf: may not be set if oldSelf is not used in rule",
            "spec.schema.properties.spec.properties.tags.items.x-kubernetes-validations.0.rule: oldSelf cannot be used on the uncorrelatable portion of the schema within spec.schema.properties.spec.properties.tags",
        ]
    );
}

#[test]
fn rules_inside_lists_and_maps_follow_kubernetes_semantics() {
    let text = "apiVersion: tollgate.dev/v1alpha1
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
        x-kubernetes-validations:
          - rule: \"self.max__dash__size >= 1\"
            message: escaped property names read as the apiserver escapes them
        properties:
          max-size: {type: integer}
          ports:
            type: array
            x-kubernetes-list-type: map
            x-kubernetes-list-map-keys: [name]
            items:
              type: object
              properties:
                name: {type: string}
                port: {type: integer}
              x-kubernetes-validations:
                - rule: \"self.port == oldSelf.port\"
                  message: a named port keeps its number
          tags:
            type: array
            items: {type: string}
          labels:
            type: object
            additionalProperties:
              type: string
              x-kubernetes-validations:
                - rule: \"self.size() <= 5\"
                  message: label values are short
";
    let store = compiled(text);
    let old = widget(json!({
        "max-size": 2,
        "ports": [{"name": "http", "port": 80}, {"name": "grpc", "port": 90}],
        "tags": ["a"],
    }));
    // Reordered ports correlate by name; the changed tag is in an atomic list.
    let reordered = widget(json!({
        "max-size": 2,
        "ports": [{"name": "grpc", "port": 90}, {"name": "http", "port": 80}, {"name": "new", "port": 1}],
        "tags": ["b"],
    }));
    assert!(
        judge(&store, &reordered, Some(&old), "alice").is_allowed(),
        "{:?}",
        denials(&judge(&store, &reordered, Some(&old), "alice"))
    );
    let changed = widget(json!({
        "max-size": 0,
        "ports": [{"name": "grpc", "port": 91}],
        "labels": {"team": "payments-core", "ok": "yes"},
    }));
    assert_eq!(
        denials(&judge(&store, &changed, Some(&old), "alice")),
        [
            "spec: escaped property names read as the apiserver escapes them",
            "spec.labels.team: label values are short",
            "spec.ports[0]: a named port keeps its number",
        ]
    );
}

#[test]
fn string_size_counts_code_points_as_kubernetes_does() {
    let rules = "        x-kubernetes-validations:
          - rule: \"self.secret.size() <= 3\"
            message: at most 3 characters
";
    let store = compiled(&policy("", rules));
    // Three characters, six bytes.
    assert!(judge(&store, &widget(json!({"secret": "ééé"})), None, "alice").is_allowed());
    assert!(!judge(&store, &widget(json!({"secret": "éééé"})), None, "alice").is_allowed());
    // The same through the interpreter (a function the native path leaves to it).
    let rules = "        x-kubernetes-validations:
          - rule: \"self.secret.size() <= 3 && self.secret.startsWith('é')\"
            message: at most 3 characters
";
    let store = compiled(&policy("", rules));
    assert!(judge(&store, &widget(json!({"secret": "ééé"})), None, "alice").is_allowed());
}
