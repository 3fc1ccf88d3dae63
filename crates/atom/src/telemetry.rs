//! Logs and metrics: the process-wide `tracing` subscriber, the panic hook that logs a
//! panic's location through it, and the Prometheus recorder behind `GET /metrics`.
//!
//! All three are process-global by nature (one stdout, one panic hook, one `metrics`
//! recorder), so each is installed once; several [`crate::Application`]s in one process (the
//! tests) share them. Log lines never carry header values or query strings: the request log
//! in [`crate::http::middleware`] writes only the route template and the path.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::config::LogFormat;

mod line;
mod output;
pub mod redact;

/// Installs the global subscriber writing to stdout. Call once, from `main`, and hold the
/// returned guard until the process ends: dropping it writes out the lines still buffered.
///
/// Lines are formatted on the thread that logs ([`line`] has their shape) and written in
/// batches by a writer thread ([`output`]), so that a busy server spends one system call and
/// one wake-up on many lines. No line is dropped.
pub fn init_logging(filter: &str, format: LogFormat) -> output::OutputGuard {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let (output, guard) = output::start(std::io::stdout());
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(line::Lines { json: format == LogFormat::Json, output })
        .try_init();
    install_panic_hook();
    guard
}

/// Routes panics through `tracing` with their location, instead of raw stderr text.
pub fn install_panic_hook() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let default_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let message = info
                .payload()
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "non-string panic payload".to_owned());
            let location = info.location().map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()));
            tracing::error!(panic.message = %message, panic.location = location.as_deref().unwrap_or("unknown"), "panic");
            // Without a subscriber where the panic happens (tests, embedding) the default hook
            // still prints. Not `dispatcher::has_been_set`: one scoped subscriber anywhere in
            // the process (a test capturing its logs) sets it for good, and every later
            // panic, a failing test's message included, would be printed nowhere.
            if tracing::dispatcher::get_default(|current| current.is::<tracing::subscriber::NoSubscriber>()) {
                default_hook(info);
            }
        }));
    });
}

/// The process's Prometheus recorder, installed on first use, with its upkeep thread.
///
/// The HTTP stack's request metrics are not in it ([`crate::http::metrics`] says why).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let latency_buckets = crate::http::metrics::latency_bounds_secs();
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), &latency_buckets)
                .map(PrometheusBuilder::build_recorder);
            match recorder {
                Ok(recorder) => {
                    let handle = recorder.handle();
                    // Fails only if another recorder is installed; then ours records nothing,
                    // which a test would notice, and serving goes on.
                    if metrics::set_global_recorder(recorder).is_err() {
                        tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
                    }
                    let start = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
                    metrics::gauge!("process_start_time_seconds").set(start);
                    let upkeep = handle.clone();
                    keep_up(UPKEEP_PERIOD, move || upkeep.run_upkeep());
                    handle
                }
                Err(e) => {
                    tracing::error!(error = %e, "metrics recorder could not be built");
                    PrometheusBuilder::new().build_recorder().handle()
                }
            }
        })
        .clone()
}

/// How often the exporter's histograms are drained (its own default).
const UPKEEP_PERIOD: Duration = Duration::from_secs(5);

/// Calls `upkeep` every `period`, on a thread of its own, for as long as the process lives
/// (as the recorder does).
///
/// The exporter keeps every histogram sample (the database's query, acquire and transaction
/// times) in a list until something drains it: a scrape of `/metrics`, or this. Without it a
/// server that nobody scrapes grows without end, by some 20 bytes per request. The exporter
/// starts such a thread only when it runs its own HTTP listener, which atom does not use.
fn keep_up(period: Duration, upkeep: impl Fn() + Send + 'static) {
    let spawned = std::thread::Builder::new().name("metrics-upkeep".to_owned()).spawn(move || {
        loop {
            std::thread::sleep(period);
            upkeep();
        }
    });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "the metrics upkeep thread could not start; histograms drain only when scraped");
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[test]
    fn upkeep_runs_every_period_without_a_scrape() {
        let runs = Arc::new(AtomicU32::new(0));
        let counted = Arc::clone(&runs);
        keep_up(Duration::from_millis(20), move || {
            counted.fetch_add(1, Ordering::SeqCst);
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while runs.load(Ordering::SeqCst) < 3 {
            assert!(std::time::Instant::now() < deadline, "upkeep ran {} times in 10 s", runs.load(Ordering::SeqCst));
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
