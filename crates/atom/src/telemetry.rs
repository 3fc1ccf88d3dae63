//! Logs and metrics: the process-wide `tracing` subscriber, the panic hook that logs a
//! panic's location through it, and the Prometheus recorder behind `GET /metrics`.
//!
//! All three are process-global by nature (one stdout, one panic hook, one `metrics`
//! recorder), so each is installed once; several [`crate::Application`]s in one process (the
//! tests) share them. Log lines never carry header values or query strings: the request log
//! in [`crate::http::middleware`] writes only the route template and the path.

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::config::LogFormat;

mod line;
mod output;

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
            // Without a global subscriber (tests, embedding) the default hook still prints.
            if !tracing::dispatcher::has_been_set() {
                default_hook(info);
            }
        }));
    });
}

/// The process's Prometheus recorder, installed on first use.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let latency_buckets =
                [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
            let query_count_buckets = [0.0, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 21.0, 50.0, 100.0];
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), &latency_buckets)
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full("http_request_db_queries".to_owned()), &query_count_buckets)
                })
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
