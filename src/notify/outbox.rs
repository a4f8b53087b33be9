//! Delivery of the outbox, on the leader, outside the engine loop: notices come from the engine
//! once the group holding them has committed, through a bounded queue, and from a scan of the
//! store at start (what a previous leader left) and every half minute (what the queue had no room
//! for). Each is sent with a timeout per attempt and retried with backoff until its window ends;
//! then the engine records it done. A dead endpoint only ever holds its own notices' slots.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};

use super::email::Mailer;
use super::{Counters, Error, Event, Notice, Settings, Sink, backoff, link, webhook};
use crate::clock;
use crate::store::Store;

/// Notices waiting between the engine and the delivery task; past this the engine's offer is
/// dropped (counted), and the outbox row waits for the next scan.
pub const QUEUE: usize = 1024;

/// Notices being delivered (or waiting for their next attempt) at once.
const IN_FLIGHT: usize = 256;

/// How often the store is scanned for notices not in hand.
const RESCAN: Duration = Duration::from_secs(30);

/// How long a finished notice is remembered, so a scan that reads it before its "done" is
/// committed does not send it again.
const REMEMBER: Duration = Duration::from_secs(600);

/// A notice is done: delivered, or given up after its window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Done {
    pub id: String,
    pub delivered: bool,
    pub at_ms: i64,
}

/// The delivery task and the queue into it; dropping it stops every delivery.
pub struct Outbox {
    queue: mpsc::Sender<Notice>,
    counters: Arc<Counters>,
    task: JoinHandle<()>,
}

impl Drop for Outbox {
    fn drop(&mut self) {
        // The task owns the deliveries (a `JoinSet`), so they stop with it.
        self.task.abort();
    }
}

/// What every delivery shares.
struct Context {
    settings: Settings,
    counters: Arc<Counters>,
    client: reqwest::Client,
    mailer: Option<Mailer>,
}

impl Outbox {
    /// Starts delivering: first what the store holds undelivered, then what the engine offers.
    /// Each finished notice is reported on `done`, for the engine to record.
    pub fn start<S: Store>(
        store: Arc<S>,
        settings: Settings,
        counters: Arc<Counters>,
        done: mpsc::UnboundedSender<Done>,
    ) -> Outbox {
        let (queue, offered) = mpsc::channel(QUEUE);
        let mailer = settings
            .mail
            .as_ref()
            .and_then(|mail| match Mailer::new(mail, settings.timeout) {
                Ok(mailer) => Some(mailer),
                Err(error) => {
                    tracing::error!(%error, "Email notifications are off: the mail settings are unusable.");
                    None
                }
            });
        let client = reqwest::Client::builder()
            .timeout(settings.timeout)
            .user_agent(concat!("kairos/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        let context = Arc::new(Context {
            settings,
            counters: counters.clone(),
            client,
            mailer,
        });
        let task = tokio::spawn(run(store, context, offered, done));
        Outbox {
            queue,
            counters,
            task,
        }
    }

    /// Hands over a notice whose outbox row is committed; never waits. With the queue full it is
    /// counted as dropped and left to the next scan of the store.
    pub fn offer(&self, notice: Notice) {
        if self.queue.try_send(notice).is_err() {
            Counters::add(&self.counters.dropped);
            tracing::debug!(
                "The notification queue is full; the notice waits in the outbox for the next scan."
            );
        }
    }
}

async fn run<S: Store>(
    store: Arc<S>,
    context: Arc<Context>,
    mut offered: mpsc::Receiver<Notice>,
    done: mpsc::UnboundedSender<Done>,
) {
    let mut active: HashSet<String> = HashSet::new();
    let mut finished: HashMap<String, tokio::time::Instant> = HashMap::new();
    let mut deliveries: JoinSet<Done> = JoinSet::new();
    let mut rescan = tokio::time::interval(RESCAN);
    rescan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let start = |notice: Notice,
                 active: &mut HashSet<String>,
                 finished: &HashMap<String, tokio::time::Instant>,
                 deliveries: &mut JoinSet<Done>| {
        if active.contains(&notice.id) || finished.contains_key(&notice.id) {
            return;
        }
        active.insert(notice.id.clone());
        deliveries.spawn(deliver(notice, context.clone()));
    };
    loop {
        tokio::select! {
            Some(notice) = offered.recv(), if active.len() < IN_FLIGHT => {
                start(notice, &mut active, &finished, &mut deliveries);
            }
            _ = rescan.tick() => {
                let now = tokio::time::Instant::now();
                finished.retain(|_, at| now.duration_since(*at) < REMEMBER);
                let room = IN_FLIGHT.saturating_sub(active.len());
                if room == 0 {
                    continue;
                }
                let rows = match store.pending_notices(room as u32 + active.len() as u32).await {
                    Ok(rows) => rows,
                    Err(error) => {
                        tracing::warn!(%error, "Cannot read the notification outbox; trying again later.");
                        continue;
                    }
                };
                for row in rows {
                    if active.len() >= IN_FLIGHT {
                        break;
                    }
                    match Notice::from_stored(&row) {
                        Ok(notice) => start(notice, &mut active, &finished, &mut deliveries),
                        Err(error) => {
                            tracing::error!(notice = %row.id, %error, "Dropping an unreadable notice.");
                            let _ = done.send(Done { id: row.id, delivered: false, at_ms: clock::now().timestamp_millis() });
                        }
                    }
                }
            }
            Some(result) = deliveries.join_next(), if !deliveries.is_empty() => {
                let Ok(outcome) = result else {
                    continue;
                };
                active.remove(&outcome.id);
                finished.insert(outcome.id.clone(), tokio::time::Instant::now());
                if done.send(outcome).is_err() {
                    return; // The engine is gone.
                }
            }
        }
    }
}

/// Sends one notice until it is delivered or its window is over.
async fn deliver(notice: Notice, context: Arc<Context>) -> Done {
    let settings = &context.settings;
    let channel = notice.sink.channel();
    let window_ms = i64::try_from(settings.window.as_millis()).unwrap_or(i64::MAX);
    let deadline_ms = notice.created_ms.saturating_add(window_ms);
    let mut event = notice.event;
    event.link = Some(link(&settings.public_url, &event));
    let mut failures = 0;
    loop {
        let attempt = tokio::time::timeout(settings.timeout, send(&context, &notice.sink, &event)).await;
        let error = match attempt {
            Ok(Ok(())) => {
                Counters::add(&context.counters.sent[channel.index()]);
                tracing::info!(job = %event.job, kind = %event.kind, event = %event.id, channel = channel.as_str(), "Notification sent.");
                return Done {
                    id: notice.id,
                    delivered: true,
                    at_ms: clock::now().timestamp_millis(),
                };
            }
            // Without a mail server or a valid owner address, no retry can help.
            Ok(Err(error)) => (
                error.to_string(),
                matches!(error, Error::NoMailer | Error::NoRecipient(_)),
            ),
            Err(_) => (
                format!("no answer within {:.1} s", settings.timeout.as_secs_f64()),
                false,
            ),
        };
        let (error, hopeless) = error;
        Counters::add(&context.counters.failed[channel.index()]);
        failures += 1;
        let wait = backoff(settings.first_retry, failures);
        let now_ms = clock::now().timestamp_millis();
        let wait_ms = i64::try_from(wait.as_millis()).unwrap_or(i64::MAX);
        if hopeless || now_ms.saturating_add(wait_ms) > deadline_ms {
            Counters::add(&context.counters.abandoned[channel.index()]);
            tracing::warn!(job = %event.job, kind = %event.kind, event = %event.id, channel = channel.as_str(),
                attempts = failures, %error, "Giving up a notification.");
            return Done {
                id: notice.id,
                delivered: false,
                at_ms: now_ms,
            };
        }
        tracing::warn!(job = %event.job, kind = %event.kind, event = %event.id, channel = channel.as_str(),
            attempt = failures, retry_in_s = wait.as_secs_f64(), %error, "A notification could not be delivered; retrying.");
        tokio::time::sleep(wait).await;
    }
}

/// One attempt on the notice's sink.
async fn send(context: &Context, sink: &Sink, event: &Event) -> Result<(), Error> {
    match sink {
        Sink::Email { to } => {
            let mailer = context.mailer.as_ref().ok_or(Error::NoMailer)?;
            let link = event.link.clone().unwrap_or_default();
            mailer.send(to, event, &link).await
        }
        Sink::Webhook { url, format } => {
            webhook::send(
                &context.client,
                url,
                event,
                *format,
                context.settings.secret.as_ref(),
            )
            .await
        }
    }
}
