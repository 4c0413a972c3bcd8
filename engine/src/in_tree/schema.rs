//! A policy schema (in the JSON Schema the CRD dialect is rewritten to) as checks over
//! `object`, each failing with the webhook's message at the webhook's field path, guarded as
//! the webhook judges: by the value's type, by presence (a `null` the apiserver drops is
//! absent), by ratcheting, and CRD rules only where they see what they would in a CRD.

use serde_json::{Map, Value};

use super::checks::{self, Item, Ratchet, Weight};
use super::text::{self, Path};
use super::{RESTORE, Unsupported};
use super::{ratchet, structural};
use crate::cel::{RULES_KEY, escape_field_name, reads_root_metadata};
use crate::path::{FieldPath, escape_pointer};
use crate::schema::formats;

/// Keywords compiled here, or that change nothing a check sees.
const UNDERSTOOD: &[&str] = &[
    "$schema",
    "type",
    "enum",
    "const",
    "required",
    "properties",
    "additionalProperties",
    "items",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "uniqueItems",
    "minProperties",
    "maxProperties",
    "nullable",
    "default",
    "description",
    "title",
    "example",
    "examples",
    "deprecated",
    "readOnly",
    "writeOnly",
    "externalDocs",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-int-or-string",
    "x-kubernetes-map-type",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-embedded-resource",
    RULES_KEY,
    "patternProperties",
    "allOf",
    "anyOf",
    "oneOf",
    "not",
    "multipleOf",
    "$ref",
    "$defs",
    "definitions",
];

/// Keywords the webhook gives meaning only outside `allOf` branches and `$ref` targets.
const OUTSIDE_BRANCHES_ONLY: &[&str] = &[
    "default",
    "x-kubernetes-list-type",
    "x-kubernetes-embedded-resource",
    RULES_KEY,
];

/// Where a schema node's value sits in the object, and the old value it pairs with.
#[derive(Clone)]
struct At {
    value: String,
    path: Path,
    /// The schema node's JSON pointer, for what cannot compile.
    pointer: String,
    /// The old value this one correlates with (`None`: it correlates with none).
    old: Option<String>,
    /// When `old` can be read.
    old_exists: String,
    /// The nearest pair that correlates: what ratcheting compares.
    ratchet: Ratchet,
    /// How deep in comprehensions: names their variables.
    depth: usize,
    root: bool,
    /// Inside an `allOf` branch, a `$ref` target or `patternProperties`: the webhook's null
    /// pruning, defaults, list checks and rules look only at `properties`, `items` and
    /// `additionalProperties`, never here.
    in_branch: bool,
}

impl At {
    fn root(schema: &Value, value: &str) -> Self {
        let old_exists = "oldObject != null".to_string();
        Self {
            value: value.into(),
            path: Path::default(),
            pointer: String::new(),
            old: Some("oldObject".into()),
            ratchet: Ratchet {
                old_exists: old_exists.clone(),
                equal: ratchet::equal_to_defaulted(value, "oldObject", schema),
            },
            old_exists,
            depth: 0,
            root: true,
            in_branch: false,
        }
    }

    /// The same value judged by a subschema of this node's (`allOf`, `$ref`, `anyOf`...), at
    /// `pointer` in the schema.
    fn branch(&self, pointer: String) -> Self {
        Self {
            pointer,
            in_branch: true,
            root: false,
            ..self.clone()
        }
    }

    /// A check of this value, failing with `message` at its path.
    fn check(&self, fails: String, message: &str, weight: Weight) -> Item {
        Item::Check {
            fails,
            message: self.path.message(message),
            weight,
            ratchet: Some(self.ratchet.clone()),
        }
    }

    /// A value of `schema` reached from this one; `old` is its old self when it correlates.
    fn child(
        &self,
        value: String,
        path: Path,
        pointer: String,
        old: Option<(String, String)>,
        schema: &Value,
    ) -> Self {
        let (old, old_exists) = match old {
            Some((old, exists)) => (Some(old), exists),
            None => (None, "false".to_string()),
        };
        let ratchet = match &old {
            Some(old) => Ratchet {
                old_exists: old_exists.clone(),
                equal: ratchet::equal_to_defaulted(&value, old, schema),
            },
            None => self.ratchet.clone(),
        };
        Self {
            value,
            path,
            pointer,
            old,
            old_exists,
            ratchet,
            depth: self.depth,
            root: false,
            in_branch: self.in_branch,
        }
    }
}

/// Walks one schema.
pub struct SchemaCompiler<'u> {
    pub unsupported: &'u mut Vec<Unsupported>,
    /// The whole schema, where same-document `$ref`s resolve.
    root: Value,
    /// The `$ref`s being expanded, outermost first: one met again is recursive.
    expanding: Vec<String>,
}

impl<'u> SchemaCompiler<'u> {
    pub fn new(unsupported: &'u mut Vec<Unsupported>) -> Self {
        Self {
            unsupported,
            root: Value::Null,
            expanding: Vec::new(),
        }
    }
}

impl SchemaCompiler<'_> {
    /// The checks `schema` (the whole object's) makes.
    pub fn compile(&mut self, schema: &Value) -> Vec<Item> {
        self.root = schema.clone();
        self.node(schema, &At::root(schema, "object"))
    }

    /// The checks of `schema` over the old object, of which only the list invariants make
    /// sense (the apiserver checks them on UPDATE only if the old object kept them).
    pub fn compile_old(&mut self, schema: &Value) -> Vec<Item> {
        self.root = schema.clone();
        self.node(schema, &At::root(schema, "oldObject"))
    }

    fn refuse(&mut self, pointer: &str, reason: String) {
        self.unsupported.push(Unsupported {
            at: format!("spec.schema{}", dotted(pointer)),
            reason,
        });
    }

    fn node(&mut self, schema: &Value, at: &At) -> Vec<Item> {
        let Some(node) = schema.as_object() else {
            if schema == &Value::Bool(false) {
                self.refuse(&at.pointer, "a `false` schema is not compiled".into());
            }
            return Vec::new();
        };
        if at.in_branch {
            for keyword in OUTSIDE_BRANCHES_ONLY {
                if node.contains_key(*keyword) {
                    self.refuse(
                        &format!("{}/{}", at.pointer, escape_pointer(keyword)),
                        format!(
                            "{keyword} inside allOf, a $ref target or patternProperties is not compiled"
                        ),
                    );
                }
            }
        }
        let format = node.get("format").and_then(Value::as_str);
        let format_pattern = format.and_then(formats::in_tree_pattern);
        for keyword in node.keys() {
            if keyword == "format" && format_pattern.is_some() {
                continue;
            }
            if !UNDERSTOOD.contains(&keyword.as_str()) {
                let reason = match keyword.as_str() {
                    "format" => format!(
                        "format {} is checked by the webhook (its checks are Go code in the apiserver, not CEL)",
                        node.get("format").unwrap_or(&Value::Null)
                    ),
                    other => format!("the keyword {other} is not compiled"),
                };
                self.refuse(
                    &format!("{}/{}", at.pointer, escape_pointer(keyword)),
                    reason,
                );
            }
        }
        for keyword in ["items", "additionalProperties"] {
            if node
                .get(keyword)
                .is_some_and(|below| crate::schema::declares_default(&self.root, below))
            {
                self.refuse(
                    &format!("{}/{keyword}", at.pointer),
                    format!(
                        "defaults under {keyword}: ratcheting compares with the old object defaulted, item by item"
                    ),
                );
            }
        }
        let v = &at.value;
        let mut items = Vec::new();
        let own = |fails: String, message: &str, weight: Weight| at.check(fails, message, weight);
        if let Some(types) = types_of(node) {
            let any: Vec<String> = types.iter().map(|t| text::is_type(v, t)).collect();
            items.push(own(
                format!("!({})", any.join(" || ")),
                &format!("must be of type {}", types.join(" or ")),
                Weight::Blocking,
            ));
        }
        if let (Some(format), Some(Some(pattern))) = (format, format_pattern) {
            items.push(own(
                format!(
                    "{} && !{v}.matches({})",
                    text::is_type(v, "string"),
                    text::string(pattern)
                ),
                &format!("must be a valid {}", formats::display_name(format)),
                Weight::Blocking,
            ));
        }
        if let Some(options) = node.get("enum").and_then(Value::as_array) {
            let literals: Vec<String> = options
                .iter()
                .map(|o| format!("dyn({})", text::literal(o)))
                .collect();
            let listed: Vec<String> = options.iter().map(Value::to_string).collect();
            items.push(own(
                format!("!({v} in [{}])", literals.join(", ")),
                &format!("must be one of {}", listed.join(", ")),
                Weight::Blocking,
            ));
        }
        if let Some(constant) = node.get("const") {
            items.push(own(
                format!("{v} != dyn({})", text::literal(constant)),
                &format!("must be {constant}"),
                Weight::Plain,
            ));
        }
        let mut typed = |guard: String, checks: Vec<Item>| {
            if !checks.is_empty() {
                items.push(Item::Within {
                    guard,
                    items: checks,
                });
            }
        };
        typed(text::is_type(v, "string"), self.string_checks(node, at));
        typed(text::is_type(v, "number"), number_checks(node, at));
        typed(text::is_type(v, "array"), self.list_checks(node, at));
        typed(text::is_type(v, "object"), self.object_checks(node, at));
        items.extend(self.rules(node, at));
        items.extend(self.branches(node, at));
        items.extend(self.alternatives(node, at));
        items
    }

    /// A branch of `anyOf`, `oneOf` or `not`, compiled only to say whether the value holds
    /// under it (its own failures are never listed).
    fn holds_under(&mut self, branch: &Value, at: &At, pointer: String) -> String {
        let items = self.node(branch, &at.branch(pointer));
        checks::holds(&items)
    }

    /// `anyOf`, `oneOf` and `not`, failing with jsonschema's words at the value.
    fn alternatives(&mut self, node: &Map<String, Value>, at: &At) -> Vec<Item> {
        let mut items = Vec::new();
        for keyword in ["anyOf", "oneOf"] {
            let Some(branches) = node.get(keyword).and_then(Value::as_array) else {
                continue;
            };
            let holding: Vec<String> = branches
                .iter()
                .enumerate()
                .map(|(idx, b)| {
                    let held = self.holds_under(b, at, format!("{}/{keyword}/{idx}", at.pointer));
                    format!("({held} ? 1 : 0)")
                })
                .collect();
            let count = if holding.is_empty() {
                "0".to_string()
            } else {
                format!("({})", holding.join(" + "))
            };
            let none = format!(
                "value is not valid under any of the schemas listed in the '{keyword}' keyword"
            );
            items.push(at.check(format!("{count} == 0"), &none, Weight::Plain));
            if keyword == "oneOf" {
                items.push(at.check(
                    format!("{count} > 1"),
                    "value is valid under more than one of the schemas listed in the 'oneOf' keyword",
                    Weight::Plain,
                ));
            }
        }
        if let Some(forbidden) = node.get("not") {
            let held = self.holds_under(forbidden, at, format!("{}/not", at.pointer));
            items.push(at.check(
                held,
                &format!("{forbidden} is not allowed for value"),
                Weight::Plain,
            ));
        }
        if let Some(multiple) = node.get("multipleOf") {
            let v = &at.value;
            let integral = multiple.as_u64().filter(|m| *m > 0);
            let integer_typed = types_of(node).is_some_and(|t| t == ["integer"]);
            match integral.filter(|_| integer_typed) {
                Some(m) => items.push(at.check(
                    format!(
                        "type({v}) == int ? {v} % {m} != 0 : (type({v}) == double && ({v} < -9.0e18 || {v} > 9.0e18 || double(int({v})) != {v} || int({v}) % {m} != 0))"
                    ),
                    &format!("must be a multiple of {multiple}"),
                    Weight::Plain,
                )),
                None => self.refuse(
                    &format!("{}/multipleOf", at.pointer),
                    "multipleOf is compiled only as a positive integer on `type: integer` (fractional remainders differ between CEL and jsonschema)".into(),
                ),
            }
        }
        items
    }

    /// `allOf` branches and a same-document `$ref` target judge the same value: their checks
    /// are this node's, as jsonschema reports them.
    fn branches(&mut self, node: &Map<String, Value>, at: &At) -> Vec<Item> {
        let mut items = Vec::new();
        for (idx, branch) in node
            .get("allOf")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let inside = at.branch(format!("{}/allOf/{idx}", at.pointer));
            items.extend(self.node(branch, &inside));
        }
        if let Some(reference) = node.get("$ref").and_then(Value::as_str) {
            let pointer = format!("{}/$ref", at.pointer);
            let target =
                crate::schema::ref_target(&self.root, &Value::Object(node.clone())).cloned();
            match target {
                None => self.refuse(
                    &pointer,
                    format!("$ref {reference:?} does not resolve in this schema"),
                ),
                Some(_) if self.expanding.iter().any(|r| r == reference) => {
                    self.refuse(&pointer, format!("$ref {reference:?} is recursive"))
                }
                Some(target) => {
                    self.expanding.push(reference.to_string());
                    let inside = at.branch(reference.trim_start_matches('#').to_string());
                    items.extend(self.node(&target, &inside));
                    self.expanding.pop();
                }
            }
        }
        items
    }

    fn string_checks(&mut self, node: &Map<String, Value>, at: &At) -> Vec<Item> {
        let v = &at.value;
        let mut items = Vec::new();
        let own =
            |fails: String, message: String, weight: Weight| at.check(fails, &message, weight);
        if let Some(limit) = node.get("maxLength").and_then(Value::as_u64) {
            items.push(own(
                format!("size({v}) > {limit}"),
                format!("must be at most {limit} characters long"),
                Weight::Blocking,
            ));
        }
        if let Some(limit) = node.get("minLength").and_then(Value::as_u64) {
            let message = if limit == 1 {
                "must not be empty".to_string()
            } else {
                format!("must be at least {limit} characters long")
            };
            items.push(own(format!("size({v}) < {limit}"), message, Weight::Plain));
        }
        if let Some(pattern) = node.get("pattern").and_then(Value::as_str) {
            if regex::Regex::new(pattern).is_err() {
                self.refuse(
                    &format!("{}/pattern", at.pointer),
                    "the pattern is not an RE2 expression CEL's matches() accepts".into(),
                );
            } else {
                items.push(own(
                    format!("!{v}.matches({})", text::string(pattern)),
                    crate::validate::pattern_message(pattern),
                    Weight::Plain,
                ));
            }
        }
        items
    }

    fn list_checks(&mut self, node: &Map<String, Value>, at: &At) -> Vec<Item> {
        let v = &at.value;
        let mut items = Vec::new();
        let own =
            |fails: String, message: String, weight: Weight| at.check(fails, &message, weight);
        if let Some(limit) = node.get("maxItems").and_then(Value::as_u64) {
            items.push(own(
                format!("size({v}) > {limit}"),
                format!("must have at most {limit} item(s)"),
                Weight::Blocking,
            ));
        }
        if let Some(limit) = node.get("minItems").and_then(Value::as_u64) {
            items.push(own(
                format!("size({v}) < {limit}"),
                format!("must have at least {limit} item(s)"),
                Weight::Plain,
            ));
        }
        if node.get("uniqueItems") == Some(&Value::Bool(true)) {
            items.push(own(
                format!("size({v}.distinct()) != size({v})"),
                "must not contain duplicate items".into(),
                Weight::Plain,
            ));
        }
        let map_keys = crate::schema::listtype::map_keys(node).unwrap_or_default();
        match node.get("x-kubernetes-list-type").and_then(Value::as_str) {
            Some("set") => items.push(Item::List {
                messages: structural::set_repeats(v, &at.path, at.depth),
                weight: Weight::List,
                ratchet: None,
            }),
            Some("map") => items.push(Item::List {
                messages: structural::map_repeats(v, &at.path, at.depth, &map_keys),
                weight: Weight::List,
                ratchet: None,
            }),
            _ => {}
        }
        match node.get("items") {
            Some(schema @ Value::Object(_)) => {
                let variable = format!("tg_i{}", at.depth);
                let item_value = format!("{v}[{variable}]");
                // Items of a map list correlate with the old item of the same keys; items of
                // other lists with none.
                let old = match (&at.old, node.get("x-kubernetes-list-type")) {
                    (Some(old), Some(Value::String(kind))) if kind == "map" => {
                        let same = |o: &str| {
                            format!(
                                "type({o}) == map && {}",
                                structural::keys_equal(o, &item_value, &map_keys)
                            )
                        };
                        let candidate = format!("tg_o{}", at.depth);
                        Some((
                            format!("{old}.filter({candidate}, {})[0]", same(&candidate)),
                            format!(
                                "{} && type({old}) == list && {old}.exists({candidate}, {})",
                                at.old_exists,
                                same(&candidate)
                            ),
                        ))
                    }
                    _ => None,
                };
                let mut item = at.child(
                    item_value,
                    at.path.index(&variable),
                    format!("{}/items", at.pointer),
                    old,
                    schema,
                );
                item.depth = at.depth + 1;
                let inner = self.node(schema, &item);
                if !inner.is_empty() {
                    items.push(Item::EachIndex {
                        list: v.clone(),
                        variable,
                        items: inner,
                    });
                }
            }
            Some(Value::Bool(true)) | None => {}
            Some(_) => self.refuse(
                &format!("{}/items", at.pointer),
                "only a single schema for every item is compiled".into(),
            ),
        }
        items
    }

    fn object_checks(&mut self, node: &Map<String, Value>, at: &At) -> Vec<Item> {
        let v = &at.value;
        let mut items = Vec::new();
        let own =
            |fails: String, message: String, weight: Weight| at.check(fails, &message, weight);
        if let Some(limit) = node.get("maxProperties").and_then(Value::as_u64) {
            items.push(own(
                format!("size({v}) > {limit}"),
                format!("must have at most {limit} field(s)"),
                Weight::Blocking,
            ));
        }
        if let Some(limit) = node.get("minProperties").and_then(Value::as_u64) {
            items.push(own(
                format!("size({v}) < {limit}"),
                format!("must have at least {limit} field(s)"),
                Weight::Plain,
            ));
        }
        if node.get("x-kubernetes-embedded-resource") == Some(&Value::Bool(true)) {
            items.extend(structural::embedded_resource(&at.value, &at.path));
        }
        let properties = node.get("properties").and_then(Value::as_object);
        for name in node
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            let child = properties.and_then(|p| p.get(name));
            let child = child.filter(|_| !at.in_branch);
            items.push(Item::Check {
                fails: format!("!({})", present(v, name, child)),
                message: at.path.key(name).message("is required"),
                weight: Weight::Blocking,
                ratchet: Some(at.ratchet.clone()),
            });
        }
        let declared: Vec<String> = properties
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default();
        for (name, child) in properties.into_iter().flatten() {
            // Ratcheting pairs members by name, atomic maps' too (`crate::ratchet`).
            let old = at.old.as_ref().map(|old| {
                (
                    text::select(old, name),
                    format!(
                        "{} && type({old}) == map && {}",
                        at.old_exists,
                        present(old, name, Some(child))
                    ),
                )
            });
            // The root's apiVersion and kind pair with nothing (`crate::ratchet`).
            let old = old.filter(|_| !(at.root && (name == "apiVersion" || name == "kind")));
            let below = at.child(
                text::select(v, name),
                at.path.key(name),
                format!("{}/properties/{}", at.pointer, escape_pointer(name)),
                old,
                child,
            );
            let inner = self.node(child, &below);
            if !inner.is_empty() {
                items.push(Item::Within {
                    guard: present(v, name, Some(child).filter(|_| !at.in_branch)),
                    items: inner,
                });
            }
        }
        let patterns = self.pattern_properties(node, at, &mut items);
        let key = format!("tg_k{}", at.depth);
        // The keys `additionalProperties` judges: neither declared nor matching a pattern.
        let undeclared = {
            let names: Vec<String> = declared.iter().map(|d| text::string(d)).collect();
            let mut conditions = Vec::new();
            if !names.is_empty() {
                conditions.push(format!("!({key} in [{}])", names.join(", ")));
            }
            for pattern in &patterns {
                conditions.push(format!("!{key}.matches({})", text::string(pattern)));
            }
            (!conditions.is_empty()).then(|| conditions.join(" && "))
        };
        match node.get("additionalProperties") {
            Some(Value::Bool(false)) => {
                let keys = match &undeclared {
                    Some(keep) => format!("{v}.filter({key}, {keep})"),
                    None => v.clone(),
                };
                items.push(Item::List {
                    messages: format!(
                        "{keys}.map({key}, {})",
                        at.path.map_key(&key).message("is not a known field")
                    ),
                    weight: Weight::Plain,
                    ratchet: Some(at.ratchet.clone()),
                });
            }
            Some(schema @ Value::Object(_)) => {
                let member = format!("{v}[{key}]");
                let old = at.old.as_ref().map(|old| {
                    (
                        format!("{old}[{key}]"),
                        format!(
                            "{} && type({old}) == map && {key} in {old}{}",
                            at.old_exists,
                            if droppable(schema) {
                                format!(" && {old}[{key}] != null")
                            } else {
                                String::new()
                            }
                        ),
                    )
                });
                let mut below = at.child(
                    member.clone(),
                    at.path.map_key(&key),
                    format!("{}/additionalProperties", at.pointer),
                    old,
                    schema,
                );
                below.depth = at.depth + 1;
                let inner = self.node(schema, &below);
                if !inner.is_empty() {
                    let inner = if droppable(schema) && !at.in_branch {
                        vec![Item::Within {
                            guard: format!("{member} != null"),
                            items: inner,
                        }]
                    } else {
                        inner
                    };
                    items.push(Item::EachKey {
                        map: v.clone(),
                        variable: key,
                        keep: undeclared,
                        items: inner,
                    });
                }
            }
            _ => {}
        }
        items
    }

    /// `patternProperties`: each member whose name matches a pattern (RE2, as CEL's
    /// `matches()`) judged by that pattern's schema. The webhook's nulls, defaults, list checks
    /// and rules never look there, so neither does anything compiled below (`in_branch`).
    /// Returns the patterns, which `additionalProperties` then leaves alone.
    fn pattern_properties(
        &mut self,
        node: &Map<String, Value>,
        at: &At,
        items: &mut Vec<Item>,
    ) -> Vec<String> {
        let Some(patterns) = node.get("patternProperties").and_then(Value::as_object) else {
            return Vec::new();
        };
        let pointer = format!("{}/patternProperties", at.pointer);
        if node
            .get("additionalProperties")
            .is_some_and(Value::is_object)
        {
            self.refuse(
                &pointer,
                "patternProperties beside an additionalProperties schema is not compiled (the webhook drops nulls by the additionalProperties schema for every undeclared key)".into(),
            );
            return Vec::new();
        }
        let v = &at.value;
        let key = format!("tg_p{}", at.depth);
        let mut compiled = Vec::new();
        for (pattern, schema) in patterns {
            if regex::Regex::new(pattern).is_err() {
                self.refuse(
                    &format!("{pointer}/{}", escape_pointer(pattern)),
                    "the pattern is not an RE2 expression CEL's matches() accepts".into(),
                );
                continue;
            }
            let member = format!("{v}[{key}]");
            let old = at.old.as_ref().map(|old| {
                (
                    format!("{old}[{key}]"),
                    format!("{} && type({old}) == map && {key} in {old}", at.old_exists),
                )
            });
            let mut below = at.child(
                member,
                at.path.map_key(&key),
                format!("{pointer}/{}", escape_pointer(pattern)),
                old,
                schema,
            );
            below.depth = at.depth + 1;
            below.in_branch = true;
            let inner = self.node(schema, &below);
            if !inner.is_empty() {
                items.push(Item::EachKey {
                    map: v.clone(),
                    variable: key.clone(),
                    keep: Some(format!("{key}.matches({})", text::string(pattern))),
                    items: inner,
                });
            }
            compiled.push(pattern.clone());
        }
        compiled
    }

    /// `x-kubernetes-validations` of the node, evaluated with `self` (and `oldSelf`) bound by
    /// a one-item comprehension, so each rule runs as written.
    fn rules(&mut self, node: &Map<String, Value>, at: &At) -> Vec<Item> {
        let Some(rules) = node.get(RULES_KEY).and_then(Value::as_array) else {
            return Vec::new();
        };
        let differences = rules_see_otherwise(&Value::Object(node.clone()));
        let mut items = Vec::new();
        for (idx, rule) in rules.iter().enumerate() {
            let pointer = format!("{}/{RULES_KEY}/{idx}", at.pointer);
            let field = |name: &str| rule.get(name).and_then(Value::as_str);
            let Some(text) = field("rule") else {
                continue;
            };
            let message_expression = field("messageExpression");
            let expressions = || [Some(text), message_expression].into_iter().flatten();
            if let Some((_, reason)) = differences
                .iter()
                .find(|(path, _)| expressions().any(|e| crate::cel::reads_path(e, "self", path)))
            {
                self.refuse(&pointer, reason.clone());
                continue;
            }
            if at.root
                && [Some(text), message_expression]
                    .into_iter()
                    .flatten()
                    .any(reads_root_metadata)
            {
                self.refuse(
                    &pointer,
                    "a rule at the root that reads metadata sees only name and generateName in a CRD, all of it in an admission policy".into(),
                );
                continue;
            }
            let transition = [Some(text), message_expression]
                .into_iter()
                .flatten()
                .any(|t| crate::cel::references(t, "oldSelf"));
            let optional_old_self = rule.get("optionalOldSelf") == Some(&Value::Bool(true));
            let path = match field("fieldPath").map(|p| p.trim_start_matches('.')) {
                None | Some("") => at.path.clone(),
                Some(p) => match FieldPath::parse(p) {
                    Ok(parsed) => at.path.extend(&parsed),
                    Err(_) => continue,
                },
            };
            let old = match (&at.old, transition) {
                (_, false) => None,
                (Some(old), true) => Some(old),
                (None, true) => {
                    // The loader refuses this already.
                    self.refuse(&pointer, "oldSelf where values do not correlate".into());
                    continue;
                }
            };
            let bind = |expression: &str| match old {
                None => format!("[{}].all(self, {expression})", at.value),
                Some(old) if optional_old_self => format!(
                    "[{}].all(self, [{} ? optional.of({old}) : optional.none()].all(oldSelf, {expression}))",
                    at.value, at.old_exists
                ),
                Some(old) => format!(
                    "[{}].all(self, [{old}].all(oldSelf, {expression}))",
                    at.value
                ),
            };
            let map_bind = |expression: &str| match old {
                None => format!("[{}].map(self, {expression})[0]", at.value),
                Some(old) if optional_old_self => format!(
                    "[{}].map(self, [{} ? optional.of({old}) : optional.none()].map(oldSelf, {expression})[0])[0]",
                    at.value, at.old_exists
                ),
                Some(old) => format!(
                    "[{}].map(self, [{old}].map(oldSelf, {expression})[0])[0]",
                    at.value
                ),
            };
            let mut fails = format!("!{}", bind(text));
            if transition {
                fails = format!("!{RESTORE} && {fails}");
                if !optional_old_self {
                    fails = format!("{} && {fails}", at.old_exists);
                }
            }
            let message = match (message_expression, field("message")) {
                (Some(m), _) => path.message_with(&format!("': ' + {}", map_bind(m))),
                (None, Some(m)) => path.message(m),
                (None, None) => path.message(&format!("failed rule: {text}")),
            };
            items.push(Item::Check {
                fails,
                message,
                weight: Weight::Rule,
                ratchet: (!transition).then(|| at.ratchet.clone()),
            });
        }
        items
    }
}

/// The types the node's `type` allows, in the order the webhook names them.
fn types_of(node: &Map<String, Value>) -> Option<Vec<&str>> {
    const ORDER: &[&str] = &[
        "null", "boolean", "integer", "number", "string", "array", "object",
    ];
    let listed: Vec<&str> = match node.get("type")? {
        Value::String(one) => vec![one.as_str()],
        Value::Array(many) => many.iter().filter_map(Value::as_str).collect(),
        _ => return None,
    };
    Some(
        ORDER
            .iter()
            .copied()
            .filter(|t| listed.contains(t))
            .collect(),
    )
}

fn number_checks(node: &Map<String, Value>, at: &At) -> Vec<Item> {
    let v = &at.value;
    [
        ("minimum", "<", "must be greater than or equal to"),
        ("maximum", ">", "must be less than or equal to"),
        ("exclusiveMinimum", "<=", "must be greater than"),
        ("exclusiveMaximum", ">=", "must be less than"),
    ]
    .into_iter()
    .filter_map(|(keyword, fails_when, phrase)| {
        let Some(Value::Number(limit)) = node.get(keyword) else {
            return None;
        };
        Some(at.check(
            format!("{v} {fails_when} {}", text::number(limit)),
            &format!("{phrase} {limit}"),
            Weight::Plain,
        ))
    })
    .collect()
}

/// Whether the apiserver drops a `null` at a member of this schema (`crate::schema::nulls`).
fn droppable(schema: &Value) -> bool {
    schema.get("nullable") != Some(&Value::Bool(true)) && schema.get("default").is_none()
}

/// Whether member `name` of the map `map` is there once dropped `null`s are gone.
fn present(map: &str, name: &str, schema: Option<&Value>) -> String {
    let has = text::has(map, name);
    if schema.is_some_and(droppable) {
        format!("({has} && {} != null)", text::select(map, name))
    } else {
        has
    }
}

/// Where below this node a CRD rule would see values other than an admission policy sees, and
/// why: a property CRD rules see under an escaped name (at the property), a string CRD rules
/// see typed by its format (at the string). Inside lists and maps, at the list or map. A rule
/// is compiled only if it reads none of these places.
fn rules_see_otherwise(schema: &Value) -> Vec<(Vec<String>, String)> {
    let mut found = Vec::new();
    let Some(node) = schema.as_object() else {
        return found;
    };
    if let Some(format) = node.get("format").and_then(Value::as_str)
        && ["date-time", "datetime", "duration", "byte"]
            .iter()
            .any(|typed| format.contains(typed))
    {
        found.push((
            Vec::new(),
            format!(
                "CRD rules see format {format:?} strings as typed values; an admission policy sees strings"
            ),
        ));
    }
    if node.get("x-kubernetes-embedded-resource") == Some(&Value::Bool(true)) {
        found.push((
            Vec::new(),
            "CRD rules see an embedded resource completed with apiVersion, kind and metadata"
                .into(),
        ));
    }
    for (name, child) in node
        .get("properties")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        if escape_field_name(name).is_none_or(|escaped| escaped != name.as_str()) {
            found.push((
                vec![name.clone()],
                format!(
                    "CRD rules see the property {name:?} under an escaped name; an admission policy sees it as it is"
                ),
            ));
        }
        for (mut path, reason) in rules_see_otherwise(child) {
            path.insert(0, name.clone());
            found.push((path, reason));
        }
    }
    for container in ["items", "additionalProperties"] {
        if let Some((_, reason)) = node
            .get(container)
            .and_then(|below| rules_see_otherwise(below).into_iter().next())
        {
            found.push((Vec::new(), reason));
        }
    }
    found
}

/// A schema pointer as `tollgate check` names places: `.properties.spec`.
fn dotted(pointer: &str) -> String {
    crate::path::keys_from_pointer(pointer)
        .iter()
        .map(|k| format!(".{k}"))
        .collect()
}
