//! The job definition and the Chronos task id: the vocabulary every other module shares.
//!
//! A job derives serde because its canonical stored form is Chronos' own JSON (same field names and
//! order as `GET /v1/scheduler/jobs`); the lenient parsing of client input lives in `api::dto`.

use serde::{Deserialize, Serialize};

/// Chronos' job name rule (`[\w.-]+`, ASCII word characters), minus `.` and `..`, which HTTP
/// clients normalise out of a URL path, so a job with such a name could not be addressed.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
}

/// One job definition plus the counters Chronos keeps on it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Job {
    pub name: String,
    pub command: String,
    pub shell: bool,
    /// How late a scheduled run may still start (ISO 8601 duration, 2.x semantics).
    pub epsilon: String,
    pub executor: String,
    pub executor_flags: String,
    pub task_info_data: String,
    pub retries: u32,
    pub owner: String,
    pub owner_name: String,
    pub description: String,
    /// Async tasks stay running after their process exits until `PUT /task/<id>` reports the outcome.
    #[serde(rename = "async")]
    pub is_async: bool,
    pub success_count: u64,
    pub error_count: u64,
    pub last_success: String,
    pub last_error: String,
    pub cpus: f64,
    pub disk: f64,
    pub mem: f64,
    pub disabled: bool,
    pub soft_error: bool,
    pub data_processing_job_type: bool,
    pub errors_since_last_success: u64,
    pub fetch: Vec<Fetch>,
    pub uris: Vec<String>,
    pub environment_variables: Vec<EnvVar>,
    pub arguments: Vec<String>,
    pub high_priority: bool,
    pub run_as_user: String,
    pub concurrent: bool,
    pub max_completion_time: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<Container>,
    pub constraints: Vec<Constraint>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parents: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule_time_zone: Option<String>,
    /// How long a failed attempt waits before its retry (ISO 8601 duration); empty means the
    /// server's `--failure-retry`. Beyond Chronos, as are the fields below: each is left out of
    /// the JSON while it has its default, so Chronos clients see the job as before.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub retry_delay: String,
    /// Each retry waits this many times longer than the one before.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub retry_backoff: f64,
    /// The longest a retry waits, however far the backoff has grown; empty means no cap.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub retry_delay_max: String,
    /// Which failures are retried; empty means every kind.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retry_on: Vec<RetryOn>,
    /// What a run due while the previous one still runs does; absent means `concurrent` decides
    /// (`allow` when true, `queue` when false), as in Chronos.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency_policy: Option<ConcurrencyPolicy>,
    /// After downtime or a pause, run the missed occurrences (oldest first, up to
    /// `catch_up_limit`) instead of only those still within epsilon.
    #[serde(default, skip_serializing_if = "is_false")]
    pub catch_up: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catch_up_limit: Option<u32>,
    /// Where a cron schedule is: its next run, in epoch milliseconds. The store keeps it, so that
    /// a restart knows which runs it missed; clients never see it ([`Job::for_clients`]), and a
    /// job they send starts again from now, as a re-sent ISO 8601 schedule does. (An ISO 8601
    /// schedule keeps its place in its own text, which the engine rewrites as it runs.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule_cursor: Option<i64>,
    /// A run still going this long after its start is told as `late` (ISO 8601 duration; empty:
    /// never). kairos' own, as are the two below: absent, a job reads and writes as in Chronos.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub warn_after: String,
    /// The events told to the owners by email and to the server-wide webhook; `None`: the
    /// default set ([`crate::notify::Kind::DEFAULT`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify_on: Option<Vec<crate::notify::Kind>>,
    /// The job's own webhooks, each with the events it gets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notifications: Vec<crate::notify::Notification>,
}

fn one() -> f64 {
    1.0
}

fn is_one(value: &f64) -> bool {
    *value == 1.0
}

fn is_false(value: &bool) -> bool {
    !*value
}

/// How many missed occurrences `catchUp` runs when the job does not say.
pub const DEFAULT_CATCH_UP_LIMIT: u32 = 10;

/// What a run that falls due while the job's previous run still runs does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConcurrencyPolicy {
    /// It waits for the running one (at most one scheduled run waits): Chronos' `concurrent: false`.
    Queue,
    /// It runs beside it: Chronos' `concurrent: true`.
    Allow,
    /// It is skipped, and recorded as skipped with the reason.
    Forbid,
    /// The running task is killed and the new run starts.
    Replace,
}

impl ConcurrencyPolicy {
    pub const ALL: [ConcurrencyPolicy; 4] = [
        ConcurrencyPolicy::Queue,
        ConcurrencyPolicy::Allow,
        ConcurrencyPolicy::Forbid,
        ConcurrencyPolicy::Replace,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ConcurrencyPolicy::Queue => "queue",
            ConcurrencyPolicy::Allow => "allow",
            ConcurrencyPolicy::Forbid => "forbid",
            ConcurrencyPolicy::Replace => "replace",
        }
    }

    pub fn parse(text: &str) -> Option<ConcurrencyPolicy> {
        ConcurrencyPolicy::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(text))
    }
}

/// A kind of failure, as `retryOn` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailureKind {
    /// The command exited with a non-zero status or was ended by a signal (any status).
    Exit,
    /// It ran past `maxCompletionTime`.
    Timeout,
    /// Its worker went away while it ran.
    Lost,
    /// A `fetch` URI could not be fetched, so the command never ran.
    Fetch,
    /// The task could not be launched (sandbox, user, image or container refused).
    Launch,
}

impl FailureKind {
    pub const ALL: [FailureKind; 5] = [
        FailureKind::Exit,
        FailureKind::Timeout,
        FailureKind::Lost,
        FailureKind::Fetch,
        FailureKind::Launch,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Exit => "exit",
            FailureKind::Timeout => "timeout",
            FailureKind::Lost => "lost",
            FailureKind::Fetch => "fetch",
            FailureKind::Launch => "launch",
        }
    }

    pub fn parse(text: &str) -> Option<FailureKind> {
        FailureKind::ALL
            .into_iter()
            .find(|k| k.as_str().eq_ignore_ascii_case(text))
    }
}

/// One `retryOn` entry: a kind of failure, or one exit status (a number).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RetryOn {
    ExitCode(i32),
    Kind(FailureKind),
}

/// A failed attempt as the retry policy sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Exited with this status (`None`: ended by a signal, or failed through the async API
    /// with no status to speak of).
    Exit(Option<i32>),
    Timeout,
    Lost,
    Fetch,
    Launch,
}

impl Job {
    /// The concurrency policy in force: the explicit one, or Chronos' `concurrent` flag's.
    pub fn concurrency(&self) -> ConcurrencyPolicy {
        self.concurrency_policy.unwrap_or(if self.concurrent {
            ConcurrencyPolicy::Allow
        } else {
            ConcurrencyPolicy::Queue
        })
    }

    /// Whether this job's retry policy retries a failure like this one.
    pub fn retries_on(&self, failure: Failure) -> bool {
        if self.retry_on.is_empty() {
            return true;
        }
        self.retry_on.iter().any(|entry| match (*entry, failure) {
            (RetryOn::Kind(FailureKind::Exit), Failure::Exit(_)) => true,
            (RetryOn::ExitCode(code), Failure::Exit(status)) => status == Some(code),
            (RetryOn::Kind(FailureKind::Timeout), Failure::Timeout)
            | (RetryOn::Kind(FailureKind::Lost), Failure::Lost)
            | (RetryOn::Kind(FailureKind::Fetch), Failure::Fetch)
            | (RetryOn::Kind(FailureKind::Launch), Failure::Launch) => true,
            _ => false,
        })
    }

    /// How many missed occurrences catching up runs at most (0 when the job does not catch up).
    pub fn catch_up_runs(&self) -> u32 {
        if self.catch_up {
            self.catch_up_limit.unwrap_or(DEFAULT_CATCH_UP_LIMIT)
        } else {
            0
        }
    }
}

impl Job {
    /// The job as clients see it: without what only the scheduler keeps (the cron cursor).
    pub fn for_clients(&self) -> Job {
        Job {
            schedule_cursor: None,
            ..self.clone()
        }
    }

    /// A dependent job runs after its parents; every other job runs on its schedule.
    pub fn is_dependent(&self) -> bool {
        self.parents.is_some()
    }

    pub fn parents(&self) -> &[String] {
        self.parents.as_deref().unwrap_or(&[])
    }

    /// Chronos' `Exporter.getLastState`: the outcome of the last finished run.
    pub fn last_status(&self) -> &'static str {
        match (self.last_success.is_empty(), self.last_error.is_empty()) {
            (true, true) => "fresh",
            (true, false) => "failure",
            (false, true) => "success",
            // The timestamps share one fixed format, so string order is time order; a tie is a failure.
            (false, false) if self.last_success > self.last_error => "success",
            (false, false) => "failure",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Fetch {
    pub uri: String,
    pub executable: bool,
    pub cache: bool,
    pub extract: bool,
    /// Chronos' spelling, written only when set. `outputFile` is what kairos wrote before, so
    /// stored jobs from then still load.
    #[serde(
        rename = "output_file",
        alias = "outputFile",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub output_file: String,
}

impl Fetch {
    /// A deprecated `uris` entry as a fetch entry, with Chronos' defaults (extract, nothing else).
    pub fn from_uri(uri: &str) -> Fetch {
        Fetch {
            uri: uri.to_owned(),
            executable: false,
            cache: false,
            extract: true,
            output_file: String::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnvVar {
    pub name: String,
    pub value: String,
}

/// `[attribute, operator, value]`, as Chronos writes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Constraint(pub String, pub String, pub String);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    #[serde(rename = "type")]
    pub kind: String,
    pub image: String,
    pub network: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_name: Option<String>,
    /// Kept verbatim: only the workers issue gives these a meaning.
    pub network_infos: Vec<serde_json::Value>,
    pub volumes: Vec<Volume>,
    pub force_pull_image: bool,
    pub parameters: Vec<Parameter>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Volume {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_path: Option<String>,
    pub container_path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Parameter {
    pub key: String,
    pub value: String,
}

/// A Chronos task id, `ct:<dueMillis>:<attempt>:<jobName>:<arguments>`, checked when made.
///
/// The text is the identity (it is what clients, the store and agents see), so it is kept
/// whole and shared: every map, message and record that follows a task clones it, and a clone
/// is a reference count, not a copy. Only [`TaskId::new`] and [`TaskId::parse`] make one, so
/// a `TaskId` always has the Chronos shape and its parts can be read back without failing.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskId(std::sync::Arc<str>);

impl TaskId {
    /// Chronos strips `;` from the arguments it puts in an id ("command injection filter").
    pub fn new(due_millis: i64, attempt: u32, job: &str, arguments: &str) -> TaskId {
        let arguments = arguments.replace(';', "");
        TaskId(format!("ct:{due_millis}:{attempt}:{job}:{arguments}").into())
    }

    /// Parses with Chronos' regex `ct:(\d+):(\d+):([\w.-]+):?(.*)?` (full match).
    pub fn parse(text: &str) -> Option<TaskId> {
        let (due, attempt, job, _) = split(text)?;
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(due) || !digits(attempt) || !is_valid_name(job) {
            return None;
        }
        due.parse::<i64>().ok()?;
        attempt.parse::<u32>().ok()?;
        Some(TaskId(text.into()))
    }

    /// The same run, `millis` later: how a second task due at the same instant gets its own id.
    pub fn later(&self, millis: i64) -> TaskId {
        TaskId::new(
            self.due_millis() + millis,
            self.attempt(),
            self.job(),
            self.arguments(),
        )
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn parts(&self) -> (&str, &str, &str, &str) {
        split(&self.0).expect("a TaskId is only made in the Chronos shape")
    }

    pub fn due_millis(&self) -> i64 {
        self.parts().0.parse().unwrap_or_default()
    }

    pub fn attempt(&self) -> u32 {
        self.parts().1.parse().unwrap_or_default()
    }

    pub fn job(&self) -> &str {
        self.parts().2
    }

    pub fn arguments(&self) -> &str {
        self.parts().3
    }
}

/// The four parts of `ct:<due>:<attempt>:<job>[:<arguments>]`, unchecked.
fn split(text: &str) -> Option<(&str, &str, &str, &str)> {
    let rest = text.strip_prefix("ct:")?;
    let (due, rest) = rest.split_once(':')?;
    let (attempt, rest) = rest.split_once(':')?;
    let (job, arguments) = rest.split_once(':').unwrap_or((rest, ""));
    Some((due, attempt, job, arguments))
}

impl std::ops::Deref for TaskId {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for TaskId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for TaskId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for TaskId {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for TaskId {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

impl std::fmt::Display for TaskId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for TaskId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_ids_match_chronos_vectors() {
        let cases = [
            (
                (1420843781398, 0, "sample-name", "-a 1 -b 2"),
                "ct:1420843781398:0:sample-name:-a 1 -b 2",
            ),
            (
                (1420843781398, 0, "sample-name", ""),
                "ct:1420843781398:0:sample-name:",
            ),
            (
                (1420843781398, 0, "sample-name", "-c 1 ; ./evil.sh"),
                "ct:1420843781398:0:sample-name:-c 1  ./evil.sh",
            ),
        ];
        for ((due, attempt, job, args), want) in cases {
            assert_eq!(TaskId::new(due, attempt, job, args).to_string(), want);
        }
    }

    #[test]
    fn task_ids_parse_like_chronos() {
        let cases = [
            (
                "ct:1420843781398:0:test:-a 1 -b 2",
                Some(("test", 1420843781398, 0, "-a 1 -b 2")),
            ),
            (
                "ct:1420843781398:0:test:-a 1:2 --B test",
                Some(("test", 1420843781398, 0, "-a 1:2 --B test")),
            ),
            ("ct:1420843781398:0:test", Some(("test", 1420843781398, 0, ""))),
            (
                "ct:1420843781398:3:a.b-c_d:",
                Some(("a.b-c_d", 1420843781398, 3, "")),
            ),
            ("ct:x:0:test:", None),
            ("ct:1:0:bad name:", None),
            ("xx:1:0:test:", None),
            ("ct:1::test:", None),
        ];
        for (text, want) in cases {
            let got = TaskId::parse(text).map(|t| {
                let parts = (
                    t.job().to_owned(),
                    t.due_millis(),
                    t.attempt(),
                    t.arguments().to_owned(),
                );
                assert_eq!(t.as_str(), text, "an id keeps its text");
                parts
            });
            let want = want.map(|(j, d, a, args)| (j.to_owned(), d, a, args.to_owned()));
            assert_eq!(got, want, "parsing {text:?}");
        }
    }

    #[test]
    fn names_follow_chronos_rule() {
        for (name, ok) in [
            ("a", true),
            ("job-1.x_y", true),
            ("", false),
            ("job with spaces", false),
            ("a#b", false),
            ("é", false),
            (".", false),
            ("..", false),
            ("...", true),
        ] {
            assert_eq!(is_valid_name(name), ok, "{name:?}");
        }
    }
}
