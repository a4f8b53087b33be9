//! `/tasks/<taskId>`: one task's record, its progress for data jobs, and its stdout and stderr,
//! followed live while it runs (the page reads `GET /v1/scheduler/task/<id>/output?follow=true`).

use std::convert::Infallible;
use std::fmt::Write as _;

use warp::reply::Response;

use super::super::guard::Caller;
use super::super::{Ctx, Segment, parse_task_id, respond};
use super::{esc, html, may, page_html};
use crate::auth::Role;

pub(super) async fn task_page(Segment(id): Segment, who: Caller, ctx: Ctx) -> Result<Response, Infallible> {
    respond(
        async {
            let task_id = parse_task_id(&id)?;
            let engine = ctx.engine()?;
            let task = engine.task(task_id.clone()).await?;
            let job = task.job.clone();
            let data_job = engine
                .read(move |s| s.jobs.get(&job).is_some_and(|e| e.job.data_processing_job_type))
                .await?;
            let open = task.state.is_open();
            // A running task shows what it wrote so far; the script then follows the rest.
            let (stdout, stderr) = match engine.live().follow(&task_id).filter(|_| open) {
                Some(mut follower) => {
                    let chunks = follower.take();
                    (chunks.stdout, chunks.stderr)
                }
                None => (task.stdout.clone(), task.stderr.clone()),
            };
            let time = |ms: Option<i64>| {
                ms.map(|ms| crate::clock::from_millis(ms).format("%Y-%m-%d %H:%M:%S UTC").to_string())
                    .unwrap_or_else(|| "—".to_owned())
            };
            let duration = match (task.started_ms, task.finished_ms) {
                (Some(s), Some(f)) => format!("{:.3} s", (f - s) as f64 / 1000.0),
                (Some(_), None) => "running".to_owned(),
                _ => "—".to_owned(),
            };
            let mut body = String::new();
            if open && may(&who, Role::Operate) {
                let _ = write!(
                    body,
                    r#"<div class="actions"><button type="button" data-call="DELETE" data-url="/v1/scheduler/task/kill/{job}" data-confirm="Kill the running tasks of {job}?">Kill</button></div><p id="status" role="status" class="notice"></p>"#,
                    job = esc(&task.job)
                );
            }
            let _ = write!(
                body,
                r#"<dl class="facts">
<dt>Job</dt><dd><a href="/jobs/{job}">{job}</a></dd>
<dt>State</dt><dd><span class="state {state}" id="task-state">{state}</span></dd>
<dt>Attempt</dt><dd>{attempt}</dd>
<dt>Due</dt><dd>{due}</dd>
<dt>Started</dt><dd>{started}</dd>
<dt>Duration</dt><dd>{duration}</dd>
<dt>Worker</dt><dd>{worker}</dd>
<dt>Exit code</dt><dd id="task-exit">{exit}</dd>
<dt>Message</dt><dd id="task-message">{message}</dd>
{progress}</dl>"#,
                job = esc(&task.job),
                state = task.state.as_str(),
                attempt = task.attempt,
                due = time(Some(task.due_ms)),
                started = time(task.started_ms),
                worker = esc(&task.worker),
                exit = task.exit_code.map(|c| c.to_string()).unwrap_or_else(|| "—".to_owned()),
                message = esc(&task.message),
                progress = if data_job || task.elements_processed > 0 {
                    format!(
                        "<dt>Elements processed</dt><dd class=\"num\">{}</dd>",
                        task.elements_processed
                    )
                } else {
                    String::new()
                },
            );
            let follow = if open {
                format!(
                    r#" data-follow="/v1/scheduler/task/{}/output?follow=true""#,
                    super::encode(&task_id)
                )
            } else {
                String::new()
            };
            let _ = write!(
                body,
                r#"<section id="output"{follow}><h2>stdout</h2><pre id="stdout" aria-live="polite">{out}</pre><h2>stderr</h2><pre id="stderr">{err}</pre><p class="muted" id="live">{live}</p></section>"#,
                out = esc(&stdout),
                err = esc(&stderr),
                live = if open {
                    "Following the output live."
                } else {
                    ""
                },
            );
            Ok(html(page_html(&who, &task_id, &body)))
        }
        .await,
    )
}
