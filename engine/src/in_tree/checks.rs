//! The checks a policy compiles to, as a tree that mirrors where in the object they apply, and
//! how the tree becomes one CEL expression yielding the list of `"<path>: <message>"` failures.

/// When a failure at a value is let through on UPDATE (`crate::ratchet`): the value equals
/// its old self, compared at the nearest value that correlates.
#[derive(Debug, Clone)]
pub struct Ratchet {
    /// True when the old value can be read (it includes `oldObject != null`).
    pub old_exists: String,
    /// True when the value equals its old self (read once `old_exists` holds).
    pub equal: String,
}

impl Ratchet {
    fn unchanged(&self) -> String {
        format!("({} && {})", self.old_exists, self.equal)
    }
}

/// How a failure weighs: the apiserver runs no CEL rule past a blocking one (`hasBlockingErr`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weight {
    Blocking,
    Plain,
    /// A schema rule: never blocking, run only when nothing blocks.
    Rule,
    /// A `set` or `map` list invariant: never ratcheted, checked on UPDATE only if the old
    /// object kept every one.
    List,
}

#[derive(Debug, Clone)]
pub enum Item {
    /// One failure (a CEL string) when `fails` holds.
    Check {
        fails: String,
        message: String,
        weight: Weight,
        /// `None`: never ratcheted (a transition rule).
        ratchet: Option<Ratchet>,
    },
    /// A list of failures computed at once (unknown fields of one object).
    List {
        messages: String,
        weight: Weight,
        ratchet: Option<Ratchet>,
    },
    /// `items` apply where `guard` holds.
    Within { guard: String, items: Vec<Item> },
    /// `items` apply to each index `variable` of the list `list`.
    EachIndex {
        list: String,
        variable: String,
        items: Vec<Item>,
    },
    /// `items` apply to each key `variable` of the map `map` that `keep` keeps.
    EachKey {
        map: String,
        variable: String,
        /// Which keys: a CEL condition on `variable` (`None`: every key).
        keep: Option<String>,
        items: Vec<Item>,
    },
}

/// Which failures an expression lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Select {
    /// Failures that deny, of this weight.
    Denied(Weight),
    /// Failures ratcheting lets through, of any weight but rules.
    RatchetedSchema,
    /// Rule failures ratcheting lets through.
    RatchetedRules,
    /// Every failure, ratcheted or not: whether a subschema (an `anyOf` branch) holds.
    Any,
}

impl Select {
    fn weight_matches(self, weight: Weight) -> bool {
        match self {
            Select::Denied(w) => w == weight,
            Select::RatchetedSchema => matches!(weight, Weight::Blocking | Weight::Plain),
            Select::RatchetedRules => weight == Weight::Rule,
            Select::Any => true,
        }
    }

    /// The condition under which a failure of this kind is listed, `None` when it never is.
    fn condition(self, fails: &str, ratchet: Option<&Ratchet>) -> Option<String> {
        match (self, ratchet) {
            (Select::Any, _) | (Select::Denied(_), None) => Some(fails.to_string()),
            (Select::Denied(_), Some(r)) => Some(format!("!{} && ({fails})", r.unchanged())),
            (_, None) => None,
            (_, Some(r)) => Some(format!("{} && ({fails})", r.unchanged())),
        }
    }
}

/// Whether `items` raise no failure at all: the value is valid under their subschema.
pub fn holds(items: &[Item]) -> String {
    render(items, Select::Any).map_or_else(
        || "true".into(),
        |failures| format!("size({failures}) == 0"),
    )
}

/// The CEL list of the failures `items` raise, of the kind `select` picks; `None` when none can.
pub fn render(items: &[Item], select: Select) -> Option<String> {
    let parts: Vec<String> = items.iter().filter_map(|i| render_one(i, select)).collect();
    match parts.len() {
        0 => None,
        1 => parts.into_iter().next(),
        _ => Some(format!("({})", parts.join(" + "))),
    }
}

fn render_one(item: &Item, select: Select) -> Option<String> {
    match item {
        Item::Check {
            fails,
            message,
            weight,
            ratchet,
        } => {
            if !select.weight_matches(*weight) {
                return None;
            }
            let condition = select.condition(fails, ratchet.as_ref())?;
            Some(format!("({condition} ? [{message}] : [])"))
        }
        Item::List {
            messages,
            weight,
            ratchet,
        } => {
            if !select.weight_matches(*weight) {
                return None;
            }
            match (select, ratchet) {
                (Select::Any, _) | (Select::Denied(_), None) => Some(messages.clone()),
                (Select::Denied(_), Some(r)) => {
                    Some(format!("({} ? [] : {messages})", r.unchanged()))
                }
                (_, None) => None,
                (_, Some(r)) => Some(format!("({} ? {messages} : [])", r.unchanged())),
            }
        }
        Item::Within { guard, items } => {
            let inner = render(items, select)?;
            Some(format!("({guard} ? {inner} : [])"))
        }
        Item::EachIndex {
            list,
            variable,
            items,
        } => {
            let inner = render(items, select)?;
            Some(format!(
                "lists.range(size({list})).map({variable}, {inner}).flatten()"
            ))
        }
        Item::EachKey {
            map,
            variable,
            keep,
            items,
        } => {
            let inner = render(items, select)?;
            let keys = match keep {
                None => map.clone(),
                Some(keep) => format!("{map}.filter({variable}, {keep})"),
            };
            Some(format!("{keys}.map({variable}, {inner}).flatten()"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(fails: &str, weight: Weight, ratchet: Option<Ratchet>) -> Item {
        Item::Check {
            fails: fails.into(),
            message: "'m'".into(),
            weight,
            ratchet,
        }
    }

    #[test]
    fn selects_by_weight_and_ratcheting() {
        let ratchet = Ratchet {
            old_exists: "oldObject != null".into(),
            equal: "oldObject.a == object.a".into(),
        };
        let items = vec![Item::Within {
            guard: "has(object.a)".into(),
            items: vec![
                check("x", Weight::Blocking, Some(ratchet.clone())),
                check("y", Weight::Plain, None),
            ],
        }];
        assert_eq!(
            render(&items, Select::Denied(Weight::Blocking)).as_deref(),
            Some(
                "(has(object.a) ? (!(oldObject != null && oldObject.a == object.a) && (x) ? ['m'] : []) : [])"
            )
        );
        assert_eq!(
            render(&items, Select::RatchetedSchema).as_deref(),
            Some(
                "(has(object.a) ? ((oldObject != null && oldObject.a == object.a) && (x) ? ['m'] : []) : [])"
            )
        );
        assert_eq!(render(&items, Select::Denied(Weight::Rule)), None);
    }
}
