//! `GET /v1/scheduler/task/<taskId>/output[?follow=true]`: a task's stdout and stderr. Without
//! `follow`, what there is now as JSON; with it, Server-Sent Events that carry the output as it
//! is written and end with the task. The task page and `kairos tasks logs --follow` read it.
//!
//! Events: `stdout` and `stderr` carry appended text (a JSON string each); `reset` says the
//! text so far is replaced by what follows (the final record differs from what was followed,
//! which only a relaunch under the same id can cause); `end` carries the final state, exit code
//! and message; `error` a reason the stream stops early.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::json;
use warp::http::StatusCode;
use warp::reply::{Reply, Response};
use warp::sse::Event;

use super::{ApiError, Ctx, Segment, json_reply, parse_task_id, respond};
use crate::engine::Handle;
use crate::executor::live::Follower;
use crate::job::TaskId;
use crate::store::TaskRecord;

/// Streams open at once; more get `503`, so followers cannot pile up without bound.
const MAX_FOLLOWERS: usize = 1024;
static FOLLOWERS: AtomicUsize = AtomicUsize::new(0);

/// How often a follower looks at a task that has no live output (queued, or on a worker that
/// does not send it) to see whether it ended.
const POLL: Duration = Duration::from_millis(500);

#[derive(Debug, Default, Deserialize)]
pub(super) struct OutputQuery {
    follow: Option<String>,
}

pub(super) async fn task_output(
    Segment(task_id): Segment,
    query: OutputQuery,
    ctx: Ctx,
) -> Result<Response, Infallible> {
    respond(
        async {
            let follow = super::params::flag("follow", query.follow.as_deref())?;
            let task_id = parse_task_id(&task_id)?;
            let engine = ctx.engine()?;
            let record = engine.task(task_id.clone()).await?;
            if !follow {
                return Ok(json_reply(&snapshot(&engine, &record)));
            }
            let Some(slot) = Slot::take() else {
                return Err(ApiError {
                    status: StatusCode::SERVICE_UNAVAILABLE,
                    message: format!("{MAX_FOLLOWERS} outputs are followed already; try again later"),
                });
            };
            let follow = Follow {
                engine,
                task_id,
                follower: None,
                sent: [String::new(), String::new()],
                pending: VecDeque::new(),
                done: false,
                _slot: slot,
            };
            // The follow runs on its own task and hands events over a short channel: the
            // response body must be `Sync`, which the engine's requests are not. It stops when
            // the client goes.
            let (tx, rx) = tokio::sync::mpsc::channel(16);
            tokio::spawn(follow.run(tx));
            let events = tokio_stream::wrappers::ReceiverStream::new(rx).map(Ok::<_, Infallible>);
            Ok(warp::sse::reply(warp::sse::keep_alive().stream(events)).into_response())
        }
        .await,
    )
}

/// The output as it is now: the live tail of a running task, the record otherwise.
fn snapshot(engine: &Handle, record: &TaskRecord) -> serde_json::Value {
    let live = record
        .state
        .is_open()
        .then(|| engine.live().follow(&record.id))
        .flatten()
        .map(|mut follower| follower.take());
    let (stdout, stderr) = match &live {
        Some(chunks) => (chunks.stdout.as_str(), chunks.stderr.as_str()),
        None => (record.stdout.as_str(), record.stderr.as_str()),
    };
    json!({
        "taskId": record.id,
        "state": record.state.as_str(),
        "live": live.is_some(),
        "stdout": stdout,
        "stderr": stderr,
    })
}

/// One of the [`MAX_FOLLOWERS`] places, given back when the stream is dropped.
struct Slot;

impl Slot {
    fn take() -> Option<Slot> {
        FOLLOWERS
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < MAX_FOLLOWERS).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        FOLLOWERS.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One follower's progress through a task.
struct Follow {
    engine: Handle,
    task_id: TaskId,
    follower: Option<Follower>,
    /// The stdout and stderr text sent so far.
    sent: [String; 2],
    pending: VecDeque<Event>,
    done: bool,
    _slot: Slot,
}

impl Follow {
    async fn run(mut self, tx: tokio::sync::mpsc::Sender<Event>) {
        loop {
            let event = tokio::select! {
                () = tx.closed() => return,
                event = self.next() => event,
            };
            let Some(event) = event else { return };
            if tx.send(event).await.is_err() {
                return;
            }
        }
    }

    /// The next event, waiting for one; `None` once the end was sent.
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(event);
            }
            if self.done {
                return None;
            }
            self.step().await;
        }
    }

    /// Waits for output or the end, and queues the events for it.
    async fn step(&mut self) {
        if self.follower.is_none() {
            self.follower = self.engine.live().follow(&self.task_id);
        }
        if let Some(mut follower) = self.follower.take() {
            let chunks = follower.take();
            self.send(0, chunks.stdout);
            self.send(1, chunks.stderr);
            if !chunks.closed {
                if self.pending.is_empty() {
                    // Wake on output or the close, and now and then regardless (a tail that
                    // closed without a word would otherwise hold the stream forever).
                    let _ = tokio::time::timeout(Duration::from_secs(5), follower.changed()).await;
                }
                self.follower = Some(follower);
            }
            return;
        }
        match self.engine.task(self.task_id.clone()).await {
            Ok(record) if record.state.is_open() => tokio::time::sleep(POLL).await,
            Ok(record) => self.finish(&record),
            Err(error) => {
                self.pending.push_back(
                    Event::default()
                        .event("error")
                        .data(ApiError::from(error).message),
                );
                self.done = true;
            }
        }
    }

    fn send(&mut self, stream: usize, text: String) {
        if text.is_empty() {
            return;
        }
        let name = if stream == 0 { "stdout" } else { "stderr" };
        self.pending.push_back(text_event(name, &text));
        self.sent[stream].push_str(&text);
    }

    /// The task ended: what the record keeps beyond what was sent, then the end.
    fn finish(&mut self, record: &TaskRecord) {
        let finals = [&record.stdout, &record.stderr];
        if finals
            .iter()
            .zip(&self.sent)
            .any(|(done, sent)| !done.starts_with(sent.as_str()))
        {
            self.pending.push_back(Event::default().event("reset").data("{}"));
            self.sent = [String::new(), String::new()];
        }
        for (stream, text) in finals.into_iter().enumerate() {
            let rest = text[self.sent[stream].len()..].to_owned();
            self.send(stream, rest);
        }
        let end = json!({
            "state": record.state.as_str(),
            "exitCode": record.exit_code,
            "message": record.message,
        });
        self.pending
            .push_back(Event::default().event("end").data(end.to_string()));
        self.done = true;
    }
}

fn text_event(name: &str, text: &str) -> Event {
    // A JSON string keeps newlines and every other character intact in the event's one line.
    Event::default()
        .event(name)
        .data(serde_json::Value::from(text).to_string())
}
