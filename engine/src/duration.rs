//! Go's `time.Duration` text form, which Kubernetes uses everywhere (`?timeout=10s`, CEL
//! `duration` strings): `10s`, `1m30s`, `1.5s`, `-250ms`, `100us`, `0`.

/// The duration in seconds (negative when it starts with `-`), or `None` if it is not Go syntax.
pub fn go_duration_seconds(text: &str) -> Option<f64> {
    let (negative, mut rest) = match text.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    if rest == "0" {
        return Some(0.0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut seconds = 0f64;
    while !rest.is_empty() {
        let number_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let number: f64 = rest.get(..number_len)?.parse().ok()?;
        rest = rest.get(number_len..)?;
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match rest.get(..unit_len)? {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" | "μs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        seconds += number * scale;
        rest = rest.get(unit_len..)?;
    }
    Some(if negative { -seconds } else { seconds })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_durations() {
        assert_eq!(go_duration_seconds("10s"), Some(10.0));
        assert_eq!(go_duration_seconds("1m30s"), Some(90.0));
        assert_eq!(go_duration_seconds("-1.5s"), Some(-1.5));
        assert_eq!(go_duration_seconds("250ms"), Some(0.25));
        assert_eq!(go_duration_seconds("0"), Some(0.0));
        for bad in ["", "10", "s", "10x", "1..2s", "-"] {
            assert_eq!(go_duration_seconds(bad), None, "{bad}");
        }
    }
}
