//! Kubernetes label selectors: the `objectSelector` of a policy as written, and its semantics
//! (matchLabels AND every matchExpression).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelectorSpec {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelectorRequirement {
    pub key: String,
    pub operator: SelectorOperator,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
pub enum SelectorOperator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

#[derive(Debug, Clone, Default)]
pub struct LabelSelector(LabelSelectorSpec);

impl LabelSelector {
    /// Checks the operator/values combinations Kubernetes itself rejects.
    pub fn new(spec: LabelSelectorSpec) -> Result<Self, String> {
        for (idx, req) in spec.match_expressions.iter().enumerate() {
            let needs_values =
                matches!(req.operator, SelectorOperator::In | SelectorOperator::NotIn);
            if needs_values && req.values.is_empty() {
                return Err(format!(
                    "matchExpressions[{idx}]: operator {:?} needs at least one value",
                    req.operator
                ));
            }
            if !needs_values && !req.values.is_empty() {
                return Err(format!(
                    "matchExpressions[{idx}]: operator {:?} takes no values",
                    req.operator
                ));
            }
        }
        Ok(Self(spec))
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let spec = &self.0;
        spec.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && spec.match_expressions.iter().all(|req| {
                let value = labels.get(&req.key);
                match req.operator {
                    SelectorOperator::In => value.is_some_and(|v| req.values.contains(v)),
                    SelectorOperator::NotIn => value.is_none_or(|v| !req.values.contains(v)),
                    SelectorOperator::Exists => value.is_some(),
                    SelectorOperator::DoesNotExist => value.is_none(),
                }
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn req(key: &str, operator: SelectorOperator, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator,
            values: values.iter().map(|v| v.to_string()).collect(),
        }
    }

    #[test]
    fn combines_labels_and_expressions() -> Result<(), String> {
        let selector = LabelSelector::new(LabelSelectorSpec {
            match_labels: labels(&[("team", "pay")]),
            match_expressions: vec![
                req("env", SelectorOperator::In, &["prod", "staging"]),
                req("legacy", SelectorOperator::DoesNotExist, &[]),
                req("tier", SelectorOperator::NotIn, &["test"]),
            ],
        })?;
        assert!(selector.matches(&labels(&[("team", "pay"), ("env", "prod")])));
        assert!(!selector.matches(&labels(&[("team", "pay"), ("env", "dev")])));
        assert!(!selector.matches(&labels(&[("team", "pay"), ("env", "prod"), ("legacy", "")])));
        assert!(!selector.matches(&labels(&[
            ("team", "pay"),
            ("env", "prod"),
            ("tier", "test")
        ])));
        assert!(!selector.matches(&labels(&[("env", "prod")])));
        Ok(())
    }

    #[test]
    fn rejects_inconsistent_requirements() {
        let spec = |r| LabelSelectorSpec {
            match_labels: BTreeMap::new(),
            match_expressions: vec![r],
        };
        assert!(LabelSelector::new(spec(req("a", SelectorOperator::In, &[]))).is_err());
        assert!(LabelSelector::new(spec(req("a", SelectorOperator::Exists, &["x"]))).is_err());
    }
}
