//! Sections of BENCHMARKS.md that one benchmark owns (the audit's) beside the
//! load suite's tables: each between `<!-- section: NAME -->` and `<!-- /section -->`, replaced
//! by its own benchmark and kept when another rewrites the file.

// Each benchmark binary uses one half of this module.
#![allow(dead_code)]

use std::path::Path;

fn start(name: &str) -> String {
    format!("<!-- section: {name} -->")
}

const END: &str = "<!-- /section -->";

/// Every marked section of `text`, in order, as they stand.
pub fn sections(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("<!-- section: ") {
        let Some(end) = rest[at..].find(END) else {
            break;
        };
        out.push_str(&rest[at..at + end + END.len()]);
        out.push_str("\n\n");
        rest = &rest[at + end + END.len()..];
    }
    out
}

/// Writes `body` as section `name` of the file at `path`, replacing the section if it is there
/// and appending it if not.
pub fn replace(path: &Path, name: &str, body: &str) -> std::io::Result<()> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let section = format!("{}\n{}\n{END}", start(name), body.trim_end());
    let updated = match text.find(&start(name)) {
        Some(at) => {
            let end = text[at..]
                .find(END)
                .map_or(text.len(), |e| at + e + END.len());
            format!("{}{section}{}", &text[..at], &text[end..])
        }
        None => format!("{}\n\n{section}\n", text.trim_end()),
    };
    std::fs::write(path, updated)
}

/// Now, as the sections' headers date their figures (`2026-12-07 16:00 UTC`).
pub fn utc_now() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}
