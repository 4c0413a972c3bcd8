//! The CRD dialect's structural checks as CEL (`crate::schema::listtype`): `set` and `map`
//! lists' first repeats, map-list keys, and embedded resources' `apiVersion` and `kind`.

use super::checks::{Item, Weight};
use super::text::{self, Path};

/// The checks the apiserver makes of an embedded resource's `apiVersion` and `kind` when they
/// are there (`crate::schema::listtype`): never ratcheted, never blocking.
pub fn embedded_resource(v: &str, path: &Path) -> Vec<Item> {
    let check = |field: &str, fails: String, message: &str| {
        let value = text::select(v, field);
        Item::Within {
            guard: text::has(v, field),
            items: vec![Item::Check {
                fails: fails.replace("VALUE", &value),
                message: path.key(field).message(message),
                weight: Weight::Plain,
                ratchet: None,
            }],
        }
    };
    let string_checks = |field: &str, last: (&str, &str)| {
        vec![
            check(field, "type(VALUE) != string".into(), "must be a string"),
            check(field, "VALUE == ''".into(), "must not be empty"),
            check(
                field,
                format!("type(VALUE) == string && VALUE != '' && ({})", last.0),
                last.1,
            ),
        ]
    };
    let mut items = string_checks(
        "apiVersion",
        (
            "size(VALUE.split('/')) > 2 || VALUE.startsWith('/')",
            "must be a version or group/version",
        ),
    );
    items.extend(string_checks(
        "kind",
        (
            "size(VALUE) > 63 || !VALUE.lowerAscii().matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",
            "may have mixed case, but should otherwise be a DNS-1035 label (a letter, then letters, digits or '-', at most 63)",
        ),
    ));
    items
}

/// Whether two items of a map list (either may be `null`, which has no keys) hold the same
/// keys: a key missing from both counts as equal (`crate::schema::listtype`).
pub fn keys_equal(a: &str, b: &str, keys: &[String]) -> String {
    if keys.is_empty() {
        return "true".into();
    }
    keys.iter()
        .map(|k| {
            let (in_a, in_b) = (text::has(a, k), text::has(b, k));
            let (at_a, at_b) = (text::select(a, k), text::select(b, k));
            format!(
                "(({a} == null || !{in_a}) ? ({b} == null || !{in_b}) : ({b} != null && {in_b} && type({at_a}) == type({at_b}) && {at_a} == {at_b}))"
            )
        })
        .collect::<Vec<_>>()
        .join(" && ")
}

/// The first repeat of each value of a `set` list, as the webhook reports them.
pub fn set_repeats(list: &str, path: &Path, depth: usize) -> String {
    let (i, j) = (format!("tg_s{depth}"), format!("tg_t{depth}"));
    format!(
        "lists.range(size({list})).filter({i}, lists.range({i}).filter({j}, type({list}[{j}]) == type({list}[{i}]) && {list}[{j}] == {list}[{i}]).size() == 1).map({i}, {})",
        path.index(&i)
            .message("must not repeat an earlier item (x-kubernetes-list-type: set)")
    )
}

/// A `map` list's first item that is not an object, or else the first repeat of each key.
pub fn map_repeats(list: &str, path: &Path, depth: usize, keys: &[String]) -> String {
    let (i, j) = (format!("tg_s{depth}"), format!("tg_t{depth}"));
    let not_objects = format!(
        "lists.range(size({list})).filter({i}, {list}[{i}] != null && type({list}[{i}]) != map)"
    );
    let names = keys.join(", ");
    let first_not_object = format!("{not_objects}[0]");
    format!(
        "(size({not_objects}) > 0 ? [{}] : lists.range(size({list})).filter({i}, lists.range({i}).filter({j}, {}).size() == 1).map({i}, {}))",
        path.message_with(&format!(
            "'[' + string({first_not_object}) + ']: must be an object (x-kubernetes-list-type: map)'"
        )),
        keys_equal(&format!("{list}[{j}]"), &format!("{list}[{i}]"), keys),
        path.index(&i).message(&format!(
            "must not repeat the keys ({names}) of an earlier item (x-kubernetes-list-type: map)"
        ))
    )
}
