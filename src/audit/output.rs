//! The audit's findings as a table for people or as JSON lines for tools, written as they come.

use std::io::Write;

use serde::Serialize;

use super::{Finding, Outcome};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One line per finding: namespace, name, kind, policy, result and the violated fields.
    Table,
    /// One JSON object per line per finding, with every violation's path and message.
    Json,
}

pub struct Writer<'w, W: Write> {
    format: Format,
    out: &'w mut W,
    header_written: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Record<'f> {
    namespace: Option<&'f str>,
    name: &'f str,
    kind: &'f str,
    api_version: &'f str,
    policy: &'f str,
    #[serde(skip_serializing_if = "Option::is_none")]
    severity: Option<&'f str>,
    result: Outcome,
    violations: Vec<RecordViolation>,
}

#[derive(Serialize)]
struct RecordViolation {
    path: String,
    message: String,
}

const COLUMNS: [(&str, usize); 5] = [
    ("NAMESPACE", 16),
    ("NAME", 24),
    ("KIND", 16),
    ("POLICY", 20),
    ("RESULT", 6),
];

impl<'w, W: Write> Writer<'w, W> {
    pub fn new(format: Format, out: &'w mut W) -> Self {
        Self {
            format,
            out,
            header_written: false,
        }
    }

    pub fn write(&mut self, finding: &Finding) -> std::io::Result<()> {
        match self.format {
            Format::Json => {
                let record = Record {
                    namespace: finding.namespace.as_deref(),
                    name: &finding.name,
                    kind: &finding.kind,
                    api_version: &finding.api_version,
                    policy: &finding.policy,
                    severity: finding.severity,
                    result: finding.outcome,
                    violations: finding
                        .violations
                        .iter()
                        .map(|v| RecordViolation {
                            path: v.path.to_string(),
                            message: v.message.clone(),
                        })
                        .collect(),
                };
                serde_json::to_writer(&mut *self.out, &record)?;
                writeln!(self.out)
            }
            Format::Table => {
                if !self.header_written {
                    self.row(COLUMNS.map(|(title, _)| title), "FIELDS")?;
                    self.header_written = true;
                }
                let result = match finding.outcome {
                    Outcome::Fail => "fail",
                    Outcome::Warn => "warn",
                };
                let fields: Vec<String> = finding
                    .violations
                    .iter()
                    .map(|v| v.path.to_string())
                    .collect();
                self.row(
                    [
                        finding.namespace.as_deref().unwrap_or("-"),
                        &finding.name,
                        &finding.kind,
                        &finding.policy,
                        result,
                    ],
                    &fields.join(","),
                )
            }
        }
    }

    fn row(&mut self, cells: [&str; 5], last: &str) -> std::io::Result<()> {
        for ((_, width), cell) in COLUMNS.iter().zip(cells) {
            write!(self.out, "{cell:<width$} ")?;
        }
        writeln!(self.out, "{last}")
    }

    pub fn finish(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}
