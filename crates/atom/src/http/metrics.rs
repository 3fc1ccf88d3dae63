//! The request metrics of the HTTP stack: `http_requests_total`,
//! `http_request_duration_seconds` and `http_requests_in_flight` by method, route template and
//! status, and `http_request_db_queries` (the database queries a request issued, where an N+1
//! shows) by method and route. The stack ([`super::middleware::observe`]) records them and
//! `/metrics` renders them after the families of the `metrics` exporter.
//!
//! Why not through the `metrics` facade like the rest: its Prometheus exporter keeps every
//! histogram sample (with a timestamp) in a lock-free list until a scrape or an upkeep drains
//! it, so its memory between two drains grows with the request rate, and every sample, counter
//! and gauge goes through dynamic calls and a clock read. Here, as in Prometheus's own client
//! libraries, a histogram is a fixed array of atomic counters (one per bucket) and an atomic
//! sum: an observation is two atomic additions, and memory never grows. `http_requests_total` is the
//! latency histogram's count, so the two always agree.
//!
//! Series are made on first use. Their labels come from closed sets, never from a client:
//! methods outside the standard seven share `other`, unmatched paths `<unmatched>`, statuses
//! outside the common ones their class (`4xx`); and past [`MAX_SERIES`] every new combination
//! shares one overflow series. So no input can grow `/metrics` beyond a fixed size.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{PoisonError, RwLock};
use std::time::Duration;

use axum::http::Method;

/// The request metrics of one application.
#[derive(Debug, Default)]
pub struct RequestMetrics {
    in_flight: AtomicI64,
    series: RwLock<HashMap<(&'static str, &'static str), RouteSeries, Fnv>>,
}

/// The series of one method and status, by route template.
type RouteSeries = HashMap<Box<str>, Series, Fnv>;

#[derive(Debug)]
struct Series {
    duration: Histogram,
    db_queries: Histogram,
}

/// Unmatched paths share one label so that scanners cannot blow up the series count.
const UNMATCHED: &str = "<unmatched>";
/// The most (method, route, status) series; past it, new combinations share one series
/// labelled `other`, [`OVERFLOW`] and `other`. Far above what the routes produce in use.
pub const MAX_SERIES: usize = 1000;
/// The route label of the overflow series.
const OVERFLOW: &str = "<overflow>";

/// The latency buckets, in nanoseconds, with their `le` labels in seconds. The exporter's
/// `*_seconds` histograms use the same ([`latency_bounds_secs`]).
const LATENCY: Buckets = Buckets {
    per_unit: 1e9,
    bounds: &[
        (500_000, "0.0005"),
        (1_000_000, "0.001"),
        (2_500_000, "0.0025"),
        (5_000_000, "0.005"),
        (10_000_000, "0.01"),
        (25_000_000, "0.025"),
        (50_000_000, "0.05"),
        (100_000_000, "0.1"),
        (250_000_000, "0.25"),
        (500_000_000, "0.5"),
        (1_000_000_000, "1"),
        (2_500_000_000, "2.5"),
        (5_000_000_000, "5"),
        (10_000_000_000, "10"),
        (30_000_000_000, "30"),
    ],
};

/// The buckets of database queries per request.
const QUERIES: Buckets = Buckets {
    per_unit: 1.0,
    bounds: &[
        (0, "0"),
        (1, "1"),
        (2, "2"),
        (3, "3"),
        (5, "5"),
        (8, "8"),
        (13, "13"),
        (21, "21"),
        (50, "50"),
        (100, "100"),
    ],
};

/// [`LATENCY`]'s bounds in seconds, for the exporter's histograms.
pub fn latency_bounds_secs() -> Vec<f64> {
    LATENCY.bounds.iter().map(|&(nanos, _)| nanos as f64 / LATENCY.per_unit).collect()
}

impl RequestMetrics {
    /// Counts one more request in flight, until [`RequestMetrics::leave`] (the stack calls it
    /// when the request's future is dropped, answered or not).
    pub fn enter(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    /// The end of a request counted by [`RequestMetrics::enter`].
    pub fn leave(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    /// Records one finished request.
    pub fn record(&self, method: &Method, route: Option<&str>, status: u16, latency: Duration, db_queries: u32) {
        let method = method_label(method);
        let status = status_label(status);
        let route = route.unwrap_or(UNMATCHED);
        // Saturating: 584 years of latency fit in the u64.
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        let record = |s: &Series| {
            s.duration.observe(nanos);
            s.db_queries.observe(u64::from(db_queries));
        };
        let series = self.series.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(s) = series.get(&(method, status)).and_then(|routes| routes.get(route)) {
            record(s);
            return;
        }
        drop(series);
        let mut series = self.series.write().unwrap_or_else(PoisonError::into_inner);
        let (method, route, status) = if series.values().map(HashMap::len).sum::<usize>() >= MAX_SERIES {
            ("other", OVERFLOW, "other")
        } else {
            (method, route, status)
        };
        let s = series
            .entry((method, status))
            .or_default()
            .entry(route.into())
            .or_insert_with(|| Series { duration: Histogram::new(&LATENCY), db_queries: Histogram::new(&QUERIES) });
        record(s);
    }

    /// Appends the Prometheus text exposition of these metrics to `out`, series sorted by
    /// method, route and status.
    pub fn render(&self, out: &mut String) {
        // Each series' labels, made once, sorted: (method, route, status) -> latency.
        let mut requests = BTreeMap::new();
        // The query counts by method and route, over every status.
        let mut queries: BTreeMap<String, Snapshot> = BTreeMap::new();
        {
            let series = self.series.read().unwrap_or_else(PoisonError::into_inner);
            for (&(method, status), routes) in series.iter() {
                for (route, s) in routes {
                    let by_route = format!("method=\"{method}\",route=\"{}\"", escape(route));
                    requests.insert(format!("{by_route},status=\"{status}\""), s.duration.snapshot());
                    queries.entry(by_route).or_insert_with(|| Snapshot::empty(&QUERIES)).add(&s.db_queries.snapshot());
                }
            }
        }
        // Writing to a `String` cannot fail.
        let _ = writeln!(out, "# HELP http_requests_total Requests answered, by method, route template and status.");
        let _ = writeln!(out, "# TYPE http_requests_total counter");
        for (labels, latency) in &requests {
            let _ = writeln!(out, "http_requests_total{{{labels}}} {}", latency.count());
        }
        let _ =
            writeln!(out, "\n# HELP http_request_duration_seconds Time from a request's head to its response's head.");
        let _ = writeln!(out, "# TYPE http_request_duration_seconds histogram");
        for (labels, latency) in &requests {
            latency.write("http_request_duration_seconds", labels, out);
        }
        let _ = writeln!(out, "\n# HELP http_request_db_queries Database queries issued per request.");
        let _ = writeln!(out, "# TYPE http_request_db_queries histogram");
        for (labels, counts) in &queries {
            counts.write("http_request_db_queries", labels, out);
        }
        let _ = writeln!(out, "\n# HELP http_requests_in_flight Requests being answered.");
        let _ = writeln!(out, "# TYPE http_requests_in_flight gauge");
        let _ = writeln!(out, "http_requests_in_flight {}", self.in_flight.load(Ordering::Relaxed));
    }
}

/// The upper bounds of a histogram's buckets (inclusive, ascending) with their `le` labels,
/// and how many observed units make one exposed unit (nanoseconds per second).
#[derive(Debug)]
struct Buckets {
    bounds: &'static [(u64, &'static str)],
    per_unit: f64,
}

/// A histogram over fixed buckets: a count per bucket (the last one for values above every
/// bound, `+Inf`) and the sum of the observations.
#[derive(Debug)]
struct Histogram {
    buckets: &'static Buckets,
    counts: Box<[AtomicU64]>,
    sum: AtomicU64,
}

impl Histogram {
    fn new(buckets: &'static Buckets) -> Self {
        let counts = (0..=buckets.bounds.len()).map(|_| AtomicU64::new(0)).collect();
        Self { buckets, counts, sum: AtomicU64::new(0) }
    }

    /// Two relaxed atomic additions: a scrape may see one without the other, by a request or
    /// two, as with any Prometheus client that does not lock.
    fn observe(&self, value: u64) {
        let bounds = self.buckets.bounds;
        let bucket = bounds.iter().position(|&(bound, _)| value <= bound).unwrap_or(bounds.len());
        if let Some(count) = self.counts.get(bucket) {
            count.fetch_add(1, Ordering::Relaxed);
        }
        self.sum.fetch_add(value, Ordering::Relaxed);
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot {
            buckets: self.buckets,
            counts: self.counts.iter().map(|c| c.load(Ordering::Relaxed)).collect(),
            sum: self.sum.load(Ordering::Relaxed),
        }
    }
}

/// A histogram's counts read at one moment.
#[derive(Debug)]
struct Snapshot {
    buckets: &'static Buckets,
    counts: Vec<u64>,
    sum: u64,
}

impl Snapshot {
    fn empty(buckets: &'static Buckets) -> Self {
        Self { buckets, counts: vec![0; buckets.bounds.len() + 1], sum: 0 }
    }

    fn add(&mut self, other: &Snapshot) {
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine = mine.wrapping_add(*theirs);
        }
        self.sum = self.sum.wrapping_add(other.sum);
    }

    /// Every observation: the `+Inf` bucket's cumulative count.
    fn count(&self) -> u64 {
        self.counts.iter().fold(0, |total, &c| total.wrapping_add(c))
    }

    /// The `_bucket` (cumulative), `_sum` and `_count` lines.
    fn write(&self, name: &str, labels: &str, out: &mut String) {
        let mut cumulative = 0u64;
        let les = self.buckets.bounds.iter().map(|&(_, le)| le).chain(["+Inf"]);
        for (le, count) in les.zip(&self.counts) {
            cumulative = cumulative.wrapping_add(*count);
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", self.sum as f64 / self.buckets.per_unit);
        let _ = writeln!(out, "{name}_count{{{labels}}} {cumulative}");
    }
}

/// A label value as the text format wants it: backslash, double quote and newline escaped.
fn escape(value: &str) -> String {
    value.replace('\\', r"\\").replace('"', r#"\""#).replace('\n', r"\n")
}

/// Methods outside the standard ones an API is called with share one label, like unmatched
/// paths.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// The statuses this server answers with keep their code; any other shares its class.
fn status_label(status: u16) -> &'static str {
    #[rustfmt::skip]
    const COMMON: &[(u16, &str)] = &[
        (101, "101"), (200, "200"), (201, "201"), (202, "202"), (204, "204"), (301, "301"), (302, "302"), (303, "303"),
        (304, "304"), (307, "307"), (308, "308"), (400, "400"), (401, "401"), (403, "403"), (404, "404"), (405, "405"),
        (406, "406"), (408, "408"), (409, "409"), (410, "410"), (411, "411"), (412, "412"), (413, "413"), (414, "414"),
        (415, "415"), (416, "416"), (422, "422"), (426, "426"), (428, "428"), (429, "429"), (431, "431"), (500, "500"),
        (501, "501"), (502, "502"), (503, "503"), (504, "504"), (505, "505"),
    ];
    if let Some((_, label)) = COMMON.iter().find(|(code, _)| *code == status) {
        return label;
    }
    match status / 100 {
        1 => "1xx",
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        5 => "5xx",
        _ => "other",
    }
}

/// FNV-1a for the series maps, looked up twice per request. Their keys come from closed sets
/// (method labels, statuses, the router's templates), never from a client, so a hash that an
/// attacker could collide costs nothing here, and SipHash would cost more than the lookup.
type Fnv = fnv::FnvBuildHasher;

#[cfg(test)]
mod tests {
    use super::*;

    fn rendered(metrics: &RequestMetrics) -> String {
        let mut out = String::new();
        metrics.render(&mut out);
        out
    }

    fn value(text: &str, series: &str) -> Option<String> {
        text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ').map(str::to_owned))
    }

    #[test]
    fn observations_land_in_the_first_bucket_whose_bound_they_do_not_exceed() {
        let h = Histogram::new(&QUERIES);
        for v in [0, 1, 1, 4, 5, 100, 101, u64::MAX / 2] {
            h.observe(v);
        }
        let s = h.snapshot();
        // Buckets 0, 1, 2, 3, 5, 8, 13, 21, 50, 100, +Inf (not cumulative here).
        assert_eq!(s.counts, [1, 2, 0, 0, 2, 0, 0, 0, 0, 1, 2]);
        assert_eq!(s.count(), 8);
        assert_eq!(s.sum, 212 + u64::MAX / 2);
    }

    #[test]
    fn the_exposition_has_cumulative_buckets_sums_in_seconds_and_counts_that_agree() {
        let m = RequestMetrics::default();
        let get = Method::GET;
        m.record(&get, Some("/health"), 200, Duration::from_micros(200), 0);
        m.record(&get, Some("/health"), 200, Duration::from_millis(3), 0);
        m.record(&get, Some("/health"), 200, Duration::from_secs(40), 0);
        m.record(&get, Some("/v1/me"), 200, Duration::from_millis(1), 2);
        m.record(&get, Some("/v1/me"), 401, Duration::from_millis(1), 1);
        m.record(&Method::from_bytes(b"BREW").expect("method"), None, 404, Duration::from_millis(1), 0);
        m.enter();
        let text = rendered(&m);

        let health = r#"method="GET",route="/health",status="200""#;
        assert_eq!(value(&text, &format!("http_requests_total{{{health}}}")).as_deref(), Some("3"), "{text}");
        let bucket = |le: &str| value(&text, &format!("http_request_duration_seconds_bucket{{{health},le=\"{le}\"}}"));
        assert_eq!(bucket("0.0005").as_deref(), Some("1"));
        assert_eq!(bucket("0.001").as_deref(), Some("1"));
        assert_eq!(bucket("0.005").as_deref(), Some("2"));
        assert_eq!(bucket("30").as_deref(), Some("2"));
        assert_eq!(bucket("+Inf").as_deref(), Some("3"));
        let sum = value(&text, &format!("http_request_duration_seconds_sum{{{health}}}"));
        assert_eq!(sum.and_then(|s| s.parse::<f64>().ok()), Some(40.0032));
        assert_eq!(value(&text, &format!("http_request_duration_seconds_count{{{health}}}")).as_deref(), Some("3"));

        // Queries by method and route, over every status.
        let me = r#"method="GET",route="/v1/me""#;
        assert_eq!(value(&text, &format!("http_request_db_queries_bucket{{{me},le=\"0\"}}")).as_deref(), Some("0"));
        assert_eq!(value(&text, &format!("http_request_db_queries_bucket{{{me},le=\"1\"}}")).as_deref(), Some("1"));
        assert_eq!(value(&text, &format!("http_request_db_queries_bucket{{{me},le=\"2\"}}")).as_deref(), Some("2"));
        assert_eq!(value(&text, &format!("http_request_db_queries_sum{{{me}}}")).as_deref(), Some("3"));
        assert_eq!(value(&text, &format!("http_request_db_queries_count{{{me}}}")).as_deref(), Some("2"));

        let other = r#"http_requests_total{method="other",route="<unmatched>",status="404"}"#;
        assert_eq!(value(&text, other).as_deref(), Some("1"), "{text}");
        assert_eq!(value(&text, "http_requests_in_flight").as_deref(), Some("1"));
        m.leave();
        assert_eq!(value(&rendered(&m), "http_requests_in_flight").as_deref(), Some("0"));

        // Each family is declared once, before its samples.
        for family in ["http_requests_total", "http_request_duration_seconds", "http_request_db_queries"] {
            assert_eq!(text.matches(&format!("# TYPE {family} ")).count(), 1, "{family}");
        }
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape(r#"/a"b\c"#), r#"/a\"b\\c"#);
        assert_eq!(escape("/a\nb"), r"/a\nb");
    }

    #[test]
    fn concurrent_requests_are_all_counted() {
        let m = std::sync::Arc::new(RequestMetrics::default());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let m = std::sync::Arc::clone(&m);
                std::thread::spawn(move || {
                    for i in 0..10_000u64 {
                        // Two threads make the series, two find it made.
                        let route = if t % 2 == 0 { "/a" } else { "/b" };
                        m.record(&Method::GET, Some(route), 200, Duration::from_micros(i % 2_000), 1);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("no panic");
        }
        let text = rendered(&m);
        for route in ["/a", "/b"] {
            let total = format!(r#"http_requests_total{{method="GET",route="{route}",status="200"}}"#);
            assert_eq!(value(&text, &total).as_deref(), Some("20000"), "{text}");
            let queries = format!(r#"http_request_db_queries_sum{{method="GET",route="{route}"}}"#);
            assert_eq!(value(&text, &queries).as_deref(), Some("20000"));
        }
    }

    #[test]
    fn odd_methods_and_statuses_share_labels_and_the_series_stop_at_a_bound() {
        let m = RequestMetrics::default();
        let odd = Method::from_bytes(b"PROPFIND").expect("method");
        m.record(&odd, Some("/a"), 299, Duration::from_millis(1), 0);
        m.record(&Method::TRACE, Some("/a"), 299, Duration::from_millis(1), 0);
        m.record(&Method::GET, Some("/a"), 999, Duration::from_millis(1), 0);
        let text = rendered(&m);
        let shared = r#"http_requests_total{method="other",route="/a",status="2xx"}"#;
        assert_eq!(value(&text, shared).as_deref(), Some("2"), "{text}");
        assert!(text.contains(r#"method="GET",route="/a",status="other""#), "{text}");

        // Routes are the router's templates, but even if they were not: a bound.
        for i in 0..5 * MAX_SERIES {
            m.record(&Method::GET, Some(&format!("/r{i}")), 200 + (i % 400) as u16, Duration::from_millis(1), 0);
        }
        let series = m.series.read().expect("lock").values().map(HashMap::len).sum::<usize>();
        assert_eq!(series, MAX_SERIES + 1, "the bound and one overflow series");
        let overflow = r#"http_requests_total{method="other",route="<overflow>",status="other"}"#;
        assert!(value(&rendered(&m), overflow).is_some());
    }
}
