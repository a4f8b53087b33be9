//! Scheduler-wide controls beyond Chronos: pausing and resuming (`/pause`, `/resume`) and the
//! runs coming up across every job (`/upcoming`).

use std::convert::Infallible;

use serde::Deserialize;
use serde_json::json;
use warp::reply::Response;
use warp::{Filter, filters::BoxedFilter};

use super::guard::{self, Caller, Need};
use super::{ApiError, Ctx, json_reply, respond, with_ctx};
use crate::auth::Role;
use crate::clock;

/// Runs `/upcoming` lists when the client does not say.
const DEFAULT_UPCOMING: usize = 100;
/// The most runs one `/upcoming` answer lists.
const MAX_UPCOMING: usize = 10_000;

pub(super) fn routes(ctx: Ctx) -> BoxedFilter<(Response,)> {
    let admin = {
        let ctx = ctx.clone();
        move || guard::guard(ctx.clone(), Need::Role(Role::Admin))
    };
    let read = {
        let ctx = ctx.clone();
        move || guard::reader(ctx.clone())
    };
    let c = move || with_ctx(ctx.clone());
    let get = || warp::get().or(warp::head()).unify();
    let state = warp::path!("pause")
        .and(get())
        .and(read())
        .and(c())
        .and_then(pause_state);
    let pause = warp::path!("pause")
        .and(warp::put())
        .and(admin())
        .and(c())
        .and_then(|who, ctx| set_paused(true, who, ctx));
    let resume = warp::path!("resume")
        .and(warp::put())
        .and(admin())
        .and(c())
        .and_then(|who, ctx| set_paused(false, who, ctx));
    let upcoming = warp::path!("upcoming")
        .and(get())
        .and(read())
        .and(warp::query::<UpcomingQuery>())
        .and(c())
        .and_then(upcoming);
    state
        .or(pause)
        .unify()
        .or(resume)
        .unify()
        .or(upcoming)
        .unify()
        .boxed()
}

/// `{"paused": bool, "since": ISO 8601 or null}`.
fn pause_body(since: Option<i64>) -> Response {
    json_reply(&json!({
        "paused": since.is_some(),
        "since": since.map(|ms| clock::iso(clock::from_millis(ms))),
    }))
}

async fn pause_state(ctx: Ctx) -> Result<Response, Infallible> {
    respond(
        async {
            let since = ctx.engine()?.read(|s| s.paused_since).await?;
            Ok(pause_body(since))
        }
        .await,
    )
}

async fn set_paused(paused: bool, who: Caller, ctx: Ctx) -> Result<Response, Infallible> {
    respond(
        async {
            let since = ctx.engine()?.set_paused(paused, who.actor()).await?;
            Ok(pause_body(since))
        }
        .await,
    )
}

#[derive(Debug, Deserialize)]
struct UpcomingQuery {
    until: Option<String>,
    limit: Option<String>,
}

/// `GET /upcoming?until=ISO&limit=N`: the next runs of every scheduled job, in time order.
async fn upcoming(q: UpcomingQuery, ctx: Ctx) -> Result<Response, Infallible> {
    respond(
        async {
            let limit = match q.limit.as_deref() {
                None => DEFAULT_UPCOMING,
                Some(text) => text
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_UPCOMING).contains(n))
                    .ok_or_else(|| {
                        ApiError::bad_request(format!(
                            "field 'limit': must be a whole number from 1 to {MAX_UPCOMING}, not {text:?}"
                        ))
                    })?,
            };
            let until = match q.until.as_deref() {
                None => None,
                Some(text) => Some(
                    chrono::DateTime::parse_from_rfc3339(text)
                        .map_err(|e| {
                            ApiError::bad_request(format!(
                                "field 'until': {text:?} is not an ISO 8601 date-time with an offset \
                                 (for example 2026-12-01T06:00:00Z): {e}"
                            ))
                        })?
                        .with_timezone(&chrono::Utc),
                ),
            };
            let body = ctx
                .engine()?
                .read(move |s| {
                    let runs: Vec<serde_json::Value> = s
                        .upcoming(until, limit)
                        .into_iter()
                        .map(|(at, job)| json!({ "job": job, "at": clock::iso(at) }))
                        .collect();
                    serde_json::Value::Array(runs)
                })
                .await?;
            Ok(json_reply(&body))
        }
        .await,
    )
}
