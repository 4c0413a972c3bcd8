//! What the estimator and the call estimators share: sizes and costs as saturating (min, max)
//! ranges (cel-go's `SizeEstimate` / `CostEstimate`), the node a call estimator sees
//! (`checker.AstNode`), a call's estimate, and the apiserver's size estimator over the schema's
//! declared types.

use std::sync::Arc;

use kube_cel::cel::IdedExpr;
use kube_cel::cel::common::ast::{Expr, LiteralValue};

use super::check::Ty;
use super::decl::Decl;

pub const STRING_TRAVERSAL_COST_FACTOR: f64 = 0.1;
pub const REGEX_STRING_LENGTH_COST_FACTOR: f64 = 0.25;
pub const LIST_CREATE_BASE_COST: u64 = 10;
pub const STRUCT_CREATE_BASE_COST: u64 = 40;

/// A range of sizes or costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub min: u64,
    pub max: u64,
}

impl Range {
    pub const UNKNOWN: Range = Range {
        min: 0,
        max: u64::MAX,
    };

    pub const fn fixed(value: u64) -> Self {
        Self {
            min: value,
            max: value,
        }
    }

    pub fn add(self, other: Range) -> Range {
        Range {
            min: self.min.saturating_add(other.min),
            max: self.max.saturating_add(other.max),
        }
    }

    pub fn multiply(self, other: Range) -> Range {
        Range {
            min: self.min.saturating_mul(other.min),
            max: self.max.saturating_mul(other.max),
        }
    }

    /// `MultiplyByCostFactor`: rounded up, saturating at 2^64.
    pub fn times(self, factor: f64) -> Range {
        Range {
            min: times(self.min, factor),
            max: times(self.max, factor),
        }
    }

    pub fn union(self, other: Range) -> Range {
        Range {
            min: self.min.min(other.min),
            max: self.max.max(other.max),
        }
    }
}

fn times(x: u64, factor: f64) -> u64 {
    let x = x as f64;
    if x > 0.0 && factor > 0.0 && x > u64::MAX as f64 / factor {
        return u64::MAX;
    }
    let product = (x * factor).ceil();
    if product >= 18_446_744_073_709_551_616.0 {
        u64::MAX
    } else {
        product as u64
    }
}

/// What a call costs, and how large its result is when the estimator knows.
pub struct CallEstimate {
    pub cost: Range,
    pub result_size: Option<Range>,
}

/// A node as a call estimator sees it (`checker.AstNode`).
#[derive(Clone)]
pub struct Node<'e> {
    pub path: Option<Vec<String>>,
    pub ty: Ty,
    pub expr: Option<&'e IdedExpr>,
    pub computed: Option<Range>,
}

impl Node<'_> {
    /// The integer literal this node is, if it is one (`nodeAsUintValue`).
    pub fn as_uint(&self, default: u64) -> u64 {
        match self.expr.map(|e| &e.expr) {
            Some(Expr::Literal(LiteralValue::Int(i))) => (*i.inner()).max(0) as u64,
            _ => default,
        }
    }
}

/// The apiserver's size estimator: a node's path from `self`, walked through the schema's types.
pub struct Sizes {
    root: Arc<Decl>,
}

impl Sizes {
    pub fn new(root: Arc<Decl>) -> Self {
        Self { root }
    }

    pub fn estimate(&self, node: &Node<'_>) -> Option<Range> {
        let path = node.path.as_ref()?;
        if path.is_empty() {
            return None;
        }
        let mut current = self.root.clone();
        for step in &path[1..] {
            current = current.child(step)?;
        }
        Some(Range {
            min: 0,
            max: current.max_elements.max(0) as u64,
        })
    }

    /// `sizeEstimate`: the computed size, else the schema's, else unknown.
    pub fn of(&self, node: &Node<'_>) -> Range {
        node.computed
            .or_else(|| self.estimate(node))
            .unwrap_or(Range::UNKNOWN)
    }
}
