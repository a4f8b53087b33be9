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

impl Job {
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
