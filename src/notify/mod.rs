//! Notifications: a job's final failure, its recovery, a skipped run, a run still going past its
//! `warnAfter`, and (opted in) every success, told to people by email and to programs by webhook.
//!
//! The engine's core decides which events happen and where each goes: one [`Notice`] per event
//! and sink, written to the store's outbox in the same group commit as the outcome it tells of.
//! [`outbox`] delivers them once that commit is done, outside the engine loop and on the leader
//! only, retrying with backoff; the engine then records each one done. So a notice is never sent
//! for an outcome that was not committed, and a new leader sends what the old one had not.
//! The one window left: a notice delivered but not yet recorded done when its leader dies is
//! sent again by the next; the event id (`X-Kairos-Event`, and `id` in the payload) lets a
//! receiver drop the repeat.

pub mod email;
pub mod outbox;
pub mod webhook;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::store::StoredNotice;

/// Why a notice could not be delivered (each attempt's failure; most are retried).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the email could not be built: {0}")]
    Message(String),
    #[error("no valid address in the job's owner list: {0}")]
    NoRecipient(String),
    #[error("the mail server setting is invalid: {0}")]
    MailServer(String),
    #[error("email is off on this server (no --mail-server)")]
    NoMailer,
    #[error("the mail server refused the message or could not be reached: {0}")]
    Smtp(String),
    #[error("the webhook could not be reached: {0}")]
    Http(#[source] reqwest::Error),
    #[error("the webhook answered {status}")]
    Status { status: u16 },
    #[error("the notice in the outbox is unreadable: {0}")]
    Corrupt(#[source] serde_json::Error),
}

/// What happened, and the names a job's `on` lists use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A run failed with no retry left (failed, timed out, launch failed or lost).
    Failure,
    /// The first success after a final failure.
    Recovery,
    /// A scheduled occurrence that will not run: missed beyond its epsilon, passed over while
    /// another waited, or refused by the job's concurrency policy.
    Skipped,
    /// A run still going after the job's `warnAfter`.
    Late,
    /// Any success; a recovery reaches those that ask for `success` too.
    Success,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::Failure,
        Kind::Recovery,
        Kind::Skipped,
        Kind::Late,
        Kind::Success,
    ];

    /// What a sink gets when its job does not say: everything but plain successes.
    pub const DEFAULT: [Kind; 4] = [Kind::Failure, Kind::Recovery, Kind::Skipped, Kind::Late];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Failure => "failure",
            Kind::Recovery => "recovery",
            Kind::Skipped => "skipped",
            Kind::Late => "late",
            Kind::Success => "success",
        }
    }

    pub fn parse(text: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a sink listening for `on` gets an event of this kind: a recovery is also a success.
pub fn wants(on: &[Kind], kind: Kind) -> bool {
    on.contains(&kind) || (kind == Kind::Recovery && on.contains(&Kind::Success))
}

/// How a webhook's body is shaped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// The event as kairos' JSON payload.
    #[default]
    Json,
    /// `{"text": …}`, which Slack's incoming webhooks (and Mattermost, Rocket.Chat, …) post.
    Slack,
}

impl Format {
    fn is_json(&self) -> bool {
        *self == Format::Json
    }
}

/// One entry of a job's `notifications`: a webhook and the events it gets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    pub on: Vec<Kind>,
    pub webhook: String,
    #[serde(default, skip_serializing_if = "Format::is_json")]
    pub format: Format,
}

/// Where a notice goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Sink {
    /// The job's owners, by email.
    Email {
        to: Vec<String>,
    },
    Webhook {
        url: String,
        format: Format,
    },
}

/// A delivery channel, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    Email,
    Webhook,
}

impl Channel {
    pub const ALL: [Channel; 2] = [Channel::Email, Channel::Webhook];

    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Webhook => "webhook",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl Sink {
    pub fn channel(&self) -> Channel {
        match self {
            Sink::Email { .. } => Channel::Email,
            Sink::Webhook { .. } => Channel::Webhook,
        }
    }

    /// Names the sink within its event's notices, the same on every server: a new leader that
    /// makes the same notice again (a `late` one, say) finds it already in the outbox.
    fn tag(&self) -> String {
        match self {
            Sink::Email { .. } => "email".to_owned(),
            Sink::Webhook { url, format } => {
                let digest = Sha256::digest(format!("{url}\n{format:?}").as_bytes());
                format!("webhook-{}", &hex(&digest)[..16])
            }
        }
    }
}

/// What happened, as a webhook receives it (the JSON payload) and an email tells it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// Unique per event and the same on every server and every sink it goes to: also sent as
    /// `X-Kairos-Event`, so a receiver can drop a repeat.
    pub id: String,
    pub kind: Kind,
    pub job: String,
    pub task_id: Option<String>,
    pub worker: Option<String>,
    pub exit_code: Option<i32>,
    /// From the task's start to now (its end, or the `late` check).
    pub duration_ms: Option<i64>,
    pub attempt: Option<u32>,
    /// The task's message (why it ended so), or why runs were skipped.
    pub message: String,
    /// The last lines of the task's stderr, at most [`STDERR_TAIL_BYTES`].
    pub stderr_tail: String,
    /// The instant the run was due (ISO 8601, UTC).
    pub due: Option<String>,
    /// When it happened.
    pub at: String,
    /// The task's page in the web UI (the job's, without a task); set when it is sent.
    #[serde(default)]
    pub link: Option<String>,
}

/// Bytes of stderr a notice carries: enough for an error, short enough for a chat message.
pub const STDERR_TAIL_BYTES: usize = 2048;

/// The end of `text`, at most `limit` bytes, cut at a character boundary.
pub fn tail(text: &str, limit: usize) -> &str {
    if text.len() <= limit {
        return text;
    }
    let mut start = text.len() - limit;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

/// An event id from what makes the event unique (its kind and a task id, or a job and an
/// instant): hex, header-safe, and the same wherever it is computed.
pub fn event_id(kind: Kind, key: &str) -> String {
    let digest = Sha256::digest(format!("{kind}\n{key}").as_bytes());
    hex(&digest)[..32].to_owned()
}

/// One event for one sink: a row of the outbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Notice {
    /// `<event id>:<sink tag>`, the outbox's key.
    pub id: String,
    pub created_ms: i64,
    pub sink: Sink,
    pub event: Event,
}

impl Notice {
    pub fn new(event: Event, sink: Sink, created_ms: i64) -> Notice {
        Notice {
            id: format!("{}:{}", event.id, sink.tag()),
            created_ms,
            sink,
            event,
        }
    }

    /// The outbox row.
    pub fn stored(&self) -> StoredNotice {
        StoredNotice {
            id: self.id.clone(),
            created_ms: self.created_ms,
            // A struct of strings, numbers and enums always serializes.
            body: serde_json::to_string(self).unwrap_or_default(),
        }
    }

    /// A notice read back from the outbox.
    ///
    /// # Errors
    /// A body that does not decode.
    pub fn from_stored(row: &StoredNotice) -> Result<Notice, Error> {
        serde_json::from_str(&row.body).map_err(Error::Corrupt)
    }
}

/// A secret setting: never in a log line, an error or `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(text: String) -> Secret {
        Secret(text)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// The SMTP server and the sender (Chronos' `--mail_*` flags).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mail {
    pub host: String,
    pub port: u16,
    pub from: String,
    pub user: Option<String>,
    pub password: Option<Secret>,
    /// TLS from the first byte (SMTPS); without it, STARTTLS when the server offers it.
    pub ssl: bool,
}

/// Everything about notifications that comes from the server's settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Email to owners; `None`: no email.
    pub mail: Option<Mail>,
    /// The server-wide webhook (`--notify-webhook`), which gets what the owners get.
    pub webhook: Option<String>,
    /// Signs every webhook body (`X-Kairos-Signature`).
    pub secret: Option<Secret>,
    /// The UI's address as people reach it, for links (no trailing slash).
    pub public_url: String,
    /// Limit of one delivery attempt.
    pub timeout: Duration,
    /// Wait before the first retry; it doubles each time, up to [`MAX_RETRY_DELAY`].
    pub first_retry: Duration,
    /// How long after its event a notice is still retried.
    pub window: Duration,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            mail: None,
            webhook: None,
            secret: None,
            public_url: "http://127.0.0.1:8080".to_owned(),
            timeout: Duration::from_secs(10),
            first_retry: Duration::from_secs(5),
            window: RETRY_WINDOW,
        }
    }
}

/// Notices are retried for an hour after their event.
pub const RETRY_WINDOW: Duration = Duration::from_secs(3600);

/// The longest wait between two attempts.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(600);

/// The wait after the `failures`-th failed attempt (1 for the first): `first`, doubled after
/// each failure, at most [`MAX_RETRY_DELAY`].
pub fn backoff(first: Duration, failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(20);
    first.saturating_mul(1 << doublings).min(MAX_RETRY_DELAY)
}

/// Delivery counts for `/metrics`, shared between the outbox (which counts) and the engine's
/// state (which `/metrics` reads), by channel.
#[derive(Debug, Default)]
pub struct Counters {
    sent: [AtomicU64; 2],
    failed: [AtomicU64; 2],
    abandoned: [AtomicU64; 2],
    dropped: AtomicU64,
}

impl Counters {
    pub fn sent(&self, channel: Channel) -> u64 {
        self.sent[channel.index()].load(Ordering::Relaxed)
    }

    /// Failed delivery attempts (each retried until the window ends).
    pub fn failed(&self, channel: Channel) -> u64 {
        self.failed[channel.index()].load(Ordering::Relaxed)
    }

    /// Notices given up after their retry window.
    pub fn abandoned(&self, channel: Channel) -> u64 {
        self.abandoned[channel.index()].load(Ordering::Relaxed)
    }

    /// Notices the delivery queue had no room for (the outbox keeps them for a later scan).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// Checks a webhook URL: http or https, with a host.
///
/// # Errors
/// Why it is not one, for the field or setting that gave it.
pub fn check_url(url: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("'{url}' is not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(format!("'{url}' is not an http or https URL"));
    }
    Ok(())
}

/// The owner list (Chronos' comma-separated `owner`) as addresses.
pub fn owners(owner: &str) -> Vec<String> {
    owner
        .split([',', ';'])
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(str::to_owned)
        .collect()
}

/// A path segment, percent-encoded (all but RFC 3986's unreserved characters), for links.
fn encode(text: &str) -> String {
    use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
    const RESERVED: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    utf8_percent_encode(text, RESERVED).to_string()
}

/// The UI page of the event: its task's, or its job's.
pub fn link(public_url: &str, event: &Event) -> String {
    match &event.task_id {
        Some(id) => format!("{public_url}/tasks/{}", encode(id)),
        None => format!("{public_url}/jobs/{}", encode(&event.job)),
    }
}

/// One line saying what happened, for a subject or a chat message.
pub fn headline(event: &Event) -> String {
    let job = &event.job;
    match event.kind {
        Kind::Failure => match event.exit_code {
            Some(code) => format!("kairos: job {job} failed (exit code {code})"),
            None => format!("kairos: job {job} failed"),
        },
        Kind::Recovery => format!("kairos: job {job} recovered"),
        Kind::Skipped => format!("kairos: job {job} skipped a run"),
        Kind::Late => format!("kairos: job {job} is still running"),
        Kind::Success => format!("kairos: job {job} succeeded"),
    }
}

/// Seconds, as people read them.
fn seconds(ms: i64) -> String {
    format!("{:.1} s", ms as f64 / 1000.0)
}

/// The event in plain text: what an email says.
pub fn describe(event: &Event, link: &str) -> String {
    let mut lines = vec![headline(event), String::new()];
    lines.push(format!("Job:       {}", event.job));
    if let Some(task) = &event.task_id {
        lines.push(format!("Task:      {task}"));
    }
    if let Some(worker) = event.worker.as_ref().filter(|w| !w.is_empty()) {
        lines.push(format!("Worker:    {worker}"));
    }
    if let Some(code) = event.exit_code {
        lines.push(format!("Exit code: {code}"));
    }
    if let Some(ms) = event.duration_ms {
        lines.push(format!("Duration:  {}", seconds(ms)));
    }
    if let Some(due) = &event.due {
        lines.push(format!("Due:       {due}"));
    }
    lines.push(format!("At:        {}", event.at));
    if !event.message.is_empty() {
        lines.push(format!("Message:   {}", event.message));
    }
    lines.push(format!("Link:      {link}"));
    lines.push(format!("Event id:  {}", event.id));
    if !event.stderr_tail.is_empty() {
        lines.push(String::new());
        lines.push("The end of stderr:".to_owned());
        lines.push(event.stderr_tail.clone());
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: Kind) -> Event {
        Event {
            id: event_id(kind, "ct:1:0:j:"),
            kind,
            job: "nightly".to_owned(),
            task_id: Some("ct:1800000000000:0:nightly:a b".to_owned()),
            worker: Some("w1".to_owned()),
            exit_code: Some(3),
            duration_ms: Some(1500),
            attempt: Some(0),
            message: "exited with status 3".to_owned(),
            stderr_tail: "boom".to_owned(),
            due: Some("2027-01-15T08:00:00.000Z".to_owned()),
            at: "2027-01-15T08:00:01.500Z".to_owned(),
            link: None,
        }
    }

    #[test]
    fn a_recovery_reaches_those_who_ask_for_successes() {
        assert!(wants(&[Kind::Success], Kind::Recovery));
        assert!(wants(&Kind::DEFAULT, Kind::Recovery));
        assert!(!wants(&Kind::DEFAULT, Kind::Success));
        assert!(!wants(&[Kind::Recovery], Kind::Success));
        assert!(!wants(&[], Kind::Failure));
        for kind in Kind::ALL {
            assert_eq!(Kind::parse(kind.as_str()), Some(kind));
        }
    }

    #[test]
    fn backoff_doubles_from_the_first_delay_up_to_its_ceiling() {
        let first = Duration::from_secs(5);
        let waits: Vec<u64> = (1..=10).map(|n| backoff(first, n).as_secs()).collect();
        assert_eq!(waits, [5, 10, 20, 40, 80, 160, 320, 600, 600, 600]);
        assert_eq!(backoff(Duration::from_millis(100), 1), Duration::from_millis(100));
        assert_eq!(backoff(first, u32::MAX), MAX_RETRY_DELAY, "no overflow");
        // A dozen attempts fit in the hour's window with the default first delay.
        let mut elapsed = Duration::ZERO;
        let mut attempts = 1;
        while elapsed + backoff(first, attempts) <= RETRY_WINDOW {
            elapsed += backoff(first, attempts);
            attempts += 1;
        }
        assert_eq!(attempts, 12);
    }

    #[test]
    fn ids_are_stable_and_differ_by_sink() {
        let a = event_id(Kind::Failure, "ct:1:0:j:");
        assert_eq!(a, event_id(Kind::Failure, "ct:1:0:j:"));
        assert_ne!(a, event_id(Kind::Late, "ct:1:0:j:"));
        assert_eq!(a.len(), 32);
        let e = event(Kind::Failure);
        let hook = |url: &str| Sink::Webhook {
            url: url.to_owned(),
            format: Format::Json,
        };
        let one = Notice::new(e.clone(), hook("http://a/"), 1);
        assert_eq!(one.id, Notice::new(e.clone(), hook("http://a/"), 2).id);
        assert_ne!(one.id, Notice::new(e.clone(), hook("http://b/"), 1).id);
        assert!(one.id.starts_with(&e.id));
        assert_eq!(Notice::from_stored(&one.stored()).unwrap(), one);
    }

    #[test]
    fn the_text_carries_what_happened_and_the_link() {
        let e = event(Kind::Failure);
        let link = link("https://kairos.example", &e);
        assert_eq!(
            link,
            "https://kairos.example/tasks/ct%3A1800000000000%3A0%3Anightly%3Aa%20b"
        );
        let text = describe(&e, &link);
        for part in [
            "job nightly failed (exit code 3)",
            "ct:1800000000000:0:nightly:a b",
            "w1",
            "1.5 s",
            "boom",
            &link,
        ] {
            assert!(text.contains(part), "{part} in {text}");
        }
        assert_eq!(tail("héllo", 4), "llo", "cut at a character boundary");
        assert_eq!(owners(" a@x, b@y ,,"), ["a@x", "b@y"]);
        assert_eq!(format!("{:?}", Secret::new("hunter2".into())), "Secret(***)");
    }
}
