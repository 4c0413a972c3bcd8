//! The types of an expression's nodes and the overloads each call can resolve to, as far as the
//! cost estimate needs them: cel-go's estimator prices a call by its overload (`add_string`
//! against `add_int64`) and a selection by what it selects from. The variables' types come from
//! the schema (`decl`); function signatures are those of the CRD validation environment
//! (CEL's standard library, the strings, sets and lists extensions and the Kubernetes
//! libraries). A call that matches no signature is typed `dyn` and priced as a plain call;
//! rejecting it is the compiler's job, not the estimate's.

use std::collections::HashMap;
use std::sync::Arc;

use kube_cel::cel::IdedExpr;
use kube_cel::cel::common::ast::{EntryExpr, Expr, LiteralValue};

use super::decl::{Decl, DeclKind};

#[derive(Debug, Clone)]
pub enum Ty {
    Bool,
    Int,
    Uint,
    Double,
    String,
    Bytes,
    Null,
    Duration,
    Timestamp,
    Dyn,
    Type,
    List(Box<Ty>),
    Map(Box<Ty>, Box<Ty>),
    /// An object declared by the schema: a struct to CEL.
    Object(Arc<Decl>),
    Optional(Box<Ty>),
    /// The Kubernetes library's struct types (`kubernetes.Quantity`, `kubernetes.URL`...).
    Named(&'static str),
    /// The Kubernetes library's opaque types (`net.IP`, `net.CIDR`).
    Opaque(&'static str),
    /// A type parameter nothing has bound yet (the element of `[]`).
    Free,
}

impl PartialEq for Ty {
    fn eq(&self, other: &Self) -> bool {
        use Ty::*;
        match (self, other) {
            (List(a), List(b)) | (Optional(a), Optional(b)) => a == b,
            (Map(ak, av), Map(bk, bv)) => ak == bk && av == bv,
            (Object(a), Object(b)) => Arc::ptr_eq(a, b),
            (Named(a), Named(b)) | (Opaque(a), Opaque(b)) => a == b,
            _ => std::mem::discriminant(self) == std::mem::discriminant(other),
        }
    }
}

/// `types.Kind`, where the estimate branches on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    List,
    Map,
    Struct,
    Other,
}

impl Ty {
    pub fn from_decl(decl: &Arc<Decl>) -> Ty {
        match &decl.kind {
            DeclKind::Bool => Ty::Bool,
            DeclKind::Int => Ty::Int,
            DeclKind::Double => Ty::Double,
            DeclKind::String => Ty::String,
            DeclKind::Bytes => Ty::Bytes,
            DeclKind::Duration => Ty::Duration,
            DeclKind::Timestamp => Ty::Timestamp,
            DeclKind::Dyn => Ty::Dyn,
            DeclKind::List(item) => Ty::List(Box::new(Ty::from_decl(item))),
            DeclKind::Map(value) => Ty::Map(Box::new(Ty::String), Box::new(Ty::from_decl(value))),
            DeclKind::Object(_) => Ty::Object(decl.clone()),
        }
    }

    pub fn kind(&self) -> Kind {
        match self {
            Ty::List(_) => Kind::List,
            Ty::Map(..) => Kind::Map,
            Ty::Object(_) | Ty::Named(_) => Kind::Struct,
            _ => Kind::Other,
        }
    }

    /// `isScalar`: values whose size is always 1.
    pub fn is_scalar(&self) -> bool {
        match self {
            Ty::Bool | Ty::Double | Ty::Duration | Ty::Int | Ty::Timestamp | Ty::Uint => true,
            Ty::Optional(inner) => inner.is_scalar(),
            _ => false,
        }
    }

    /// The first type parameter (`list(E)` → E, `map(K, V)` → K), as `Type().Parameters()[0]`.
    pub fn first_parameter(&self) -> Option<&Ty> {
        match self {
            Ty::List(item) | Ty::Optional(item) => Some(item),
            Ty::Map(key, _) => Some(key),
            _ => None,
        }
    }

    fn is_dyn(&self) -> bool {
        matches!(self, Ty::Dyn | Ty::Free)
    }

    fn settled(self) -> Ty {
        match self {
            Ty::Free => Ty::Dyn,
            Ty::List(item) => Ty::List(Box::new(item.settled())),
            Ty::Map(key, value) => Ty::Map(Box::new(key.settled()), Box::new(value.settled())),
            Ty::Optional(inner) => Ty::Optional(Box::new(inner.settled())),
            other => other,
        }
    }
}

/// What checking found: each node's type and each call's candidate overloads, by node id.
#[derive(Debug, Default)]
pub struct Checked {
    types: HashMap<u64, Ty>,
    overloads: HashMap<u64, Vec<&'static str>>,
    /// Calls written as `sets.contains(...)`: global functions of a namespace, not member calls
    /// on a variable `sets`.
    qualified: HashMap<u64, String>,
}

impl Checked {
    pub fn ty(&self, id: u64) -> Ty {
        self.types.get(&id).cloned().unwrap_or(Ty::Dyn)
    }

    /// The namespaced name of a call the parser read as a member call (`sets.contains`).
    pub fn qualified(&self, id: u64) -> Option<&str> {
        self.qualified.get(&id).map(String::as_str)
    }

    pub fn overloads(&self, id: u64) -> &[&'static str] {
        self.overloads
            .get(&id)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }
}

/// Types `expr` with `variables` in scope (`self`, `oldSelf`).
pub fn check(expr: &IdedExpr, variables: &[(&str, Ty)]) -> Checked {
    let mut checker = Checker {
        scopes: variables
            .iter()
            .map(|(name, ty)| (name.to_string(), ty.clone()))
            .collect(),
        out: Checked::default(),
    };
    checker.check(expr);
    checker.out
}

struct Checker {
    scopes: Vec<(String, Ty)>,
    out: Checked,
}

impl Checker {
    fn lookup(&self, name: &str) -> Ty {
        self.scopes
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map_or(Ty::Dyn, |(_, ty)| ty.clone())
    }

    fn check(&mut self, expr: &IdedExpr) -> Ty {
        let ty = match &expr.expr {
            Expr::Literal(literal) => match literal {
                LiteralValue::Boolean(_) => Ty::Bool,
                LiteralValue::Bytes(_) => Ty::Bytes,
                LiteralValue::Double(_) => Ty::Double,
                LiteralValue::Int(_) => Ty::Int,
                LiteralValue::Null => Ty::Null,
                LiteralValue::String(_) => Ty::String,
                LiteralValue::UInt(_) => Ty::Uint,
            },
            Expr::Ident(name) => match name.as_str() {
                "int" | "uint" | "double" | "string" | "bytes" | "bool" | "list" | "map"
                | "null_type" | "type" => {
                    if self.scopes.iter().any(|(n, _)| n == name) {
                        self.lookup(name)
                    } else {
                        Ty::Type
                    }
                }
                _ => self.lookup(name),
            },
            Expr::Select(select) => {
                let operand = self.check(&select.operand);
                if select.test {
                    Ty::Bool
                } else {
                    select_field(&operand, &select.field)
                }
            }
            Expr::List(list) => {
                let mut item: Option<Ty> = None;
                for element in &list.elements {
                    let ty = self.check(element);
                    item = Some(match item {
                        None => ty,
                        Some(prev) if prev == ty => prev,
                        Some(_) => Ty::Dyn,
                    });
                }
                Ty::List(Box::new(item.unwrap_or(Ty::Free)))
            }
            Expr::Map(map) => {
                let mut key: Option<Ty> = None;
                let mut value: Option<Ty> = None;
                for entry in &map.entries {
                    if let EntryExpr::MapEntry(entry) = &entry.expr {
                        let k = self.check(&entry.key);
                        let v = self.check(&entry.value);
                        key = Some(join(key, k));
                        value = Some(join(value, v));
                    }
                }
                Ty::Map(
                    Box::new(key.unwrap_or(Ty::Free)),
                    Box::new(value.unwrap_or(Ty::Free)),
                )
            }
            Expr::Struct(structure) => {
                for entry in &structure.entries {
                    if let EntryExpr::StructField(field) = &entry.expr {
                        self.check(&field.value);
                    }
                }
                Ty::Dyn
            }
            Expr::Comprehension(comprehension) => {
                let range = self.check(&comprehension.iter_range);
                let (first, second) = match &range {
                    Ty::List(item) => (Ty::Int, (**item).clone()),
                    Ty::Map(key, value) => ((**key).clone(), (**value).clone()),
                    _ => (Ty::Dyn, Ty::Dyn),
                };
                let init = self.check(&comprehension.accu_init);
                let scope = self.scopes.len();
                self.scopes
                    .push((comprehension.accu_var.clone(), init.clone()));
                match &comprehension.iter_var2 {
                    Some(second_var) => {
                        self.scopes.push((comprehension.iter_var.clone(), first));
                        self.scopes.push((second_var.clone(), second));
                    }
                    None => {
                        let single = if matches!(range, Ty::List(_)) {
                            second
                        } else {
                            first
                        };
                        self.scopes.push((comprehension.iter_var.clone(), single));
                    }
                }
                self.check(&comprehension.loop_cond);
                let step = self.check(&comprehension.loop_step);
                // The accumulator of `map` and `filter` starts as `[]`: the step says what
                // it holds.
                if matches!(&init, Ty::List(item) if matches!(**item, Ty::Free)) {
                    self.scopes[scope].1 = step;
                }
                self.scopes.truncate(scope + 1);
                let result = self.check(&comprehension.result);
                self.scopes.truncate(scope);
                result
            }
            Expr::Call(call) => {
                let qualified = self.namespaced(call);
                let target = match qualified {
                    Some(_) => None,
                    None => call.target.as_deref().map(|t| self.check(t)),
                };
                let args: Vec<Ty> = call.args.iter().map(|a| self.check(a)).collect();
                let name = qualified.as_deref().unwrap_or(&call.func_name);
                let (ty, overloads) = resolve(name, target.as_ref(), &args);
                self.out.overloads.insert(expr.id, overloads);
                if let Some(qualified) = qualified {
                    self.out.qualified.insert(expr.id, qualified);
                }
                ty
            }
            Expr::Unspecified => Ty::Dyn,
        };
        // Recorded with free parameters as `dyn`, as cel-go substitutes them; returned as they
        // are, so what is bound later (the `[]` a `map` starts from) can still bind them.
        self.out.types.insert(expr.id, ty.clone().settled());
        ty
    }
}

/// Whether two types can be the same one: `dyn` and free parameters stand for anything.
fn compatible(a: &Ty, b: &Ty) -> bool {
    match (a, b) {
        _ if a.is_dyn() || b.is_dyn() => true,
        (Ty::List(x), Ty::List(y)) | (Ty::Optional(x), Ty::Optional(y)) => compatible(x, y),
        (Ty::Map(xk, xv), Ty::Map(yk, yv)) => compatible(xk, yk) && compatible(xv, yv),
        _ => a == b,
    }
}

impl Checker {
    /// `sets.contains(…)`: the parser reads a member call on `sets`; where no variable has that
    /// name and the namespace has the function, it is the global `sets.contains`, as cel-go's
    /// checker resolves it.
    fn namespaced(&self, call: &kube_cel::cel::common::ast::CallExpr) -> Option<String> {
        let Some(Expr::Ident(namespace)) = call.target.as_deref().map(|t| &t.expr) else {
            return None;
        };
        if self.scopes.iter().any(|(n, _)| n == namespace) {
            return None;
        }
        let qualified = format!("{namespace}.{}", call.func_name);
        (!overloads(&qualified).is_empty()).then_some(qualified)
    }
}

fn join(prev: Option<Ty>, next: Ty) -> Ty {
    match prev {
        None => next,
        Some(prev) if prev == next => prev,
        Some(_) => Ty::Dyn,
    }
}

fn select_field(operand: &Ty, field: &str) -> Ty {
    match operand {
        Ty::Object(decl) => decl.child(field).map_or(Ty::Dyn, |d| Ty::from_decl(&d)),
        Ty::Map(_, value) => (**value).clone(),
        _ => Ty::Dyn,
    }
}

/// A parameter or result in a signature.
#[derive(Debug, Clone, Copy)]
enum P {
    B,
    I,
    U,
    D,
    S,
    By,
    Du,
    Ts,
    Dyn,
    TypeT,
    /// Type parameters `A` and `B`.
    A,
    Bp,
    ListA,
    ListS,
    ListI,
    ListDyn,
    MapAB,
    MapSListS,
    OptA,
    OptFormat,
    OptListS,
    Named(&'static str),
    Opaque(&'static str),
}

const QUANTITY: &str = "kubernetes.Quantity";
const URL: &str = "kubernetes.URL";
const SEMVER: &str = "kubernetes.Semver";
const FORMAT: &str = "kubernetes.NamedFormat";
const IP: &str = "net.IP";
const CIDR: &str = "net.CIDR";

struct Overload {
    id: &'static str,
    member: bool,
    params: &'static [P],
    result: P,
}

const fn g(id: &'static str, params: &'static [P], result: P) -> Overload {
    Overload {
        id,
        member: false,
        params,
        result,
    }
}

const fn m(id: &'static str, params: &'static [P], result: P) -> Overload {
    Overload {
        id,
        member: true,
        params,
        result,
    }
}

/// The overloads of `name` in the CRD validation environment. For a member function the first
/// parameter is the target.
fn overloads(name: &str) -> &'static [Overload] {
    use P::*;
    match name {
        "_+_" => {
            const {
                &[
                    g("add_int64", &[I, I], I),
                    g("add_uint64", &[U, U], U),
                    g("add_double", &[D, D], D),
                    g("add_string", &[S, S], S),
                    g("add_bytes", &[By, By], By),
                    g("add_list", &[ListA, ListA], ListA),
                    g("add_timestamp_duration", &[Ts, Du], Ts),
                    g("add_duration_timestamp", &[Du, Ts], Ts),
                    g("add_duration_duration", &[Du, Du], Du),
                ]
            }
        }
        "_-_" => {
            const {
                &[
                    g("subtract_int64", &[I, I], I),
                    g("subtract_uint64", &[U, U], U),
                    g("subtract_double", &[D, D], D),
                    g("subtract_timestamp_timestamp", &[Ts, Ts], Du),
                    g("subtract_timestamp_duration", &[Ts, Du], Ts),
                    g("subtract_duration_duration", &[Du, Du], Du),
                ]
            }
        }
        "_*_" => {
            const {
                &[
                    g("multiply_int64", &[I, I], I),
                    g("multiply_uint64", &[U, U], U),
                    g("multiply_double", &[D, D], D),
                ]
            }
        }
        "_/_" => {
            const {
                &[
                    g("divide_int64", &[I, I], I),
                    g("divide_uint64", &[U, U], U),
                    g("divide_double", &[D, D], D),
                ]
            }
        }
        "_%_" => {
            const {
                &[
                    g("modulo_int64", &[I, I], I),
                    g("modulo_uint64", &[U, U], U),
                ]
            }
        }
        "-_" => const { &[g("negate_int64", &[I], I), g("negate_double", &[D], D)] },
        "!_" => const { &[g("logical_not", &[B], B)] },
        "_&&_" => const { &[g("logical_and", &[B, B], B)] },
        "_||_" => const { &[g("logical_or", &[B, B], B)] },
        "_?_:_" => const { &[g("conditional", &[B, A, A], A)] },
        "@not_strictly_false" => const { &[g("not_strictly_false", &[B], B)] },
        "_==_" => const { &[g("equals", &[A, A], B)] },
        "_!=_" => const { &[g("not_equals", &[A, A], B)] },
        "_<_" => {
            const {
                &[
                    g("less_bool", &[B, B], B),
                    g("less_int64", &[I, I], B),
                    g("less_uint64", &[U, U], B),
                    g("less_double", &[D, D], B),
                    g("less_string", &[S, S], B),
                    g("less_bytes", &[By, By], B),
                    g("less_timestamp", &[Ts, Ts], B),
                    g("less_duration", &[Du, Du], B),
                    g("less_int64_uint64", &[I, U], B),
                    g("less_int64_double", &[I, D], B),
                    g("less_uint64_int64", &[U, I], B),
                    g("less_uint64_double", &[U, D], B),
                    g("less_double_int64", &[D, I], B),
                    g("less_double_uint64", &[D, U], B),
                ]
            }
        }
        "_<=_" => {
            const {
                &[
                    g("less_equals_bool", &[B, B], B),
                    g("less_equals_int64", &[I, I], B),
                    g("less_equals_uint64", &[U, U], B),
                    g("less_equals_double", &[D, D], B),
                    g("less_equals_string", &[S, S], B),
                    g("less_equals_bytes", &[By, By], B),
                    g("less_equals_timestamp", &[Ts, Ts], B),
                    g("less_equals_duration", &[Du, Du], B),
                    g("less_equals_int64_uint64", &[I, U], B),
                    g("less_equals_int64_double", &[I, D], B),
                    g("less_equals_uint64_int64", &[U, I], B),
                    g("less_equals_uint64_double", &[U, D], B),
                    g("less_equals_double_int64", &[D, I], B),
                    g("less_equals_double_uint64", &[D, U], B),
                ]
            }
        }
        "_>_" => {
            const {
                &[
                    g("greater_bool", &[B, B], B),
                    g("greater_int64", &[I, I], B),
                    g("greater_uint64", &[U, U], B),
                    g("greater_double", &[D, D], B),
                    g("greater_string", &[S, S], B),
                    g("greater_bytes", &[By, By], B),
                    g("greater_timestamp", &[Ts, Ts], B),
                    g("greater_duration", &[Du, Du], B),
                    g("greater_int64_uint64", &[I, U], B),
                    g("greater_int64_double", &[I, D], B),
                    g("greater_uint64_int64", &[U, I], B),
                    g("greater_uint64_double", &[U, D], B),
                    g("greater_double_int64", &[D, I], B),
                    g("greater_double_uint64", &[D, U], B),
                ]
            }
        }
        "_>=_" => {
            const {
                &[
                    g("greater_equals_bool", &[B, B], B),
                    g("greater_equals_int64", &[I, I], B),
                    g("greater_equals_uint64", &[U, U], B),
                    g("greater_equals_double", &[D, D], B),
                    g("greater_equals_string", &[S, S], B),
                    g("greater_equals_bytes", &[By, By], B),
                    g("greater_equals_timestamp", &[Ts, Ts], B),
                    g("greater_equals_duration", &[Du, Du], B),
                    g("greater_equals_int64_uint64", &[I, U], B),
                    g("greater_equals_int64_double", &[I, D], B),
                    g("greater_equals_uint64_int64", &[U, I], B),
                    g("greater_equals_uint64_double", &[U, D], B),
                    g("greater_equals_double_int64", &[D, I], B),
                    g("greater_equals_double_uint64", &[D, U], B),
                ]
            }
        }
        "_[_]" => {
            const {
                &[
                    g("index_list", &[ListA, I], A),
                    g("index_map", &[MapAB, A], Bp),
                ]
            }
        }
        "@in" => const { &[g("in_list", &[A, ListA], B), g("in_map", &[A, MapAB], B)] },
        "size" => {
            const {
                &[
                    g("size_string", &[S], I),
                    g("size_bytes", &[By], I),
                    g("size_list", &[ListA], I),
                    g("size_map", &[MapAB], I),
                    m("string_size", &[S], I),
                    m("bytes_size", &[By], I),
                    m("list_size", &[ListA], I),
                    m("map_size", &[MapAB], I),
                ]
            }
        }
        "contains" => const { &[m("contains_string", &[S, S], B)] },
        "startsWith" => const { &[m("starts_with_string", &[S, S], B)] },
        "endsWith" => const { &[m("ends_with_string", &[S, S], B)] },
        "matches" => const { &[g("matches", &[S, S], B), m("matches_string", &[S, S], B)] },
        "int" => {
            const {
                &[
                    g("int64_to_int64", &[I], I),
                    g("uint64_to_int64", &[U], I),
                    g("double_to_int64", &[D], I),
                    g("string_to_int64", &[S], I),
                    g("timestamp_to_int64", &[Ts], I),
                ]
            }
        }
        "uint" => {
            const {
                &[
                    g("uint64_to_uint64", &[U], U),
                    g("int64_to_uint64", &[I], U),
                    g("double_to_uint64", &[D], U),
                    g("string_to_uint64", &[S], U),
                ]
            }
        }
        "double" => {
            const {
                &[
                    g("double_to_double", &[D], D),
                    g("int64_to_double", &[I], D),
                    g("uint64_to_double", &[U], D),
                    g("string_to_double", &[S], D),
                ]
            }
        }
        "string" => {
            const {
                &[
                    g("string_to_string", &[S], S),
                    g("int64_to_string", &[I], S),
                    g("uint64_to_string", &[U], S),
                    g("double_to_string", &[D], S),
                    g("bool_to_string", &[B], S),
                    g("bytes_to_string", &[By], S),
                    g("timestamp_to_string", &[Ts], S),
                    g("duration_to_string", &[Du], S),
                ]
            }
        }
        "bytes" => {
            const {
                &[
                    g("bytes_to_bytes", &[By], By),
                    g("string_to_bytes", &[S], By),
                ]
            }
        }
        "bool" => const { &[g("bool_to_bool", &[B], B), g("string_to_bool", &[S], B)] },
        "duration" => {
            const {
                &[
                    g("duration_to_duration", &[Du], Du),
                    g("string_to_duration", &[S], Du),
                ]
            }
        }
        "timestamp" => {
            const {
                &[
                    g("timestamp_to_timestamp", &[Ts], Ts),
                    g("string_to_timestamp", &[S], Ts),
                    g("int64_to_timestamp", &[I], Ts),
                ]
            }
        }
        "dyn" => const { &[g("to_dyn", &[A], Dyn)] },
        "type" => const { &[g("type", &[A], TypeT)] },
        "getFullYear" | "getMonth" | "getDayOfYear" | "getDayOfMonth" | "getDate"
        | "getDayOfWeek" | "getHours" | "getMinutes" | "getSeconds" | "getMilliseconds" => {
            const {
                &[
                    m("timestamp_to_time", &[Ts], I),
                    m("timestamp_to_time_with_tz", &[Ts, S], I),
                    m("duration_to_time", &[Du], I),
                ]
            }
        }
        // The strings extension (version 2).
        "charAt" => const { &[m("string_char_at_int", &[S, I], S)] },
        "indexOf" => {
            const {
                &[
                    m("string_index_of_string", &[S, S], I),
                    m("string_index_of_string_int", &[S, S, I], I),
                    m("list_a_index_of_int", &[ListA, A], I),
                ]
            }
        }
        "lastIndexOf" => {
            const {
                &[
                    m("string_last_index_of_string", &[S, S], I),
                    m("string_last_index_of_string_int", &[S, S, I], I),
                    m("list_a_last_index_of_int", &[ListA, A], I),
                ]
            }
        }
        "lowerAscii" => const { &[m("string_lower_ascii", &[S], S)] },
        "upperAscii" => const { &[m("string_upper_ascii", &[S], S)] },
        "replace" => {
            const {
                &[
                    m("string_replace_string_string", &[S, S, S], S),
                    m("string_replace_string_string_int", &[S, S, S, I], S),
                ]
            }
        }
        "split" => {
            const {
                &[
                    m("string_split_string", &[S, S], ListS),
                    m("string_split_string_int", &[S, S, I], ListS),
                ]
            }
        }
        "substring" => {
            const {
                &[
                    m("string_substring_int", &[S, I], S),
                    m("string_substring_int_int", &[S, I, I], S),
                ]
            }
        }
        "trim" => const { &[m("string_trim", &[S], S)] },
        "join" => {
            const {
                &[
                    m("list_join", &[ListS], S),
                    m("list_join_string", &[ListS, S], S),
                ]
            }
        }
        "format" => const { &[m("string_format", &[S, ListDyn], S)] },
        "strings.quote" => const { &[g("strings_quote", &[S], S)] },
        // The sets extension.
        "sets.contains" => const { &[g("list_sets_contains_list", &[ListA, ListA], B)] },
        "sets.equivalent" => const { &[g("list_sets_equivalent_list", &[ListA, ListA], B)] },
        "sets.intersects" => const { &[g("list_sets_intersects_list", &[ListA, ListA], B)] },
        // The lists extension (version 3) and the Kubernetes list library.
        "slice" => const { &[m("list_slice", &[ListA, I, I], ListA)] },
        "flatten" => {
            const {
                &[
                    m("list_flatten", &[ListA], ListDyn),
                    m("list_flatten_int", &[ListA, I], ListDyn),
                ]
            }
        }
        "distinct" => const { &[m("list_distinct", &[ListA], ListA)] },
        "reverse" => const { &[m("list_reverse", &[ListA], ListA)] },
        "lists.range" => const { &[g("lists_range", &[I], ListI)] },
        "first" => const { &[m("list_first", &[ListA], OptA)] },
        "last" => const { &[m("list_last", &[ListA], OptA)] },
        "sort" => const { &[m("list_sort", &[ListA], ListA)] },
        "isSorted" => const { &[m("list_is_sorted", &[ListA], B)] },
        "sum" | "min" | "max" => const { &[m("list_aggregate", &[ListA], A)] },
        // Optional values.
        "optional.of" | "optional.ofNonZeroValue" => const { &[g("optional_of", &[A], OptA)] },
        "optional.none" => const { &[g("optional_none", &[], OptA)] },
        "hasValue" => const { &[m("optional_has_value", &[OptA], B)] },
        "value" => const { &[m("optional_value", &[OptA], A)] },
        "or" => const { &[m("optional_or_optional", &[OptA, OptA], OptA)] },
        "orValue" => const { &[m("optional_or_value_value", &[OptA, A], A)] },
        // Regular expressions.
        "find" => const { &[m("string_find_string", &[S, S], S)] },
        "findAll" => {
            const {
                &[
                    m("string_find_all_string", &[S, S], ListS),
                    m("string_find_all_string_int", &[S, S, I], ListS),
                ]
            }
        }
        // URLs.
        "url" => const { &[g("string_to_url", &[S], Named(URL))] },
        "isURL" => const { &[g("is_url_string", &[S], B)] },
        "getScheme" | "getHost" | "getHostname" | "getPort" | "getEscapedPath" => {
            const { &[m("url_get", &[Named(URL)], S)] }
        }
        "getQuery" => const { &[m("url_get_query", &[Named(URL)], MapSListS)] },
        // Quantities.
        "quantity" => const { &[g("string_to_quantity", &[S], Named(QUANTITY))] },
        "isQuantity" => const { &[g("is_quantity_string", &[S], B)] },
        "sign" | "asInteger" => const { &[m("quantity_to_int", &[Named(QUANTITY)], I)] },
        "isInteger" => const { &[m("quantity_is_integer", &[Named(QUANTITY)], B)] },
        "asApproximateFloat" => const { &[m("quantity_to_double", &[Named(QUANTITY)], D)] },
        "add" | "sub" => {
            const {
                &[
                    m(
                        "quantity_add",
                        &[Named(QUANTITY), Named(QUANTITY)],
                        Named(QUANTITY),
                    ),
                    m("quantity_add_int", &[Named(QUANTITY), I], Named(QUANTITY)),
                ]
            }
        }
        "isGreaterThan" | "isLessThan" => {
            const {
                &[
                    m("quantity_compare", &[Named(QUANTITY), Named(QUANTITY)], B),
                    m("semver_compare", &[Named(SEMVER), Named(SEMVER)], B),
                ]
            }
        }
        "compareTo" => {
            const {
                &[
                    m(
                        "quantity_compare_to",
                        &[Named(QUANTITY), Named(QUANTITY)],
                        I,
                    ),
                    m("semver_compare_to", &[Named(SEMVER), Named(SEMVER)], I),
                ]
            }
        }
        // Semantic versions.
        "semver" => {
            const {
                &[
                    g("string_to_semver", &[S], Named(SEMVER)),
                    g("string_bool_to_semver", &[S, B], Named(SEMVER)),
                ]
            }
        }
        "isSemver" => {
            const {
                &[
                    g("is_semver_string", &[S], B),
                    g("is_semver_string_bool", &[S, B], B),
                ]
            }
        }
        "major" | "minor" | "patch" => const { &[m("semver_part", &[Named(SEMVER)], I)] },
        // IP addresses and CIDRs.
        "ip" => {
            const {
                &[
                    g("string_to_ip", &[S], Opaque(IP)),
                    m("cidr_ip", &[Opaque(CIDR)], Opaque(IP)),
                ]
            }
        }
        "isIP" => const { &[g("is_ip", &[S], B)] },
        "ip.isCanonical" => const { &[g("ip_is_canonical", &[S], B)] },
        "family" => const { &[m("ip_family", &[Opaque(IP)], I)] },
        "isUnspecified"
        | "isLoopback"
        | "isLinkLocalMulticast"
        | "isLinkLocalUnicast"
        | "isGlobalUnicast" => const { &[m("ip_is", &[Opaque(IP)], B)] },
        "cidr" => const { &[g("string_to_cidr", &[S], Opaque(CIDR))] },
        "isCIDR" => const { &[g("is_cidr", &[S], B)] },
        "containsIP" => {
            const {
                &[
                    m("cidr_contains_ip_string", &[Opaque(CIDR), S], B),
                    m("cidr_contains_ip_ip", &[Opaque(CIDR), Opaque(IP)], B),
                ]
            }
        }
        "containsCIDR" => {
            const {
                &[
                    m("cidr_contains_cidr_string", &[Opaque(CIDR), S], B),
                    m("cidr_contains_cidr", &[Opaque(CIDR), Opaque(CIDR)], B),
                ]
            }
        }
        "masked" => const { &[m("cidr_masked", &[Opaque(CIDR)], Opaque(CIDR))] },
        "prefixLength" => const { &[m("cidr_prefix_length", &[Opaque(CIDR)], I)] },
        // Named formats.
        "format.named" => const { &[g("format_named", &[S], OptFormat)] },
        "validate" => const { &[m("format_validate", &[Named(FORMAT), S], OptListS)] },
        "jsonpatch.escapeKey" => const { &[g("jsonpatch_escape_key", &[S], S)] },
        _ if name.starts_with("format.") => const { &[g("format_by_name", &[], Named(FORMAT))] },
        _ => const { &[] },
    }
}

#[derive(Default)]
struct Bindings {
    a: Option<Ty>,
    b: Option<Ty>,
}

impl Bindings {
    fn bind(slot: &mut Option<Ty>, ty: &Ty) -> bool {
        match slot {
            None => {
                *slot = Some(ty.clone());
                true
            }
            Some(bound) if bound.is_dyn() => {
                if matches!(bound, Ty::Free) {
                    *slot = Some(ty.clone());
                }
                true
            }
            Some(_) if matches!(ty, Ty::Null) => true,
            Some(bound) => compatible(bound, ty) || matches!(bound, Ty::Null),
        }
    }

    fn matches(&mut self, param: P, arg: &Ty) -> bool {
        use P::*;
        if arg.is_dyn() {
            // Binding a parameter to `dyn` keeps later arguments free to match.
            return true;
        }
        match (param, arg) {
            (A, ty) => Self::bind(&mut self.a, ty),
            (Bp, ty) => Self::bind(&mut self.b, ty),
            (ListA, Ty::List(item)) => item.is_dyn() || Self::bind(&mut self.a, item),
            (MapAB, Ty::Map(key, value)) => {
                (key.is_dyn() || Self::bind(&mut self.a, key))
                    && (value.is_dyn() || Self::bind(&mut self.b, value))
            }
            (OptA, Ty::Optional(inner)) => inner.is_dyn() || Self::bind(&mut self.a, inner),
            (ListS, Ty::List(item)) => matches!(**item, Ty::String) || item.is_dyn(),
            (ListI, Ty::List(item)) => matches!(**item, Ty::Int) || item.is_dyn(),
            (ListDyn, Ty::List(_)) | (Dyn, _) => true,
            (Named(name), Ty::Named(other)) | (Opaque(name), Ty::Opaque(other)) => name == *other,
            (B, Ty::Bool)
            | (I, Ty::Int)
            | (U, Ty::Uint)
            | (D, Ty::Double)
            | (S, Ty::String)
            | (By, Ty::Bytes)
            | (Du, Ty::Duration)
            | (Ts, Ty::Timestamp)
            | (TypeT, Ty::Type) => true,
            _ => false,
        }
    }

    fn result(&self, result: P) -> Ty {
        use P::*;
        let a = || self.a.clone().unwrap_or(Ty::Dyn);
        match result {
            B => Ty::Bool,
            I => Ty::Int,
            U => Ty::Uint,
            D => Ty::Double,
            S => Ty::String,
            By => Ty::Bytes,
            Du => Ty::Duration,
            Ts => Ty::Timestamp,
            Dyn => Ty::Dyn,
            TypeT => Ty::Type,
            A => a(),
            Bp => self.b.clone().unwrap_or(Ty::Dyn),
            ListA => Ty::List(Box::new(a())),
            ListS => Ty::List(Box::new(Ty::String)),
            ListI => Ty::List(Box::new(Ty::Int)),
            ListDyn => Ty::List(Box::new(Ty::Dyn)),
            MapAB => Ty::Map(Box::new(a()), Box::new(self.b.clone().unwrap_or(Ty::Dyn))),
            MapSListS => Ty::Map(
                Box::new(Ty::String),
                Box::new(Ty::List(Box::new(Ty::String))),
            ),
            OptA => Ty::Optional(Box::new(a())),
            OptFormat => Ty::Optional(Box::new(Ty::Named(FORMAT))),
            OptListS => Ty::Optional(Box::new(Ty::List(Box::new(Ty::String)))),
            Named(name) => Ty::Named(name),
            Opaque(name) => Ty::Opaque(name),
        }
    }
}

/// The result type and candidate overloads of a call, as cel-go's checker resolves them: every
/// overload the argument types can be assigned to; the result is `dyn` when candidates differ.
fn resolve(name: &str, target: Option<&Ty>, args: &[Ty]) -> (Ty, Vec<&'static str>) {
    let mut result: Option<Ty> = None;
    let mut ids = Vec::new();
    for overload in overloads(name) {
        if overload.member != target.is_some() {
            continue;
        }
        let actual: Vec<&Ty> = target.into_iter().chain(args).collect();
        if actual.len() != overload.params.len() {
            continue;
        }
        let mut bindings = Bindings::default();
        if !overload
            .params
            .iter()
            .zip(&actual)
            .all(|(param, arg)| bindings.matches(*param, arg))
        {
            continue;
        }
        let ty = bindings.result(overload.result);
        result = Some(match result {
            None => ty,
            Some(prev) if prev == ty => prev,
            Some(_) => Ty::Dyn,
        });
        ids.push(overload.id);
    }
    match result {
        Some(ty) => (ty, ids),
        None => (Ty::Dyn, vec!["unresolved"]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube_cel::cel::Program;
    use serde_json::json;

    fn root_of(call: &str, schema: serde_json::Value) -> (Checked, u64) {
        let program = Program::compile(call).unwrap();
        let decl = Decl::of(&schema, false).unwrap();
        let checked = check(program.expression(), &[("self", Ty::from_decl(&decl))]);
        (checked, program.expression().id)
    }

    #[test]
    fn a_call_resolves_by_its_argument_types() {
        let schema = json!({"type": "object", "properties": {
            "name": {"type": "string"},
            "port": {"type": "integer"},
            "any": {"x-kubernetes-int-or-string": true},
        }});
        let (checked, id) = root_of("self.name + 'x'", schema.clone());
        assert_eq!(checked.overloads(id), ["add_string"]);
        assert_eq!(checked.ty(id), Ty::String);
        let (checked, id) = root_of("self.port + 1", schema.clone());
        assert_eq!(checked.overloads(id), ["add_int64"]);
        // An int-or-string may be anything that adds.
        let (checked, id) = root_of("self.any + self.any", schema);
        assert_eq!(checked.overloads(id).len(), 9);
        assert_eq!(checked.ty(id), Ty::Dyn);
    }

    #[test]
    fn comprehension_variables_take_the_element_type() {
        let schema = json!({"type": "object", "properties": {
            "tags": {"type": "array", "items": {"type": "string"}},
        }});
        let (checked, id) = root_of("self.tags.map(t, t + '!')", schema);
        assert_eq!(checked.ty(id), Ty::List(Box::new(Ty::String)));
    }
}
