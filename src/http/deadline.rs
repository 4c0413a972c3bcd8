//! The apiserver tells each webhook call how long it will wait (`?timeout=10s`, a Go duration);
//! answering after that is wasted work, so evaluation is bounded by it.

use std::time::Duration;

/// Time kept back for encoding and sending the answer.
const RESPONSE_MARGIN: Duration = Duration::from_millis(200);
const MIN_BUDGET: Duration = Duration::from_millis(50);

pub fn budget(query: Option<&str>, default: Duration, cap: Duration) -> Duration {
    let asked = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == "timeout")
        .and_then(|(_, value)| parse_go_duration(value));
    match asked {
        Some(asked) => asked
            .saturating_sub(RESPONSE_MARGIN)
            .max(MIN_BUDGET)
            .min(cap),
        None => default.min(cap),
    }
}

/// A non-negative Go duration (`10s`, `1m30s`, `250ms`), as the apiserver writes `?timeout=`.
pub fn parse_go_duration(text: &str) -> Option<Duration> {
    tollgate_engine::duration::go_duration_seconds(text.trim())
        .filter(|seconds| *seconds >= 0.0)
        .and_then(|seconds| Duration::try_from_secs_f64(seconds).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_durations() {
        assert_eq!(parse_go_duration("10s"), Some(Duration::from_secs(10)));
        assert_eq!(parse_go_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_go_duration("1.5s"), Some(Duration::from_millis(1500)));
        for bad in ["", "10", "s", "10x", "-1s", "1..2s"] {
            assert_eq!(parse_go_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn budget_follows_the_apiserver_within_the_cap() {
        let default = Duration::from_secs(9);
        let cap = Duration::from_secs(30);
        assert_eq!(
            budget(Some("timeout=10s"), default, cap),
            Duration::from_millis(9800)
        );
        assert_eq!(
            budget(Some("a=b&timeout=2s"), default, cap),
            Duration::from_millis(1800)
        );
        assert_eq!(budget(Some("timeout=1ms"), default, cap), MIN_BUDGET);
        assert_eq!(budget(Some("timeout=5m"), default, cap), cap);
        assert_eq!(budget(Some("timeout=junk"), default, cap), default);
        assert_eq!(budget(None, default, cap), default);
    }
}
