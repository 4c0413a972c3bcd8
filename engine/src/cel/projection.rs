//! Which parts of a bound variable an expression can observe, found once at compile time.
//!
//! The CEL interpreter copies every map it selects a field from, and converting a whole object
//! to CEL values costs as much as the object is large; a rule reading `self.retry.maxAttempts`
//! needs none of the rest. Only pure field-selection chains from a variable are narrowed:
//! any other use of the variable, or of the end of a chain (`size(object.spec)`,
//! `object.spec.all(...)`, `object == oldObject`), keeps that whole subtree. So the projection
//! can only over-include, never hide a field the expression could reach.

use std::collections::BTreeMap;

use kube_cel::cel::IdedExpr;
use kube_cel::cel::common::ast::{EntryExpr, Expr};

use super::escape::escape_field_name;

#[derive(Debug, Clone, Default, PartialEq)]
pub enum Projection {
    /// The expression never mentions the variable.
    #[default]
    Unused,
    /// Everything below this point may be observed.
    Whole,
    /// Only these fields (CEL names, i.e. escaped where the schema requires it).
    Fields(BTreeMap<String, Field>),
}

/// One observed field.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    /// Whether no other property escapes into this name (letters, digits and single `_`s): the
    /// property of the same name is then the only one that can be it, and is looked up directly
    /// instead of escaping every member of the object to find it.
    pub plain: bool,
    pub below: Projection,
}

impl Field {
    fn new(name: &str) -> Self {
        Self {
            plain: matches!(escape_field_name(name), Some(std::borrow::Cow::Borrowed(_))),
            below: Projection::Unused,
        }
    }
}

impl Projection {
    /// The projection of `variable` in `expression`, merged into `self`.
    pub fn add_uses(&mut self, expression: &IdedExpr, variable: &str) {
        visit(expression, variable, self);
    }

    pub fn is_used(&self) -> bool {
        !matches!(self, Self::Unused)
    }

    /// The projection below field `name`; `None` when the field is not observed.
    pub fn field(&self, name: &str) -> Option<&Projection> {
        match self {
            Self::Whole => Some(&Self::Whole),
            Self::Fields(fields) => fields.get(name).map(|f| &f.below),
            Self::Unused => None,
        }
    }

    fn add_path(&mut self, path: &[&str]) {
        let Some((head, rest)) = path.split_first() else {
            *self = Self::Whole;
            return;
        };
        match self {
            Self::Whole => {}
            Self::Unused => {
                let mut field = Field::new(head);
                field.below.add_path(rest);
                *self = Self::Fields(BTreeMap::from([(head.to_string(), field)]));
            }
            Self::Fields(fields) => fields
                .entry(head.to_string())
                .or_insert_with(|| Field::new(head))
                .below
                .add_path(rest),
        }
    }
}

/// Whether the expression iterates (`all`, `exists`, `map`, `filter`...): its cost can then grow
/// faster than the data it reads.
pub fn iterates(expr: &IdedExpr) -> bool {
    match &expr.expr {
        Expr::Comprehension(_) => true,
        Expr::Select(select) => iterates(&select.operand),
        Expr::Call(call) => {
            call.target.as_deref().is_some_and(iterates) || call.args.iter().any(iterates)
        }
        Expr::List(list) => list.elements.iter().any(iterates),
        Expr::Map(map) => map.entries.iter().any(entry_iterates),
        Expr::Struct(s) => s.entries.iter().any(entry_iterates),
        Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => false,
    }
}

fn entry_iterates(entry: &kube_cel::cel::common::ast::IdedEntryExpr) -> bool {
    match &entry.expr {
        EntryExpr::MapEntry(e) => iterates(&e.key) || iterates(&e.value),
        EntryExpr::StructField(f) => iterates(&f.value),
    }
}

/// `variable.a.b.c` as (`["a", "b", "c"]`), or `None` when `expr` is not such a chain.
fn selection_chain<'e>(expr: &'e IdedExpr, variable: &str) -> Option<Vec<&'e str>> {
    match &expr.expr {
        Expr::Ident(name) if name == variable => Some(Vec::new()),
        Expr::Select(select) => {
            let mut chain = selection_chain(&select.operand, variable)?;
            chain.push(select.field.as_str());
            Some(chain)
        }
        _ => None,
    }
}

fn visit(expr: &IdedExpr, variable: &str, into: &mut Projection) {
    if let Some(chain) = selection_chain(expr, variable) {
        into.add_path(&chain);
        return;
    }
    match &expr.expr {
        Expr::Select(select) => visit(&select.operand, variable, into),
        Expr::Call(call) => {
            if let Some(target) = &call.target {
                visit(target, variable, into);
            }
            for arg in &call.args {
                visit(arg, variable, into);
            }
        }
        Expr::Comprehension(c) => {
            for part in [
                &c.iter_range,
                &c.accu_init,
                &c.loop_cond,
                &c.loop_step,
                &c.result,
            ] {
                visit(part, variable, into);
            }
        }
        Expr::List(list) => {
            for element in &list.elements {
                visit(element, variable, into);
            }
        }
        Expr::Map(map) => visit_entries(&map.entries, variable, into),
        Expr::Struct(s) => visit_entries(&s.entries, variable, into),
        Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => {}
    }
}

fn visit_entries(
    entries: &[kube_cel::cel::common::ast::IdedEntryExpr],
    variable: &str,
    into: &mut Projection,
) {
    for entry in entries {
        match &entry.expr {
            EntryExpr::MapEntry(e) => {
                visit(&e.key, variable, into);
                visit(&e.value, variable, into);
            }
            EntryExpr::StructField(f) => visit(&f.value, variable, into),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube_cel::cel::Program;

    fn projection(text: &str, variable: &str) -> Projection {
        let mut p = Projection::default();
        if let Ok(program) = Program::compile(text) {
            p.add_uses(program.expression(), variable);
        }
        p
    }

    fn fields(entries: &[(&str, Projection)]) -> Projection {
        Projection::Fields(
            entries
                .iter()
                .map(|(k, v)| {
                    let mut field = Field::new(k);
                    field.below = v.clone();
                    (k.to_string(), field)
                })
                .collect(),
        )
    }

    #[test]
    fn selection_chains_narrow_to_their_leaves() {
        assert_eq!(
            projection(
                "self.retry.maxAttempts * self.retry.backoffSeconds <= self.timeoutSeconds",
                "self"
            ),
            fields(&[
                (
                    "retry",
                    fields(&[
                        ("backoffSeconds", Projection::Whole),
                        ("maxAttempts", Projection::Whole)
                    ])
                ),
                ("timeoutSeconds", Projection::Whole),
            ])
        );
        assert_eq!(
            projection("object.metadata.name.size() <= 40", "object"),
            fields(&[("metadata", fields(&[("name", Projection::Whole)]))])
        );
        assert_eq!(
            projection("has(self.spec.x)", "self"),
            fields(&[("spec", fields(&[("x", Projection::Whole)]))])
        );
    }

    #[test]
    fn any_other_use_keeps_the_whole_subtree() {
        assert_eq!(projection("self == oldSelf", "self"), Projection::Whole);
        assert_eq!(
            projection("self.items.all(i, i.size() > 1)", "self"),
            fields(&[("items", Projection::Whole)])
        );
        assert_eq!(
            projection(
                "size(object.metadata.labels) < 5 && object.metadata.labels['a'] == 'b'",
                "object"
            ),
            fields(&[("metadata", fields(&[("labels", Projection::Whole)]))])
        );
        assert_eq!(projection("[self][0].a == 1", "self"), Projection::Whole);
        assert_eq!(
            projection("request.name == 'x'", "self"),
            Projection::Unused
        );
    }

    #[test]
    fn comprehensions_are_recognised_anywhere() {
        let iterating = |text: &str| Program::compile(text).is_ok_and(|p| iterates(p.expression()));
        assert!(iterating("self.items.all(i, i > 0)"));
        assert!(iterating("size(self.items.filter(i, i > 0)) < 3 || false"));
        assert!(!iterating("self.a.size() < 3 && self.b.matches('^x')"));
    }

    #[test]
    fn a_whole_use_absorbs_narrower_ones() {
        assert_eq!(
            projection("self.a.b == 1 && self.a == {'b': 1}", "self"),
            fields(&[("a", Projection::Whole)])
        );
    }
}
