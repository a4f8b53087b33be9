//! `/metrics` in the Prometheus text exposition format 0.0.4, written by hand: the format is a
//! few lines of `name{label="value"} number` under `# HELP` and `# TYPE`, so a crate would add
//! more than it saves. Also counts HTTP requests by route pattern for it.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Mutex;

use crate::engine::{Buckets, State};

/// The `Content-Type` of the text format.
pub(super) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Which body `/metrics` answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Format {
    /// Codahale's JSON, as Chronos serves it: the default.
    Json,
    Prometheus,
}

/// `?format=` wins; otherwise `Accept` picks Prometheus when it prefers `text/plain` or
/// OpenMetrics over JSON (Prometheus' scraper asks for both text formats and not JSON, while
/// clients such as axios send `application/json, text/plain, */*` and keep JSON).
///
/// # Errors
/// The `format` value when it is neither `json` nor `prometheus`.
pub(super) fn negotiate(format: Option<&str>, accept: Option<&str>) -> Result<Format, String> {
    match format.map(str::trim) {
        Some("prometheus") => return Ok(Format::Prometheus),
        Some("json") => return Ok(Format::Json),
        Some(other) => {
            return Err(format!(
                "field 'format': '{other}' is not a metrics format (json, prometheus)"
            ));
        }
        None => {}
    }
    let (mut json, mut text) = (0.0_f64, 0.0_f64);
    for item in accept.unwrap_or_default().split(',') {
        let mut parts = item.split(';');
        let media = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
        let q = parts
            .filter_map(|p| p.trim().strip_prefix("q="))
            .find_map(|q| q.trim().parse::<f64>().ok())
            .unwrap_or(1.0);
        match media.as_str() {
            "application/json" => json = json.max(q),
            "text/plain" | "application/openmetrics-text" => text = text.max(q),
            _ => {}
        }
    }
    Ok(if text > 0.0 && text > json {
        Format::Prometheus
    } else {
        Format::Json
    })
}

/// HTTP requests answered, by route pattern, method and status. The keys are static strings and
/// a status, so the map stays small whatever paths clients send.
#[derive(Debug, Default)]
pub(super) struct HttpMetrics {
    counts: Mutex<HashMap<(&'static str, &'static str, u16), u64>>,
}

impl HttpMetrics {
    pub(super) fn record(&self, path: &str, method: &warp::http::Method, status: u16) {
        let key = (route_pattern(path), method_label(method), status);
        // A poisoned lock only means a panic elsewhere mid-increment; the counts are still usable.
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        *counts.entry(key).or_default() += 1;
    }

    fn snapshot(&self) -> Vec<((&'static str, &'static str, u16), u64)> {
        let counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let mut all: Vec<_> = counts.iter().map(|(k, v)| (*k, *v)).collect();
        all.sort_unstable();
        all
    }
}

fn method_label(method: &warp::http::Method) -> &'static str {
    use warp::http::Method;
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "other",
    }
}

/// The route a path belongs to, as the route table names it (`/v1/scheduler/job/{name}`); `other`
/// for a path no route serves, so scanners add one series rather than one per path.
pub(super) fn route_pattern(path: &str) -> &'static str {
    super::table::route_of(path).map_or("other", |route| route.path.as_str())
}

/// A text exposition being written: each family's `# HELP` and `# TYPE`, then its samples.
#[derive(Debug, Default)]
pub(super) struct Exposition {
    out: String,
}

#[derive(Debug, Clone, Copy)]
pub(super) enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Exposition {
    pub(super) fn family(&mut self, name: &str, kind: Kind, help: &str) -> &mut Self {
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        };
        // HELP escapes backslash and newline only.
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        self
    }

    pub(super) fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) -> &mut Self {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (label, text)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{label}=\"");
                for c in text.chars() {
                    match c {
                        '\\' => self.out.push_str("\\\\"),
                        '"' => self.out.push_str("\\\""),
                        '\n' => self.out.push_str("\\n"),
                        c => self.out.push(c),
                    }
                }
                self.out.push('"');
            }
            self.out.push('}');
        }
        self.out.push(' ');
        self.out.push_str(&number(value));
        self.out.push('\n');
        self
    }

    /// One family with a single unlabelled sample.
    pub(super) fn single(&mut self, name: &str, kind: Kind, help: &str, value: f64) -> &mut Self {
        self.family(name, kind, help).sample(name, &[], value)
    }

    pub(super) fn histogram(&mut self, name: &str, help: &str, buckets: &Buckets) -> &mut Self {
        self.family(name, Kind::Histogram, help);
        let bucket = format!("{name}_bucket");
        for (bound, count) in buckets.cumulative() {
            self.sample(&bucket, &[("le", &number(bound))], count as f64);
        }
        self.sample(&format!("{name}_sum"), &[], buckets.sum);
        self.sample(&format!("{name}_count"), &[], buckets.count as f64)
    }

    pub(super) fn finish(self) -> String {
        self.out
    }
}

/// A sample value as Go's `strconv` would print it for Prometheus: `+Inf`, `-Inf`, `NaN`, and
/// whole numbers without a fraction.
fn number(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_owned()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else {
        format!("{value}")
    }
}

/// The families every server writes about itself, leader or standby.
pub(super) fn write_server(out: &mut Exposition, leader: bool, http: &HttpMetrics, evicted: (u64, u64)) {
    out.single(
        "kairos_leader",
        Kind::Gauge,
        "1 while this server leads and runs the engine, else 0",
        if leader { 1.0 } else { 0.0 },
    );
    out.family(
        "kairos_auth_evictions_total",
        Kind::Counter,
        "Entries pushed out of the full sign-in tables (10000 sessions, 10000 addresses with failed sign-ins)",
    );
    out.sample(
        "kairos_auth_evictions_total",
        &[("table", "sessions")],
        evicted.0 as f64,
    );
    out.sample(
        "kairos_auth_evictions_total",
        &[("table", "failed_logins")],
        evicted.1 as f64,
    );
    out.family(
        "kairos_http_requests_total",
        Kind::Counter,
        "HTTP requests answered by this server, by route pattern, method and status",
    );
    for ((route, method, status), count) in http.snapshot() {
        let status = status.to_string();
        out.sample(
            "kairos_http_requests_total",
            &[("route", route), ("method", method), ("status", &status)],
            count as f64,
        );
    }
}

/// Notification deliveries by channel, every channel always (an alert can watch a zero).
fn write_notifications(out: &mut Exposition, counters: &crate::notify::Counters) {
    use crate::notify::Channel;
    type Count = fn(&crate::notify::Counters, Channel) -> u64;
    let families: [(&str, &str, Count); 3] = [
        (
            "kairos_notifications_sent_total",
            "Notifications delivered, by channel",
            crate::notify::Counters::sent,
        ),
        (
            "kairos_notification_failures_total",
            "Failed notification delivery attempts, by channel (each retried for up to an hour)",
            crate::notify::Counters::failed,
        ),
        (
            "kairos_notifications_abandoned_total",
            "Notifications given up after their retry window, by channel",
            crate::notify::Counters::abandoned,
        ),
    ];
    for (name, help, count) in families {
        out.family(name, Kind::Counter, help);
        for channel in Channel::ALL {
            out.sample(
                name,
                &[("channel", channel.as_str())],
                count(counters, channel) as f64,
            );
        }
    }
    out.single(
        "kairos_notifications_dropped_total",
        Kind::Counter,
        "Notifications the delivery queue had no room for (sent later from the outbox)",
        counters.dropped() as f64,
    );
}

/// The engine's families, written on the engine task from its state at `now_ms`.
pub(super) fn write_engine(out: &mut Exposition, s: &State, now_ms: i64, per_job: bool) {
    use crate::store::TaskState;
    let m = &s.metrics;
    out.family(
        "kairos_tasks_started_total",
        Kind::Counter,
        "Tasks launched on a worker, by worker",
    );
    let mut launched: Vec<_> = m.launched.iter().collect();
    launched.sort_unstable();
    for (worker, n) in launched {
        out.sample("kairos_tasks_started_total", &[("worker", worker)], *n as f64);
    }
    out.family(
        "kairos_tasks_ended_total",
        Kind::Counter,
        "Tasks ended, by worker (empty for tasks that never reached one) and outcome",
    );
    let mut ended: Vec<_> = m.ended.iter().collect();
    ended.sort_unstable_by(|a, b| a.0.cmp(b.0));
    for (worker, counts) in ended {
        // Only outcomes that happened: a zero series per outcome and worker would be noise.
        for (outcome, n) in crate::engine::Outcome::ALL.iter().zip(counts) {
            if *n > 0 {
                out.sample(
                    "kairos_tasks_ended_total",
                    &[("worker", worker), ("outcome", outcome.as_str())],
                    *n as f64,
                );
            }
        }
    }
    out.histogram(
        "kairos_scheduling_lag_seconds",
        "Seconds from a task's scheduled instant (or request) to its launch on a worker",
        &m.lag,
    );
    // Queued tasks that are due; retries waiting for their time are counted in the depth only.
    let oldest_due = s
        .tasks
        .values()
        .filter(|t| t.record.state == TaskState::Queued && t.record.due_ms <= now_ms)
        .map(|t| t.record.due_ms)
        .min();
    out.single(
        "kairos_queue_depth",
        Kind::Gauge,
        "Tasks waiting to start, including retries waiting for their time",
        s.queued_count() as f64,
    );
    out.single(
        "kairos_queue_oldest_age_seconds",
        Kind::Gauge,
        "Seconds the oldest due queued task has waited past its instant (0 when none waits)",
        oldest_due.map_or(0.0, |due| (now_ms - due).max(0) as f64 / 1000.0),
    );
    out.single(
        "kairos_tasks_running",
        Kind::Gauge,
        "Tasks running on workers",
        s.running_count() as f64,
    );
    out.histogram(
        "kairos_store_commit_seconds",
        "Seconds each successful group commit to the store took",
        &m.commit_seconds,
    );
    out.single(
        "kairos_store_commit_failures_total",
        Kind::Counter,
        "Failed store commit attempts (each is retried)",
        m.store_failures as f64,
    );
    out.single(
        "kairos_store_failing",
        Kind::Gauge,
        "1 while store commits keep failing (launches wait, changes get 503), else 0",
        if s.store_failing() { 1.0 } else { 0.0 },
    );
    out.single(
        "kairos_requests_refused_total",
        Kind::Counter,
        "Changes refused with 503 because the store did not take writes in time, or too many waited",
        m.refused_writes as f64,
    );
    out.single(
        "kairos_request_timeouts_total",
        Kind::Counter,
        "Requests answered 503 because the scheduler gave no answer within the store timeout",
        s.request_timeouts() as f64,
    );
    out.single(
        "kairos_engine_queue_full_total",
        Kind::Counter,
        "Requests and agent reports that found the engine's queue (1024) full and waited for room",
        s.queue_full() as f64,
    );
    write_notifications(out, &s.notifications);
    // Jobs ask in MB (Mesos' mebibytes); Prometheus wants base units, so these are bytes.
    const MIB: f64 = 1_048_576.0;
    type Pick = fn(&crate::placement::Resources) -> f64;
    let resources: [(&str, &str, bool, Pick); 6] = [
        ("kairos_worker_offered_cpus", "Cpus a worker offers", false, |r| {
            r.cpus
        }),
        (
            "kairos_worker_offered_mem_bytes",
            "Memory a worker offers",
            false,
            |r| r.mem * MIB,
        ),
        (
            "kairos_worker_offered_disk_bytes",
            "Disk a worker offers",
            false,
            |r| r.disk * MIB,
        ),
        (
            "kairos_worker_used_cpus",
            "Cpus held by tasks on a worker",
            true,
            |r| r.cpus,
        ),
        (
            "kairos_worker_used_mem_bytes",
            "Memory held by tasks on a worker",
            true,
            |r| r.mem * MIB,
        ),
        (
            "kairos_worker_used_disk_bytes",
            "Disk held by tasks on a worker",
            true,
            |r| r.disk * MIB,
        ),
    ];
    for (name, help, used, pick) in resources {
        out.family(name, Kind::Gauge, help);
        for w in s.workers.values() {
            let state = match w.state {
                crate::engine::WorkerState::Active => "active",
                crate::engine::WorkerState::Disconnected => "disconnected",
                crate::engine::WorkerState::Lost => "lost",
            };
            let value = pick(if used { &w.used } else { &w.total });
            out.sample(name, &[("worker", &w.name), ("state", state)], value);
        }
    }
    out.family(
        "kairos_agent_output_dropped_total",
        Kind::Counter,
        "Live output chunks an agent dropped because its stream did not take them in time (its final statuses still carry the output)",
    );
    for w in s.workers.values().filter(|w| !w.local) {
        out.sample(
            "kairos_agent_output_dropped_total",
            &[("worker", &w.name)],
            w.output_dropped as f64,
        );
    }
    let retrying: std::collections::HashSet<&str> = s.retrying.values().map(String::as_str).collect();
    let mut by_state = [0u64; 3];
    for entry in s.jobs.values() {
        let state = if !entry.running.is_empty() {
            2
        } else if !entry.queue.is_empty() || retrying.contains(entry.job.name.as_str()) {
            1
        } else {
            0
        };
        by_state[state] += 1;
    }
    out.family("kairos_jobs", Kind::Gauge, "Jobs by state, as the API shows them");
    for (state, n) in ["idle", "queued", "running"].iter().zip(by_state) {
        out.sample("kairos_jobs", &[("state", state)], n as f64);
    }
    if per_job {
        write_per_job(out, s);
    }
}

/// Series with a `job` label: opt-in (`--metrics-per-job`), since they grow with the jobs.
fn write_per_job(out: &mut Exposition, s: &State) {
    out.family(
        "kairos_job_successes_total",
        Kind::Counter,
        "Successful runs of a job since this server started leading",
    );
    for name in s.jobs.keys() {
        let n = s.metrics.successes.get(name).copied().unwrap_or(0);
        out.sample("kairos_job_successes_total", &[("job", name)], n as f64);
    }
    out.family(
        "kairos_job_failures_total",
        Kind::Counter,
        "Final failures of a job (retries exhausted) since this server started leading",
    );
    for name in s.jobs.keys() {
        let n = s.metrics.failures.get(name).copied().unwrap_or(0);
        out.sample("kairos_job_failures_total", &[("job", name)], n as f64);
    }
    out.family(
        "kairos_job_tasks_running",
        Kind::Gauge,
        "Tasks of a job running now",
    );
    for (name, entry) in &s.jobs {
        out.sample(
            "kairos_job_tasks_running",
            &[("job", name)],
            entry.running.len() as f64,
        );
    }
    out.family(
        "kairos_job_tasks_queued",
        Kind::Gauge,
        "Tasks of a job waiting in its queue",
    );
    for (name, entry) in &s.jobs {
        out.sample(
            "kairos_job_tasks_queued",
            &[("job", name)],
            entry.queue.len() as f64,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_beats_accept_and_json_stays_the_default() {
        let prom = Ok(Format::Prometheus);
        let json = Ok(Format::Json);
        let scraper = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        for (format, accept, want) in [
            (None, None, &json),
            (None, Some("*/*"), &json),
            (None, Some("application/json"), &json),
            (None, Some("text/plain"), &prom),
            (None, Some(scraper), &prom),
            (None, Some("application/json, text/plain, */*"), &json),
            (None, Some("application/json;q=0.5, text/plain"), &prom),
            (None, Some("text/html,application/xhtml+xml,*/*;q=0.8"), &json),
            (Some("prometheus"), Some("application/json"), &prom),
            (Some("json"), Some("text/plain"), &json),
        ] {
            assert_eq!(&negotiate(format, accept), want, "{format:?} {accept:?}");
        }
        let err = negotiate(Some("xml"), None).unwrap_err();
        assert!(err.contains("field 'format'") && err.contains("xml"), "{err}");
    }

    #[test]
    fn routes_are_patterns_not_paths() {
        for (path, want) in [
            ("/v1/scheduler/job/nightly", "/v1/scheduler/job/{name}"),
            ("/scheduler/job/nightly", "/scheduler/job/{name}"),
            (
                "/v1/scheduler/job/success/nightly",
                "/v1/scheduler/job/success/{name}",
            ),
            (
                "/v1/scheduler/job/a/task/ct:1:0:a/progress",
                "/v1/scheduler/job/{name}/task/{taskId}/progress",
            ),
            ("/v1/scheduler/task/kill/a", "/v1/scheduler/task/kill/{name}"),
            ("/metrics", "/metrics"),
            ("/", "/"),
            ("/jobs/x/edit", "/jobs/{name}/edit"),
            ("/wp-admin/setup.php", "other"),
            ("/v1/scheduler/nothing", "other"),
        ] {
            assert_eq!(route_pattern(path), want, "{path}");
        }
    }

    #[test]
    fn labels_and_values_are_escaped_and_printed_as_prometheus_reads_them() {
        let mut out = Exposition::default();
        out.family("x_total", Kind::Counter, "a \\ help\nline");
        out.sample("x_total", &[("job", "a\"b\\c\nd"), ("w", "")], 3.0);
        out.sample("x_total", &[], 0.25);
        let mut b = Buckets::new(&[0.5]);
        b.observe(0.1);
        b.observe(2.0);
        out.histogram("h_seconds", "h", &b);
        assert_eq!(
            out.finish(),
            "# HELP x_total a \\\\ help\\nline\n# TYPE x_total counter\n\
             x_total{job=\"a\\\"b\\\\c\\nd\",w=\"\"} 3\nx_total 0.25\n\
             # HELP h_seconds h\n# TYPE h_seconds histogram\n\
             h_seconds_bucket{le=\"0.5\"} 1\nh_seconds_bucket{le=\"+Inf\"} 2\n\
             h_seconds_sum 2.1\nh_seconds_count 2\n"
        );
    }
}
