//! Defaulting: static labels and annotations from `spec.defaults`, and a JSON Schema's `default`
//! keywords. Defaults never overwrite a value that is present.
//!
//! Schema defaults: jsonschema only validates, jsonschema only validates, so the walk is
//! ours: compiled once per policy into a plan that only holds the branches that carry defaults.
//! `$ref`s become indexes into a table, so recursive schemas cost one plan per definition.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use crate::instance::Instance;
use json_patch::jsonptr::{PointerBuf, Token};
use json_patch::{AddOperation, PatchOperation, ReplaceOperation};
use serde_json::{Map, Value};

use crate::path::escape_pointer;

/// `spec.defaults.labels` / `.annotations`: added to an object's metadata when absent.
#[derive(Debug, Clone, Default)]
pub struct MetadataDefaults {
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

impl MetadataDefaults {
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.annotations.is_empty()
    }

    /// Whether `object` has every label and annotation `apply` would add.
    pub fn is_complete(&self, object: Instance<'_>) -> bool {
        if self.is_empty() || !object.is_object() {
            return true;
        }
        let Some(metadata) = object.get("metadata") else {
            return false;
        };
        // `apply` leaves metadata that is not an object as it is.
        !metadata.is_object()
            || self.fields().iter().all(|(field, entries)| {
                entries.is_empty()
                    || metadata.get(field).is_some_and(|present| {
                        !present.is_null()
                            && (!present.is_object()
                                || entries.keys().all(|key| present.get(key).is_some()))
                    })
            })
    }

    fn fields(&self) -> [(&'static str, &BTreeMap<String, String>); 2] {
        [("labels", &self.labels), ("annotations", &self.annotations)]
    }

    pub fn apply<'p>(&'p self, object: &mut Value, inserted: &mut Inserted<'p>) {
        if self.is_empty() {
            return;
        }
        let Some(map) = object.as_object_mut() else {
            return;
        };
        if !map.contains_key("metadata") {
            inserted.mark(Step::key("metadata"), Change::Add);
        }
        let metadata = map
            .entry("metadata")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(metadata) = metadata.as_object_mut() {
            inserted.enter(|| Step::key("metadata"));
            for (field, entries) in self.fields() {
                insert_missing(metadata, field, entries, inserted);
            }
            inserted.leave();
        }
    }

    /// Every entry Kubernetes would reject, as `(field, message)`, so a bad default is reported
    /// at load time and never reaches the apiserver.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut found = Vec::new();
        for (field, entries) in self.fields() {
            for (key, value) in entries {
                if !is_qualified_name(key) {
                    found.push((field, format!("{key:?} is not a valid key")));
                } else if field == "labels" && !is_label_value(value) {
                    found.push((
                        field,
                        format!("value {value:?} of label {key:?} is not a valid label value"),
                    ));
                }
            }
        }
        found
    }
}

fn insert_missing<'p>(
    metadata: &mut Map<String, Value>,
    field: &'static str,
    entries: &'p BTreeMap<String, String>,
    inserted: &mut Inserted<'p>,
) {
    if entries.is_empty() {
        return;
    }
    match metadata.get(field) {
        None => inserted.mark(Step::key(field), Change::Add),
        Some(Value::Null) => inserted.mark(Step::key(field), Change::Replace),
        Some(_) => {}
    }
    let target = metadata
        .entry(field)
        .or_insert_with(|| Value::Object(Map::new()));
    if target.is_null() {
        *target = Value::Object(Map::new());
    }
    if let Some(target) = target.as_object_mut() {
        inserted.enter(|| Step::key(field));
        add_entries(target, entries, inserted);
        inserted.leave();
    }
}

/// The entries `target` lacks, added to it.
fn add_entries<'p>(
    target: &mut Map<String, Value>,
    entries: &'p BTreeMap<String, String>,
    inserted: &mut Inserted<'p>,
) {
    for (key, value) in entries {
        if !target.contains_key(key) {
            inserted.mark(Step::key(key), Change::Add);
            target.insert(key.clone(), Value::String(value.clone()));
        }
    }
}

/// One step of a path into an object: a key (borrowed from the policy where it can be) or an
/// array index.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Step<'p> {
    Key(Cow<'p, str>),
    Index(usize),
}

impl<'p> Step<'p> {
    fn key(key: &'p str) -> Self {
        Self::Key(Cow::Borrowed(key))
    }
}

/// How a default changed the object at a path: a field added, or a `null` map replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Add,
    Replace,
}

/// Where defaulting put things, noted while it runs so the JSON Patch needs no comparison of
/// the whole object with its copy (`into_patch`). Off, it notes nothing (validation's copy).
#[derive(Debug)]
pub struct Inserted<'p> {
    on: bool,
    path: Vec<Step<'p>>,
    found: Vec<(Vec<Step<'p>>, Change)>,
}

impl<'p> Inserted<'p> {
    pub fn on() -> Self {
        Self {
            on: true,
            path: Vec::new(),
            found: Vec::new(),
        }
    }

    fn off() -> Self {
        Self {
            on: false,
            path: Vec::new(),
            found: Vec::new(),
        }
    }

    /// Descends one step (built only when noting: validation's copy pays nothing for paths).
    fn enter(&mut self, step: impl FnOnce() -> Step<'p>) {
        if self.on {
            self.path.push(step());
        }
    }

    fn leave(&mut self) {
        if self.on {
            self.path.pop();
        }
    }

    fn mark(&mut self, last: Step<'p>, change: Change) {
        if self.on {
            // Sized for the last step too: a clone then a push would allocate twice.
            let mut path = Vec::with_capacity(self.path.len() + 1);
            path.extend(self.path.iter().cloned());
            path.push(last);
            self.found.push((path, change));
        }
    }

    /// The patch from the object before defaulting to `after`: one operation per outermost
    /// change, carrying its final subtree, in the order `json_patch::diff` gives (keys in map
    /// order, depth first) — the same patch, computed from what was done instead of by
    /// comparing the two objects.
    pub fn into_patch(self, after: &Value) -> json_patch::Patch {
        let mut operations = Vec::new();
        self.each_operation(after, |operation| {
            operations.push(operation.into_patch_operation())
        });
        json_patch::Patch(operations)
    }

    /// The operations of `into_patch`, in its order, each borrowing its value from `after`
    /// (a server writes them out without building the patch: no subtree copies).
    pub fn each_operation(mut self, after: &Value, mut each: impl FnMut(Operation<'_, 'p>)) {
        self.found.sort_by(|a, b| a.0.cmp(&b.0));
        let mut outermost: Option<&[Step<'p>]> = None;
        let mut pointer = String::new();
        for (path, change) in &self.found {
            if outermost.is_some_and(|outer| path.starts_with(outer)) {
                continue;
            }
            outermost = Some(path);
            let Some(value) = lookup(after, path) else {
                continue;
            };
            write_pointer(&mut pointer, path);
            each(Operation {
                change: *change,
                steps: path,
                pointer: &pointer,
                value,
            });
        }
    }
}

/// One operation of a defaulting patch.
#[derive(Debug, Clone, Copy)]
pub struct Operation<'a, 'p> {
    pub change: Change,
    steps: &'a [Step<'p>],
    /// The RFC 6901 pointer of `steps`.
    pub pointer: &'a str,
    pub value: &'a Value,
}

impl Operation<'_, '_> {
    /// The `op` member of the JSON Patch operation.
    pub fn op(&self) -> &'static str {
        match self.change {
            Change::Add => "add",
            Change::Replace => "replace",
        }
    }

    fn into_patch_operation(self) -> PatchOperation {
        // Always valid (every key escaped by `write_pointer`); a failure would be a bug,
        // answered with the token-by-token construction rather than a panic.
        let path = PointerBuf::parse(self.pointer.to_string()).unwrap_or_else(|_| {
            PointerBuf::from_tokens(self.steps.iter().map(|step| match step {
                Step::Key(key) => Token::new(key.as_ref()),
                Step::Index(index) => Token::from(*index),
            }))
        });
        let value = self.value.clone();
        match self.change {
            Change::Add => PatchOperation::Add(AddOperation { path, value }),
            Change::Replace => PatchOperation::Replace(ReplaceOperation { path, value }),
        }
    }
}

/// Writes the JSON pointer naming `path` into `text` (cleared first).
fn write_pointer(text: &mut String, path: &[Step<'_>]) {
    text.clear();
    for step in path {
        text.push('/');
        match step {
            Step::Key(key) if key.contains(['~', '/']) => text.push_str(&escape_pointer(key)),
            Step::Key(key) => text.push_str(key),
            Step::Index(index) => {
                use std::fmt::Write;
                let _ = write!(text, "{index}");
            }
        }
    }
}

fn lookup<'v>(value: &'v Value, path: &[Step<'_>]) -> Option<&'v Value> {
    path.iter()
        .try_fold(value, |node, step| match (node, step) {
            (Value::Object(map), Step::Key(key)) => map.get(key.as_ref()),
            (Value::Array(items), Step::Index(index)) => items.get(*index),
            _ => None,
        })
}

/// Kubernetes' qualified names: an optional DNS-subdomain prefix, `/`, and a name of at most 63
/// alphanumerics, `-`, `_` or `.`, starting and ending alphanumeric.
fn is_qualified_name(key: &str) -> bool {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    let prefix_ok = prefix.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 253
            && p.split('.').all(|part| {
                !part.is_empty()
                    && part.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                    && part.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                    && part
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            })
    });
    !name.is_empty() && is_label_value(name) && prefix_ok
}

/// Empty, or at most 63 alphanumerics, `-`, `_` or `.`, starting and ending alphanumeric.
fn is_label_value(value: &str) -> bool {
    value.is_empty()
        || (value.len() <= 63
            && value.starts_with(|c: char| c.is_ascii_alphanumeric())
            && value.ends_with(|c: char| c.is_ascii_alphanumeric())
            && value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
}

#[derive(Debug, Clone, Default)]
pub struct Defaulter {
    root: DefaultPlan,
    refs: Vec<DefaultPlan>,
}

#[derive(Debug, Clone, Default)]
struct DefaultPlan {
    properties: Vec<PropertyPlan>,
    items: Option<Box<DefaultPlan>>,
    additional: Option<Box<DefaultPlan>>,
    /// Property names the schema declares, so `additionalProperties` applies only to the rest.
    declared: Vec<String>,
    /// Plans of `$ref` targets that apply at this same node.
    refs: Vec<usize>,
}

#[derive(Debug, Clone)]
struct PropertyPlan {
    name: String,
    default: Option<Value>,
    /// `nullable: true`: a `null` here is a value, never replaced by the default.
    nullable: bool,
    nested: DefaultPlan,
}

impl PropertyPlan {
    /// Whether `present` gets the default although the field is there: as the apiserver
    /// defaults CRDs, a `null` where the schema does not allow one is replaced.
    fn replaces(&self, present: Instance<'_>) -> bool {
        self.default.is_some() && !self.nullable && present.is_null()
    }
}

impl Defaulter {
    pub fn from_schema(schema: &Value) -> Self {
        let mut builder = Builder {
            root: schema,
            table: Vec::new(),
            by_ref: HashMap::new(),
        };
        let root = builder.build(schema);
        Self {
            root,
            refs: builder.table,
        }
    }

    /// Fills in every absent field that has a default, then descends into it, so an object
    /// defaulted to `{}` also receives its own nested defaults.
    pub fn apply(&self, value: &mut Value) {
        self.root.apply(value, &self.refs, &mut Inserted::off());
    }

    /// `apply`, noting where each default went.
    pub fn apply_noting<'p>(&'p self, value: &mut Value, inserted: &mut Inserted<'p>) {
        self.root.apply(value, &self.refs, inserted);
    }

    /// Whether `apply` would add nothing: lets callers skip copying a complete object.
    pub fn is_complete(&self, value: Instance<'_>) -> bool {
        self.root.is_complete(value, &self.refs)
    }
}

impl DefaultPlan {
    fn is_empty(&self) -> bool {
        self.properties.is_empty()
            && self.items.is_none()
            && self.additional.is_none()
            && self.refs.is_empty()
    }

    fn is_complete(&self, value: Instance<'_>, table: &[DefaultPlan]) -> bool {
        let refs_complete = self
            .refs
            .iter()
            .filter_map(|idx| table.get(*idx))
            .all(|plan| plan.is_complete(value, table));
        if !refs_complete {
            return false;
        }
        if value.is_object() {
            self.properties
                .iter()
                .all(|prop| match value.get(&prop.name) {
                    None => prop.default.is_none(),
                    Some(child) => !prop.replaces(child) && prop.nested.is_complete(child, table),
                })
                && self.additional.as_ref().is_none_or(|additional| {
                    value
                        .members()
                        .filter(|(key, _)| !self.declared.iter().any(|d| d == key))
                        .all(|(_, child)| additional.is_complete(child, table))
                })
        } else if value.array_len().is_some() {
            self.items
                .as_ref()
                .is_none_or(|plan| value.items().all(|item| plan.is_complete(item, table)))
        } else {
            true
        }
    }

    fn apply<'p>(
        &'p self,
        value: &mut Value,
        table: &'p [DefaultPlan],
        inserted: &mut Inserted<'p>,
    ) {
        for idx in &self.refs {
            if let Some(plan) = table.get(*idx) {
                plan.apply(value, table, inserted);
            }
        }
        match value {
            Value::Object(map) => {
                for prop in &self.properties {
                    let change = match map.get(&prop.name) {
                        None => Some(Change::Add),
                        Some(present) if prop.replaces(Instance::Value(present)) => {
                            Some(Change::Replace)
                        }
                        Some(_) => None,
                    };
                    if let (Some(change), Some(default)) = (change, &prop.default) {
                        inserted.mark(Step::key(&prop.name), change);
                        map.insert(prop.name.clone(), default.clone());
                    }
                    if let Some(child) = map.get_mut(&prop.name) {
                        inserted.enter(|| Step::key(&prop.name));
                        prop.nested.apply(child, table, inserted);
                        inserted.leave();
                    }
                }
                if let Some(additional) = &self.additional {
                    for (key, child) in map.iter_mut() {
                        if !self.declared.iter().any(|d| d == key) {
                            inserted.enter(|| Step::Key(Cow::Owned(key.clone())));
                            additional.apply(child, table, inserted);
                            inserted.leave();
                        }
                    }
                }
            }
            Value::Array(items) => {
                if let Some(plan) = &self.items {
                    for (index, item) in items.iter_mut().enumerate() {
                        inserted.enter(|| Step::Index(index));
                        plan.apply(item, table, inserted);
                        inserted.leave();
                    }
                }
            }
            _ => {}
        }
    }

    fn merge(&mut self, other: DefaultPlan) {
        for prop in other.properties {
            match self.properties.iter_mut().find(|p| p.name == prop.name) {
                Some(existing) => {
                    if existing.default.is_none() {
                        existing.default = prop.default;
                    }
                    existing.nested.merge(prop.nested);
                }
                None => self.properties.push(prop),
            }
        }
        merge_boxed(&mut self.items, other.items);
        merge_boxed(&mut self.additional, other.additional);
        for name in other.declared {
            if !self.declared.contains(&name) {
                self.declared.push(name);
            }
        }
        for idx in other.refs {
            if !self.refs.contains(&idx) {
                self.refs.push(idx);
            }
        }
    }
}

fn merge_boxed(target: &mut Option<Box<DefaultPlan>>, source: Option<Box<DefaultPlan>>) {
    match (target.as_mut(), source) {
        (Some(t), Some(s)) => t.merge(*s),
        (None, Some(s)) => *target = Some(s),
        _ => {}
    }
}

struct Builder<'s> {
    root: &'s Value,
    table: Vec<DefaultPlan>,
    by_ref: HashMap<String, usize>,
}

impl Builder<'_> {
    fn build(&mut self, node: &Value) -> DefaultPlan {
        let mut plan = DefaultPlan::default();
        let Some(schema) = node.as_object() else {
            return plan;
        };
        if let Some(reference) = schema.get("$ref").and_then(Value::as_str)
            && let Some(idx) = self.plan_for_ref(reference)
        {
            plan.refs.push(idx);
        }
        if let Some(Value::Array(all_of)) = schema.get("allOf") {
            for sub in all_of {
                let sub_plan = self.build(sub);
                plan.merge(sub_plan);
            }
        }
        if let Some(Value::Object(properties)) = schema.get("properties") {
            let props = self.properties_plan(properties);
            plan.merge(props);
        }
        if let Some(items) = schema.get("items") {
            let items_plan = self.build(items);
            if !items_plan.is_empty() {
                merge_boxed(&mut plan.items, Some(Box::new(items_plan)));
            }
        }
        if let Some(additional) = schema.get("additionalProperties") {
            let additional_plan = self.build(additional);
            if !additional_plan.is_empty() {
                merge_boxed(&mut plan.additional, Some(Box::new(additional_plan)));
            }
        }
        plan
    }

    fn properties_plan(&mut self, properties: &Map<String, Value>) -> DefaultPlan {
        let mut plan = DefaultPlan {
            declared: properties.keys().cloned().collect(),
            ..DefaultPlan::default()
        };
        for (name, sub) in properties {
            let default = sub.get("default").cloned();
            let nested = self.build(sub);
            if default.is_some() || !nested.is_empty() {
                plan.properties.push(PropertyPlan {
                    name: name.clone(),
                    default,
                    nullable: sub.get("nullable") == Some(&Value::Bool(true)),
                    nested,
                });
            }
        }
        plan
    }

    /// Only same-document references (`#/$defs/...`); remote references are never fetched.
    fn plan_for_ref(&mut self, reference: &str) -> Option<usize> {
        if let Some(idx) = self.by_ref.get(reference) {
            return Some(*idx);
        }
        let root = self.root;
        let target = root.pointer(reference.strip_prefix('#')?)?;
        let idx = self.table.len();
        // Reserved before building so a recursive reference finds itself instead of looping.
        self.table.push(DefaultPlan::default());
        self.by_ref.insert(reference.to_string(), idx);
        let plan = self.build(target);
        self.table[idx] = plan;
        Some(idx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The object defaulted by `schema`; on the way, checks that the patch noted while
    /// defaulting is exactly the one comparing the two objects gives, and that it applies.
    fn defaulted(schema: Value, object: Value) -> Value {
        let defaulter = Defaulter::from_schema(&schema);
        let mut plain = object.clone();
        defaulter.apply(&mut plain);
        let mut noted = object.clone();
        let mut inserted = Inserted::on();
        defaulter.apply_noting(&mut noted, &mut inserted);
        assert_eq!(noted, plain);
        check_patch(&object, &noted, inserted.into_patch(&noted));
        plain
    }

    fn check_patch(before: &Value, after: &Value, patch: json_patch::Patch) {
        assert_eq!(
            patch,
            json_patch::diff(before, after),
            "{before} -> {after}"
        );
        let mut patched = before.clone();
        assert!(json_patch::patch(&mut patched, &patch).is_ok());
        assert_eq!(&patched, after);
    }

    /// A label and an annotation (whose key needs escaping in a pointer).
    fn metadata_defaults() -> MetadataDefaults {
        MetadataDefaults {
            labels: BTreeMap::from([("app.kubernetes.io/name".into(), "x".into())]),
            annotations: BTreeMap::from([("a~b".into(), "y".into())]),
        }
    }

    /// Every shape of metadata the defaults meet: absent, without the maps, `null` maps, a
    /// value present, maps of the wrong type, no object at all.
    fn metadata_objects() -> Vec<Value> {
        vec![
            json!({"kind": "K"}),
            json!({"metadata": {"name": "n"}}),
            json!({"metadata": {"labels": null, "annotations": {"other": "1"}}}),
            json!({"metadata": {"labels": {"app.kubernetes.io/name": "kept"}}}),
            json!({"metadata": {"labels": "not a map"}}),
            json!({"metadata": null}),
            json!("not an object"),
        ]
    }

    #[test]
    fn metadata_defaults_note_added_maps_keys_and_replaced_nulls() {
        let defaults = metadata_defaults();
        for object in metadata_objects() {
            let mut after = object.clone();
            let mut inserted = Inserted::on();
            defaults.apply(&mut after, &mut inserted);
            check_patch(&object, &after, inserted.into_patch(&after));
        }
    }

    #[test]
    fn metadata_defaults_are_complete_exactly_when_apply_adds_nothing() {
        let defaults = metadata_defaults();
        let mut complete = json!({"metadata": {"labels": {"app.kubernetes.io/name": "kept"},
                                               "annotations": {"a~b": "kept"}}});
        let mut shapes = metadata_objects();
        shapes.push(complete.clone());
        for object in shapes {
            let mut after = object.clone();
            defaults.apply(&mut after, &mut Inserted::on());
            assert_eq!(
                defaults.is_complete((&object).into()),
                after == object,
                "{object}"
            );
        }
        complete["metadata"]["annotations"] = json!(null);
        assert!(!defaults.is_complete((&complete).into()));
    }

    #[test]
    fn fills_absent_fields_recursively_into_defaulted_objects() {
        let schema = json!({"properties": {"spec": {"type": "object", "properties": {
            "retry": {"type": "object", "default": {}, "properties": {
                "maxAttempts": {"default": 3}, "backoffSeconds": {"default": 1}}},
            "replicas": {"default": 2}
        }}}});
        assert_eq!(
            defaulted(schema, json!({"spec": {"replicas": 5}})),
            json!({"spec": {"replicas": 5, "retry": {"maxAttempts": 3, "backoffSeconds": 1}}})
        );
    }

    #[test]
    fn never_overwrites_present_values_but_replaces_nulls_the_schema_forbids() {
        let schema = json!({"properties": {"a": {"default": 1}, "b": {"default": true},
            "c": {"default": "x"}, "d": {"default": "y", "nullable": true}}});
        // As the apiserver defaults a CRD: a `null` that is not `nullable` takes the default.
        assert_eq!(
            defaulted(schema, json!({"a": 0, "b": false, "c": null, "d": null})),
            json!({"a": 0, "b": false, "c": "x", "d": null})
        );
    }

    #[test]
    fn does_not_create_parents_without_defaults() {
        let schema = json!({"properties": {"spec": {"properties": {"x": {"default": 1}}}}});
        assert_eq!(
            defaulted(schema, json!({"metadata": {}})),
            json!({"metadata": {}})
        );
    }

    #[test]
    fn follows_items_additional_properties_refs_and_all_of() {
        let schema = json!({
            "$defs": {"port": {"properties": {"protocol": {"default": "TCP"}}}},
            "properties": {
                "ports": {"items": {"$ref": "#/$defs/port"}},
                "byName": {"properties": {"fixed": {}}, "additionalProperties": {"properties": {"weight": {"default": 1}}}},
            },
            "allOf": [{"properties": {"extra": {"default": "e"}}}]
        });
        assert_eq!(
            defaulted(
                schema,
                json!({"ports": [{}, {"protocol": "UDP"}], "byName": {"fixed": {}, "a": {}}})
            ),
            json!({
                "ports": [{"protocol": "TCP"}, {"protocol": "UDP"}],
                "byName": {"fixed": {}, "a": {"weight": 1}},
                "extra": "e"
            })
        );
    }

    #[test]
    fn is_complete_exactly_when_apply_adds_nothing() {
        let schema = json!({
            "$defs": {"port": {"properties": {"protocol": {"default": "TCP"}}}},
            "properties": {
                "ports": {"items": {"$ref": "#/$defs/port"}},
                "byName": {"properties": {"fixed": {}}, "additionalProperties": {"properties": {"weight": {"default": 1}}}},
                "retry": {"default": {}, "properties": {"max": {"default": 3}}},
            },
        });
        let defaulter = Defaulter::from_schema(&schema);
        for object in [
            json!({}),
            json!({"retry": {}}),
            json!({"retry": {"max": 1}, "ports": [{}]}),
            json!({"retry": {"max": 1}, "byName": {"fixed": {}, "a": {}}}),
            json!({"retry": {"max": 1}, "ports": [{"protocol": "UDP"}], "byName": {"fixed": {}, "a": {"weight": 2}}}),
        ] {
            let mut applied = object.clone();
            defaulter.apply(&mut applied);
            let doc = crate::document::Document::from_value(&object).unwrap_or_default();
            for instance in [Instance::Value(&object), Instance::Node(doc.root())] {
                assert_eq!(
                    defaulter.is_complete(instance),
                    applied == object,
                    "{object}"
                );
            }
            assert!(defaulter.is_complete((&applied).into()), "{applied}");
        }
    }

    #[test]
    fn plans_branching_recursive_refs_once() {
        let schema = json!({"$defs": {"tree": {"properties": {
            "v": {"default": 0}, "left": {"$ref": "#/$defs/tree"}, "right": {"$ref": "#/$defs/tree"}}}},
            "$ref": "#/$defs/tree"});
        let defaulter = Defaulter::from_schema(&schema);
        assert_eq!(defaulter.refs.len(), 1);
        let mut object = json!({"left": {"right": {}}});
        defaulter.apply(&mut object);
        assert_eq!(object, json!({"v": 0, "left": {"v": 0, "right": {"v": 0}}}));
    }

    #[test]
    fn survives_recursive_refs() {
        let schema = json!({"$defs": {"node": {"properties": {"v": {"default": 0}, "child": {"$ref": "#/$defs/node"}}}},
                            "$ref": "#/$defs/node"});
        assert_eq!(
            defaulted(schema, json!({"child": {"child": {}}})),
            json!({"v": 0, "child": {"v": 0, "child": {"v": 0}}})
        );
    }
}
