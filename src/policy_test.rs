//! `tollgate test`: runs every PolicyTest suite found, prints one line per case and a summary,
//! and optionally writes JUnit XML for CI. Exit code 0 only when every case passed.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use tollgate_engine::suite::{self, CaseResult, SuiteError};

/// What a run found, for the exit code and the JUnit report.
pub struct Report {
    pub suites: Vec<SuiteReport>,
}

pub struct SuiteReport {
    pub file: PathBuf,
    pub name: String,
    pub results: Vec<CaseResult>,
}

impl Report {
    pub fn passed(&self) -> usize {
        self.cases().filter(|r| r.passed()).count()
    }

    pub fn failed(&self) -> usize {
        self.cases().filter(|r| !r.passed()).count()
    }

    fn cases(&self) -> impl Iterator<Item = &CaseResult> {
        self.suites.iter().flat_map(|s| s.results.iter())
    }
}

/// Loads every suite under `roots` first (any unusable file stops the run before a case runs),
/// then runs them, printing as it goes.
pub fn run(roots: &[PathBuf], out: &mut dyn std::io::Write) -> Result<Report, SuiteError> {
    let files = suite::discover(roots)?;
    if files.is_empty() {
        return Err(SuiteError {
            file: roots.first().cloned().unwrap_or_default(),
            line: 0,
            message: "no PolicyTest files found".into(),
        });
    }
    let mut loaded = Vec::new();
    for file in &files {
        loaded.extend(suite::load(file)?);
    }
    let mut suites = Vec::new();
    for s in loaded {
        let results = s.run();
        for r in &results {
            let verdict = if r.passed() { "PASS" } else { "FAIL" };
            let _ = writeln!(
                out,
                "{verdict}  {}:{}  {} / {}",
                s.file.display(),
                r.line,
                s.name,
                r.name
            );
            for failure in &r.failures {
                let _ = writeln!(out, "        {failure}");
            }
        }
        suites.push(SuiteReport {
            file: s.file,
            name: s.name,
            results,
        });
    }
    let report = Report { suites };
    let _ = writeln!(
        out,
        "{} passed, {} failed",
        report.passed(),
        report.failed()
    );
    Ok(report)
}

/// JUnit XML: one `testsuite` per PolicyTest, one `testcase` per case, failures with their reasons.
pub fn junit(report: &Report) -> String {
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        xml,
        "<testsuites name=\"tollgate\" tests=\"{}\" failures=\"{}\">",
        report.passed() + report.failed(),
        report.failed()
    );
    for s in &report.suites {
        let failures = s.results.iter().filter(|r| !r.passed()).count();
        let _ = writeln!(
            xml,
            "  <testsuite name=\"{}\" file=\"{}\" tests=\"{}\" failures=\"{failures}\">",
            escape(&s.name),
            escape(&s.file.display().to_string()),
            s.results.len()
        );
        for r in &s.results {
            let _ = write!(
                xml,
                "    <testcase name=\"{}\" classname=\"{}\" file=\"{}\" line=\"{}\"",
                escape(&r.name),
                escape(&s.name),
                escape(&s.file.display().to_string()),
                r.line
            );
            if r.passed() {
                xml.push_str("/>\n");
            } else {
                let text = r.failures.join("\n");
                let _ = writeln!(
                    xml,
                    ">\n      <failure message=\"{}\">{}</failure>\n    </testcase>",
                    escape(r.failures.first().map(String::as_str).unwrap_or_default()),
                    escape(&text)
                );
            }
        }
        xml.push_str("  </testsuite>\n");
    }
    xml.push_str("</testsuites>\n");
    xml
}

fn escape(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '&' => "&amp;".to_string(),
            '<' => "&lt;".to_string(),
            '>' => "&gt;".to_string(),
            '"' => "&quot;".to_string(),
            '\'' => "&apos;".to_string(),
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\t' | '\r') => {
                format!("&#{};", c as u32)
            }
            c => c.to_string(),
        })
        .collect()
}

pub fn write_junit(path: &Path, report: &Report) -> std::io::Result<()> {
    std::fs::write(path, junit(report))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn junit_escapes_and_counts() {
        let report = Report {
            suites: vec![SuiteReport {
                file: PathBuf::from("t.yaml"),
                name: "s<1>".into(),
                results: vec![
                    CaseResult {
                        name: "ok".into(),
                        line: 3,
                        failures: vec![],
                    },
                    CaseResult {
                        name: "bad & \"x\"".into(),
                        line: 9,
                        failures: vec!["expected allowed: true".into()],
                    },
                ],
            }],
        };
        let xml = junit(&report);
        assert!(
            xml.contains("<testsuites name=\"tollgate\" tests=\"2\" failures=\"1\">"),
            "{xml}"
        );
        assert!(xml.contains("name=\"s&lt;1&gt;\""));
        assert!(xml.contains("<testcase name=\"bad &amp; &quot;x&quot;\""));
        assert!(xml.contains("<failure message=\"expected allowed: true\">"));
    }
}
