//! The string formats the apiserver checks in CRD schemas (k8s.io/apiextensions-apiserver
//! `supportedVersionedFormats`, checked by kube-openapi's `strfmt` registry), each with the
//! apiserver's own rule. `dialect` renames a known format to `k8s-<name>` so that only these
//! checks run; jsonschema's own (RFC) formats never see a policy's value.

mod mail;
mod request_uri;

use std::net::Ipv6Addr;
use std::sync::LazyLock;

use jsonschema::ValidationOptions;
use regex::Regex;

type Check = fn(&str) -> bool;

/// Every supported format under its go-openapi name (dashes removed), with its check.
const FORMATS: &[(&str, Check)] = &[
    ("bsonobjectid", is_bson_object_id),
    ("uri", request_uri::is_request_uri),
    ("email", mail::is_address),
    ("hostname", is_hostname),
    ("ipv4", is_ipv4),
    ("ipv6", is_ipv6),
    ("cidr", is_cidr),
    ("mac", is_mac),
    ("uuid", |s| matches(&UUID, s)),
    ("uuid3", |s| matches(&UUID3, s)),
    ("uuid4", |s| matches(&UUID4, s)),
    ("uuid5", |s| matches(&UUID5, s)),
    ("isbn", |s| is_isbn10(s) || is_isbn13(s)),
    ("isbn10", is_isbn10),
    ("isbn13", is_isbn13),
    ("creditcard", is_credit_card),
    ("ssn", |s| matches(&SSN, s)),
    ("hexcolor", |s| matches(&HEX_COLOR, s)),
    ("rgbcolor", is_rgb_color),
    ("byte", |s| matches(&BASE64, s)),
    ("password", |_| true),
    ("date", is_date),
    ("duration", is_duration),
    ("datetime", is_date_time),
    ("k8sshortname", is_short_name),
    ("k8slongname", is_long_name),
];

/// Prefix of the names `dialect` gives the formats checked here, apart from jsonschema's own.
const PREFIX: &str = "k8s-";

/// The name `dialect` gives a format the apiserver checks (`None` for one it drops).
pub fn checked_name(format: &str) -> Option<String> {
    let normalized = format.replace('-', "");
    FORMATS
        .iter()
        .any(|(name, _)| *name == normalized)
        .then(|| format!("{PREFIX}{normalized}"))
}

/// How a denial names a format: as CRD authors spell it (`date-time`, `k8s-short-name`), not
/// by the name it is checked under.
pub fn display_name(checked: &str) -> &str {
    match checked.strip_prefix(PREFIX) {
        Some("datetime") => "date-time",
        Some("k8sshortname") => "k8s-short-name",
        Some("k8slongname") => "k8s-long-name",
        Some(name) => name,
        None => checked,
    }
}

/// `options` with every apiserver format registered under its `checked_name`.
pub fn register<'i, R, F: jsonschema::json::Json>(
    mut options: ValidationOptions<'i, R, F>,
) -> ValidationOptions<'i, R, F> {
    for (name, check) in FORMATS {
        options = options.with_format(format!("{PREFIX}{name}"), *check);
    }
    options
}

/// The formats whose whole check is one regular expression (Go's, the same RE2 syntax as CEL's
/// `matches()`), so that in-tree policies can check them with the very same pattern.
const PATTERN_FORMATS: &[(&str, &str)] = &[
    ("uuid", UUID_PATTERN),
    ("uuid3", UUID3_PATTERN),
    ("uuid4", UUID4_PATTERN),
    ("uuid5", UUID5_PATTERN),
    ("ssn", SSN_PATTERN),
    ("hexcolor", HEX_COLOR_PATTERN),
    ("byte", BASE64_PATTERN),
    ("bsonobjectid", BSON_OBJECT_ID_PATTERN),
];
const UUID_PATTERN: &str =
    r"(?i)^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$";
const UUID3_PATTERN: &str =
    r"(?i)^[0-9a-f]{8}-?[0-9a-f]{4}-?3[0-9a-f]{3}-?[0-9a-f]{4}-?[0-9a-f]{12}$";
const UUID4_PATTERN: &str =
    r"(?i)^[0-9a-f]{8}-?[0-9a-f]{4}-?4[0-9a-f]{3}-?[89ab][0-9a-f]{3}-?[0-9a-f]{12}$";
const UUID5_PATTERN: &str =
    r"(?i)^[0-9a-f]{8}-?[0-9a-f]{4}-?5[0-9a-f]{3}-?[89ab][0-9a-f]{3}-?[0-9a-f]{12}$";
const SSN_PATTERN: &str = r"^\d{3}[- ]?\d{2}[- ]?\d{4}$";
const HEX_COLOR_PATTERN: &str = r"^#?([0-9a-fA-F]{3}|[0-9a-fA-F]{6})$";
const BASE64_PATTERN: &str =
    r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=|[A-Za-z0-9+/]{4})$";
const BSON_OBJECT_ID_PATTERN: &str = r"^[0-9a-fA-F]{24}$";

/// How in-tree policies check the format `checked` (a `checked_name`): its regular expression,
/// `Some(None)` for one that checks nothing (`password`), `None` for one checked by code.
pub(crate) fn in_tree_pattern(checked: &str) -> Option<Option<&'static str>> {
    let name = checked.strip_prefix(PREFIX)?;
    if name == "password" {
        return Some(None);
    }
    PATTERN_FORMATS
        .iter()
        .find(|(format, _)| *format == name)
        .map(|(_, pattern)| Some(*pattern))
}

fn regex(pattern: &str) -> Regex {
    // Every pattern here is a literal of this file, covered by the tests below.
    Regex::new(pattern).unwrap_or_else(|e| unreachable!("format pattern {pattern:?}: {e}"))
}

fn matches(re: &LazyLock<Regex>, text: &str) -> bool {
    re.is_match(text)
}

static UUID: LazyLock<Regex> = LazyLock::new(|| regex(UUID_PATTERN));
static UUID3: LazyLock<Regex> = LazyLock::new(|| regex(UUID3_PATTERN));
static UUID4: LazyLock<Regex> = LazyLock::new(|| regex(UUID4_PATTERN));
static UUID5: LazyLock<Regex> = LazyLock::new(|| regex(UUID5_PATTERN));
static HOSTNAME: LazyLock<Regex> = LazyLock::new(|| {
    regex(
        r"^([a-zA-Z0-9\p{S}\p{L}]((-?[a-zA-Z0-9\p{S}\p{L}]{0,62})?)|([a-zA-Z0-9\p{S}\p{L}](([a-zA-Z0-9-\p{S}\p{L}]{0,61}[a-zA-Z0-9\p{S}\p{L}])?)(\.)){1,}([a-zA-Z\p{L}]){2,63})$",
    )
});
static SSN: LazyLock<Regex> = LazyLock::new(|| regex(SSN_PATTERN));
static HEX_COLOR: LazyLock<Regex> = LazyLock::new(|| regex(HEX_COLOR_PATTERN));
static RGB_COLOR: LazyLock<Regex> = LazyLock::new(|| {
    regex(
        r"^rgb\(\s*(0|[1-9]\d?|1\d\d?|2[0-4]\d|25[0-5])\s*,\s*(0|[1-9]\d?|1\d\d?|2[0-4]\d|25[0-5])\s*,\s*(0|[1-9]\d?|1\d\d?|2[0-4]\d|25[0-5])\s*\)$",
    )
});
static BASE64: LazyLock<Regex> = LazyLock::new(|| regex(BASE64_PATTERN));
static DATE: LazyLock<Regex> = LazyLock::new(|| regex(r"^\d{4}-\d{2}-\d{2}$"));
static TIME_OF_DAY: LazyLock<Regex> = LazyLock::new(|| {
    regex(r"^([0-9]{2}):([0-9]{2}):([0-9]{2})(.[0-9]+)?(z|([+-][0-9]{2}:[0-9]{2}))$")
});
static SCALA_DURATION: LazyLock<Regex> = LazyLock::new(|| regex(r"(\d+)\s*([A-Za-zµ]+)"));
static SHORT_NAME: LazyLock<Regex> = LazyLock::new(|| regex(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"));
static LONG_NAME: LazyLock<Regex> =
    LazyLock::new(|| regex(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"));
static BSON_OBJECT_ID: LazyLock<Regex> = LazyLock::new(|| regex(BSON_OBJECT_ID_PATTERN));
fn is_bson_object_id(text: &str) -> bool {
    BSON_OBJECT_ID.is_match(text)
}

fn is_hostname(text: &str) -> bool {
    HOSTNAME.is_match(text) && text.len() <= 255 && text.split('.').all(|label| label.len() <= 63)
}

/// `netutils.ParseIPSloppy`: Go's `net.ParseIP`, with leading zeros allowed in IPv4 parts.
fn parses_as_ip(text: &str) -> bool {
    if text.contains(':') {
        return text.parse::<Ipv6Addr>().is_ok();
    }
    let parts: Vec<&str> = text.split('.').collect();
    parts.len() == 4
        && parts.iter().all(|part| {
            !part.is_empty()
                && part.len() <= 3
                && part.chars().all(|c| c.is_ascii_digit())
                && part.parse::<u16>().is_ok_and(|n| n <= 255)
        })
}

fn is_ipv4(text: &str) -> bool {
    parses_as_ip(text) && text.contains('.')
}

fn is_ipv6(text: &str) -> bool {
    parses_as_ip(text) && text.contains(':')
}

fn is_cidr(text: &str) -> bool {
    let Some((address, prefix)) = text.split_once('/') else {
        return false;
    };
    let bits = if address.contains(':') { 128 } else { 32 };
    parses_as_ip(address)
        && !prefix.is_empty()
        && prefix.len() <= 3
        && prefix.chars().all(|c| c.is_ascii_digit())
        && prefix.parse::<u16>().is_ok_and(|n| n <= bits)
}

/// Go's `net.ParseMAC`: 6, 8 or 20 octets as `aa:bb:..`, `aa-bb-..` or `aabb.ccdd...`.
fn is_mac(text: &str) -> bool {
    let hex = |group: &str, len: usize| {
        group.len() == len && group.chars().all(|c| c.is_ascii_hexdigit())
    };
    for separator in [':', '-'] {
        if text.contains(separator) {
            let groups: Vec<&str> = text.split(separator).collect();
            return matches!(groups.len(), 6 | 8 | 20) && groups.iter().all(|g| hex(g, 2));
        }
    }
    let groups: Vec<&str> = text.split('.').collect();
    matches!(groups.len(), 3 | 4 | 10) && groups.iter().all(|g| hex(g, 4))
}

fn isbn_digits(text: &str) -> Vec<char> {
    text.chars().filter(|c| !matches!(c, ' ' | '-')).collect()
}

fn is_isbn10(text: &str) -> bool {
    let digits = isbn_digits(text);
    if digits.len() != 10 {
        return false;
    }
    let mut sum = 0;
    for (i, c) in digits.iter().enumerate() {
        let value = match (i, c) {
            (9, 'X') => 10,
            (_, c) => match c.to_digit(10) {
                Some(d) => d,
                None => return false,
            },
        };
        sum += (i as u32 + 1) * value;
    }
    sum % 11 == 0
}

fn is_isbn13(text: &str) -> bool {
    let digits = isbn_digits(text);
    if digits.len() != 13 {
        return false;
    }
    let mut sum = 0;
    for (i, c) in digits.iter().enumerate() {
        let Some(d) = c.to_digit(10) else {
            return false;
        };
        sum += if i % 2 == 0 { d } else { 3 * d };
    }
    sum % 10 == 0
}

/// govalidator's `IsCreditCard`: the known issuers' number shapes, then the Luhn checksum.
fn is_credit_card(text: &str) -> bool {
    static CARD: LazyLock<Regex> = LazyLock::new(|| {
        regex(
            r"^(?:4[0-9]{12}(?:[0-9]{3})?|5[1-5][0-9]{14}|(222[1-9]|22[3-9][0-9]|2[3-6][0-9]{2}|27[01][0-9]|2720)[0-9]{12}|6(?:011|5[0-9][0-9])[0-9]{12}|3[47][0-9]{13}|3(?:0[0-5]|[68][0-9])[0-9]{11}|(?:2131|1800|35\d{3})\d{11}|6[27][0-9]{14})$",
        )
    });
    let digits: String = text.chars().filter(char::is_ascii_digit).collect();
    if !CARD.is_match(&digits) {
        return false;
    }
    let mut sum = 0;
    for (i, c) in digits.chars().rev().enumerate() {
        let mut d = c.to_digit(10).unwrap_or_default();
        if i % 2 == 1 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    sum % 10 == 0
}

fn is_rgb_color(text: &str) -> bool {
    RGB_COLOR.is_match(text)
}

/// Go's `time.Parse("2006-01-02", ..)`: four-digit year, two-digit month and day, a real date.
fn is_date(text: &str) -> bool {
    DATE.is_match(text) && chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").is_ok()
}

/// strfmt's `IsDateTime`, literally: the text lower-cased and split at `t`, a date before the
/// first `t` and a time of day after it.
fn is_date_time(text: &str) -> bool {
    if text.len() < 4 {
        return false;
    }
    let lower = text.to_lowercase();
    let mut parts = lower.split('t');
    let (Some(date), Some(time)) = (parts.next(), parts.next()) else {
        return false;
    };
    if !is_date(date) {
        return false;
    }
    let Some(found) = TIME_OF_DAY.captures(time) else {
        return false;
    };
    let at = |i: usize| found.get(i).map_or("", |m| m.as_str());
    at(1) <= "23" && at(2) <= "59" && at(3) <= "59"
}

/// strfmt's `ParseDuration`: Go's duration syntax, else any `<digits> <unit>` pair it finds
/// with a Scala-style unit (`5 days`, `3hr`).
fn is_duration(text: &str) -> bool {
    if crate::duration::go_duration_seconds(text).is_some() {
        return true;
    }
    const UNITS: &[&[&str]] = &[
        &["ns", "nano"],
        &["us", "µs", "micro"],
        &["ms", "milli"],
        &["s", "sec"],
        &["m", "min"],
        &["h", "hr", "hour"],
        &["d", "day"],
        &["w", "wk", "week"],
    ];
    SCALA_DURATION.captures_iter(text).any(|found| {
        let factor_fits = found
            .get(1)
            .is_some_and(|d| d.as_str().parse::<i64>().is_ok());
        let unit = found
            .get(2)
            .map_or(String::new(), |u| u.as_str().trim().to_lowercase());
        factor_fits
            && UNITS.iter().any(|variants| {
                variants.iter().enumerate().any(|(i, variant)| {
                    (i == variants.len() - 1 && unit.starts_with(variant))
                        || variant.eq_ignore_ascii_case(&unit)
                })
            })
    })
}

fn is_short_name(text: &str) -> bool {
    text.len() <= 63 && SHORT_NAME.is_match(text)
}

fn is_long_name(text: &str) -> bool {
    text.len() <= 253 && LONG_NAME.is_match(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(format: &str) -> Check {
        FORMATS
            .iter()
            .find(|(name, _)| *name == format)
            .map(|(_, check)| *check)
            .unwrap_or(|_| panic!("no such format"))
    }

    #[test]
    fn every_pattern_compiles() {
        for re in [
            &UUID,
            &UUID3,
            &UUID4,
            &UUID5,
            &HOSTNAME,
            &SSN,
            &HEX_COLOR,
            &RGB_COLOR,
            &BASE64,
            &DATE,
            &TIME_OF_DAY,
            &SCALA_DURATION,
            &SHORT_NAME,
            &LONG_NAME,
            &BSON_OBJECT_ID,
        ] {
            LazyLock::force(re);
        }
        assert!(!is_credit_card("0"));
    }

    #[test]
    fn denials_name_formats_as_authors_spell_them() {
        for (written, shown) in [
            ("date-time", "date-time"),
            ("datetime", "date-time"),
            ("uuid", "uuid"),
            ("k8s-short-name", "k8s-short-name"),
        ] {
            let checked = checked_name(written).unwrap_or_default();
            assert_eq!(display_name(&checked), shown, "{written}");
        }
    }

    #[test]
    fn names_normalise_like_go_openapi() {
        assert_eq!(checked_name("date-time").as_deref(), Some("k8s-datetime"));
        assert_eq!(checked_name("datetime").as_deref(), Some("k8s-datetime"));
        assert_eq!(
            checked_name("k8s-short-name").as_deref(),
            Some("k8s-k8sshortname")
        );
        assert_eq!(checked_name("iso8601"), None);
        assert_eq!(checked_name("int32"), None);
    }

    #[test]
    fn checks_as_the_apiserver_does() {
        let cases: &[(&str, &[&str], &[&str])] = &[
            (
                "uuid",
                &[
                    "123e4567-e89b-12d3-a456-426614174000",
                    "123E4567E89B12D3A456426614174000",
                ],
                &[
                    "123e4567-e89b-12d3-a456",
                    "g23e4567-e89b-12d3-a456-426614174000",
                ],
            ),
            (
                "ipv4",
                &["10.0.0.1", "010.0.0.1", "::ffff:1.2.3.4"],
                &["10.0.0", "256.0.0.1", "::1"],
            ),
            (
                "ipv6",
                &["::1", "fe80::1", "::ffff:1.2.3.4"],
                &["10.0.0.1", "fe80::1%eth0"],
            ),
            (
                "cidr",
                &["10.0.0.0/8", "::/0"],
                &["10.0.0.0/33", "10.0.0.0", "10.0.0.0/"],
            ),
            (
                "mac",
                &["00:00:5e:00:53:01", "00-00-5e-00-53-01", "0000.5e00.5301"],
                &["00:00:5e"],
            ),
            (
                "byte",
                &["aGVsbG8=", "aGVsbG8h"],
                &["", "aGVsbG8", "not base64!"],
            ),
            (
                "date",
                &["2024-02-29"],
                &["2023-02-29", "2024-2-3", "24-02-03"],
            ),
            (
                "datetime",
                &["2024-01-02T03:04:05Z", "2024-01-02t03:04:05.123+01:00"],
                &["2024-01-02", "2024-01-02T24:00:00Z", "2024-01-02T03:04:05"],
            ),
            (
                "duration",
                &["1h30m", "0", "-5s", "5 days", "3hr"],
                &["", "1x", "fast"],
            ),
            (
                "hostname",
                &["example.com", "localhost"],
                &["-bad.example", "a..b"],
            ),
            ("k8sshortname", &["my-name"], &["My-name", "a.b", "-a"]),
            ("k8slongname", &["a.b-c.d"], &["a..b", "A.b"]),
        ];
        for (format, good, bad) in cases {
            let check = check(format);
            for text in *good {
                assert!(check(text), "{format}: {text:?} should pass");
            }
            for text in *bad {
                assert!(!check(text), "{format}: {text:?} should fail");
            }
        }
    }
}
