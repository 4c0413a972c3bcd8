//! Matching the plain patterns Kubernetes schemas use (`^https://`, `^[A-Z]{3}$`, the DNS
//! subdomain pattern) without a regex engine: a position automaton of at most 64 positions, run
//! with one 64-bit word of states, a byte-to-class table and a word per class — a few cache
//! lines, where `jsonschema` with its regex engine (its code, lazy DFA and per-thread cache pool)
//! cost a cold review over two hundred (callgrind's cache simulation).
//!
//! Only patterns whose meaning on ASCII text is the same in ECMA 262 and in the engine
//! `jsonschema` uses are taken: printable ASCII, literals and escaped punctuation, `\d` and `\w`,
//! classes of ASCII characters and ranges (not negated), groups, alternation, greedy quantifiers,
//! `^` first and `$` last. Anything else is `None`, and the caller leaves the pattern to
//! `jsonschema`. Every class here matches ASCII bytes only, so a match is over whole characters,
//! and where the regex engine would also take a non-ASCII digit or letter for `\d` or `\w`, this
//! matcher answers no and `jsonschema` decides.

/// Positions are bits of one word.
const MAX_POSITIONS: usize = 64;
/// Nesting and counted repetition beyond these are not what a field pattern looks like.
const MAX_DEPTH: usize = 16;
const MAX_REPEAT: u32 = 64;

/// A compiled pattern: the position (Glushkov) automaton of the expression.
#[derive(Debug, Clone)]
pub(crate) struct Pattern {
    anchored_start: bool,
    anchored_end: bool,
    /// The expression matches the empty text.
    nullable: bool,
    first: u64,
    last: u64,
    /// The positions that may follow each position.
    follow: Vec<u64>,
    /// Each ASCII byte's class: bytes that may take the same positions share one. Other bytes
    /// take none.
    class_of: [u8; 128],
    /// The positions each class may take; class 0 takes none.
    takes: Vec<u64>,
}

impl Pattern {
    /// The pattern, when it is plain enough to be matched here.
    pub(crate) fn compile(pattern: &str) -> Option<Self> {
        let mut text = pattern.as_bytes();
        if !text.iter().all(|b| (b' '..=b'~').contains(b)) {
            return None;
        }
        let anchored_start = text.first() == Some(&b'^');
        if anchored_start {
            text = &text[1..];
        }
        // `\$` is a literal dollar, not an anchor.
        let anchored_end = text.last() == Some(&b'$') && !ends_escaped(&text[..text.len() - 1]);
        if anchored_end {
            text = &text[..text.len() - 1];
        }
        let mut parser = Parser { text, pos: 0 };
        let expression = parser.alternation(0)?;
        if parser.pos != text.len() {
            return None;
        }
        let mut automaton = Automaton {
            follow: Vec::new(),
            takes: Box::new([0; 128]),
        };
        let whole = automaton.positions(&expression)?;
        // A table of one byte per ASCII byte and a few words: two or three cache lines where
        // a word per byte would be sixteen.
        let mut class_of = [0u8; 128];
        let mut takes = vec![0u64];
        for (class, &positions) in class_of.iter_mut().zip(automaton.takes.iter()) {
            let index = match takes.iter().position(|&t| t == positions) {
                Some(index) => index,
                None => {
                    takes.push(positions);
                    takes.len() - 1
                }
            };
            *class = u8::try_from(index).ok()?;
        }
        Some(Self {
            anchored_start,
            anchored_end,
            nullable: whole.nullable,
            first: whole.first,
            last: whole.last,
            follow: automaton.follow,
            class_of,
            takes,
        })
    }

    /// True when the pattern matches somewhere in `text` (anchors as written).
    pub(crate) fn is_match(&self, text: &str) -> bool {
        if self.nullable && (!self.anchored_end || !self.anchored_start || text.is_empty()) {
            return true;
        }
        let mut states = 0u64;
        for (at, &byte) in text.as_bytes().iter().enumerate() {
            let mut next = if at == 0 || !self.anchored_start {
                self.first
            } else {
                0
            };
            let mut active = states;
            while active != 0 {
                next |= self
                    .follow
                    .get(active.trailing_zeros() as usize)
                    .copied()
                    .unwrap_or(0);
                active &= active - 1;
            }
            let class = self.class_of.get(usize::from(byte)).copied().unwrap_or(0);
            states = next & self.takes.get(usize::from(class)).copied().unwrap_or(0);
            if !self.anchored_end && states & self.last != 0 {
                return true;
            }
            if states == 0 && self.anchored_start {
                return false;
            }
        }
        self.anchored_end && states & self.last != 0
    }
}

/// True when `text` ends in an odd run of backslashes (its next byte is escaped).
fn ends_escaped(text: &[u8]) -> bool {
    text.iter().rev().take_while(|&&b| b == b'\\').count() % 2 == 1
}

/// A set of ASCII bytes.
type Class = u128;

fn bit(byte: u8) -> Class {
    1 << byte
}

fn range(from: u8, to: u8) -> Class {
    (from..=to).fold(0, |set, b| set | bit(b))
}

fn digits() -> Class {
    range(b'0', b'9')
}

fn word() -> Class {
    digits() | range(b'a', b'z') | range(b'A', b'Z') | bit(b'_')
}

#[derive(Debug, Clone)]
enum Expression {
    Class(Class),
    Sequence(Vec<Expression>),
    Either(Vec<Expression>),
    Repeat {
        item: Box<Expression>,
        min: u32,
        /// `None`: no upper bound.
        max: Option<u32>,
    },
}

struct Parser<'p> {
    text: &'p [u8],
    pos: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.text.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let byte = self.peek()?;
        self.pos += 1;
        Some(byte)
    }

    fn alternation(&mut self, depth: usize) -> Option<Expression> {
        if depth > MAX_DEPTH {
            return None;
        }
        let mut branches = vec![self.sequence(depth)?];
        while self.peek() == Some(b'|') {
            self.pos += 1;
            branches.push(self.sequence(depth)?);
        }
        Some(if branches.len() == 1 {
            branches.remove(0)
        } else {
            Expression::Either(branches)
        })
    }

    fn sequence(&mut self, depth: usize) -> Option<Expression> {
        let mut items = Vec::new();
        while let Some(byte) = self.peek() {
            if matches!(byte, b'|' | b')') {
                break;
            }
            let atom = self.atom(depth)?;
            items.push(self.quantified(atom)?);
        }
        Some(Expression::Sequence(items))
    }

    fn atom(&mut self, depth: usize) -> Option<Expression> {
        match self.next()? {
            b'(' => {
                if self.peek() == Some(b'?') {
                    // Only the non-capturing group: lookarounds and named groups are not plain.
                    self.pos += 1;
                    if self.next()? != b':' {
                        return None;
                    }
                }
                let inner = self.alternation(depth + 1)?;
                (self.next()? == b')').then_some(inner)
            }
            b'[' => self.class().map(Expression::Class),
            b'\\' => self.escape().map(Expression::Class),
            b'.' | b'^' | b'$' | b'*' | b'+' | b'?' | b'{' | b'}' | b']' => None,
            literal => Some(Expression::Class(bit(literal))),
        }
    }

    /// After a backslash, outside or inside a class.
    fn escape(&mut self) -> Option<Class> {
        match self.next()? {
            b'd' => Some(digits()),
            b'w' => Some(word()),
            punctuation @ (b'.' | b'^' | b'$' | b'*' | b'+' | b'?' | b'(' | b')' | b'[' | b']'
            | b'{' | b'}' | b'|' | b'\\' | b'/' | b'-') => Some(bit(punctuation)),
            _ => None,
        }
    }

    /// After `[`: literals, escapes and ranges up to `]`.
    fn class(&mut self) -> Option<Class> {
        // Negation matches non-ASCII characters; `[]` means nothing in ECMA 262 and a literal
        // `]` to the regex engine.
        if matches!(self.peek(), Some(b'^' | b']')) {
            return None;
        }
        let mut set: Class = 0;
        // The single byte before, which a `-` may start a range from.
        let mut previous: Option<u8> = None;
        loop {
            let byte = self.next()?;
            match byte {
                b']' => return Some(set),
                // Nested classes and doubled operators are set operations to the regex engine.
                b'[' => return None,
                b'&' | b'~' | b'-' if self.peek() == Some(byte) => return None,
                // A `-` first or last is itself; between two bytes it is a range.
                b'-' if set == 0 || self.peek() == Some(b']') => {
                    set |= bit(b'-');
                    previous = None;
                }
                b'-' => {
                    let from = previous.take()?;
                    let to = self.next()?;
                    if matches!(to, b'\\' | b'[') || to < from {
                        return None;
                    }
                    set |= range(from, to);
                }
                b'\\' => {
                    let escaped = self.escape()?;
                    set |= escaped;
                    previous = (escaped.count_ones() == 1).then(|| escaped.trailing_zeros() as u8);
                }
                literal => {
                    set |= bit(literal);
                    previous = Some(literal);
                }
            }
        }
    }

    /// The quantifier after an atom, if any. Lazy and stacked quantifiers are not plain.
    fn quantified(&mut self, atom: Expression) -> Option<Expression> {
        let (min, max) = match self.peek() {
            Some(b'*') => (0, None),
            Some(b'+') => (1, None),
            Some(b'?') => (0, Some(1)),
            Some(b'{') => {
                self.pos += 1;
                let min = self.count()?;
                match self.peek()? {
                    b'}' => (min, Some(min)),
                    b',' => {
                        self.pos += 1;
                        if self.peek() == Some(b'}') {
                            (min, None)
                        } else {
                            let max = self.count()?;
                            if max < min || self.peek() != Some(b'}') {
                                return None;
                            }
                            (min, Some(max))
                        }
                    }
                    _ => return None,
                }
            }
            _ => return Some(atom),
        };
        // Past the `*`, `+`, `?` or closing `}`.
        self.pos += 1;
        if matches!(self.peek(), Some(b'*' | b'+' | b'?' | b'{')) {
            return None;
        }
        Some(Expression::Repeat {
            item: Box::new(atom),
            min,
            max,
        })
    }

    fn count(&mut self) -> Option<u32> {
        let start = self.pos;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.pos += 1;
        }
        let digits = std::str::from_utf8(&self.text[start..self.pos]).ok()?;
        digits.parse().ok().filter(|&n| n <= MAX_REPEAT)
    }
}

/// What the positions of one subexpression say about it.
#[derive(Debug, Clone, Copy)]
struct Positions {
    nullable: bool,
    first: u64,
    last: u64,
}

struct Automaton {
    follow: Vec<u64>,
    takes: Box<[u64; 128]>,
}

impl Automaton {
    fn add_follow(&mut self, from: u64, to: u64) {
        let mut from = from;
        while from != 0 {
            if let Some(follow) = self.follow.get_mut(from.trailing_zeros() as usize) {
                *follow |= to;
            }
            from &= from - 1;
        }
    }

    /// Gives each class of `expression` a new position; `None` past 64.
    fn positions(&mut self, expression: &Expression) -> Option<Positions> {
        match expression {
            Expression::Class(class) => {
                let at = self.follow.len();
                if at == MAX_POSITIONS {
                    return None;
                }
                self.follow.push(0);
                for (byte, takes) in self.takes.iter_mut().enumerate() {
                    if class & (1 << byte) != 0 {
                        *takes |= 1 << at;
                    }
                }
                Some(Positions {
                    nullable: false,
                    first: 1 << at,
                    last: 1 << at,
                })
            }
            Expression::Sequence(items) => {
                let mut whole = Positions {
                    nullable: true,
                    first: 0,
                    last: 0,
                };
                for item in items {
                    let next = self.positions(item)?;
                    whole = self.then(whole, next);
                }
                Some(whole)
            }
            Expression::Either(branches) => {
                let mut whole = Positions {
                    nullable: false,
                    first: 0,
                    last: 0,
                };
                for branch in branches {
                    let one = self.positions(branch)?;
                    whole.nullable |= one.nullable;
                    whole.first |= one.first;
                    whole.last |= one.last;
                }
                Some(whole)
            }
            Expression::Repeat { item, min, max } => {
                let mut whole = Positions {
                    nullable: true,
                    first: 0,
                    last: 0,
                };
                for _ in 0..*min {
                    let copy = self.positions(item)?;
                    whole = self.then(whole, copy);
                }
                match max {
                    None => {
                        let mut copy = self.positions(item)?;
                        self.add_follow(copy.last, copy.first);
                        copy.nullable = true;
                        whole = self.then(whole, copy);
                    }
                    Some(max) => {
                        for _ in *min..*max {
                            let mut copy = self.positions(item)?;
                            copy.nullable = true;
                            whole = self.then(whole, copy);
                        }
                    }
                }
                Some(whole)
            }
        }
    }

    /// `before` followed by `after`.
    fn then(&mut self, before: Positions, after: Positions) -> Positions {
        self.add_follow(before.last, after.first);
        Positions {
            nullable: before.nullable && after.nullable,
            first: before.first | if before.nullable { after.first } else { 0 },
            last: after.last | if after.nullable { before.last } else { 0 },
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    fn matches(pattern: &str, text: &str) -> bool {
        match Pattern::compile(pattern) {
            Some(compiled) => compiled.is_match(text),
            None => panic!("{pattern:?} should compile"),
        }
    }

    const DNS_SUBDOMAIN: &str =
        r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

    #[test]
    fn matches_the_patterns_of_the_shipped_policy() {
        for (text, expected) in [
            ("https://pay.example.com", true),
            ("https://", true),
            ("http://pay.example.com", false),
            ("xhttps://", false),
            ("", false),
        ] {
            assert_eq!(matches("^https://", text), expected, "{text:?}");
        }
        for (text, expected) in [
            ("USD", true),
            ("EUR", true),
            ("usd", false),
            ("US", false),
            ("USDX", false),
            ("", false),
        ] {
            assert_eq!(matches("^[A-Z]{3}$", text), expected, "{text:?}");
        }
        for (text, expected) in [
            ("stripe-credentials", true),
            ("a", true),
            ("a.b-c.d0", true),
            ("-a", false),
            ("a-", false),
            ("a..b", false),
            ("A", false),
            ("a.", false),
            ("", false),
            ("é", false),
        ] {
            assert_eq!(matches(DNS_SUBDOMAIN, text), expected, "{text:?}");
        }
    }

    #[test]
    fn unanchored_patterns_match_anywhere() {
        assert!(matches("b+c", "aaabbbcz"));
        assert!(!matches("b+c", "aaabbbz"));
        assert!(matches("x|", "anything"));
        assert!(matches("(ab)*$", "zzz"));
        assert!(matches("c$", "abc"));
        assert!(!matches("c$", "cab"));
        assert!(matches("^a?$", ""));
        assert!(!matches("^a?$", "b"));
        assert!(matches(r"\$$", "cost$"));
    }

    #[test]
    fn leaves_what_is_not_plain_to_the_regex_engine() {
        for pattern in [
            ".*",
            "[^a]",
            "a*?",
            "a**",
            "(?=a)",
            "(?<name>a)",
            r"\s",
            r"\bword",
            "[a-z&&[aeiou]]",
            "[a--b]",
            "[[:alpha:]]",
            "é",
            "a{1,2",
            "a{65}",
            "[z-a]",
            "[]",
            "(a",
            "a)",
            "a^b",
            "a$b",
            "[a-z]{64}[a-z]",
        ] {
            assert!(Pattern::compile(pattern).is_none(), "{pattern:?}");
        }
    }

    fn expressions() -> impl Strategy<Value = String> {
        let atom = prop::sample::select(vec![
            "a", "b", "-", "/", r"\.", r"\-", "[a-c]", "[-b]", "[b-]", r"[\d.]", r"\d", "[A-Z]",
        ])
        .prop_map(str::to_string);
        let quantifier = prop::sample::select(vec!["", "", "*", "+", "?", "{2}", "{1,3}", "{2,}"]);
        let expression = atom.prop_recursive(3, 12, 3, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 1..4).prop_map(|items| items.concat()),
                prop::collection::vec(inner.clone(), 2..4)
                    .prop_map(|b| format!("({})", b.join("|"))),
                inner.clone().prop_map(|e| format!("(?:{e})")),
                (inner, quantifier.clone()).prop_map(|(e, q)| format!("({e}){q}")),
            ]
        });
        (any::<bool>(), expression, any::<bool>()).prop_map(|(start, e, end)| {
            format!(
                "{}{e}{}",
                if start { "^" } else { "" },
                if end { "$" } else { "" }
            )
        })
    }

    proptest! {
        /// Plain patterns match exactly the texts `jsonschema`'s regex engine matches.
        #[test]
        fn matches_as_the_regex_engine_does(
            pattern in expressions(),
            texts in prop::collection::vec("[ab./1A-]{0,7}|é-a|a\\.b", 8),
        ) {
            let compiled = Pattern::compile(&pattern);
            prop_assert!(compiled.is_some(), "{} should compile", pattern);
            let schema = json!({"pattern": pattern});
            let Ok(regex) = jsonschema::options()
                .with_draft(jsonschema::Draft::Draft202012)
                .build(&schema)
            else {
                return Err(TestCaseError::fail(format!("{pattern} does not compile")));
            };
            for text in texts {
                let ours = compiled.as_ref().is_some_and(|c| c.is_match(&text));
                prop_assert_eq!(ours, regex.is_valid(&json!(text)), "{} on {:?}", pattern, text);
            }
        }
    }
}
