//! `format: email` as the apiserver checks it: kube-openapi's strfmt `IsEmail`, which is Go's
//! `net/mail.ParseAddress` succeeding — one address, bare (`a@b.c`) or with a display name
//! (`Name <a@b.c>`), a comment, or a single-member group (`team: a@b.c;`). Ported from Go's
//! `net/mail` (message.go, `addrParser`), byte for byte where Go reads bytes. One difference is
//! kept: RFC 2047 encoded words in a display name are taken as plain words (Go also refuses
//! those in a charset it cannot decode).

/// Whether `text` parses as exactly one mail address.
pub fn is_address(text: &str) -> bool {
    let mut parser = Parser { s: text.as_bytes() };
    let Ok(count) = parser.parse_address(true) else {
        return false;
    };
    parser.skip_cfws() && parser.s.is_empty() && count == 1
}

type Parsed<T> = Result<T, ()>;

struct Parser<'a> {
    s: &'a [u8],
}

/// The character at the start of `bytes` and its length; `Err` for invalid UTF-8 (possible
/// only after a comment was read byte by byte, as Go reads it).
fn next_char(bytes: &[u8]) -> Option<Parsed<(char, usize)>> {
    let first = *bytes.first()?;
    let len = match first {
        0..=0x7f => 1,
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf7 => 4,
        _ => return Some(Err(())),
    };
    let decoded = bytes
        .get(..len)
        .and_then(|b| std::str::from_utf8(b).ok())
        .and_then(|s| s.chars().next());
    Some(decoded.map(|c| (c, len)).ok_or(()))
}

fn is_vchar(c: char) -> bool {
    ('!'..='~').contains(&c) || !c.is_ascii()
}

fn is_wsp(c: char) -> bool {
    c == ' ' || c == '\t'
}

fn is_atext(c: char, dot: bool) -> bool {
    match c {
        '.' => dot,
        '(' | ')' | '<' | '>' | '[' | ']' | ':' | ';' | '@' | '\\' | ',' | '"' => false,
        _ => is_vchar(c),
    }
}

fn is_qtext(c: char) -> bool {
    c != '\\' && c != '"' && is_vchar(c)
}

fn is_dtext(c: char) -> bool {
    c != '[' && c != ']' && c != '\\' && is_vchar(c)
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.first().copied()
    }

    fn consume(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.s = &self.s[1..];
            true
        } else {
            false
        }
    }

    fn skip_space(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.s = &self.s[1..];
        }
    }

    /// The addresses parsed (a group may hold none or several).
    fn parse_address(&mut self, handle_group: bool) -> Parsed<usize> {
        self.skip_space();
        if self.s.is_empty() {
            return Err(());
        }
        if self.consume_addr_spec().is_ok() {
            self.skip_space();
            if self.peek() == Some(b'(') {
                self.consume_display_name_comment()?;
            }
            return Ok(1);
        }
        if self.peek() != Some(b'<') {
            self.consume_phrase()?;
        }
        self.skip_space();
        if handle_group && self.consume(b':') {
            return self.consume_group_list();
        }
        if !self.consume(b'<') {
            return Err(());
        }
        self.consume_addr_spec()?;
        if !self.consume(b'>') {
            return Err(());
        }
        Ok(1)
    }

    fn consume_group_list(&mut self) -> Parsed<usize> {
        self.skip_space();
        if self.consume(b';') {
            return if self.skip_cfws() { Ok(0) } else { Err(()) };
        }
        let mut count = 0;
        loop {
            self.skip_space();
            count += self.parse_address(false)?;
            if !self.skip_cfws() {
                return Err(());
            }
            if self.consume(b';') {
                if !self.skip_cfws() {
                    return Err(());
                }
                return Ok(count);
            }
            if !self.consume(b',') {
                return Err(());
            }
        }
    }

    /// `local@domain`; on failure nothing is consumed.
    fn consume_addr_spec(&mut self) -> Parsed<()> {
        let start = self.s;
        let parsed = self.addr_spec();
        if parsed.is_err() {
            self.s = start;
        }
        parsed
    }

    fn addr_spec(&mut self) -> Parsed<()> {
        self.skip_space();
        match self.peek() {
            None => return Err(()),
            Some(b'"') => {
                if self.consume_quoted_string()? == 0 {
                    return Err(());
                }
            }
            Some(_) => self.consume_atom(true, false)?,
        }
        if !self.consume(b'@') {
            return Err(());
        }
        self.skip_space();
        match self.peek() {
            None => Err(()),
            Some(b'[') => self.consume_domain_literal(),
            Some(_) => self.consume_atom(true, false),
        }
    }

    fn consume_phrase(&mut self) -> Parsed<()> {
        let mut words = 0;
        loop {
            if words > 0 && !self.skip_cfws() {
                return Err(());
            }
            self.skip_space();
            if self.s.is_empty() {
                return Ok(());
            }
            let word = if self.peek() == Some(b'"') {
                self.consume_quoted_string().map(|_| ())
            } else {
                self.consume_atom(true, true)
            };
            if word.is_err() {
                return if words == 0 { Err(()) } else { Ok(()) };
            }
            words += 1;
        }
    }

    /// The characters the quoted string holds.
    fn consume_quoted_string(&mut self) -> Parsed<usize> {
        let mut i = 1;
        let mut held = 0;
        let mut escaped = false;
        loop {
            let (c, size) = next_char(self.s.get(i..).unwrap_or_default()).ok_or(())??;
            if escaped {
                if !is_vchar(c) && !is_wsp(c) {
                    return Err(());
                }
                held += 1;
                escaped = false;
            } else if is_qtext(c) || is_wsp(c) {
                held += 1;
            } else if c == '"' {
                break;
            } else if c == '\\' {
                escaped = true;
            } else {
                return Err(());
            }
            i += size;
        }
        self.s = &self.s[i + 1..];
        Ok(held)
    }

    fn consume_atom(&mut self, dot: bool, permissive: bool) -> Parsed<()> {
        let mut i = 0;
        while let Some(next) = next_char(&self.s[i..]) {
            let (c, size) = next?;
            if !is_atext(c, dot) {
                break;
            }
            i += size;
        }
        if i == 0 {
            return Err(());
        }
        let atom = &self.s[..i];
        self.s = &self.s[i..];
        let dotted_badly =
            atom.starts_with(b".") || atom.ends_with(b".") || atom.windows(2).any(|w| w == b"..");
        if !permissive && dotted_badly {
            return Err(());
        }
        Ok(())
    }

    fn consume_domain_literal(&mut self) -> Parsed<()> {
        if !self.consume(b'[') {
            return Err(());
        }
        let text = self.s;
        let mut len = 0;
        loop {
            match self.peek() {
                None => return Err(()),
                Some(b']') => break,
                Some(_) => {}
            }
            let (c, size) = next_char(self.s).ok_or(())??;
            if !is_dtext(c) {
                return Err(());
            }
            len += size;
            self.s = &self.s[size..];
        }
        if !self.consume(b']') {
            return Err(());
        }
        let literal = std::str::from_utf8(&text[..len]).map_err(|_| ())?;
        literal
            .parse::<std::net::IpAddr>()
            .map(|_| ())
            .map_err(|_| ())
    }

    fn consume_display_name_comment(&mut self) -> Parsed<()> {
        if !self.consume(b'(') || !self.consume_comment() {
            return Err(());
        }
        Ok(())
    }

    fn skip_cfws(&mut self) -> bool {
        self.skip_space();
        while self.consume(b'(') {
            if !self.consume_comment() {
                return false;
            }
            self.skip_space();
        }
        true
    }

    /// A comment after its `(`, nested and with `\` escapes; whether it was closed.
    fn consume_comment(&mut self) -> bool {
        let mut depth = 1;
        while depth > 0 {
            let Some(c) = self.peek() else {
                break;
            };
            if c == b'\\' && self.s.len() > 1 {
                self.s = &self.s[1..];
            } else if c == b'(' {
                depth += 1;
            } else if c == b')' {
                depth -= 1;
            }
            self.s = &self.s[1..];
        }
        depth == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_as_go_parses_them() {
        for good in [
            "a@b.c",
            "user.name+tag@example.com",
            "Name <a@example.com>",
            "\"quoted name\"@example.com",
            "a@[127.0.0.1]",
            "a@[::1]",
            "a@b.c (comment)",
            "team: a@b.c;",
            "  a@b.c  ",
            "ü@example.com",
        ] {
            assert!(is_address(good), "{good}");
        }
        for bad in [
            "",
            "plain",
            "@example.com",
            "a@",
            "a b@example.com",
            "a@b@c",
            "a..b@c.d",
            ".a@c.d",
            "\"\"@c.d",
            "a@[300.1.1.1]",
            "a@b.c, d@e.f",
            "team: a@b.c, d@e.f;",
            "team: ;",
            "<a@b.c",
            "a@b.c (open",
        ] {
            assert!(!is_address(bad), "{bad}");
        }
    }
}
