//! The wire benchmark: `cargo bench --bench load` (add `-- --quick` for a short smoke run).
//!
//! Starts the release `tollgate serve` and a floor server (`floor.rs`: the same TLS + HTTP stack
//! answering fixed documents) on loopback, drives both with `driver.rs`, reads their CPU time
//! (each thread's run time, to the nanosecond) and memory from /proc, and writes every table plus the targets to BENCHMARKS.md. Floor and
//! tollgate are measured one after the other for each row, so drift on a shared machine hits
//! both alike.

#![allow(clippy::expect_used, clippy::unwrap_used)] // a broken benchmark setup should stop loudly

mod driver;
mod floor;
#[path = "../shared/procfs.rs"]
mod procfs;
mod report;
#[path = "../shared/sections.rs"]
mod sections;
mod servers;
mod workload;

use anyhow::Context;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use driver::{Call, Outcome, Protocol};
use report::{Report, Table, ratio};
use servers::ServerProcess;

/// The fixed rate and connection count of the CPU and latency rows (as in the figures).
const RATE: f64 = 4000.0;
const RATE_CONNECTIONS: usize = 16;
const THROTTLE_CONNECTIONS: [usize; 3] = [1, 16, 64];

struct Settings {
    phase: Duration,
    warmup: Duration,
    out: PathBuf,
    /// How both servers were built: `--build pgo` from `scripts/pgo.sh bench`.
    build: &'static str,
}

impl Settings {
    /// Phases that write no report of their own (`compare`, `train`, a round of a row).
    fn phases(phase: Duration, warmup: Duration) -> Self {
        Self {
            phase,
            warmup,
            out: PathBuf::new(),
            build: "",
        }
    }

    /// One of the `ROUNDS` alternating phases a row's figures are the median of.
    fn round(&self) -> Self {
        Self::phases(self.phase / ROUNDS as u32, self.warmup)
    }
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("floor") {
        return floor::main(&args[1..]);
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    if args.first().map(String::as_str) == Some("drive") {
        if args.iter().any(|a| a == "--idle") {
            // Before the runtime starts: its threads inherit the policy.
            tollgate::http::enter_idle_policy().map_err(|policy| {
                anyhow::anyhow!(
                    "cannot move the load driver to the idle scheduling policy: {policy}"
                )
            })?;
        }
        return tokio::runtime::Runtime::new()?.block_on(drive(&args[1..]));
    }
    if args.first().map(String::as_str) == Some("compare") {
        return tokio::runtime::Runtime::new()?.block_on(compare(&args[1..]));
    }
    if args.first().map(String::as_str) == Some("train") {
        return tokio::runtime::Runtime::new()?.block_on(train(&args[1..]));
    }
    let quick = args.iter().any(|a| a == "--quick");
    let settings = Settings {
        phase: Duration::from_millis(if quick { 500 } else { 4000 }),
        warmup: Duration::from_millis(if quick { 200 } else { 1000 }),
        out: args
            .iter()
            .position(|a| a == "--out")
            .and_then(|i| args.get(i + 1))
            .map_or_else(
                || Path::new(env!("CARGO_MANIFEST_DIR")).join("BENCHMARKS.md"),
                PathBuf::from,
            ),
        build: if args.windows(2).any(|pair| pair == ["--build", "pgo"]) {
            "profile-guided — tollgate and the floor built from one profile of `load train` (scripts/pgo.sh bench)"
        } else {
            "release profile (fat LTO), no profile"
        },
    };
    tokio::runtime::Runtime::new()?.block_on(suite(settings))
}

/// `drive ADDR CERT_DIR ENDPOINT SECONDS CLIENTS [h2] [--rate R] [--idle]`: load against a server
/// started by hand, for profiling it (`perf record -p PID`) while this runs; open throttle unless
/// a total rate in requests/s is given (the CPU rows of the suite run at a fixed rate).
/// `convert=N` sends ConversionReviews of N objects; `--idle`: the driver runs at the idle
/// scheduling policy.
async fn drive(args: &[String]) -> anyhow::Result<()> {
    let [addr, cert_dir, endpoint, seconds, clients, rest @ ..] = args else {
        anyhow::bail!(
            "usage: drive ADDR CERT_DIR validate|mutate|convert[=N] SECONDS CLIENTS [h2] [--rate R] [--idle]"
        );
    };
    let call = match endpoint.split_once('=') {
        Some(("convert", objects)) => workload::convert(objects.parse()?)?,
        _ => match endpoint.as_str() {
            "validate" => workload::validate()?,
            "mutate" => workload::mutate()?,
            "convert" => workload::convert(1)?,
            other => anyhow::bail!("unknown endpoint {other}"),
        },
    };
    let protocol = if rest.iter().any(|a| a == "h2") {
        Protocol::H2
    } else {
        Protocol::Http1
    };
    let target = driver::Target::new(addr.parse()?, &Path::new(cert_dir).join("ca.crt"))?;
    let senders = target.senders(protocol, clients.parse()?).await?;
    let duration = Duration::from_secs_f64(seconds.parse()?);
    let rate = rest
        .iter()
        .position(|a| a == "--rate")
        .and_then(|i| rest.get(i + 1))
        .map(|r| r.parse::<f64>())
        .transpose()?;
    let outcome = match rate {
        Some(rate) => driver::fixed_rate(senders, &call, rate, duration).await.0,
        None => driver::open_throttle(senders, &call, duration).await,
    };
    report_failure("server", None, &outcome);
    if let Some(reason) = &outcome.retries.first_reason {
        println!(
            "{} requests sent again on a new h2 connection; the first because: {reason}",
            outcome.retries.count
        );
    }
    println!(
        "{:.0} req/s, p50 {:.3} ms, p99 {:.3} ms, {} failed",
        outcome.per_second(),
        outcome.ms(0.5),
        outcome.ms(0.99),
        outcome.failed
    );
    Ok(())
}

/// `compare BINARY [ROUNDS] [h2]`: another build of tollgate (an earlier commit's
/// `target/release/tollgate`, copied aside) against this one and the floor: CPU µs per request
/// and p99 at the suite's fixed rate over HTTP/1.1 (or h2), the three servers up at once and
/// measured in `ROUNDS` (default 10) alternating phases of 2 s, CPU medians kept and latencies
/// merged — a before/after table from one run, as the same binary's figures swing by a fifth
/// between phases on a shared machine.
async fn compare(args: &[String]) -> anyhow::Result<()> {
    let [before, rest @ ..] = args else {
        anyhow::bail!("usage: compare BINARY [ROUNDS] [h2]");
    };
    let protocol = if rest.iter().any(|a| a == "h2") {
        Protocol::H2
    } else {
        Protocol::Http1
    };
    let rounds: usize = rest
        .iter()
        .find(|a| *a != "h2")
        .map(|r| r.parse())
        .transpose()?
        .unwrap_or(10);
    let scratch = tempfile::tempdir()?;
    let certs = scratch.path().join("certs");
    servers::certificates(&tollgate_binary(), &certs)?;
    let calls = [
        workload::validate()?,
        workload::mutate()?,
        workload::convert(1)?,
    ];
    let policies = workload::example_policies();
    let after = servers::tollgate(&tollgate_binary(), &policies, &certs, &calls[0]).await?;
    let before = servers::tollgate(Path::new(before), &policies, &certs, &calls[0]).await?;
    for call in &calls {
        after
            .target
            .wait_until_answering(call, Duration::from_secs(5))
            .await?;
    }
    let floor = floor_answering_as(&after, &calls.each_ref(), &certs, scratch.path()).await?;
    let phase = Settings::phases(Duration::from_secs(2), Duration::from_millis(500));
    println!(
        "| endpoint | floor µs/req | before µs/req | × floor | after µs/req | × floor | after/before \
         | p99 ms floor | before | × floor | after | × floor |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for call in &calls {
        let servers = [&floor, &before, &after];
        let mut cpu = [Vec::new(), Vec::new(), Vec::new()];
        let mut latency = [Outcome::new(), Outcome::new(), Outcome::new()];
        for _ in 0..rounds {
            for ((samples, merged), server) in cpu.iter_mut().zip(&mut latency).zip(servers) {
                let (us, outcome) = at_fixed_rate(server, call, protocol, RATE, &phase).await?;
                samples.push(us);
                merged.merge(outcome);
            }
        }
        let [floor_us, before_us, after_us] = cpu.map(|samples| median(&samples));
        let [floor_p99, before_p99, after_p99] = latency.map(|merged| merged.ms(0.99));
        println!(
            "| {} | {floor_us:.1} | {before_us:.1} | {} | {after_us:.1} | {} | {} \
             | {floor_p99:.3} | {before_p99:.3} | {} | {after_p99:.3} | {} |",
            endpoint(call),
            ratio(before_us, floor_us),
            ratio(after_us, floor_us),
            ratio(after_us, before_us),
            ratio(before_p99, floor_p99),
            ratio(after_p99, floor_p99),
        );
    }
    Ok(())
}

/// `train`: the traffic a profile-guided build learns from (`scripts/pgo.sh`). The floor and
/// tollgate both get the suite's requests, over HTTP/1.1 and h2, so both are built from
/// profiles of the same traffic and the suite's ratios compare like with like; tollgate also
/// gets what an apiserver sends besides (denials, updates, conversions of many objects).
/// Both servers are stopped with SIGTERM, so each writes its profile on the way out.
///
/// `train [BINARY]` trains that tollgate binary instead of the one built with this benchmark.
async fn train(args: &[String]) -> anyhow::Result<()> {
    let binary = args.first().map_or_else(tollgate_binary, PathBuf::from);
    let scratch = tempfile::tempdir()?;
    let certs = scratch.path().join("certs");
    servers::certificates(&binary, &certs)?;
    let calls = [
        workload::validate()?,
        workload::mutate()?,
        workload::convert(1)?,
    ];
    let tollgate =
        servers::tollgate(&binary, &workload::example_policies(), &certs, &calls[0]).await?;
    let floor = floor_answering_as(&tollgate, &calls.each_ref(), &certs, scratch.path()).await?;
    let phase = Settings::phases(Duration::from_secs(1), Duration::from_millis(200));
    // A profile of failing requests would lay the code out for the error paths.
    let answered = |outcome: Outcome, server: &ServerProcess, call: &Call| {
        anyhow::ensure!(
            outcome.failed == 0,
            "training: {} failed {} requests to {}",
            server.name,
            outcome.failed,
            endpoint(call)
        );
        Ok(())
    };
    for server in [&floor, &tollgate] {
        for call in &calls {
            for protocol in [Protocol::Http1, Protocol::H2] {
                let (_, outcome) = at_fixed_rate(server, call, protocol, RATE, &phase).await?;
                answered(outcome, server, call)?;
            }
        }
    }
    for call in [
        workload::deny()?,
        workload::update()?,
        workload::convert(100)?,
    ] {
        let (_, outcome) =
            at_fixed_rate(&tollgate, &call, Protocol::Http1, RATE / 10.0, &phase).await?;
        answered(outcome, &tollgate, &call)?;
    }
    println!("trained: tollgate and the floor, each endpoint over HTTP/1.1 and h2");
    Ok(())
}

/// A floor server answering each of `calls` with exactly what `tollgate` answers, so both send
/// the same bytes; the first call is its readiness probe.
async fn floor_answering_as(
    tollgate: &ServerProcess,
    calls: &[&Call],
    certs: &Path,
    scratch: &Path,
) -> anyhow::Result<ServerProcess> {
    let mut answers = Vec::new();
    for call in calls {
        let path = endpoint(call);
        let file = scratch.join(format!("answer{}.json", path.replace('/', "-")));
        std::fs::write(&file, tollgate.target.fetch(call).await?)?;
        answers.push((path, file));
    }
    let probe = calls.first().context("no calls to answer")?;
    servers::floor(certs, &answers, probe).await
}

fn tollgate_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_tollgate"))
}

async fn suite(settings: Settings) -> anyhow::Result<()> {
    let scratch = tempfile::tempdir()?;
    let certs = scratch.path().join("certs");
    servers::certificates(&tollgate_binary(), &certs)?;
    let validate = workload::validate()?;
    let mutate = workload::mutate()?;
    let convert = workload::convert(1)?;
    let mut report = Report::default();

    let tollgate = servers::tollgate(
        &tollgate_binary(),
        &workload::example_policies(),
        &certs,
        &validate,
    )
    .await?;
    for call in [&mutate, &convert] {
        tollgate
            .target
            .wait_until_answering(call, Duration::from_secs(5))
            .await?;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle_rss = procfs::rss_mib(tollgate.pid())?.0;

    let floor = floor_answering_as(
        &tollgate,
        &[&validate, &mutate, &convert],
        &certs,
        scratch.path(),
    )
    .await?;

    println!("== transport: tollgate against the floor");
    let mut wire = Table::new(
        "Against the floor",
        &format!(
            "CPU per request and latency at a fixed {RATE} req/s over {RATE_CONNECTIONS} keep-alive \
             connections (h2: one connection, {RATE_CONNECTIONS} concurrent streams); then \
             requests/s with 1, 16 and 64 clients sending as fast as answers arrive. `×` is \
             tollgate divided by the floor of the same row pair. Each figure is the median of \
             {ROUNDS} phases per server, floor and tollgate alternating (latencies: all phases \
             merged)."
        ),
        &[
            "endpoint",
            "protocol",
            "server",
            "CPU µs/req",
            "× floor",
            "p50 ms",
            "p99 ms",
            "p99.9 ms",
            "req/s c=1",
            "req/s c=16",
            "req/s c=64",
            "× floor c=64",
            "failed",
        ],
    );
    let mut transport = Vec::new();
    for call in [&validate, &mutate, &convert] {
        for protocol in [Protocol::Http1, Protocol::H2] {
            let pair = measure_pair([&floor, &tollgate], call, protocol, &settings).await?;
            let (f, t) = (&pair[0], &pair[1]);
            for (m, server) in [(f, "floor"), (t, "tollgate")] {
                wire.row(vec![
                    endpoint(call),
                    protocol.label().into(),
                    server.into(),
                    format!("{:.1}", m.cpu_us),
                    ratio(m.cpu_us, f.cpu_us),
                    format!("{:.3}", m.fixed.ms(0.5)),
                    format!("{:.3}", m.fixed.ms(0.99)),
                    format!("{:.3}", m.fixed.ms(0.999)),
                    format!("{:.0}", m.throughput[0]),
                    format!("{:.0}", m.throughput[1]),
                    format!("{:.0}", m.throughput[2]),
                    ratio(m.throughput[2], f.throughput[2]),
                    m.failed.to_string(),
                ]);
            }
            transport.push((endpoint(call), protocol, pair));
        }
    }
    report.table(wire);
    let loaded_peak = procfs::rss_mib(tollgate.pid())?.1;
    for (name, protocol, pair) in &transport {
        let (f, t) = (&pair[0], &pair[1]);
        let cpu_limit = if name == "/validate" { 1.5 } else { 1.7 };
        let label = format!("{name} {}", protocol.label());
        report.target(
            &format!("{label}: CPU/request ≤ {cpu_limit}× floor"),
            format!(
                "{:.1} vs {:.1} µs = {}",
                t.cpu_us,
                f.cpu_us,
                ratio(t.cpu_us, f.cpu_us)
            ),
            t.cpu_us <= cpu_limit * f.cpu_us,
        );
        report.target(
            &format!("{label}: p99 at {RATE} req/s ≤ 2× floor"),
            format!(
                "{:.3} vs {:.3} ms = {}",
                t.fixed.ms(0.99),
                f.fixed.ms(0.99),
                ratio(t.fixed.ms(0.99), f.fixed.ms(0.99))
            ),
            t.fixed.ms(0.99) <= 2.0 * f.fixed.ms(0.99),
        );
        report.target(
            &format!("{label}: req/s at c=64 ≥ 0.6× floor"),
            format!(
                "{:.0} vs {:.0} = {}",
                t.throughput[2],
                f.throughput[2],
                ratio(t.throughput[2], f.throughput[2])
            ),
            t.throughput[2] >= 0.6 * f.throughput[2],
        );
    }

    println!("== conversion alongside validation");
    conversion_alongside(&tollgate, &floor, &validate, &certs, &settings, &mut report).await?;
    drop(floor);

    println!("== object size");
    object_sizes(&tollgate, &settings, &mut report).await?;
    println!("== conversion size");
    conversions(&tollgate, &settings, &mut report).await?;
    drop(tollgate);
    println!("== policies loaded");
    let many_peak =
        policy_counts(&certs, scratch.path(), &validate, &settings, &mut report).await?;

    let mut memory = Table::new(
        "Memory",
        "Resident set size of `tollgate serve` (VmRSS / VmHWM from /proc).",
        &["situation", "MiB", "target MiB"],
    );
    memory.row(vec![
        "idle, example policy".into(),
        format!("{idle_rss:.1}"),
        "32".into(),
    ]);
    memory.row(vec![
        "peak after the transport rows (c=64 load)".into(),
        format!("{loaded_peak:.1}"),
        "64".into(),
    ]);
    memory.row(vec![
        "peak, 1000 policies loaded".into(),
        format!("{many_peak:.1}"),
        "96".into(),
    ]);
    report.table(memory);
    report.target(
        "RSS idle with the example ≤ 32 MiB",
        format!("{idle_rss:.1} MiB"),
        idle_rss <= 32.0,
    );
    report.target(
        "RSS peak under c=64 load ≤ 64 MiB",
        format!("{loaded_peak:.1} MiB"),
        loaded_peak <= 64.0,
    );
    report.target(
        "RSS peak with 1000 policies ≤ 96 MiB",
        format!("{many_peak:.1} MiB"),
        many_peak <= 96.0,
    );

    report.write(
        &settings.out,
        settings.build,
        &format!(
            "{:.1} s per phase after {:.1} s warm-up (transport and policy-count rows: {ROUNDS} alternating phases of 1/{ROUNDS} of that per server); load driver in the same machine (benches/load/driver.rs)",
            settings.phase.as_secs_f64(),
            settings.warmup.as_secs_f64()
        ),
    )?;
    println!("wrote {}", settings.out.display());
    Ok(())
}

fn endpoint(call: &Call) -> String {
    call.path.split('?').next().unwrap_or_default().to_string()
}

struct WireFigures {
    cpu_us: f64,
    fixed: Outcome,
    throughput: [f64; 3],
    failed: u64,
}

/// Every figure of a row pair comes from this many phases per server, floor and tollgate
/// alternating, each this fraction of the configured phase; the median of each figure is kept
/// (the latency histograms are merged). On a shared machine one noisy phase then cannot decide a
/// ratio, as it could when each server was measured once. (With three, three full runs of the
/// same build read the floor's h2 `/validate` CPU as 30.9, 31.9 and 26.0 µs while tollgate's
/// read 42.7, 42.6 and 42.4: a noisy floor phase could still decide a ratio.)
const ROUNDS: usize = 5;

async fn measure_pair(
    servers: [&ServerProcess; 2],
    call: &Call,
    protocol: Protocol,
    settings: &Settings,
) -> anyhow::Result<[WireFigures; 2]> {
    let round = settings.round();
    let mut cpu = [Vec::new(), Vec::new()];
    let mut fixed = [Outcome::new(), Outcome::new()];
    let mut throughput = [
        [Vec::new(), Vec::new(), Vec::new()],
        [Vec::new(), Vec::new(), Vec::new()],
    ];
    let mut failed = [0, 0];
    for _ in 0..ROUNDS {
        for (i, server) in servers.iter().enumerate() {
            let (cpu_us, outcome) = at_fixed_rate(server, call, protocol, RATE, &round).await?;
            cpu[i].push(cpu_us);
            failed[i] += outcome.failed;
            fixed[i].merge(outcome);
            for (samples, clients) in throughput[i].iter_mut().zip(THROTTLE_CONNECTIONS) {
                let senders = server.target.senders(protocol, clients).await?;
                let outcome = driver::open_throttle(senders, call, round.phase).await;
                failed[i] += outcome.failed;
                report_failure(&server.name, Some(&server.log), &outcome);
                samples.push(outcome.per_second());
            }
        }
    }
    let [first, second] = fixed;
    let figures = |i: usize, fixed: Outcome| WireFigures {
        cpu_us: median(&cpu[i]),
        fixed,
        throughput: [0, 1, 2].map(|c| median(&throughput[i][c])),
        failed: failed[i],
    };
    Ok([figures(0, first), figures(1, second)])
}

fn median(samples: &[f64]) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(0.0)
}

/// Server CPU µs per answered request and the latency distribution at a fixed rate.
async fn at_fixed_rate(
    server: &ServerProcess,
    call: &Call,
    protocol: Protocol,
    rate: f64,
    settings: &Settings,
) -> anyhow::Result<(f64, Outcome)> {
    let senders = server.target.senders(protocol, RATE_CONNECTIONS).await?;
    let (_, senders) = driver::fixed_rate(senders, call, rate, settings.warmup).await;
    with_cpu(server, async {
        driver::fixed_rate(senders, call, rate, settings.phase)
            .await
            .0
    })
    .await
}

/// The outcome of a load phase and the server's CPU µs per answered request during it.
async fn with_cpu(
    server: &ServerProcess,
    phase: impl std::future::Future<Output = Outcome>,
) -> anyhow::Result<(f64, Outcome)> {
    let before = procfs::CpuReading::of(server.pid())?;
    let outcome = phase.await;
    let used = procfs::CpuReading::of(server.pid())?.seconds_since(&before);
    report_failure(&server.name, Some(&server.log), &outcome);
    Ok((used / outcome.answered.max(1) as f64 * 1e6, outcome))
}

/// Failed requests are reported, and the server's log so far is kept beside the report (the
/// scratch directory it is in goes at the end of the run) for what the server saw of them.
fn report_failure(server: &str, log: Option<&Path>, outcome: &Outcome) {
    let Some(failure) = &outcome.first_failure else {
        return;
    };
    eprintln!(
        "{server}: {} failed requests, first: {failure}",
        outcome.failed
    );
    let Some(log) = log else {
        return;
    };
    let kept = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-failures");
    let copied = std::fs::create_dir_all(&kept).and_then(|()| {
        let to = kept.join(log.file_name().unwrap_or_default());
        std::fs::copy(log, &to).map(|_| to)
    });
    match copied {
        Ok(to) => eprintln!("{server}: its log so far is in {}", to.display()),
        Err(e) => eprintln!("{server}: its log {} could not be kept: {e}", log.display()),
    }
}

/// One client, one request at a time: latency and server CPU per request.
async fn sequential(
    server: &ServerProcess,
    call: &Call,
    settings: &Settings,
) -> anyhow::Result<(f64, Outcome)> {
    let warm = server.target.senders(Protocol::Http1, 1).await?;
    driver::open_throttle(warm, call, settings.warmup).await;
    let senders = server.target.senders(Protocol::Http1, 1).await?;
    with_cpu(server, driver::open_throttle(senders, call, settings.phase)).await
}

async fn object_sizes(
    tollgate: &ServerProcess,
    settings: &Settings,
    report: &mut Report,
) -> anyhow::Result<()> {
    let mut table = Table::new(
        "Object size",
        "One client, one request at a time (HTTP/1.1). The object is grown with 1 KiB annotations.",
        &[
            "object",
            "review bytes",
            "validate p50 ms",
            "validate CPU µs",
            "validate µs/KiB",
            "mutate p50 ms",
            "mutate CPU µs",
            "mutate µs/KiB",
        ],
    );
    let mut per_kib = Vec::new();
    let mut largest = (0.0, 0.0);
    for (label, bytes) in [
        ("1 KiB", 1024),
        ("64 KiB", 64 * 1024),
        ("1 MiB", 1024 * 1024),
    ] {
        let (validate, mutate) = workload::sized(bytes)?;
        let kib = validate.body.len() as f64 / 1024.0;
        let (v_cpu, v) = sequential(tollgate, &validate, settings).await?;
        let (m_cpu, m) = sequential(tollgate, &mutate, settings).await?;
        table.row(vec![
            label.into(),
            validate.body.len().to_string(),
            format!("{:.3}", v.ms(0.5)),
            format!("{v_cpu:.0}"),
            format!("{:.1}", v_cpu / kib),
            format!("{:.3}", m.ms(0.5)),
            format!("{m_cpu:.0}"),
            format!("{:.1}", m_cpu / kib),
        ]);
        per_kib.push((v_cpu / kib, m_cpu / kib));
        largest = (v.ms(0.5), m.ms(0.5));
    }
    report.table(table);
    let (mid, big) = (per_kib[1], per_kib[2]);
    report.target(
        "cost linear in size: CPU/KiB at 1 MiB within 1.5× of 64 KiB",
        format!(
            "validate {:.1} vs {:.1}, mutate {:.1} vs {:.1} µs/KiB",
            big.0, mid.0, big.1, mid.1
        ),
        big.0 <= 1.5 * mid.0 && big.1 <= 1.5 * mid.1,
    );
    report.target(
        "1 MiB object validated and defaulted < 20 ms (p50 over the wire, each)",
        format!("validate {:.1} ms, mutate {:.1} ms", largest.0, largest.1),
        largest.0 < 20.0 && largest.1 < 20.0,
    );
    Ok(())
}

async fn conversions(
    tollgate: &ServerProcess,
    settings: &Settings,
    report: &mut Report,
) -> anyhow::Result<()> {
    let mut table = Table::new(
        "Conversion size",
        "One client, one ConversionReview at a time (v1alpha1 → v1).",
        &[
            "objects",
            "review bytes",
            "p50 ms",
            "CPU µs/review",
            "CPU µs/object",
        ],
    );
    let mut per_object = 0.0;
    for objects in [1, 100, 2000] {
        let call = workload::convert(objects)?;
        let (cpu, outcome) = sequential(tollgate, &call, settings).await?;
        per_object = cpu / objects as f64;
        table.row(vec![
            objects.to_string(),
            call.body.len().to_string(),
            format!("{:.3}", outcome.ms(0.5)),
            format!("{cpu:.0}"),
            format!("{per_object:.1}"),
        ]);
    }
    report.table(table);
    report.target(
        "conversion ≤ 10 µs per object in a 2000-object review",
        format!("{per_object:.1} µs"),
        per_object <= 10.0,
    );
    Ok(())
}

/// How often the converting client sends its 2000-object reviews.
#[derive(Clone, Copy)]
enum Pace {
    /// The next as soon as the last is answered: the converting client and tollgate's
    /// conversions together keep about one of this machine's cores busy.
    BackToBack,
    /// A fixed rate well below what the machine converts (back to back reaches 30–90 reviews/s
    /// on the 2-core machines measured), so the conversions share the cores without filling one.
    PerSecond(f64),
}

impl Pace {
    fn label(self) -> String {
        match self {
            Pace::BackToBack => "back to back".to_string(),
            Pace::PerSecond(rate) => format!("{rate} per second"),
        }
    }
}

const PACED_CONVERSIONS: f64 = 5.0;

async fn conversion_alongside(
    tollgate: &ServerProcess,
    floor: &ServerProcess,
    validate: &Call,
    certs: &Path,
    settings: &Settings,
    report: &mut Report,
) -> anyhow::Result<()> {
    let mut table = Table::new(
        "Big conversion alongside validation",
        &format!(
            "/validate at {RATE} req/s over {RATE_CONNECTIONS} HTTP/1.1 connections, alone and while \
             a client in another process (as the apiserver is) sends 2000-object \
             ConversionReviews to tollgate, back to back or {PACED_CONVERSIONS} per second. In the \
             floor rows the floor server answers /validate beside the same conversions: what \
             sharing this machine's cores does to a server that does no work of its own. \
             {ROUNDS} rounds, each: both servers alone, then both beside the conversions; \
             latencies merged over the rounds. The converting client runs at the idle scheduling \
             policy, standing in for an apiserver on another machine: its own TLS work does not \
             take the CPU from the servers, tollgate's side of the conversions does."
        ),
        &[
            "/validate answered by",
            "conversions",
            "alone p50 ms",
            "alone p99 ms",
            "beside p50 ms",
            "beside p99 ms",
            "beside p99.9 ms",
            "p99 ×",
            "converting client",
        ],
    );
    for pace in [Pace::BackToBack, Pace::PerSecond(PACED_CONVERSIONS)] {
        let alongside = Alongside {
            converter: tollgate,
            pace,
            validate,
            certs,
            settings,
        };
        let [(alone, beside), (floor_alone, floor_beside)] =
            alongside.rows([tollgate, floor], &mut table).await?;
        report.target(
            &format!(
                "2000-object conversions ({}) raise /validate p99 ≤ 2×",
                pace.label()
            ),
            format!(
                "{:.3} vs {:.3} ms = {} (the floor beside the same conversions: {})",
                beside.ms(0.99),
                alone.ms(0.99),
                ratio(beside.ms(0.99), alone.ms(0.99)),
                ratio(floor_beside.ms(0.99), floor_alone.ms(0.99)),
            ),
            beside.ms(0.99) <= 2.0 * alone.ms(0.99),
        );
        // On a machine the clients share, conversions sent back to back keep the CPUs busy
        // enough to raise any server's p99 several times (the floor's row): this separates
        // what tollgate itself lets a big review do to small ones.
        report.target(
            &format!(
                "/validate p99 beside 2000-object conversions ({}) ≤ 2× the floor's beside the same",
                pace.label()
            ),
            format!(
                "{:.3} vs {:.3} ms = {}",
                beside.ms(0.99),
                floor_beside.ms(0.99),
                ratio(beside.ms(0.99), floor_beside.ms(0.99)),
            ),
            beside.ms(0.99) <= 2.0 * floor_beside.ms(0.99),
        );
    }
    report.table(table);
    Ok(())
}

/// `/validate` load beside 2000-object conversions sent to `converter` at `pace`.
struct Alongside<'a> {
    converter: &'a ServerProcess,
    pace: Pace,
    validate: &'a Call,
    certs: &'a Path,
    settings: &'a Settings,
}

impl Alongside<'_> {
    /// `/validate` at the fixed rate from each server, alone and beside the conversions, in
    /// `ROUNDS` rounds: each server alone, then each beside one converting client, so a burst of
    /// the machine's own noise lands in one short phase of each kind rather than deciding a
    /// whole row. Latencies are merged over the rounds; one table row per server.
    async fn rows(
        &self,
        servers: [&ServerProcess; 2],
        table: &mut Table,
    ) -> anyhow::Result<[(Outcome, Outcome); 2]> {
        let round = self.settings.round();
        let mut alone = [Outcome::new(), Outcome::new()];
        let mut beside = [Outcome::new(), Outcome::new()];
        let mut converted = Vec::new();
        for _ in 0..ROUNDS {
            for (merged, server) in alone.iter_mut().zip(servers) {
                merged.merge(
                    at_fixed_rate(server, self.validate, Protocol::Http1, RATE, &round)
                        .await?
                        .1,
                );
            }
            // Both servers' phases, warm-ups included, and a little to spare.
            let lasting = (round.phase + round.warmup) * 2 + Duration::from_millis(500);
            let converting =
                ConvertingClient::start(self.converter, self.certs, lasting, self.pace)?;
            for (merged, server) in beside.iter_mut().zip(servers) {
                merged.merge(
                    at_fixed_rate(server, self.validate, Protocol::Http1, RATE, &round)
                        .await?
                        .1,
                );
            }
            converted.push(tokio::task::spawn_blocking(move || converting.finish()).await??);
        }
        let conversions = conversion_summary(&converted);
        for ((server, alone), beside) in servers.iter().zip(&alone).zip(&beside) {
            table.row(vec![
                server.name.clone(),
                self.pace.label(),
                format!("{:.3}", alone.ms(0.5)),
                format!("{:.3}", alone.ms(0.99)),
                format!("{:.3}", beside.ms(0.5)),
                format!("{:.3}", beside.ms(0.99)),
                format!("{:.3}", beside.ms(0.999)),
                ratio(beside.ms(0.99), alone.ms(0.99)),
                conversions.clone(),
            ]);
        }
        let [tollgate_alone, floor_alone] = alone;
        let [tollgate_beside, floor_beside] = beside;
        Ok([
            (tollgate_alone, tollgate_beside),
            (floor_alone, floor_beside),
        ])
    }
}

/// The converting client's rounds in one cell: its median rate and p99, and all failures.
/// `lines`: what `drive` printed in each round, its summary last.
fn conversion_summary(lines: &[String]) -> String {
    let (mut rates, mut p99s, mut failed) = (Vec::new(), Vec::new(), 0);
    for summary in lines.iter().filter_map(|output| output.lines().last()) {
        for part in summary.split(", ") {
            if let Some(rate) = part.strip_suffix(" req/s") {
                rates.extend(rate.parse::<f64>().ok());
            } else if let Some(ms) = part
                .strip_prefix("p99 ")
                .and_then(|p| p.strip_suffix(" ms"))
            {
                p99s.extend(ms.parse::<f64>().ok());
            } else if let Some(count) = part.strip_suffix(" failed") {
                failed += count.parse::<u64>().unwrap_or(0);
            }
        }
    }
    format!(
        "{:.0} req/s, p99 {:.3} ms (medians of {} rounds), {failed} failed",
        median(&rates),
        median(&p99s),
        lines.len(),
    )
}

/// A `drive` process sending 2000-object ConversionReviews to a server, one at a time. It runs
/// at the idle scheduling policy: it stands in for an apiserver on another machine, and its own
/// TLS work on megabytes per review would otherwise take this machine's CPU from the server
/// under test — what the server's conversions cost stays in the measurement.
struct ConvertingClient(std::process::Child);

impl ConvertingClient {
    fn start(
        server: &ServerProcess,
        certs: &Path,
        duration: Duration,
        pace: Pace,
    ) -> anyhow::Result<Self> {
        let mut command = std::process::Command::new(std::env::current_exe()?);
        command
            .arg("drive")
            .arg(server.target.addr.to_string())
            .arg(certs)
            .arg("convert=2000")
            .arg(duration.as_secs_f64().to_string())
            .arg("1")
            .arg("--idle");
        if let Pace::PerSecond(rate) = pace {
            command.arg("--rate").arg(rate.to_string());
        }
        let child = command.stdout(std::process::Stdio::piped()).spawn()?;
        Ok(Self(child))
    }

    /// The client's summary line (requests/s, latencies, failures).
    fn finish(self) -> anyhow::Result<String> {
        let output = self.0.wait_with_output()?;
        anyhow::ensure!(output.status.success(), "the converting client failed");
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
    }
}

/// Returns the peak RSS with the most policies loaded.
async fn policy_counts(
    certs: &Path,
    scratch: &Path,
    validate: &Call,
    settings: &Settings,
    report: &mut Report,
) -> anyhow::Result<f64> {
    let mut table = Table::new(
        "Policies loaded",
        &format!(
            "The example policy plus policies for other kinds (schema, default, immutable field, CEL \
             rule each); /validate of a PaymentGateway at {RATE} req/s over {RATE_CONNECTIONS} \
             HTTP/1.1 connections. The three servers run at once, measured in {ROUNDS} alternating \
             rounds (CPU: the median round; p99: all rounds merged)."
        ),
        &[
            "policies",
            "start-up s",
            "idle RSS MiB",
            "peak RSS MiB",
            "CPU µs/req",
            "p99 ms",
        ],
    );
    // All three servers up at once and measured in alternating rounds, medians kept, as the
    // transport rows are: one phase each, one after the other, let this host's drift decide
    // the 10 % comparison (1.02× to 1.16× between runs of the same binary).
    let mut started = Vec::new();
    for count in [1, 100, 1000] {
        let dir = scratch.join(format!("policies-{count}"));
        workload::policy_dir(&dir, count)?;
        let start = Instant::now();
        let server = servers::tollgate(&tollgate_binary(), &dir, certs, validate).await?;
        let startup = start.elapsed();
        let idle = procfs::rss_mib(server.pid())?.0;
        started.push((count, server, startup, idle));
    }
    let round = settings.round();
    let mut cpu_rounds = vec![Vec::new(); started.len()];
    let mut fixed: Vec<Outcome> = started.iter().map(|_| Outcome::new()).collect();
    for _ in 0..ROUNDS {
        for (i, (_, server, _, _)) in started.iter().enumerate() {
            let (cpu_us, outcome) =
                at_fixed_rate(server, validate, Protocol::Http1, RATE, &round).await?;
            cpu_rounds[i].push(cpu_us);
            fixed[i].merge(outcome);
        }
    }
    let mut cpu = Vec::new();
    let mut peak = 0.0;
    for ((count, server, startup, idle), (rounds, outcome)) in
        started.iter().zip(cpu_rounds.iter().zip(fixed))
    {
        let cpu_us = median(rounds);
        peak = procfs::rss_mib(server.pid())?.1;
        table.row(vec![
            count.to_string(),
            format!("{:.2}", startup.as_secs_f64()),
            format!("{idle:.1}"),
            format!("{peak:.1}"),
            format!("{cpu_us:.1}"),
            format!("{:.3}", outcome.ms(0.99)),
        ]);
        cpu.push(cpu_us);
    }
    report.table(table);
    report.target(
        "1000 policies: CPU/request within 10% of 1 policy",
        format!(
            "{:.1} vs {:.1} µs = {}",
            cpu[2],
            cpu[0],
            ratio(cpu[2], cpu[0])
        ),
        cpu[2] <= 1.1 * cpu[0],
    );
    Ok(peak)
}
