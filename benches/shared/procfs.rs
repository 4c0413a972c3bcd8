//! What the benchmarks read about a process from /proc: CPU time and memory.

// Each benchmark binary uses part of this module.
#![allow(dead_code)]

use std::collections::BTreeMap;

use anyhow::Context;

/// The CPU time a process has used so far, as two readings: /proc's user + system ticks (10 ms
/// each) and, where the kernel keeps it (`/proc/PID/task/TID/sched`), each thread's run time to
/// the nanosecond. Over a phase of a few thousand small requests a tick is a step of several
/// percent — enough to flip a ratio's verdict between runs — so the exact sum is used whenever
/// every thread of the first reading is still there at the second.
pub struct CpuReading {
    ticks_seconds: f64,
    threads: Option<BTreeMap<u32, f64>>,
}

impl CpuReading {
    pub fn of(pid: u32) -> anyhow::Result<Self> {
        Ok(Self {
            ticks_seconds: cpu_seconds_from_ticks(pid)?,
            threads: thread_run_times(pid),
        })
    }

    /// CPU seconds used from `before` to this reading.
    pub fn seconds_since(&self, before: &Self) -> f64 {
        if let (Some(now), Some(then)) = (&self.threads, &before.threads)
            && then.keys().all(|thread| now.contains_key(thread))
        {
            // Threads started in between count from zero.
            return now
                .iter()
                .map(|(thread, seconds)| seconds - then.get(thread).copied().unwrap_or(0.0))
                .sum();
        }
        self.ticks_seconds - before.ticks_seconds
    }
}

/// Each thread's `se.sum_exec_runtime` (milliseconds with six decimals), in seconds.
fn thread_run_times(pid: u32) -> Option<BTreeMap<u32, f64>> {
    let mut threads = BTreeMap::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let entry = entry.ok()?;
        let Ok(thread) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let sched = std::fs::read_to_string(entry.path().join("sched")).ok()?;
        let millis: f64 = sched
            .lines()
            .find_map(|line| line.strip_prefix("se.sum_exec_runtime"))?
            .trim_start_matches([' ', ':'])
            .trim()
            .parse()
            .ok()?;
        threads.insert(thread, millis / 1000.0);
    }
    Some(threads)
}

/// User + system CPU seconds from /proc, in clock ticks.
fn cpu_seconds_from_ticks(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) may contain spaces; the fields after it are plain numbers.
    let after_name = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("malformed /proc/PID/stat")?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    let ticks = |i: usize| -> anyhow::Result<f64> {
        Ok(fields
            .get(i)
            .context("short /proc/PID/stat")?
            .parse::<f64>()?)
    };
    Ok((ticks(11)? + ticks(12)?) / clock_ticks_per_second())
}

fn clock_ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// (current RSS, peak RSS) in MiB.
pub fn rss_mib(pid: u32) -> anyhow::Result<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib = |key: &str| -> anyhow::Result<f64> {
        let line = status
            .lines()
            .find(|l| l.starts_with(key))
            .with_context(|| format!("{key} missing from /proc/PID/status"))?;
        Ok(line
            .split_whitespace()
            .nth(1)
            .context("malformed status line")?
            .parse::<f64>()?)
    };
    Ok((kib("VmRSS:")? / 1024.0, kib("VmHWM:")? / 1024.0))
}
