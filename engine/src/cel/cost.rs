//! The apiserver's static cost budget for CRD validation rules, computed as it computes it: each
//! rule's estimated worst-case cost (cel-go's estimator over the schema's declared types),
//! multiplied by how many times the rule can run in one object, must stay within
//! `StaticEstimatedCostLimit`; each messageExpression too; and all of them together within
//! `StaticEstimatedCRDCostLimit` (apiextensions-apiserver `validation.go`). A policy over any of
//! them is refused at load with the apiserver's message, so `tollgate check` refuses what
//! `kubectl apply` of the same schema as a CRD would.

mod check;
mod decl;
mod estimate;
mod library;
mod size;

use std::sync::Arc;

use kube_cel::cel::IdedExpr;
use serde_json::Value;

pub use decl::Decl;

use check::Ty;
use decl::MAX_REQUEST_SIZE_BYTES;

/// `StaticEstimatedCostLimit`: one rule or messageExpression.
pub const EXPRESSION_LIMIT: u64 = 10_000_000;
/// `StaticEstimatedCRDCostLimit`: every rule and messageExpression of a schema together.
pub const SCHEMA_LIMIT: u64 = 100_000_000;

/// Where a schema node sits for the cost budget: how many values it can hold in one object
/// (`None`: unbounded), and whether it is a resource's root (whose `metadata` CEL sees trimmed).
#[derive(Clone)]
pub struct Scope {
    cardinality: Option<u64>,
    resource_root: bool,
}

impl Scope {
    /// The root of a resource's schema: one value.
    pub fn root() -> Self {
        Self {
            cardinality: Some(1),
            resource_root: true,
        }
    }

    /// The scope of a child schema (`properties`, `items`, `additionalProperties`) of the node
    /// `parent` describes.
    pub fn child(&self, parent: &Value, child: &Value) -> Self {
        Self {
            cardinality: self
                .cardinality
                .zip(decl::max_children(parent))
                .map(|(mine, each)| mine.saturating_mul(each)),
            resource_root: child.get("x-kubernetes-embedded-resource") == Some(&Value::Bool(true)),
        }
    }

    /// The types the rules of the node `schema` describes see; built only for nodes with rules.
    /// `None` where the node has no CEL type to estimate with.
    pub fn types(&self, schema: &Value) -> Option<Typed> {
        Some(Typed {
            decl: Decl::of(schema, self.resource_root)?,
            cardinality: self.cardinality,
        })
    }
}

/// A node with rules, typed: what its expressions are estimated with.
pub struct Typed {
    decl: Arc<Decl>,
    cardinality: Option<u64>,
}

impl Typed {
    /// A value of `schema` on its own (not a resource's root), counted once.
    pub fn of(schema: &Value) -> Option<Self> {
        Scope {
            cardinality: Some(1),
            resource_root: false,
        }
        .types(schema)
    }

    /// The estimated worst-case cost of one expression at this node.
    pub fn expression_cost(&self, expr: &IdedExpr, optional_old_self: bool) -> u64 {
        let self_ty = Ty::from_decl(&self.decl);
        let old_self_ty = if optional_old_self {
            Ty::Optional(Box::new(self_ty.clone()))
        } else {
            self_ty.clone()
        };
        let checked = check::check(expr, &[("self", self_ty), ("oldSelf", old_self_ty)]);
        estimate::cost(expr, &checked, self.decl.clone()).max
    }

    /// The estimated worst-case cost of an admission-policy expression: `object` and
    /// `oldObject` are values of this node's type; `request`, `variables` and the rest `dyn`.
    pub fn admission_cost(&self, expr: &IdedExpr) -> u64 {
        let ty = Ty::from_decl(&self.decl);
        let checked = check::check(expr, &[("object", ty.clone()), ("oldObject", ty)]);
        estimate::cost(expr, &checked, self.decl.clone()).max
    }

    /// `getExpressionCost`: a rule's cost times the times it can run.
    pub fn rule_cost(&self, cost: u64) -> u64 {
        let cardinality = self.cardinality.unwrap_or_else(|| {
            (MAX_REQUEST_SIZE_BYTES / (self.decl.min_serialized_size + 1)) as u64
        });
        if cost == 0 {
            0
        } else {
            cost.saturating_mul(cardinality)
        }
    }
}

/// The running total over a schema, with the rules that weigh most in it.
#[derive(Debug, Default)]
pub struct SchemaBudget {
    total: u64,
    most_expensive: Vec<(String, u64)>,
}

impl SchemaBudget {
    /// Counts one expression's cost, found at `pointer`, refusing it (in `errors`) when it is
    /// over the per-expression limit. `what` names it as the apiserver does
    /// (`estimated rule cost`).
    pub fn charge(
        &mut self,
        pointer: String,
        what: &str,
        cost: u64,
        errors: &mut Vec<(String, String)>,
    ) {
        if cost > EXPRESSION_LIMIT {
            errors.push((pointer.clone(), over_budget(what, cost, EXPRESSION_LIMIT)));
        }
        self.observe(pointer, cost);
    }

    fn observe(&mut self, pointer: String, cost: u64) {
        self.total = self.total.saturating_add(cost);
        if cost < SCHEMA_LIMIT / 100 {
            return;
        }
        self.most_expensive.push((pointer, cost));
        self.most_expensive
            .sort_by_key(|(_, cost)| std::cmp::Reverse(*cost));
        self.most_expensive.truncate(4);
    }

    /// The errors when the total is over the schema's limit, as (JSON pointer, message): one on
    /// each rule that weighs most, and one for the schema.
    pub fn errors(&self) -> Vec<(String, String)> {
        if self.total <= SCHEMA_LIMIT {
            return Vec::new();
        }
        let mut errors: Vec<(String, String)> = self
            .most_expensive
            .iter()
            .map(|(pointer, _)| {
                (
                    pointer.clone(),
                    "contributed to estimated rule cost total exceeding cost limit for entire OpenAPIv3 schema".to_string(),
                )
            })
            .collect();
        errors.push((
            String::new(),
            over_budget(
                "x-kubernetes-validations estimated rule cost total for entire OpenAPIv3 schema",
                self.total,
                SCHEMA_LIMIT,
            ),
        ));
        errors
    }
}

/// `getCostErrorMessage`, word for word.
pub fn over_budget(what: &str, cost: u64, limit: u64) -> String {
    let factor = cost as f64 / limit as f64;
    let factor = if factor > 100.0 {
        "more than 100x".to_string()
    } else if factor < 1.5 {
        format!("{factor:.6}x")
    } else {
        format!("{factor:.1}x")
    };
    format!(
        "{what} exceeds budget by factor of {factor} (try simplifying the rule, or adding maxItems, maxProperties, and maxLength where arrays, maps, and strings are declared)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube_cel::cel::Program;
    use serde_json::json;

    fn cost_of(rule: &str, schema: &Value) -> u64 {
        let program = Program::compile(rule).unwrap();
        Typed::of(schema)
            .unwrap()
            .expression_cost(program.expression(), false)
    }

    fn object(properties: Value) -> Value {
        json!({"type": "object", "properties": properties})
    }

    #[test]
    fn simple_rules_cost_what_the_apiserver_estimates() {
        let schema = object(json!({
            "name": {"type": "string", "maxLength": 10},
            "port": {"type": "integer"},
            "tags": {"type": "array", "maxItems": 5, "items": {"type": "string", "maxLength": 8}},
        }));
        // self (1) + .port (1) + comparison (1).
        assert_eq!(cost_of("self.port > 0", &schema), 3);
        // The equality compares at most the shorter side, 3 characters: ceil(0.3) = 1.
        assert_eq!(cost_of("self.name == 'abc'", &schema), 3);
        // The range (2), then 5 items × (step: @result 1 + x 1 + comparison 1; loop condition 2),
        // then the result (1).
        assert_eq!(
            cost_of("self.tags.all(x, x == 'abc')", &schema),
            2 + 5 * 5 + 1
        );
    }

    #[test]
    fn a_string_built_from_a_number_has_no_bound() {
        let schema = object(json!({"port": {"type": "integer"}}));
        let cost = cost_of("'port ' + string(self.port)", &schema);
        assert!(cost > EXPRESSION_LIMIT * 100, "{cost}");
    }

    #[test]
    fn the_message_names_the_factor_as_the_apiserver_prints_it() {
        assert!(
            over_budget("estimated rule cost", 10_000_001, EXPRESSION_LIMIT)
                .contains("factor of 1.000000x")
        );
        assert!(
            over_budget("estimated rule cost", 25_000_000, EXPRESSION_LIMIT)
                .contains("factor of 2.5x")
        );
        assert!(
            over_budget("estimated rule cost", u64::MAX, EXPRESSION_LIMIT)
                .contains("factor of more than 100x")
        );
    }
}
