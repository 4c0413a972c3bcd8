//! The call estimators a CRD rule meets beside cel-go's own: those the sets and lists extensions
//! register by overload (cel-go `ext/sets.go`, `ext/lists.go`), and the Kubernetes libraries'
//! estimator, which goes by function name (k8s.io/apiserver `pkg/cel/library/cost.go`). The
//! strings extension the apiserver enables (version 2) registers none.

use super::check::Ty;
use super::size::{
    CallEstimate, LIST_CREATE_BASE_COST, Node, REGEX_STRING_LENGTH_COST_FACTOR, Range,
    STRING_TRAVERSAL_COST_FACTOR, STRUCT_CREATE_BASE_COST, Sizes,
};
/// `cel.MaxNameFormatRegexSize` and `cel.MaxFormatSize` of the named-format library.
const MAX_NAME_FORMAT_REGEX_SIZE: f64 = 128.0;
const MAX_FORMAT_SIZE: u64 = 64;

fn call(cost: Range) -> Option<CallEstimate> {
    Some(CallEstimate {
        cost,
        result_size: None,
    })
}

fn sized(cost: Range, size: Range) -> Option<CallEstimate> {
    Some(CallEstimate {
        cost,
        result_size: Some(size),
    })
}

/// `estimateAllocatingListCall`.
fn allocating_list(factor: f64, size: Range) -> Option<CallEstimate> {
    sized(
        size.times(factor)
            .add(Range::fixed(1))
            .add(Range::fixed(LIST_CREATE_BASE_COST)),
        size,
    )
}

/// The estimators registered by overload id.
pub fn extension(
    sizes: &Sizes,
    overload: &str,
    target: Option<&Node<'_>>,
    args: &[Node<'_>],
) -> Option<CallEstimate> {
    let sets = |factor: f64| {
        let [a, b] = args else { return None };
        call(
            sizes
                .of(a)
                .multiply(sizes.of(b))
                .times(factor)
                .add(Range::fixed(1)),
        )
    };
    match overload {
        "list_sets_contains_list" | "list_sets_intersects_list" => sets(1.0),
        "list_sets_equivalent_list" => sets(2.0),
        "list_slice" => {
            let (target, [start, end]) = (target?, args) else {
                return None;
            };
            let size = sizes.of(target);
            let (start, end) = (start.as_uint(0), end.as_uint(size.max));
            allocating_list(1.0, Range::fixed(end.wrapping_sub(start)))
        }
        "lists_range" => match (target, args) {
            (None, [count]) => allocating_list(1.0, Range::fixed(count.as_uint(u64::MAX))),
            _ => None,
        },
        "list_reverse" => match (target, args) {
            (Some(target), []) => allocating_list(1.0, sizes.of(target)),
            _ => None,
        },
        "list_flatten" | "list_flatten_int" => {
            let target = target?;
            let depth = match args {
                [] => 1,
                [depth] => depth.as_uint(u64::MAX),
                _ => return None,
            };
            allocating_list(depth as f64, sizes.of(target))
        }
        "list_distinct" => match (target, args) {
            (Some(target), []) => {
                let size = sizes.of(target);
                allocating_list(2.0, size.multiply(size))
            }
            _ => None,
        },
        "list_sort" => match (target, args) {
            (Some(target), []) => {
                let size = sizes.of(target);
                let factor = match target.ty.first_parameter() {
                    Some(Ty::String | Ty::Bytes) => 2.0 + STRING_TRAVERSAL_COST_FACTOR,
                    _ => 2.0,
                };
                allocating_list(factor, size.multiply(size))
            }
            _ => None,
        },
        _ => None,
    }
}

/// `listElementNode`: the node for a list's items, one step further down its path.
fn element<'e>(list: &Node<'e>) -> Option<Node<'e>> {
    let ty = list.ty.first_parameter()?.clone();
    let path = list.path.as_ref().map(|path| {
        let mut path = path.clone();
        path.push("@items".to_string());
        path
    });
    Some(Node {
        path,
        ty,
        expr: None,
        computed: None,
    })
}

/// One bound of `replace`'s result: how many replacements at most (or least), and how much of
/// the text is kept beside them, for a text of `size` and a needle of `needle` characters.
fn replace_bound(size: u64, needle: u64, never_grows: bool) -> (u64, u64) {
    if needle == 0 {
        (size.saturating_add(1), size)
    } else if never_grows {
        (0, size)
    } else {
        ((size as f64 / needle as f64).ceil() as u64, 0)
    }
}

/// `selectorCostEstimate`.
fn selector(length: Range) -> Range {
    let parse = length.times(STRING_TRAVERSAL_COST_FACTOR);
    let requirements = length.times(0.5);
    let requirement_cost =
        requirements.times((LIST_CREATE_BASE_COST + STRUCT_CREATE_BASE_COST) as f64);
    Range::fixed(LIST_CREATE_BASE_COST)
        .add(parse)
        .add(requirement_cost)
}

/// The Kubernetes libraries' `EstimateCallCost`.
pub fn kubernetes(
    sizes: &Sizes,
    function: &str,
    overload: &str,
    target: Option<&Node<'_>>,
    args: &[Node<'_>],
) -> Option<CallEstimate> {
    let string_scan = |node: &Node<'_>| sizes.of(node).times(STRING_TRAVERSAL_COST_FACTOR);
    let one = Range::fixed(1);
    match function {
        "check" => call(Range::fixed(350_000)),
        "serviceAccount" | "path" | "group" | "resource" | "subresource" | "namespace" | "name"
        | "allowed" | "reason" | "error" | "errored" => call(one),
        "fieldSelector" | "labelSelector" => match args {
            [selector_text] => call(selector(sizes.of(selector_text))),
            _ => None,
        },
        "isSorted" | "sum" | "max" | "min" | "indexOf" | "lastIndexOf" | "includes" => {
            let target = target?;
            let size = sizes.of(target);
            match element(target) {
                Some(item) => {
                    let mut item_cost = one;
                    if matches!(item.ty, Ty::String | Ty::Bytes) {
                        item_cost =
                            item_cost.add(sizes.of(&item).times(STRING_TRAVERSAL_COST_FACTOR));
                    }
                    call(size.multiply(item_cost))
                }
                None if function == "includes" => call(size.multiply(one)),
                None => call(size.times(STRING_TRAVERSAL_COST_FACTOR)),
            }
        }
        "url" | "jsonpatch.escapeKey" => match args {
            [text] => {
                let size = sizes.of(text);
                sized(size.times(STRING_TRAVERSAL_COST_FACTOR), size)
            }
            _ => None,
        },
        "lowerAscii" | "upperAscii" | "substring" | "trim" => {
            let size = sizes.of(target?);
            sized(size.times(STRING_TRAVERSAL_COST_FACTOR), size)
        }
        "replace" => {
            let (target, [to_replace, replace_with, ..]) = (target?, args) else {
                return None;
            };
            let size = sizes.of(target);
            let to_replace = sizes.of(to_replace);
            let replace_with = sizes.of(replace_with);
            let (max_count, max_retained) =
                replace_bound(size.max, to_replace.min, replace_with.max <= to_replace.min);
            let (min_count, min_retained) =
                replace_bound(size.min, to_replace.max, to_replace.max <= replace_with.min);
            let count = Range {
                min: min_count,
                max: max_count,
            };
            let retained = Range {
                min: min_retained,
                max: max_retained,
            };
            let result = count.multiply(replace_with).add(retained);
            sized(size.times(2.0 * STRING_TRAVERSAL_COST_FACTOR), result)
        }
        "split" => {
            let size = sizes.of(target?);
            let mut max = size.max;
            if let Some(limit) = args.get(1)
                && let Some(kube_cel::cel::common::ast::Expr::Literal(
                    kube_cel::cel::common::ast::LiteralValue::Int(i),
                )) = limit.expr.map(|e| &e.expr)
            {
                max = *i.inner() as u64;
            }
            sized(
                size.times(2.0 * STRING_TRAVERSAL_COST_FACTOR),
                Range { min: 0, max },
            )
        }
        "join" => {
            let target = target?;
            let list = sizes.of(target);
            let mut size = Range::fixed(0);
            if let Some(item) = element(target) {
                size = list.multiply(sizes.of(&item));
            }
            if let Some(separator) = args.first() {
                let separator = sizes.of(separator);
                let separators = Range {
                    min: list.min.saturating_sub(1),
                    max: list.max.saturating_sub(1),
                };
                size = size.add(separator.multiply(separators));
            }
            sized(size.times(STRING_TRAVERSAL_COST_FACTOR), size)
        }
        "find" | "findAll" => {
            let (target, [regex, ..]) = (target?, args) else {
                return None;
            };
            let size = sizes.of(target);
            let string_cost = size.add(one).times(STRING_TRAVERSAL_COST_FACTOR);
            let regex_cost = sizes.of(regex).times(REGEX_STRING_LENGTH_COST_FACTOR);
            sized(
                string_cost.multiply(regex_cost),
                Range {
                    min: 0,
                    max: size.max,
                },
            )
        }
        "cidr" | "isIP" | "isCIDR" | "quantity" | "isQuantity" | "semver" | "isSemver" => {
            call(string_scan(args.first()?))
        }
        "ip" if overload == "cidr_ip" => call(one),
        "ip" => call(string_scan(args.first()?)),
        "ip.isCanonical" => call(
            sizes
                .of(args.first()?)
                .times(2.0 * STRING_TRAVERSAL_COST_FACTOR),
        ),
        "masked"
        | "prefixLength"
        | "family"
        | "isUnspecified"
        | "isLoopback"
        | "isLinkLocalMulticast"
        | "isLinkLocalUnicast"
        | "isGlobalUnicast" => call(one),
        "containsIP" | "containsCIDR" => {
            let first = args.first()?;
            let address = Range { min: 4, max: 16 };
            let mut cost = address.add(address).times(STRING_TRAVERSAL_COST_FACTOR);
            if function == "containsCIDR" {
                cost = cost
                    .add(address.times(STRING_TRAVERSAL_COST_FACTOR))
                    .add(one);
            }
            if matches!(
                overload,
                "cidr_contains_ip_string" | "cidr_contains_cidr_string"
            ) {
                cost = cost.add(sizes.of(first).times(STRING_TRAVERSAL_COST_FACTOR));
            }
            call(cost)
        }
        "validate" => call(
            sizes
                .of(args.first()?)
                .times(STRING_TRAVERSAL_COST_FACTOR)
                .times(MAX_NAME_FORMAT_REGEX_SIZE * REGEX_STRING_LENGTH_COST_FACTOR),
        ),
        "format.named" | "sign" | "asInteger" | "isInteger" | "asApproximateFloat"
        | "isGreaterThan" | "isLessThan" | "compareTo" | "add" | "sub" | "major" | "minor"
        | "patch" | "getScheme" | "getHostname" | "getHost" | "getPort" | "getEscapedPath"
        | "getQuery" => call(one),
        "_==_" => {
            let [lhs, rhs] = args else { return None };
            if lhs.ty != rhs.ty {
                return None;
            }
            match &lhs.ty {
                Ty::Opaque(_) => call(one),
                Ty::Named("kubernetes.Quantity" | "kubernetes.Semver") => call(one),
                Ty::Named("kubernetes.NamedFormat") => call(
                    Range {
                        min: 1,
                        max: MAX_FORMAT_SIZE,
                    }
                    .times(STRING_TRAVERSAL_COST_FACTOR),
                ),
                Ty::Named("kubernetes.URL") => {
                    // As the apiserver reads it: both sides are the right-hand size.
                    let size = rhs.computed.unwrap_or(one);
                    call(
                        Range {
                            min: 1,
                            max: size.max,
                        }
                        .times(STRING_TRAVERSAL_COST_FACTOR),
                    )
                }
                _ => None,
            }
        }
        _ => None,
    }
}
