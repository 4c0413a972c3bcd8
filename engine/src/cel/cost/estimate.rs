//! cel-go's static cost estimate (`checker/cost.go`, v0.29, the version the apiserver builds
//! with), with the apiserver's size estimator (`size.rs`) and the call estimators of the
//! libraries a CRD rule can use (`library.rs`). Presence tests cost nothing, as the apiserver
//! configures it.
//!
//! Sizes and costs saturate instead of overflowing, exactly as the Go code computes them: the
//! apiserver compares the max against its limits, so a difference of one unit changes whether a
//! CRD is accepted.

use std::collections::HashMap;
use std::sync::Arc;

use kube_cel::cel::IdedExpr;
use kube_cel::cel::common::ast::{EntryExpr, Expr, LiteralValue};

use super::check::{Checked, Kind};
use super::decl::Decl;
use super::library;
use super::size::{
    CallEstimate, LIST_CREATE_BASE_COST, Node, REGEX_STRING_LENGTH_COST_FACTOR, Range,
    STRING_TRAVERSAL_COST_FACTOR, STRUCT_CREATE_BASE_COST, Sizes,
};

const SELECT_AND_IDENT_COST: u64 = 1;
const MAP_CREATE_BASE_COST: u64 = 30;
/// `parser.AccumulatorName` and `parser.HiddenAccumulatorName`.
const ACCUMULATORS: [&str; 2] = ["@result", "__result__"];

/// The sizes of a container's keys and values, where a literal or a call told them.
#[derive(Debug, Clone, Copy)]
pub struct EntrySize {
    list: bool,
    key: Range,
    value: Range,
}

impl EntrySize {
    fn union(a: Option<EntrySize>, b: Option<EntrySize>) -> Option<EntrySize> {
        let (a, b) = (a?, b?);
        Some(EntrySize {
            list: a.list,
            key: a.key.union(b.key),
            value: a.value.union(b.value),
        })
    }
}

struct Local {
    path: Option<Vec<String>>,
    size: Option<Range>,
    entry: Option<EntrySize>,
}

struct Coster<'c> {
    checked: &'c Checked,
    sizes: &'c Sizes,
    paths: HashMap<u64, Vec<String>>,
    locals: HashMap<String, Vec<Local>>,
    computed: HashMap<u64, Range>,
    entries: HashMap<u64, EntrySize>,
}

/// The estimated (min, max) cost of `expr`, whose types `checked` holds, with `self` (and
/// `oldSelf`) of type `root`.
pub fn cost(expr: &IdedExpr, checked: &Checked, root: Arc<Decl>) -> Range {
    let sizes = Sizes::new(root);
    let mut coster = Coster {
        checked,
        sizes: &sizes,
        paths: HashMap::new(),
        locals: HashMap::new(),
        computed: HashMap::new(),
        entries: HashMap::new(),
    };
    coster.cost(expr)
}

impl<'c> Coster<'c> {
    fn cost(&mut self, e: &IdedExpr) -> Range {
        match &e.expr {
            Expr::Literal(_) => Range::fixed(0),
            Expr::Ident(name) => {
                let path = match self.local(name) {
                    Some(local) => local.path.clone(),
                    None => Some(vec![name.clone()]),
                };
                self.set_path(e, path);
                Range::fixed(SELECT_AND_IDENT_COST)
            }
            Expr::Select(select) => {
                if select.test {
                    // Presence tests cost nothing (`PresenceTestHasCost(false)`).
                    return self.cost(&select.operand);
                }
                let mut sum = self.cost(&select.operand);
                if matches!(
                    self.checked.ty(select.operand.id).kind(),
                    Kind::Map | Kind::Struct
                ) {
                    sum = sum.add(Range::fixed(SELECT_AND_IDENT_COST));
                }
                let mut path = self.path(&select.operand).unwrap_or_default();
                path.push(select.field.clone());
                self.set_path(e, Some(path));
                sum
            }
            Expr::Call(_) => self.cost_call(e),
            Expr::List(list) => {
                let mut sum = Range::fixed(0);
                let mut item = Range {
                    min: if list.elements.is_empty() {
                        0
                    } else {
                        u64::MAX
                    },
                    max: 0,
                };
                for element in &list.elements {
                    sum = sum.add(self.cost(element));
                    item = item.union(self.size_or_unknown(element));
                }
                self.entries.insert(
                    e.id,
                    EntrySize {
                        list: true,
                        key: Range::fixed(1),
                        value: item,
                    },
                );
                sum.add(Range::fixed(LIST_CREATE_BASE_COST))
            }
            Expr::Map(map) => {
                let mut sum = Range::fixed(0);
                let empty = if map.entries.is_empty() { 0 } else { u64::MAX };
                let mut key = Range { min: empty, max: 0 };
                let mut value = Range { min: empty, max: 0 };
                for entry in &map.entries {
                    if let EntryExpr::MapEntry(entry) = &entry.expr {
                        sum = sum.add(self.cost(&entry.key));
                        sum = sum.add(self.cost(&entry.value));
                        key = key.union(self.size_or_unknown(&entry.key));
                        value = value.union(self.size_or_unknown(&entry.value));
                    }
                }
                self.entries.insert(
                    e.id,
                    EntrySize {
                        list: false,
                        key,
                        value,
                    },
                );
                sum.add(Range::fixed(MAP_CREATE_BASE_COST))
            }
            Expr::Struct(structure) => {
                let mut sum = Range::fixed(0);
                for entry in &structure.entries {
                    if let EntryExpr::StructField(field) = &entry.expr {
                        sum = sum.add(self.cost(&field.value));
                    }
                }
                sum.add(Range::fixed(STRUCT_CREATE_BASE_COST))
            }
            Expr::Comprehension(_) => self.cost_comprehension(e),
            Expr::Unspecified => Range::fixed(0),
        }
    }

    fn cost_comprehension(&mut self, e: &IdedExpr) -> Range {
        let Expr::Comprehension(comp) = &e.expr else {
            return Range::fixed(0);
        };
        let mut sum = self.cost(&comp.iter_range);
        sum = sum.add(self.cost(&comp.accu_init));
        let accu = Local {
            path: self.path(&comp.accu_init),
            size: self.compute_size(&comp.accu_init),
            entry: self.entry_size(&comp.accu_init),
        };
        self.push(&comp.accu_var, accu);
        let entry = self.entry_size(&comp.iter_range);
        let range_is_list = match entry {
            Some(entry) => entry.list,
            None => self.checked.ty(comp.iter_range.id).kind() == Kind::List,
        };
        let range_path = self.path(&comp.iter_range).unwrap_or_default();
        let at = |step: &str| {
            let mut path = range_path.clone();
            path.push(step.to_string());
            Some(path)
        };
        match &comp.iter_var2 {
            Some(second) => {
                let (key_step, value_step) = if range_is_list {
                    ("@indices", "@items")
                } else {
                    ("@keys", "@values")
                };
                let key = Local {
                    path: at(key_step),
                    size: entry.map(|e| e.key),
                    entry: None,
                };
                let value = Local {
                    path: at(value_step),
                    size: entry.map(|e| e.value),
                    entry: None,
                };
                self.push(&comp.iter_var, key);
                self.push(second, value);
            }
            None => {
                let (step, size) = if range_is_list {
                    ("@items", entry.map(|e| e.value))
                } else {
                    ("@keys", entry.map(|e| e.key))
                };
                let single = Local {
                    path: at(step),
                    size,
                    entry: None,
                };
                self.push(&comp.iter_var, single);
            }
        }
        let loop_cost = self.cost(&comp.loop_cond);
        let step_cost = self.cost(&comp.loop_step);
        self.pop(&comp.iter_var);
        if let Some(second) = &comp.iter_var2 {
            self.pop(second);
        }
        sum = sum.add(self.cost(&comp.result));
        self.pop(&comp.accu_var);
        let count = self.size_or_unknown(&comp.iter_range);
        sum = sum.add(count.multiply(step_cost.add(loop_cost)));
        match &comp.accu_init.expr {
            Expr::Literal(_) => {
                if let Some(size) = self.compute_size(&comp.accu_init) {
                    self.computed.insert(e.id, size);
                }
            }
            Expr::List(_) | Expr::Map(_) => {
                self.computed.insert(e.id, count);
                if let Some(step_entry) = self.entry_size(&comp.loop_step) {
                    self.entries.insert(e.id, step_entry);
                }
            }
            _ => {}
        }
        sum
    }

    fn cost_call(&mut self, e: &IdedExpr) -> Range {
        let Expr::Call(call) = &e.expr else {
            return Range::fixed(0);
        };
        if call.func_name == "dyn" && call.target.is_none() && call.args.len() == 1 {
            let arg = &call.args[0];
            let cost = self.cost(arg);
            if let Some(size) = self.compute_size(arg) {
                self.computed.insert(e.id, size);
            }
            if let Some(entry) = self.entry_size(arg) {
                self.entries.insert(e.id, entry);
            }
            return Range::fixed(1).add(cost);
        }
        let mut arg_costs = Vec::with_capacity(call.args.len());
        let mut args = Vec::with_capacity(call.args.len());
        for arg in &call.args {
            arg_costs.push(self.cost(arg));
            args.push(self.node(arg));
        }
        let overloads = self.checked.overloads(e.id).to_vec();
        if overloads.is_empty() {
            return Range::fixed(0);
        }
        let qualified = self.checked.qualified(e.id).map(str::to_string);
        let function = qualified.as_deref().unwrap_or(&call.func_name);
        let mut sum = Range::fixed(0);
        let target = match call.target.as_deref().filter(|_| qualified.is_none()) {
            Some(target) => {
                sum = sum.add(self.cost(target));
                Some(self.node(target))
            }
            None => None,
        };
        let mut function_cost = Range {
            min: u64::MAX,
            max: 0,
        };
        let mut result_size: Option<Range> = None;
        for overload in &overloads {
            let estimate =
                self.function_cost(e, function, overload, target.as_ref(), &args, &arg_costs);
            function_cost = function_cost.union(estimate.cost);
            if let Some(size) = estimate.result_size {
                result_size = Some(match result_size {
                    None => size,
                    Some(prev) => prev.union(size),
                });
            }
            match *overload {
                "index_list" | "index_map" if !call.args.is_empty() => {
                    let container = &call.args[0];
                    result_size = self.entry_size(container).map(|e| e.value);
                    let step = if *overload == "index_list" {
                        "@items"
                    } else {
                        "@values"
                    };
                    let mut path = self.path(container).unwrap_or_default();
                    path.push(step.to_string());
                    self.set_path(e, Some(path));
                }
                _ => {}
            }
            if result_size.is_none() {
                result_size = self.compute_size(e);
            }
        }
        if let Some(size) = result_size {
            self.computed.insert(e.id, size);
        }
        sum.add(function_cost)
    }

    fn function_cost(
        &mut self,
        e: &IdedExpr,
        function: &str,
        overload: &str,
        target: Option<&Node<'_>>,
        args: &[Node<'_>],
        arg_costs: &[Range],
    ) -> CallEstimate {
        let arg_sum = arg_costs
            .iter()
            .fold(Range::fixed(0), |sum, cost| sum.add(*cost));
        let with_args = |estimate: CallEstimate| CallEstimate {
            cost: estimate.cost.add(arg_sum),
            result_size: estimate.result_size,
        };
        if let Some(estimate) = library::extension(self.sizes, overload, target, args) {
            return with_args(estimate);
        }
        if let Some(estimate) = library::kubernetes(self.sizes, function, overload, target, args) {
            return with_args(estimate);
        }
        let plain = |cost: Range| CallEstimate {
            cost: cost.add(arg_sum),
            result_size: None,
        };
        let size = |node: &Node<'_>| node.computed.unwrap_or(Range::UNKNOWN);
        match overload {
            "string_format" if target.is_some() => {
                let target = target.map(size).unwrap_or(Range::UNKNOWN);
                return plain(target.times(STRING_TRAVERSAL_COST_FACTOR));
            }
            "string_to_bytes" if args.len() == 1 => {
                let sz = size(&args[0]);
                return CallEstimate {
                    cost: sz.times(STRING_TRAVERSAL_COST_FACTOR).add(arg_sum),
                    result_size: Some(Range {
                        min: sz.min,
                        max: sz.max.wrapping_mul(4),
                    }),
                };
            }
            "bytes_to_string" if args.len() == 1 => {
                let sz = size(&args[0]);
                return CallEstimate {
                    cost: sz.times(STRING_TRAVERSAL_COST_FACTOR).add(arg_sum),
                    result_size: Some(Range {
                        min: sz.min / 4,
                        max: sz.max,
                    }),
                };
            }
            "strings_quote" if args.len() == 1 => {
                let sz = size(&args[0]);
                return CallEstimate {
                    cost: sz.times(STRING_TRAVERSAL_COST_FACTOR).add(arg_sum),
                    result_size: Some(Range {
                        min: sz.min.wrapping_add(2),
                        max: sz.max.wrapping_mul(2).wrapping_add(2),
                    }),
                };
            }
            "starts_with_string" | "ends_with_string" if args.len() == 1 => {
                return plain(size(&args[0]).times(STRING_TRAVERSAL_COST_FACTOR));
            }
            "in_list" if args.len() == 2 => {
                return plain(size(&args[1]).times(1.0));
            }
            "matches" | "matches_string" => {
                let pair = match (overload, target, args) {
                    ("matches_string", Some(target), [regex]) => Some((target, regex)),
                    ("matches", None, [string, regex]) => Some((string, regex)),
                    _ => None,
                };
                if let Some((string, regex)) = pair {
                    let string_cost = size(string)
                        .add(Range::fixed(1))
                        .times(STRING_TRAVERSAL_COST_FACTOR);
                    let regex_cost = size(regex).times(REGEX_STRING_LENGTH_COST_FACTOR);
                    return plain(string_cost.multiply(regex_cost));
                }
            }
            "contains_string" if target.is_some() && args.len() == 1 => {
                let string_cost = target
                    .map(size)
                    .unwrap_or(Range::UNKNOWN)
                    .times(STRING_TRAVERSAL_COST_FACTOR);
                let sub_cost = size(&args[0]).times(STRING_TRAVERSAL_COST_FACTOR);
                return plain(string_cost.multiply(sub_cost));
            }
            "logical_or" | "logical_and" if arg_costs.len() == 2 => {
                let (lhs, rhs) = (arg_costs[0], arg_costs[1]);
                return CallEstimate {
                    cost: Range {
                        min: lhs.min,
                        max: lhs.add(rhs).max,
                    },
                    result_size: None,
                };
            }
            "conditional" if args.len() == 3 => {
                let size = size(&args[1]).union(size(&args[2]));
                self.join_entries(e, &args[1], &args[2]);
                return CallEstimate {
                    cost: arg_costs[0].add(arg_costs[1].union(arg_costs[2])),
                    result_size: Some(size),
                };
            }
            "add_string" | "add_bytes" | "add_list" if args.len() == 2 => {
                let result = size(&args[0]).add(size(&args[1]));
                self.join_entries(e, &args[0], &args[1]);
                let cost = if overload == "add_list" {
                    Range::fixed(1)
                } else {
                    result.times(STRING_TRAVERSAL_COST_FACTOR)
                };
                return CallEstimate {
                    cost: cost.add(arg_sum),
                    result_size: Some(result),
                };
            }
            "less_string"
            | "greater_string"
            | "less_equals_string"
            | "greater_equals_string"
            | "less_bytes"
            | "greater_bytes"
            | "less_equals_bytes"
            | "greater_equals_bytes"
            | "equals"
            | "not_equals"
                if args.len() == 2 =>
            {
                let smallest_max = size(&args[0]).max.min(size(&args[1]).max);
                let min = u64::from(smallest_max > 0);
                return plain(
                    Range {
                        min,
                        max: smallest_max,
                    }
                    .times(STRING_TRAVERSAL_COST_FACTOR),
                );
            }
            _ => {}
        }
        plain(Range::fixed(1))
    }

    /// `e` holds what either of `a` and `b` holds, when both say.
    fn join_entries(&mut self, e: &IdedExpr, a: &Node<'_>, b: &Node<'_>) {
        let entry = EntrySize::union(
            a.expr.and_then(|a| self.entry_size(a)),
            b.expr.and_then(|b| self.entry_size(b)),
        );
        if let Some(entry) = entry {
            self.entries.insert(e.id, entry);
        }
    }

    fn node<'e>(&mut self, e: &'e IdedExpr) -> Node<'e> {
        let path = self.path(e).filter(|p| {
            !p.first()
                .is_some_and(|h| ACCUMULATORS.contains(&h.as_str()))
        });
        Node {
            path,
            ty: self.checked.ty(e.id),
            expr: Some(e),
            computed: self.compute_size(e),
        }
    }

    fn size_or_unknown(&mut self, e: &IdedExpr) -> Range {
        self.compute_size(e).unwrap_or(Range::UNKNOWN)
    }

    fn compute_size(&mut self, e: &IdedExpr) -> Option<Range> {
        if let Some(size) = self.computed.get(&e.id) {
            return Some(*size);
        }
        if let Some(size) = expr_size(e) {
            return Some(size);
        }
        let node = Node {
            path: self.path(e),
            ty: self.checked.ty(e.id),
            expr: Some(e),
            computed: None,
        };
        if let Some(size) = self.sizes.estimate(&node) {
            self.computed.insert(e.id, size);
            return Some(size);
        }
        if node.ty.is_scalar() {
            return Some(Range::fixed(1));
        }
        if let Expr::Ident(name) = &e.expr {
            return self.local(name).and_then(|l| l.size);
        }
        None
    }

    fn entry_size(&self, e: &IdedExpr) -> Option<EntrySize> {
        if let Some(entry) = self.entries.get(&e.id) {
            return Some(*entry);
        }
        match &e.expr {
            Expr::Ident(name) => self.local(name).and_then(|l| l.entry),
            _ => None,
        }
    }

    fn path(&self, e: &IdedExpr) -> Option<Vec<String>> {
        if let Expr::Ident(name) = &e.expr
            && let Some(local) = self.local(name)
        {
            return local.path.clone();
        }
        self.paths.get(&e.id).cloned()
    }

    fn set_path(&mut self, e: &IdedExpr, path: Option<Vec<String>>) {
        match path {
            Some(path) => {
                self.paths.insert(e.id, path);
            }
            None => {
                self.paths.remove(&e.id);
            }
        }
    }

    fn local(&self, name: &str) -> Option<&Local> {
        self.locals.get(name).and_then(|stack| stack.last())
    }

    fn push(&mut self, name: &str, local: Local) {
        self.locals.entry(name.to_string()).or_default().push(local);
    }

    fn pop(&mut self, name: &str) {
        if let Some(stack) = self.locals.get_mut(name) {
            stack.pop();
        }
    }
}

/// `computeExprSize`: the size of a literal, list or map literal.
fn expr_size(e: &IdedExpr) -> Option<Range> {
    let size = match &e.expr {
        Expr::Literal(literal) => match literal {
            LiteralValue::String(s) => s.inner().chars().count() as u64,
            LiteralValue::Bytes(b) => b.len() as u64,
            _ => 1,
        },
        Expr::List(list) => list.elements.len() as u64,
        Expr::Map(map) => map.entries.len() as u64,
        _ => return None,
    };
    Some(Range::fixed(size))
}
