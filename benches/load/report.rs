//! The suite's results as Markdown tables (printed as they come, then written to BENCHMARKS.md),
//! with the machine, date and commit they were measured on.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

pub struct Table {
    title: String,
    note: String,
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(title: &str, note: &str, header: &[&str]) -> Self {
        Self {
            title: title.to_string(),
            note: note.to_string(),
            header: header.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        println!("  {}", cells.join(" | "));
        self.rows.push(cells);
    }

    fn markdown(&self) -> String {
        let mut out = format!("## {}\n\n", self.title);
        if !self.note.is_empty() {
            let _ = writeln!(out, "{}\n", self.note);
        }
        let _ = writeln!(out, "| {} |", self.header.join(" | "));
        let _ = writeln!(
            out,
            "|{}|",
            self.header
                .iter()
                .map(|_| "---")
                .collect::<Vec<_>>()
                .join("|")
        );
        for row in &self.rows {
            let _ = writeln!(out, "| {} |", row.join(" | "));
        }
        out
    }
}

/// One target of the performance issue, as measured in this run.
pub struct Target {
    pub name: String,
    pub measured: String,
    pub met: bool,
}

#[derive(Default)]
pub struct Report {
    tables: Vec<Table>,
    targets: Vec<Target>,
}

impl Report {
    pub fn table(&mut self, table: Table) {
        self.tables.push(table);
    }

    pub fn target(&mut self, name: &str, measured: String, met: bool) {
        println!(
            "target: {name}: {measured} {}",
            if met { "(met)" } else { "(MISSED)" }
        );
        self.targets.push(Target {
            name: name.to_string(),
            measured,
            met,
        });
    }

    pub fn write(&self, path: &Path, build: &str, settings: &str) -> anyhow::Result<()> {
        let mut out = String::from("# tollgate benchmarks\n\n");
        let _ = writeln!(
            out,
            "Written by `cargo bench --bench load` (see README, \"Benchmarks\"). Figures drift on a \
             shared machine: compare tollgate with the floor server measured in the same run, not \
             absolute numbers across runs.\n"
        );
        let _ = writeln!(out, "- machine: {}", machine());
        let _ = writeln!(
            out,
            "- date: {}",
            command_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"])
        );
        let _ = writeln!(out, "- commit: {}", commit());
        let _ = writeln!(out, "- build: {build}");
        let _ = writeln!(out, "- settings: {settings}\n");
        let _ = writeln!(
            out,
            "## Targets\n\n| target | measured | met |\n|---|---|---|"
        );
        for t in &self.targets {
            let _ = writeln!(
                out,
                "| {} | {} | {} |",
                t.name,
                t.measured,
                if t.met { "yes" } else { "**no**" }
            );
        }
        out.push('\n');
        for table in &self.tables {
            out.push_str(&table.markdown());
            out.push('\n');
        }
        // The other benchmarks' sections stay as their own runs left them.
        out.push_str(&super::sections::sections(
            &std::fs::read_to_string(path).unwrap_or_default(),
        ));
        std::fs::write(path, out.trim_end().to_string() + "\n")?;
        Ok(())
    }
}

fn command_output(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, model)| model.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!(
        "{cores} cores, {cpu}, Linux {}",
        command_output("uname", &["-r"])
    )
}

fn commit() -> String {
    let dir = env!("CARGO_MANIFEST_DIR");
    let hash = command_output("git", &["-C", dir, "rev-parse", "--short", "HEAD"]);
    let dirty = !command_output(
        "git",
        &["-C", dir, "status", "--porcelain", "--untracked-files=no"],
    )
    .is_empty();
    if dirty {
        format!("{hash} (with uncommitted changes)")
    } else {
        hash
    }
}

pub fn ratio(value: f64, floor: f64) -> String {
    format!("{:.2}×", value / floor.max(1e-9))
}
