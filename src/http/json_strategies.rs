//! Property-test inputs shared by the JSON reader, the JSON writer and the review readers.

use proptest::prelude::*;
use serde_json::Value;

/// Strings JSON writers and readers get wrong: control characters, quotes, backslashes,
/// non-ASCII, line separators.
pub fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9+/=._ -]{0,40}",
        any::<String>(),
        prop::collection::vec(0u8..0x30, 0..12)
            .prop_map(|b| b.into_iter().map(char::from).collect()),
        "[\"\\\\\u{7f}\u{80}\u{2028}é€😀]{0,8}",
    ]
}

/// Any JSON document, numbers at their edges included.
pub fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        any_text().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(any_text(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// One field of a review as it may come: well formed (one of `good`), absent, null, of the
/// wrong type, twice, or with an escape in its name.
pub fn field(name: &'static str, good: &'static [&'static str]) -> BoxedStrategy<String> {
    let good: Vec<String> = good.iter().map(|v| format!("\"{name}\":{v}")).collect();
    prop_oneof![
        4 => prop::sample::select(good.clone()),
        1 => Just(String::new()),
        1 => Just(format!("\"{name}\":null")),
        1 => Just(format!("\"{name}\":7")),
        1 => Just(format!("\"{name}\":[\"a\",\"b\",\"c\"]")),
        1 => prop::sample::select(good.clone()).prop_map(|g| format!("{g},{g}")),
        1 => prop::sample::select(good)
            .prop_map(move |g| g.replacen(name, &name.replace('e', "\\u0065"), 1)),
    ]
    .boxed()
}

/// A JSON object of the given (possibly absent, i.e. empty) fields.
pub fn object_of(fields: Vec<String>) -> String {
    let fields: Vec<String> = fields.into_iter().filter(|f| !f.is_empty()).collect();
    format!("{{{}}}", fields.join(","))
}
