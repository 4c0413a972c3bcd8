//! `format: uri` as the apiserver checks it: govalidator's `IsRequestURI`, which is Go's
//! `url.ParseRequestURI` succeeding (Go 1.26, as the apiserver is built: strict about colons in
//! a host). Ported from Go's `net/url` (`parse` with `viaRequest`, `parseAuthority`,
//! `parseHost`, `unescape`): what it refuses, tollgate refuses. A fragment is not split off; it
//! is part of the path or the query, as Go reads a request URI.

/// Whether `text` parses as a request URI.
pub fn is_request_uri(text: &str) -> bool {
    if text.bytes().any(|b| b < b' ' || b == 0x7f) || text.is_empty() {
        return false;
    }
    if text == "*" {
        return true;
    }
    let Some((has_scheme, rest)) = scheme(text) else {
        return false;
    };
    let rest = match rest.strip_suffix('?') {
        Some(without) if rest.matches('?').count() == 1 => without,
        _ => rest.split_once('?').map_or(rest, |(path, _query)| path),
    };
    if !rest.starts_with('/') {
        // A rootless path after a scheme is opaque; without a scheme it is not a request URI.
        return has_scheme;
    }
    let mut path = rest;
    if has_scheme && let Some(after) = rest.strip_prefix("//") {
        let (authority, tail) = match after.find('/') {
            Some(i) => (&after[..i], &after[i..]),
            None => (after, ""),
        };
        if !valid_authority(authority) {
            return false;
        }
        path = tail;
    }
    unescape(path, Mode::Other)
}

/// `getScheme`: whether there is a scheme, and what follows it; `None` for a leading colon.
fn scheme(text: &str) -> Option<(bool, &str)> {
    for (i, c) in text.bytes().enumerate() {
        match c {
            b'a'..=b'z' | b'A'..=b'Z' => {}
            b'0'..=b'9' | b'+' | b'-' | b'.' if i > 0 => {}
            b':' if i == 0 => return None,
            b':' => return Some((true, &text[i + 1..])),
            _ => return Some((false, text)),
        }
    }
    Some((false, text))
}

fn valid_authority(authority: &str) -> bool {
    let (userinfo, host) = match authority.rfind('@') {
        Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
        None => (None, authority),
    };
    if !valid_host(host) {
        return false;
    }
    let Some(userinfo) = userinfo else {
        return true;
    };
    let allowed = |c: char| {
        c.is_ascii_alphanumeric()
            || matches!(
                c,
                '-' | '.'
                    | '_'
                    | ':'
                    | '~'
                    | '!'
                    | '$'
                    | '&'
                    | '\''
                    | '('
                    | ')'
                    | '*'
                    | '+'
                    | ','
                    | ';'
                    | '='
                    | '%'
                    | '@'
            )
    };
    // Go unescapes the user and the password apart; split at a `:`, the escapes are the same.
    userinfo.chars().all(allowed) && unescape(userinfo, Mode::Other)
}

fn valid_host(host: &str) -> bool {
    match host.rfind('[') {
        Some(i) if i > 0 => false,
        Some(_) => {
            let Some(close) = host.rfind(']') else {
                return false;
            };
            let colon_port = &host[close + 1..];
            if !valid_optional_port(colon_port) || !unescape(colon_port, Mode::Host) {
                return false;
            }
            let literal = &host[1..close];
            let address = match literal.find("%25") {
                Some(zone) => {
                    if !unescape(&literal[..zone], Mode::Host)
                        || !unescape(&literal[zone..], Mode::Zone)
                    {
                        return false;
                    }
                    &literal[..zone]
                }
                None => {
                    if !unescape(literal, Mode::Host) {
                        return false;
                    }
                    literal
                }
            };
            // `netip.ParseAddr`: an IPv6 address (an IPv4 one is not an IP-literal).
            matches!(
                address.parse::<std::net::IpAddr>(),
                Ok(std::net::IpAddr::V6(_))
            )
        }
        None => {
            // Strict colons (Go 1.26): the port starts at the first colon.
            if let Some(i) = host.find(':')
                && !valid_optional_port(&host[i..])
            {
                return false;
            }
            unescape(host, Mode::Host)
        }
    }
}

fn valid_optional_port(port: &str) -> bool {
    port.is_empty()
        || port
            .strip_prefix(':')
            .is_some_and(|digits| digits.bytes().all(|b| b.is_ascii_digit()))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// A path or userinfo: only the escapes are checked.
    Other,
    Host,
    Zone,
}

/// The bytes Go leaves unescaped in a host or zone (its encoding table).
fn host_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'!' | b'"'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b'-'
                | b'.'
                | b':'
                | b';'
                | b'<'
                | b'='
                | b'>'
                | b'['
                | b']'
                | b'_'
                | b'~'
        )
}

fn unhex(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        b'A'..=b'F' => b - b'A' + 10,
        _ => 0,
    }
}

/// Whether Go's `unescape` accepts `text` in `mode`.
fn unescape(text: &str, mode: Mode) -> bool {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let (Some(&high), Some(&low)) = (bytes.get(i + 1), bytes.get(i + 2)) else {
                    return false;
                };
                if !high.is_ascii_hexdigit() || !low.is_ascii_hexdigit() {
                    return false;
                }
                let escape = &text[i..i + 3];
                if mode == Mode::Host && unhex(high) < 8 && escape != "%25" {
                    return false;
                }
                if mode == Mode::Zone {
                    let value = (unhex(high) << 4) | unhex(low);
                    if escape != "%25" && value != b' ' && !host_byte(value) {
                        return false;
                    }
                }
                i += 3;
            }
            b if matches!(mode, Mode::Host | Mode::Zone) && b < 0x80 && !host_byte(b) => {
                return false;
            }
            _ => i += 1,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_uris_parse_as_go_parses_them() {
        for good in [
            "https://example.com/x?y=1#f",
            "/relative/path",
            "mailto:a@b.c",
            "http://[::1]:80/",
            "*",
            "http://user:pass@host:8080/p",
            "http://user:pa:ss@host/",
            "https://example.com",
            "/path#fragment",
            "urn:isbn:0451450523",
            "http://example.com/a%20b",
        ] {
            assert!(is_request_uri(good), "{good}");
        }
        for bad in [
            "",
            "relative/path",
            "http://exa mple.com",
            "http://example.com/%zz",
            "#fragment",
            ":no-scheme",
            "http://[127.0.0.1]/",
            "http://a:1:2/",
            "http://host:port/",
            "http://ex%41mple.com/",
            "http://a\u{7f}b",
            "http://user:p:%zz@host/",
        ] {
            assert!(!is_request_uri(bad), "{bad}");
        }
    }
}
