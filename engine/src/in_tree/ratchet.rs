//! Ratcheting's comparison as CEL (`crate::ratchet`): a value against its old self, with the
//! old self's defaults filled in as the webhook fills them before it compares.

use serde_json::Value;

use super::text;

/// Whether defaults sit in or below `schema`. `$ref`s need not be followed: for validation a
/// default under a `$ref` (or `allOf`, or `items`) stays with the webhook.
fn declares_default(schema: &Value) -> bool {
    crate::schema::declares_default(&Value::Null, schema)
}

/// Whether `new` equals `old` once `old` has the defaults the webhook fills in before it
/// compares (it judges the old object defaulted, so a default filled in since is no change).
pub fn equal_to_defaulted(new: &str, old: &str, schema: &Value) -> String {
    let Some(properties) = schema
        .get("properties")
        .and_then(Value::as_object)
        .filter(|_| declares_default(schema))
    else {
        return format!("{old} == {new}");
    };
    let mut parts = Vec::new();
    let mut compared = Vec::new();
    for (name, child) in properties {
        let filled = child.get("default").map(|default| {
            let mut filled = default.clone();
            crate::defaults::Defaulter::from_schema(child).apply(&mut filled);
            filled
        });
        let defaults_below = declares_default(child);
        if filled.is_none() && !defaults_below {
            continue;
        }
        compared.push(text::string(name));
        let (in_new, in_old) = (text::has(new, name), text::has(old, name));
        let (new_child, old_child) = (text::select(new, name), text::select(old, name));
        let when_absent = match &filled {
            Some(value) => format!("{in_new} && {new_child} == dyn({})", text::literal(value)),
            None => format!("!{in_new}"),
        };
        parts.push(format!(
            "({in_old} ? {in_new} && {} : {when_absent})",
            equal_to_defaulted(&new_child, &old_child, child)
        ));
    }
    let listed = compared.join(", ");
    let rest = |map: &str| format!("{map}.filter(k, !(k in [{listed}]))");
    parts.push(format!(
        "{}.all(k, k in {old} && {old}[k] == {new}[k]) && size({}) == size({})",
        rest(new),
        rest(new),
        rest(old)
    ));
    format!(
        "(type({new}) == map && type({old}) == map ? ({}) : {old} == {new})",
        parts.join(" && ")
    )
}
