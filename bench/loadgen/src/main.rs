//! A fixed-rate (open-loop) HTTP/1.1 load generator for `bench/http.sh`: "what is the p99
//! latency when the server gets N requests per second", which a closed-loop tool such as
//! `wrk` cannot answer (it sends as fast as the server answers).
//!
//! Requests are scheduled at evenly spaced instants `start + i / rate`. A pacer task releases
//! one permit per instant that has come; a pool of keep-alive connections (one task each, all
//! on the same single thread, see [`connection`]) takes permits in turn and sends. Each latency is measured
//! from the request's *scheduled* instant, not from when it was actually sent, so a stalled
//! server or a late pacer shows up in the numbers instead of silently lowering the rate
//! ("coordinated omission", as `wrk2` corrects it). The time from sending to the full
//! response (`service`) and the scheduling lag are reported too, to tell the two apart.
//!
//! Output: one `key value` line per figure, latencies in milliseconds.

#![forbid(unsafe_code)]

mod connection;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use tokio::sync::Semaphore;

use crate::connection::{Connection, get_request};

#[derive(Debug, Parser)]
#[command(name = "loadgen", about = "Fixed-rate HTTP/1.1 load generator reporting latency percentiles")]
struct Args {
    /// Server address, e.g. 127.0.0.1:8000.
    #[arg(long)]
    addr: SocketAddr,
    /// Request path (GET).
    #[arg(long, default_value = "/health")]
    path: String,
    /// Requests per second, evenly spaced whatever the server's latency.
    #[arg(long)]
    rate: f64,
    /// Seconds measured, after the warm-up.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of load at the same rate before measuring; their latencies are discarded.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Keep-alive connections; whichever is idle takes the next scheduled request.
    #[arg(long, default_value_t = 32)]
    connections: usize,
}

/// The instants requests are due at: `start + slot / rate`.
#[derive(Debug)]
struct Schedule {
    start: Instant,
    rate: f64,
    /// Slots in the warm-up plus the measured window.
    total: u64,
    /// Slots before this one are warm-up.
    first_measured: u64,
}

impl Schedule {
    fn due(&self, slot: u64) -> Instant {
        self.start + Duration::from_secs_f64(slot as f64 / self.rate)
    }
}

/// What to send: the request's bytes are built once.
#[derive(Debug)]
struct Target {
    addr: SocketAddr,
    request: Vec<u8>,
}

#[derive(Debug, Default)]
struct Samples {
    /// Scheduled instant to full response.
    latency: Vec<Duration>,
    /// Send to full response.
    service: Vec<Duration>,
    /// Scheduled instant to send (the generator's own delay).
    lag: Vec<Duration>,
    non_2xx: u64,
    errors: u64,
    /// The measured window: from its first scheduled instant to the last response.
    window_start: Option<Instant>,
    last_done: Option<Instant>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if !(args.rate.is_finite() && args.rate > 0.0 && args.duration > 0.0 && args.warmup >= 0.0) {
        eprintln!("error: --rate and --duration must be positive, --warmup not negative");
        return ExitCode::from(2);
    }
    if args.connections == 0 {
        eprintln!("error: --connections must be at least 1");
        return ExitCode::from(2);
    }
    let Some(request) = get_request(args.addr, &args.path) else {
        eprintln!("error: --path must be an origin-form path such as /health, got {:?}", args.path);
        return ExitCode::from(2);
    };
    let target = Arc::new(Target { addr: args.addr, request });
    // One thread for all connections: the client is meant to be pinned to one CPU.
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(&args, target)) {
        Ok(samples) => report(&args, samples),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: &Args, target: Arc<Target>) -> std::io::Result<Samples> {
    // Connect everything first, so that handshakes are not part of the schedule.
    let mut connections = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        connections.push(Connection::open(target.addr).await?);
    }
    let schedule = Arc::new(Schedule {
        start: Instant::now() + Duration::from_millis(10),
        rate: args.rate,
        total: ((args.warmup + args.duration) * args.rate).round() as u64,
        first_measured: (args.warmup * args.rate).round() as u64,
    });
    let permits = Arc::new(Semaphore::new(0));
    let next_slot = Arc::new(AtomicU64::new(0));

    let pacer = tokio::spawn(pace(Arc::clone(&schedule), Arc::clone(&permits), args.connections));
    let workers: Vec<_> = connections
        .into_iter()
        .map(|connection| {
            let shared = Shared {
                target: Arc::clone(&target),
                schedule: Arc::clone(&schedule),
                permits: Arc::clone(&permits),
                next_slot: Arc::clone(&next_slot),
            };
            tokio::spawn(send_scheduled(connection, shared))
        })
        .collect();

    let mut all = Samples::default();
    for worker in workers {
        let samples = worker.await.map_err(std::io::Error::other)?;
        all.latency.extend(samples.latency);
        all.service.extend(samples.service);
        all.lag.extend(samples.lag);
        all.non_2xx += samples.non_2xx;
        all.errors += samples.errors;
        all.last_done = all.last_done.max(samples.last_done);
    }
    pacer.await.map_err(std::io::Error::other)?;
    all.window_start = Some(schedule.due(schedule.first_measured));
    Ok(all)
}

/// Releases one permit per slot whose instant has come. A late turn releases every slot due
/// by then at once, so the schedule never shifts; at the end, one more permit per worker so
/// each sees the end.
///
/// It spins instead of sleeping: tokio's timer has a 1 ms granularity and waking a parked
/// thread (or an idle virtual CPU) costs tens of microseconds to milliseconds, both as large
/// as what is being measured. Each `yield_now` lets the runtime poll its I/O driver and run
/// the connections, so the client's thread never parks and keeps its CPU busy: pin it to a
/// CPU of its own.
async fn pace(schedule: Arc<Schedule>, permits: Arc<Semaphore>, workers: usize) {
    let mut released = 0;
    while released < schedule.total {
        let now = Instant::now();
        let mut due = 0;
        while released + due < schedule.total && schedule.due(released + due) <= now {
            due += 1;
        }
        if due > 0 {
            permits.add_permits(usize::try_from(due).unwrap_or(usize::MAX));
            released += due;
        }
        tokio::task::yield_now().await;
    }
    permits.add_permits(workers);
}

/// What every connection task shares.
#[derive(Debug)]
struct Shared {
    target: Arc<Target>,
    schedule: Arc<Schedule>,
    permits: Arc<Semaphore>,
    next_slot: Arc<AtomicU64>,
}

async fn send_scheduled(connection: Connection, shared: Shared) -> Samples {
    let Shared { target, schedule, permits, next_slot } = shared;
    let mut connection = Some(connection);
    let mut samples = Samples::default();
    loop {
        let Ok(permit) = permits.acquire().await else { break };
        permit.forget();
        // Slot `n` is taken only after `n + 1` permits were, so its instant has come.
        let slot = next_slot.fetch_add(1, Ordering::Relaxed);
        if slot >= schedule.total {
            break;
        }
        let due = schedule.due(slot);
        let sent = Instant::now();
        // A broken connection is replaced; the reconnect counts in this request's latency.
        let open = match connection.take() {
            Some(open) => Ok(open),
            None => Connection::open(target.addr).await,
        };
        let status = match open {
            Ok(mut open) => {
                let status = open.exchange(&target.request).await;
                if status.is_ok() {
                    connection = Some(open);
                }
                status
            }
            Err(e) => Err(e),
        };
        let done = Instant::now();
        match status {
            Ok(status) if (200..300).contains(&status) => {}
            Ok(_) => samples.non_2xx += 1,
            Err(_) => samples.errors += 1,
        }
        if slot >= schedule.first_measured {
            samples.latency.push(done - due);
            samples.service.push(done - sent);
            samples.lag.push(sent.saturating_duration_since(due));
            samples.last_done = Some(done);
        }
    }
    samples
}

fn report(args: &Args, mut samples: Samples) -> ExitCode {
    let measured = samples.latency.len();
    if measured == 0 {
        eprintln!("error: no request was measured");
        return ExitCode::FAILURE;
    }
    println!("target_rps {:.0}", args.rate);
    if let (Some(start), Some(end)) = (samples.window_start, samples.last_done) {
        let secs = end.saturating_duration_since(start).as_secs_f64();
        if secs > 0.0 {
            println!("achieved_rps {:.0}", measured as f64 / secs);
        }
    }
    println!("requests {measured}");
    println!("errors {}", samples.errors);
    println!("non_2xx {}", samples.non_2xx);
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    for (name, values) in
        [("latency", &mut samples.latency), ("service", &mut samples.service), ("lag", &mut samples.lag)]
    {
        values.sort_unstable();
        for (label, p) in [("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p999", 99.9)] {
            println!("{name}_{label}_ms {:.3}", ms(percentile(values, p)));
        }
        println!("{name}_max_ms {:.3}", ms(values.last().copied().unwrap_or_default()));
    }
    ExitCode::SUCCESS
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.saturating_sub(1)).copied().unwrap_or_default()
}
