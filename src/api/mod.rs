//! The HTTP API: Chronos' REST routes (under both `/v1/scheduler` and the 2.x `/scheduler`),
//! `/ping`, `/metrics` and `/leader`. The only module that knows warp and the wire format.

pub mod dto;

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};
use warp::http::{HeaderValue, StatusCode, header};
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use crate::cluster::Cluster;
use crate::engine::{self, Event, Handle, Histogram, Provided};
use crate::job::Job;
use crate::store::{TaskRecord, TaskState};
use dto::{Defaults, Route};

/// An error answer: a status and a readable message, sent as `{"message": …, "status": …}`.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }

    fn into_response(self) -> Response {
        let body = json!({
            "message": self.message,
            "status": self.status.canonical_reason().unwrap_or(""),
        });
        warp::reply::with_status(warp::reply::json(&body), self.status).into_response()
    }
}

/// The one mapping from engine failures to HTTP. Chronos answers unknown jobs with 400.
impl From<engine::Error> for ApiError {
    fn from(error: engine::Error) -> ApiError {
        let status = match &error {
            engine::Error::JobNotFound { .. }
            | engine::Error::TaskNotFound { .. }
            | engine::Error::InvalidTaskId { .. }
            | engine::Error::Invalid { .. }
            | engine::Error::Graph { .. }
            | engine::Error::Schedule(_) => StatusCode::BAD_REQUEST,
            engine::Error::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
            engine::Error::Stopped => StatusCode::SERVICE_UNAVAILABLE,
        };
        let message = match &error {
            engine::Error::Schedule(e) => format!("field '{}': {e}", e.field()),
            engine::Error::Graph { .. } => format!("field 'parents': {error}"),
            engine::Error::Invalid { field, .. } => format!("field '{field}': {error}"),
            engine::Error::Store(_) => {
                tracing::error!(%error, "Request failed in the store.");
                "the store could not complete the request; nothing was changed".to_owned()
            }
            _ => error.to_string(),
        };
        ApiError { status, message }
    }
}

/// What the handlers share.
pub struct Context {
    /// Who leads, and our engine while we do.
    pub cluster: Cluster,
    pub defaults: Defaults,
    /// Forwards requests from a standby to the leader.
    client: reqwest::Client,
}

impl Context {
    pub fn new(cluster: Cluster, defaults: Defaults) -> Context {
        Context {
            cluster,
            defaults,
            client: reqwest::Client::new(),
        }
    }

    /// Our engine; requests only reach handlers on the leader, so this fails only while leadership changes.
    fn engine(&self) -> Result<Handle, engine::Error> {
        self.cluster.engine().ok_or(engine::Error::Stopped)
    }

    /// The leader's HTTP address, as `/leader` names it.
    fn leader(&self) -> String {
        self.cluster.leader().map(|m| m.http).unwrap_or_default()
    }
}

type Ctx = Arc<Context>;

fn respond(result: Result<Response, ApiError>) -> Result<Response, Infallible> {
    Ok(result.unwrap_or_else(ApiError::into_response))
}

fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

fn json_reply(value: &impl serde::Serialize) -> Response {
    warp::reply::json(value).into_response()
}

fn text(body: String) -> Response {
    let mut response = Response::new(body.into());
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Decodes `%XX` escapes in a path segment (task ids carry `:` and spaces).
fn percent_decode(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn with_ctx(ctx: Ctx) -> impl Filter<Extract = (Ctx,), Error = Infallible> + Clone {
    warp::any().map(move || ctx.clone())
}

/// All routes, with CORS and JSON error answers.
pub fn routes(ctx: Ctx) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone {
    let v1 = warp::path("v1")
        .and(warp::path("scheduler"))
        .and(scheduler_routes(ctx.clone()));
    let v2 = warp::path("scheduler").and(scheduler_routes(ctx.clone()));
    let ping = warp::path!("ping").and(warp::get()).map(|| {
        let mut response = text("pong\n".to_owned());
        response.headers_mut().insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("must-revalidate,no-cache,no-store"),
        );
        response
    });
    // Every server names the leader itself, at all three of Chronos' paths.
    let leader = warp::path!("leader")
        .or(warp::path!("v1" / "scheduler" / "leader"))
        .unify()
        .or(warp::path!("scheduler" / "leader"))
        .unify()
        .and(warp::get())
        .and(with_ctx(ctx.clone()))
        .map(|ctx: Ctx| json_reply(&json!({ "leader": ctx.leader() })));
    let metrics = warp::path!("metrics")
        .and(warp::get())
        .and(warp::query::<MetricsQuery>())
        .and(with_ctx(ctx.clone()))
        .and_then(metrics);
    // A standby serves everything else by forwarding it to the leader, as Chronos does.
    let proxy = with_ctx(ctx.clone())
        .and_then(|ctx: Ctx| async move {
            if ctx.cluster.engine().is_some() {
                Err(warp::reject::not_found())
            } else {
                Ok(ctx)
            }
        })
        .and(warp::method())
        .and(warp::path::full())
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and(warp::header::headers_cloned())
        // No length limit here: GET requests carry no Content-Length, and the leader enforces its own.
        .and(warp::body::bytes())
        .and_then(proxy);
    ping.or(leader)
        .unify()
        .or(proxy)
        .unify()
        .or(v1)
        .unify()
        .or(v2)
        .unify()
        .or(metrics)
        .unify()
        .recover(handle_rejection)
        .unify()
        .map(|mut response: Response| {
            response
                .headers_mut()
                .insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
            response
        })
}

/// Forwards a request to the leader and relays its answer.
async fn proxy(
    ctx: Ctx,
    method: warp::http::Method,
    path: warp::path::FullPath,
    query: String,
    headers: warp::http::HeaderMap,
    body: Bytes,
) -> Result<Response, Infallible> {
    let unavailable = |message: &str| ApiError {
        status: StatusCode::SERVICE_UNAVAILABLE,
        message: message.to_owned(),
    };
    let Some(leader) = ctx.cluster.leader().filter(|l| l != ctx.cluster.me()) else {
        return Ok(unavailable("no leader is elected right now; retry shortly").into_response());
    };
    let mut url = format!("http://{}{}", leader.http, path.as_str());
    if !query.is_empty() {
        url.push('?');
        url.push_str(&query);
    }
    let mut request = ctx.client.request(method, &url).body(body);
    for (name, value) in &headers {
        if name != header::HOST && name != header::CONTENT_LENGTH {
            request = request.header(name, value);
        }
    }
    let answer = match request.send().await {
        Ok(answer) => answer,
        Err(error) => {
            tracing::warn!(%url, %error, "Proxying to the leader failed.");
            return Ok(unavailable(
                "error proxying the request to the leader (maybe the leadership just changed?)",
            )
            .into_response());
        }
    };
    let status = answer.status();
    let answer_headers = answer.headers().clone();
    let bytes = answer.bytes().await.unwrap_or_default();
    let mut response = Response::new(bytes.into());
    *response.status_mut() = status;
    for (name, value) in &answer_headers {
        if name != header::TRANSFER_ENCODING && name != header::CONNECTION && name != header::CONTENT_LENGTH {
            response.headers_mut().insert(name, value.clone());
        }
    }
    Ok(response)
}

fn scheduler_routes(ctx: Ctx) -> warp::filters::BoxedFilter<(Response,)> {
    let c = move || with_ctx(ctx.clone());
    let post_or_put = || warp::post().or(warp::put()).unify();
    let body = || warp::body::content_length_limit(1 << 20).and(warp::body::bytes());

    let iso = warp::path!("iso8601")
        .and(post_or_put())
        .and(body())
        .and(c())
        .and_then(|b, ctx| upsert(b, ctx, Route::Iso8601));
    let dependency = warp::path!("dependency")
        .and(post_or_put())
        .and(body())
        .and(c())
        .and_then(|b, ctx| upsert(b, ctx, Route::Dependency));
    let jobs = warp::path!("jobs").and(warp::get()).and(c()).and_then(list_jobs);
    let search = warp::path!("jobs" / "search")
        .and(warp::get())
        .and(warp::query::<SearchQuery>())
        .and(c())
        .and_then(search_jobs);
    let summary = warp::path!("jobs" / "summary")
        .and(warp::get())
        .and(c())
        .and_then(summary);
    let mark_success = warp::path!("job" / "success" / String)
        .and(warp::put())
        .and(c())
        .and_then(mark_success);
    let stat = warp::path!("job" / "stat" / String)
        .and(warp::get())
        .and(c())
        .and_then(job_stat);
    let progress = warp::path!("job" / String / "task" / String / "progress")
        .and(warp::post())
        .and(body())
        .and(c())
        .and_then(progress);
    let history = warp::path!("job" / String / "tasks")
        .and(warp::get())
        .and(warp::query::<HistoryQuery>())
        .and(c())
        .and_then(job_history);
    let get_job = warp::path!("job" / String)
        .and(warp::get())
        .and(c())
        .and_then(get_job);
    let delete_job = warp::path!("job" / String)
        .and(warp::delete())
        .and(c())
        .and_then(delete_job);
    let run_job = warp::path!("job" / String)
        .and(warp::put())
        .and(warp::query::<RunQuery>())
        .and(c())
        .and_then(run_job);
    let kill = warp::path!("task" / "kill" / String)
        .and(warp::delete())
        .and(c())
        .and_then(kill);
    let complete = warp::path!("task" / String)
        .and(warp::put())
        .and(body())
        .and(c())
        .and_then(complete);
    let get_task = warp::path!("task" / String)
        .and(warp::get())
        .and(c())
        .and_then(get_task);
    let dot = warp::path!("graph" / "dot")
        .and(warp::get())
        .and(c())
        .and_then(graph_dot);
    let csv = warp::path!("graph" / "csv")
        .and(warp::get())
        .and(c())
        .and_then(graph_csv);
    let stats = warp::path!("stats" / String)
        .and(warp::get())
        .and(c())
        .and_then(stats);
    let workers = warp::path!("workers").and(warp::get()).and(c()).and_then(workers);
    let leader = warp::path!("leader")
        .and(warp::get())
        .and(c())
        .map(|ctx: Ctx| json_reply(&json!({ "leader": ctx.leader() })));

    iso.or(dependency)
        .unify()
        .or(jobs)
        .unify()
        .or(search)
        .unify()
        .or(summary)
        .unify()
        .boxed()
        .or(mark_success)
        .unify()
        .or(stat)
        .unify()
        .or(progress)
        .unify()
        .or(history)
        .unify()
        .or(get_job)
        .unify()
        .boxed()
        .or(delete_job)
        .unify()
        .or(run_job)
        .unify()
        .or(kill)
        .unify()
        .or(complete)
        .unify()
        .or(get_task)
        .unify()
        .boxed()
        .or(dot)
        .unify()
        .or(csv)
        .unify()
        .or(stats)
        .unify()
        .or(leader)
        .unify()
        .or(workers)
        .unify()
        .boxed()
}

async fn handle_rejection(rejection: Rejection) -> Result<Response, Infallible> {
    let error = if rejection.is_not_found() {
        ApiError {
            status: StatusCode::NOT_FOUND,
            message: "no such route".to_owned(),
        }
    } else if let Some(e) = rejection.find::<warp::reject::InvalidQuery>() {
        ApiError::bad_request(format!("bad query string: {e}"))
    } else if rejection.find::<warp::reject::PayloadTooLarge>().is_some() {
        ApiError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            message: "the body is larger than 1 MiB".to_owned(),
        }
    } else if rejection.find::<warp::reject::MethodNotAllowed>().is_some() {
        ApiError {
            status: StatusCode::METHOD_NOT_ALLOWED,
            message: "method not allowed on this route".to_owned(),
        }
    } else {
        ApiError::bad_request(format!("bad request: {rejection:?}"))
    };
    Ok(error.into_response())
}

// ----- handlers -----

async fn upsert(body: Bytes, ctx: Ctx, route: Route) -> Result<Response, Infallible> {
    respond(
        async {
            let (job, counters) = dto::parse_job(&body, route, &ctx.defaults)?;
            let provided = Provided { counters };
            ctx.engine()?
                .call(|reply| Event::Upsert {
                    job: Box::new(job),
                    provided,
                    reply,
                })
                .await?;
            Ok(no_content())
        }
        .await,
    )
}

/// `GET /jobs` fills `fetch` from `uris` and the other way round, as Chronos' list does.
fn with_fetch_shim(job: &Job) -> Job {
    let mut job = job.clone();
    if job.fetch.is_empty() {
        job.fetch = job
            .uris
            .iter()
            .map(|uri| crate::job::Fetch::from_uri(uri))
            .collect();
    } else {
        job.uris = job.fetch.iter().map(|f| f.uri.clone()).collect();
    }
    job
}

async fn list_jobs(ctx: Ctx) -> Result<Response, Infallible> {
    respond(
        async {
            let body = ctx
                .engine()?
                .read(|state| {
                    let jobs: Vec<Job> = state.jobs.values().map(|e| with_fetch_shim(&e.job)).collect();
                    serde_json::to_vec(&jobs).unwrap_or_default()
                })
                .await?;
            let mut response = Response::new(body.into());
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            Ok(response)
        }
        .await,
    )
}

#[derive(Debug, Deserialize)]
struct SearchQuery {
    name: Option<String>,
    command: Option<String>,
    any: Option<String>,
    limit: Option<usize>,
    offset: Option<usize>,
}

/// Case-insensitive substring search. `name` and `command` must all match; `any` matches either,
/// and also rescues a job the other filters rejected (Chronos' rule). Unlike Chronos, `any` alone filters.
fn search_matches(job_name: &str, job_command: &str, name: &str, command: &str, any: &str) -> bool {
    let filtered = !name.is_empty() || !command.is_empty();
    let valid =
        (name.is_empty() || job_name.contains(name)) && (command.is_empty() || job_command.contains(command));
    let any_hit = !any.is_empty() && (job_name.contains(any) || job_command.contains(any));
    match (filtered, any.is_empty()) {
        (_, true) => valid,
        (false, false) => any_hit,
        (true, false) => valid || any_hit,
    }
}

async fn search_jobs(q: SearchQuery, ctx: Ctx) -> Result<Response, Infallible> {
    respond(
        async {
            let lower = |s: &Option<String>| s.as_deref().unwrap_or("").to_lowercase();
            let (name, command, any) = (lower(&q.name), lower(&q.command), lower(&q.any));
            let limit = q.limit.unwrap_or(10);
            let offset = q.offset.unwrap_or(0);
            let jobs = ctx
                .engine()?
                .read(move |state| {
                    state
                        .jobs
                        .values()
                        .filter(|e| search_matches(&e.search_name, &e.search_command, &name, &command, &any))
                        .skip(offset)
                        .take(limit)
                        .map(|e| e.job.clone())
                        .collect::<Vec<_>>()
                })
                .await?;
            Ok(json_reply(&jobs))
        }
        .await,
    )
}

async fn summary(ctx: Ctx) -> Result<Response, Infallible> {
    respond(
        async {
            let jobs = ctx
                .engine()?
                .read(|state| {
                    state
                        .jobs
                        .values()
                        .map(|e| {
                            let mut summary = json!({
                                "name": e.job.name,
                                "status": e.job.last_status(),
                                "state": state.job_state(&e.job.name),
                                "schedule": e.job.schedule.clone().unwrap_or_default(),
                                "parents": e.job.parents(),
                                "disabled": e.job.disabled,
                            });
                            // Beyond Chronos: why a queued task can't start yet.
                            if let Some(reason) = &e.waiting {
                                summary["queuedReason"] = json!(reason.to_string());
                            }
                            summary
                        })
                        .collect::<Vec<_>>()
                })
                .await?;
            Ok(json_reply(&json!({ "jobs": jobs })))
        }
        .await,
    )
}

fn resources_json(r: &crate::placement::Resources) -> Value {
    json!({ "cpus": r.cpus, "mem": r.mem, "disk": r.disk })
}

async fn workers(ctx: Ctx) -> Result<Response, Infallible> {
    respond(
        async {
            let workers = ctx
                .engine()?
                .read(|state| {
                    state
                        .workers
                        .values()
                        .map(|w| {
                            json!({
                                "name": w.name,
                                "hostname": w.hostname,
                                "attributes": w.attributes.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<_, _>>(),
                                "total": resources_json(&w.total),
                                "used": resources_json(&w.used),
                                "state": w.state.as_str(),
                                "local": w.is_local(),
                                "lastHeartbeat": crate::clock::iso(w.last_heartbeat),
                                "tasks": w.tasks.iter().collect::<Vec<_>>(),
                            })
                        })
                        .collect::<Vec<_>>()
                })
                .await?;
            Ok(json_reply(&workers))
        }
        .await,
    )
}

async fn get_job(name: String, ctx: Ctx) -> Result<Response, Infallible> {
    respond(
        async {
            let lookup = name.clone();
            let job = ctx
                .engine()?
                .read(move |state| state.jobs.get(&lookup).map(|e| e.job.clone()))
                .await?;
            let job = job.ok_or(engine::Error::JobNotFound { name })?;
            Ok(json_reply(&job))
        }
        .await,
    )
}

async fn delete_job(name: String, ctx: Ctx) -> Result<Response, Infallible> {
    respond(
        async {
            ctx.engine()?.call(|reply| Event::Delete { name, reply }).await?;
            Ok(no_content())
        }
        .await,
    )
}

#[derive(Debug, Deserialize)]
struct RunQuery {
    arguments: Option<String>,
}

async fn run_job(name: String, q: RunQuery, ctx: Ctx) -> Result<Response, Infallible> {
    respond(
        async {
            let arguments = q.arguments;
            ctx.engine()?
                .call(|reply| Event::RunNow {
                    name,
                    arguments,
                    reply,
                })
                .await?;
            Ok(no_content())
        }
        .await,
    )
}

async fn mark_success(name: String, ctx: Ctx) -> Result<Response, Infallible> {
    respond(
        async {
            let label = name.clone();
            let marked = ctx
                .engine()?
                .call(|reply| Event::MarkSuccess { name, reply })
                .await?;
            Ok(text(format!("marked job {label} as successful: {marked}")))
        }
        .await,
    )
}

async fn kill(name: String, ctx: Ctx) -> Result<Response, Infallible> {
    respond(
        async {
            ctx.engine()?.call(|reply| Event::Kill { name, reply }).await?;
            Ok(no_content())
        }
        .await,
    )
}

async fn complete(task_id: String, body: Bytes, ctx: Ctx) -> Result<Response, Infallible> {
    respond(
        async {
            let task_id = percent_decode(&task_id);
            let value: Value = serde_json::from_slice(&body)
                .map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}")))?;
            let status_code = value
                .get("statusCode")
                .and_then(|v| {
                    v.as_i64()
                        .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
                })
                .ok_or_else(|| {
                    ApiError::bad_request("field 'statusCode': is required and must be an integer")
                })?;
            ctx.engine()?
                .call(|reply| Event::Complete {
                    task_id,
                    status_code,
                    reply,
                })
                .await?;
            Ok(no_content())
        }
        .await,
    )
}

async fn progress(job: String, task_id: String, body: Bytes, ctx: Ctx) -> Result<Response, Infallible> {
    respond(
        async {
            let task_id = percent_decode(&task_id);
            let value: Value = if body.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&body)
                    .map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}")))?
            };
            let elements = match value.get("numAdditionalElementsProcessed") {
                None | Some(Value::Null) => None,
                Some(v) => Some(v.as_i64().ok_or_else(|| {
                    ApiError::bad_request(
                        "field 'numAdditionalElementsProcessed': must be a whole number no larger than 9223372036854775807",
                    )
                })?),
            };
            ctx.engine()?
                .call(|reply| Event::Progress {
                    job,
                    task_id,
                    elements,
                    reply,
                })
                .await?;
            Ok(no_content())
        }
        .await,
    )
}

#[derive(Debug, Deserialize)]
struct HistoryQuery {
    limit: Option<u32>,
}

/// A task as the history routes show it, output included.
fn task_json(task: &TaskRecord) -> Value {
    let duration = match (task.started_ms, task.finished_ms) {
        (Some(s), Some(f)) => Some((f - s) as f64 / 1000.0),
        _ => None,
    };
    json!({
        "taskId": task.id,
        "jobName": task.job,
        "attempt": task.attempt,
        "state": task.state.as_str(),
        "due": crate::clock::iso(crate::clock::from_millis(task.due_ms)),
        "startedAt": task.started_ms.map(|ms| crate::clock::iso(crate::clock::from_millis(ms))),
        "finishedAt": task.finished_ms.map(|ms| crate::clock::iso(crate::clock::from_millis(ms))),
        "durationSeconds": duration,
        "exitCode": task.exit_code,
        "message": task.message,
        "worker": task.worker,
        "numElementsProcessed": task.elements_processed,
        "stdout": task.stdout,
        "stderr": task.stderr,
    })
}

async fn job_history(job: String, q: HistoryQuery, ctx: Ctx) -> Result<Response, Infallible> {
    respond(
        async {
            let limit = q.limit.unwrap_or(20).min(1000);
            let tasks = ctx
                .engine()?
                .call(|reply| Event::History { job, limit, reply })
                .await?;
            Ok(json_reply(&tasks.iter().map(task_json).collect::<Vec<_>>()))
        }
        .await,
    )
}

async fn get_task(task_id: String, ctx: Ctx) -> Result<Response, Infallible> {
    respond(
        async {
            let task_id = percent_decode(&task_id);
            let task = ctx.engine()?.call(|reply| Event::Task { task_id, reply }).await?;
            Ok(json_reply(&task_json(&task)))
        }
        .await,
    )
}

fn histogram_json(h: &Histogram) -> Value {
    json!({
        "75thPercentile": h.p75,
        "95thPercentile": h.p95,
        "98thPercentile": h.p98,
        "99thPercentile": h.p99,
        "median": h.median,
        "mean": h.mean,
        "count": h.count,
    })
}

/// Chronos' `MM/dd/yy HH:mm:ss` (UTC here) or `N/A`.
fn chronos_time(ms: Option<i64>) -> String {
    ms.map(|ms| {
        crate::clock::from_millis(ms)
            .format("%m/%d/%y %H:%M:%S")
            .to_string()
    })
    .unwrap_or_else(|| "N/A".to_owned())
}

/// Chronos' duration string: `<d>d<h>h<m>m<s>s`, leading zero fields left out.
fn chronos_duration(ms: i64) -> String {
    let secs = ms.max(0) / 1000;
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if h > 0 || m > 0 {
        out.push_str(&format!("{m}m"));
    }
    out.push_str(&format!("{s}s"));
    out
}

async fn job_stat(job: String, ctx: Ctx) -> Result<Response, Infallible> {
    respond(
        async {
            let data_job = {
                let name = job.clone();
                ctx.engine()?
                    .read(move |s| s.jobs.get(&name).map(|e| e.job.data_processing_job_type))
                    .await?
                    .unwrap_or(false)
            };
            let (histogram, tasks) = ctx.engine()?.call(|reply| Event::Stat { job, reply }).await?;
            let history: Vec<Value> = tasks
                .iter()
                .map(|t| {
                    let status = match t.state {
                        TaskState::Finished => "Success",
                        TaskState::Running | TaskState::Waiting => "Running",
                        TaskState::Queued => "Idle",
                        TaskState::Failed | TaskState::Killed | TaskState::Lost => "Fail",
                    };
                    let mut entry = json!({
                        "taskId": t.id,
                        "jobName": t.job,
                        "slaveId": t.worker,
                        "startTime": chronos_time(t.started_ms),
                        "endTime": chronos_time(t.finished_ms),
                        "status": status,
                    });
                    if let (Some(s), Some(f)) = (t.started_ms, t.finished_ms) {
                        entry["duration"] = json!(chronos_duration(f - s));
                    }
                    if data_job {
                        entry["numElementsProcessed"] = json!(t.elements_processed);
                    }
                    entry
                })
                .collect();
            Ok(json_reply(
                &json!({ "histogram": histogram_json(&histogram), "taskStatHistory": history }),
            ))
        }
        .await,
    )
}

async fn stats(key: String, ctx: Ctx) -> Result<Response, Infallible> {
    respond(
        async {
            let mut rows = ctx
                .engine()?
                .read(move |state| {
                    state
                        .jobs
                        .values()
                        .filter_map(|e| {
                            let h = Histogram::of(e.durations.iter().copied());
                            h.get(&key).map(|v| (e.job.name.clone(), v))
                        })
                        .collect::<Vec<_>>()
                })
                .await?;
            rows.sort_by(|a, b| b.1.total_cmp(&a.1));
            let body: Vec<Value> = rows
                .into_iter()
                .map(|(name, v)| json!({ "jobNameLabel": name, "time": v / 1000.0 }))
                .collect();
            Ok(json_reply(&body))
        }
        .await,
    )
}

async fn graph_dot(ctx: Ctx) -> Result<Response, Infallible> {
    respond(async { Ok(text(ctx.engine()?.read(|s| s.graph.to_dot()).await?)) }.await)
}

async fn graph_csv(ctx: Ctx) -> Result<Response, Infallible> {
    respond(
        async {
            let csv = ctx
                .engine()?
                .read(|s| {
                    s.graph.to_csv(|name| {
                        let status = s.jobs.get(name).map_or("fresh", |e| e.job.last_status());
                        (status.to_owned(), s.job_state(name))
                    })
                })
                .await?;
            Ok(text(csv))
        }
        .await,
    )
}

/// `GET /metrics?prefix=`: a kairos extension that keeps only the metrics whose names start
/// with the prefix. Per-job metrics cost time on the engine for every job, so a monitor that only
/// wants the totals can ask for `prefix=kairos.`.
#[derive(Debug, Deserialize)]
struct MetricsQuery {
    prefix: Option<String>,
}

/// Codahale's metrics JSON (`version`, `gauges`, `counters`, `histograms`, `meters`, `timers`).
async fn metrics(query: MetricsQuery, ctx: Ctx) -> Result<Response, Infallible> {
    let prefix = query.prefix.unwrap_or_default();
    // Whether any name starting with `start` can match the prefix.
    let wanted = move |start: &str| start.starts_with(&prefix) || prefix.starts_with(start);
    respond(
        async {
            let body = ctx
                .engine()?
                .read(move |s| {
                    let mut counters = serde_json::Map::new();
                    let mut histograms = serde_json::Map::new();
                    let mut gauges = serde_json::Map::new();
                    if wanted("jobs.run.success.") {
                        for (job, n) in &s.metrics.successes {
                            counters.insert(format!("jobs.run.success.{job}"), json!({ "count": n }));
                        }
                    }
                    if wanted("jobs.run.failure.") {
                        for (job, n) in &s.metrics.failures {
                            counters.insert(format!("jobs.run.failure.{job}"), json!({ "count": n }));
                        }
                    }
                    let m = &s.metrics;
                    for (name, count) in [
                        ("kairos.tasks.started", m.tasks_started),
                        ("kairos.tasks.ended", m.tasks_ended),
                        ("kairos.runs.skipped", m.skipped_runs),
                        ("kairos.store.commits", m.store_commits),
                        ("kairos.store.writes", m.store_writes),
                        ("kairos.store.failures", m.store_failures),
                    ] {
                        if wanted(name) {
                            counters.insert(name.into(), json!({ "count": count }));
                        }
                    }
                    for (name, value) in [
                        ("kairos.jobs", s.jobs.len()),
                        ("kairos.tasks.running", s.running_count()),
                        ("kairos.tasks.queued", s.queued_count()),
                        ("kairos.store.failing", usize::from(s.store_failing())),
                    ] {
                        if wanted(name) {
                            gauges.insert(name.into(), json!({ "value": value }));
                        }
                    }
                    let timed = s.jobs.values().filter(|e| !e.durations.is_empty());
                    for e in timed.filter(|_| wanted("jobs.run.time.")) {
                        let h = Histogram::of(e.durations.iter().copied());
                        histograms.insert(
                            format!("jobs.run.time.{}", e.job.name),
                            json!({
                                "count": h.count, "min": h.min, "max": h.max, "mean": h.mean,
                                "p50": h.median, "p75": h.p75, "p95": h.p95, "p98": h.p98, "p99": h.p99,
                            }),
                        );
                    }
                    json!({
                        "version": "4.0.0",
                        "gauges": gauges,
                        "counters": counters,
                        "histograms": histograms,
                        "meters": {},
                        "timers": {},
                    })
                })
                .await?;
            Ok(json_reply(&body))
        }
        .await,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("ct%3A1%3A0%3Aa%3A-x%201"), "ct:1:0:a:-x 1");
        assert_eq!(percent_decode("plain"), "plain");
        assert_eq!(percent_decode("bad%zz%4"), "bad%zz%4");
    }

    #[test]
    fn chronos_durations() {
        for (ms, want) in [
            (0, "0s"),
            (61_000, "1m1s"),
            (90_061_000, "25h1m1s"),
            (3_600_000, "1h0m0s"),
        ] {
            assert_eq!(chronos_duration(ms), want);
        }
    }
}
