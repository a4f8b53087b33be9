//! The HTTP API: Chronos' REST routes (under both `/v1/scheduler` and the 2.x `/scheduler`),
//! `/ping`, `/metrics`, `/leader` and `/openapi.json`. The only module that knows warp and the wire
//! format.

mod control;
pub mod dto;
mod guard;
mod output;
mod params;
mod prometheus;
pub mod table;
mod tokens;
mod ui;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use warp::http::{HeaderValue, StatusCode, header};
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use crate::auth::Role;
use crate::cluster::Cluster;
use crate::engine::{self, Handle, Histogram};
use crate::job::{Job, TaskId};
use crate::store::{TaskRecord, TaskState};
use dto::{Defaults, Route};
use guard::{Caller, Need};

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

    /// A failure of ours, logged here since the client sees only the message.
    pub fn internal(message: impl Into<String>) -> ApiError {
        let message = message.into();
        tracing::error!(%message, "Request failed.");
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message,
        }
    }

    /// The field a refusal names, for clients that show it next to the field (the UI's editor).
    fn field(&self) -> Option<&str> {
        let rest = self.message.strip_prefix("field '")?;
        Some(&rest[..rest.find('\'')?])
    }

    fn into_response(self) -> Response {
        let mut body = json!({
            "message": self.message,
            "status": self.status.canonical_reason().unwrap_or(""),
        });
        if let Some(field) = self.field() {
            body["field"] = Value::from(field);
        }
        warp::reply::with_status(warp::reply::json(&body), self.status).into_response()
    }
}

/// Lets a filter refuse a request with a readable answer (see [`handle_rejection`]).
impl warp::reject::Reject for ApiError {}

/// A request body of at most [`BODY_LIMIT`] bytes. Unlike `warp::body::content_length_limit`,
/// a body without a `Content-Length` (none at all, or chunked) is read too: a POST without a
/// body is an empty body, which the handler explains.
///
/// A body must be JSON (`Content-Type: application/json`): a browser page can send other types
/// to any address without asking first (a CORS "simple request"), so accepting them would let any
/// web page create jobs on a scheduler its visitor can reach.
fn body(limit: usize) -> impl Filter<Extract = (Bytes,), Error = Rejection> + Clone {
    warp::header::optional::<u64>("content-length")
        .and(warp::header::optional::<String>("content-type"))
        .and(warp::body::stream())
        .and_then(
            move |length: Option<u64>, kind: Option<String>, stream| async move {
                let body = read_body(length, stream, limit)
                    .await
                    .map_err(warp::reject::custom)?;
                let json = kind.as_deref().is_some_and(|k| {
                    k.split(';')
                        .next()
                        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
                });
                if !body.is_empty() && !json {
                    return Err(warp::reject::custom(ApiError {
                        status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
                        message: "send the body as JSON, with Content-Type: application/json".to_owned(),
                    }));
                }
                Ok(body)
            },
        )
}

fn too_large(limit: usize) -> ApiError {
    ApiError {
        status: StatusCode::PAYLOAD_TOO_LARGE,
        message: format!("the request body is larger than {limit} bytes (--max-body-bytes)"),
    }
}

async fn read_body(
    length: Option<u64>,
    stream: impl futures_util::Stream<Item = Result<impl bytes::Buf, warp::Error>>,
    limit: usize,
) -> Result<Bytes, ApiError> {
    use futures_util::StreamExt;
    if length.is_some_and(|n| n > limit as u64) {
        return Err(too_large(limit));
    }
    let mut body = Vec::new();
    let mut stream = std::pin::pin!(stream);
    while let Some(chunk) = stream.next().await {
        let mut chunk =
            chunk.map_err(|e| ApiError::bad_request(format!("the request body could not be read: {e}")))?;
        if body.len() + chunk.remaining() > limit {
            return Err(too_large(limit));
        }
        while chunk.has_remaining() {
            let part = chunk.chunk();
            body.extend_from_slice(part);
            let n = part.len();
            chunk.advance(n);
        }
    }
    Ok(Bytes::from(body))
}

/// The one mapping from engine failures to HTTP. Chronos answers unknown jobs with 400.
impl From<engine::Error> for ApiError {
    fn from(error: engine::Error) -> ApiError {
        let status = match &error {
            engine::Error::JobNotFound { .. }
            | engine::Error::TaskNotFound { .. }
            | engine::Error::Invalid { .. }
            | engine::Error::Graph { .. }
            | engine::Error::Schedule(_) => StatusCode::BAD_REQUEST,
            engine::Error::Store(crate::store::Error::Corrupt { .. }) => StatusCode::INTERNAL_SERVER_ERROR,
            // Unreachable, failing or fenced: a later try, or another server, may succeed.
            engine::Error::Store(_) | engine::Error::Stopped | engine::Error::Unavailable { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            engine::Error::Conflict { .. } => StatusCode::CONFLICT,
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
    /// What jobs' containers and fetches may reach; a job that asks for more is refused.
    pub policy: crate::executor::Policy,
    /// Forwards requests from a standby to the leader.
    client: reqwest::Client,
    /// Who may call, and what they may do.
    auth: guard::Auth,
    /// The web origins that may call the API from a browser.
    cors_origins: Arc<Vec<String>>,
    max_body_bytes: usize,
    /// How the leader is reached: `http`, or `https` when the servers serve TLS.
    leader_scheme: &'static str,
    /// Requests answered, for `/metrics` in the Prometheus format.
    http: prometheus::HttpMetrics,
    /// Whether the Prometheus format includes per-job series (`--metrics-per-job`).
    metrics_per_job: bool,
    /// How long a standby waits for the leader (see [`Context::with_proxy_timeout`]).
    proxy_timeout: Duration,
}

/// How the API is protected: [`Context::new`]'s settings beyond the scheduler's.
pub struct Protection {
    /// The admin's credentials; `None` turns authentication off.
    pub credentials: Option<crate::auth::Credentials>,
    /// The API tokens, kept by the engine.
    pub tokens: crate::auth::Tokens,
    pub cors_origins: Vec<String>,
    pub max_body_bytes: usize,
    /// What jobs' containers and fetches may reach.
    pub policy: crate::executor::Policy,
}

impl Context {
    pub fn new(cluster: Cluster, defaults: Defaults, protection: Protection) -> Context {
        Context {
            cluster,
            defaults,
            policy: protection.policy,
            client: reqwest::Client::new(),
            auth: guard::Auth::new(protection.credentials, protection.tokens),
            cors_origins: Arc::new(protection.cors_origins),
            max_body_bytes: protection.max_body_bytes,
            leader_scheme: "http",
            http: prometheus::HttpMetrics::default(),
            metrics_per_job: false,
            proxy_timeout: Duration::from_secs(10),
        }
    }

    /// How long a standby waits for the leader's answer (its headers; a followed output then
    /// streams for as long as it lasts) before it answers `503` itself.
    pub fn with_proxy_timeout(self, timeout: Duration) -> Context {
        Context {
            proxy_timeout: timeout,
            ..self
        }
    }

    /// Adds per-job series to the Prometheus format.
    pub fn with_metrics_per_job(self, on: bool) -> Context {
        Context {
            metrics_per_job: on,
            ..self
        }
    }

    /// Forwards to the leader over HTTPS with `client`, which trusts the servers' certificates.
    pub fn proxy_over_tls(self, client: reqwest::Client) -> Context {
        Context {
            client,
            leader_scheme: "https",
            ..self
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
    typed(body, "text/plain; charset=utf-8")
}

/// A body with its `Content-Type`.
fn typed(body: String, content_type: &'static str) -> Response {
    let mut response = Response::new(body.into());
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// A path parameter with its `%XX` escapes decoded, as Jersey hands them to Chronos: clients
/// encode job names (`a%2Eb`) and task ids (which carry `:` and spaces).
#[derive(Debug, Clone)]
struct Segment(String);

impl std::str::FromStr for Segment {
    type Err = Infallible;

    fn from_str(raw: &str) -> Result<Segment, Infallible> {
        Ok(Segment(percent_decode(raw)))
    }
}

/// Decodes `%XX` escapes in a path segment.
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

/// The OpenAPI 3.1 description of every API route, kept in the repository and checked against
/// the router and the answers by the integration tests.
pub const OPENAPI: &str = include_str!("../../docs/openapi.json");

/// GET, and HEAD answered the same way: hyper leaves the body out of a HEAD answer.
fn get() -> impl Filter<Extract = (), Error = Rejection> + Copy {
    warp::get().or(warp::head()).unify()
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
    let ping = warp::path!("ping").and(get()).map(|| {
        let mut response = text("pong\n".to_owned());
        response.headers_mut().insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("must-revalidate,no-cache,no-store"),
        );
        response
    });
    // The API's description, open like /ping: it is the same public document for every server
    // and says nothing about this one, and clients read it before they have credentials.
    let openapi = warp::path!("openapi.json").and(get()).map(|| {
        let mut response = Response::new(OPENAPI.into());
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        response
    });
    // Every server names the leader itself, at all three of Chronos' paths.
    let leader = warp::path!("leader")
        .or(warp::path!("v1" / "scheduler" / "leader"))
        .unify()
        .or(warp::path!("scheduler" / "leader"))
        .unify()
        .and(get())
        .and(with_ctx(ctx.clone()))
        .map(|ctx: Ctx| json_reply(&json!({ "leader": ctx.leader() })));
    let metrics = warp::path!("metrics")
        .and(get())
        .and(guard::reader(ctx.clone()))
        .and(warp::query::<MetricsQuery>())
        .and(with_ctx(ctx.clone()))
        .and_then(metrics);
    // The Prometheus format is answered by every server about itself, leader or standby, so a
    // scrape of each shows which leads; the JSON falls through to the route above (or the proxy).
    let prometheus_metrics = warp::path!("metrics")
        .and(get())
        .and(warp::query::<MetricsQuery>())
        .and(warp::header::optional::<String>("accept"))
        .and_then(|query: MetricsQuery, accept: Option<String>| async move {
            match prometheus::negotiate(query.format.as_deref(), accept.as_deref()) {
                Ok(prometheus::Format::Json) => Err(warp::reject::not_found()),
                Ok(prometheus::Format::Prometheus) => Ok(Ok(())),
                Err(message) => Ok(Err(ApiError::bad_request(message))),
            }
        })
        .and(guard::reader(ctx.clone()))
        .and(with_ctx(ctx.clone()))
        .and_then(prometheus_metrics);
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
    // Answered by every server itself: it needs no state.
    // Not `warp::options()`, whose 405 for every other method would outrank a 404 for a
    // path no route serves.
    let options = warp::method()
        .and_then(|method: warp::http::Method| async move {
            if method == warp::http::Method::OPTIONS {
                Ok(())
            } else {
                Err(warp::reject::not_found())
            }
        })
        .untuple_one()
        .and(warp::path::full())
        .map(|path: warp::path::FullPath| options_reply(path.as_str()));
    let routes = options
        .or(ping)
        .unify()
        .or(openapi)
        .unify()
        .or(leader)
        .unify()
        .or(prometheus_metrics)
        .unify()
        .or(proxy)
        .unify()
        .or(v1)
        .unify()
        .or(v2)
        .unify()
        .or(metrics)
        .unify()
        .or(ui::routes(ctx.clone()))
        .unify()
        .recover(handle_rejection)
        .unify();
    let origins = ctx.cors_origins.clone();
    let counted = ctx.clone();
    warp::path::full()
        .and(warp::method())
        .and(warp::header::headers_cloned())
        .and(routes)
        .map(
            move |path: warp::path::FullPath,
                  method: warp::http::Method,
                  request: warp::http::HeaderMap,
                  mut response: Response| {
                counted
                    .http
                    .record(path.as_str(), &method, response.status().as_u16());
                let origin = request
                    .get(header::ORIGIN)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let headers = response.headers_mut();
                // No wildcard: only the configured origins may read answers in a browser.
                if let Some(origin) = origin.filter(|o| guard::cors_allowed(&origins, o))
                    && let Ok(value) = HeaderValue::from_str(&origin)
                {
                    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
                    headers.insert(header::VARY, HeaderValue::from_static("Origin"));
                    headers.insert(
                        header::ACCESS_CONTROL_ALLOW_HEADERS,
                        HeaderValue::from_static("authorization, content-type"),
                    );
                    if let Some(allow) = allowed_methods(path.as_str()) {
                        headers.insert(
                            header::ACCESS_CONTROL_ALLOW_METHODS,
                            HeaderValue::from_static(allow),
                        );
                    }
                }
                // The login form is its own challenge: a Basic one would make browsers ask again
                // in a dialog over it.
                if response.status() == StatusCode::UNAUTHORIZED && path.as_str() != "/login" {
                    response.headers_mut().insert(
                        header::WWW_AUTHENTICATE,
                        HeaderValue::from_static("Basic realm=\"kairos\""),
                    );
                }
                if response.status() == StatusCode::METHOD_NOT_ALLOWED
                    && let Some(allow) = allowed_methods(path.as_str())
                {
                    response
                        .headers_mut()
                        .insert(header::ALLOW, HeaderValue::from_static(allow));
                }
                response
            },
        )
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
    let mut url = format!("{}://{}{}", ctx.leader_scheme, leader.http, path.as_str());
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
    let answer = match tokio::time::timeout(ctx.proxy_timeout, request.send()).await {
        Ok(Ok(answer)) => answer,
        Err(_) => {
            tracing::warn!(%url, "The leader did not answer in time.");
            return Ok(unavailable(&format!(
                "the leader did not answer within {} s (it may be frozen, overloaded or waiting \
                 for its store); a change sent may still be applied, so check before sending it again",
                ctx.proxy_timeout.as_secs_f64()
            ))
            .into_response());
        }
        Ok(Err(error)) => {
            tracing::warn!(%url, %error, "Proxying to the leader failed.");
            return Ok(unavailable(
                "error proxying the request to the leader (maybe the leadership just changed?)",
            )
            .into_response());
        }
    };
    let status = answer.status();
    let answer_headers = answer.headers().clone();
    // Passed on as it comes, so that a followed task's output streams through a standby too.
    // A task hands the chunks over a channel because the body must be `Sync`.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    tokio::spawn(async move {
        let mut chunks = answer.bytes_stream();
        while let Some(chunk) = futures_util::StreamExt::next(&mut chunks).await {
            let chunk = chunk.map_err(std::io::Error::other);
            if tx.send(chunk).await.is_err() {
                return;
            }
        }
    });
    let mut response = warp::reply::stream(tokio_stream::wrappers::ReceiverStream::new(rx)).into_response();
    *response.status_mut() = status;
    for (name, value) in &answer_headers {
        if name != header::TRANSFER_ENCODING && name != header::CONNECTION && name != header::CONTENT_LENGTH {
            response.headers_mut().insert(name, value.clone());
        }
    }
    Ok(response)
}

fn scheduler_routes(ctx: Ctx) -> warp::filters::BoxedFilter<(Response,)> {
    let limit = ctx.max_body_bytes;
    let g = {
        let ctx = ctx.clone();
        move |need| guard::guard(ctx.clone(), need)
    };
    let read = {
        let ctx = ctx.clone();
        move || guard::reader(ctx.clone())
    };
    let admin = Need::Role(Role::Admin);
    let operate = Need::Role(Role::Operate);
    let c_ctx = ctx.clone();
    let c = move || with_ctx(ctx.clone());
    let post_or_put = || warp::post().or(warp::put()).unify();

    let iso = warp::path!("iso8601")
        .and(post_or_put())
        // The body is read before the credentials are checked, so that a client that sends
        // them only after a 401 (httplib2, under chronos-python) finds its connection open.
        .and(body(limit))
        .and(g(admin))
        .and(c())
        .and_then(|b, who, ctx| upsert(who, b, ctx, Route::Iso8601));
    let dependency = warp::path!("dependency")
        .and(post_or_put())
        // The body is read before the credentials are checked, so that a client that sends
        // them only after a 401 (httplib2, under chronos-python) finds its connection open.
        .and(body(limit))
        .and(g(admin))
        .and(c())
        .and_then(|b, who, ctx| upsert(who, b, ctx, Route::Dependency));
    let jobs = warp::path!("jobs")
        .and(get())
        .and(read())
        .and(c())
        .and_then(list_jobs);
    let search = warp::path!("jobs" / "search")
        .and(get())
        .and(read())
        .and(warp::query::<SearchQuery>())
        .and(c())
        .and_then(search_jobs);
    let summary = warp::path!("jobs" / "summary")
        .and(get())
        .and(read())
        .and(c())
        .and_then(summary);
    let mark_success = warp::path!("job" / "success" / Segment)
        .and(warp::put())
        .and(g(operate))
        .and(c())
        .and_then(mark_success);
    let stat = warp::path!("job" / "stat" / Segment)
        .and(get())
        .and(read())
        .and(c())
        .and_then(job_stat);
    let progress = warp::path!("job" / Segment / "task" / Segment / "progress")
        .and(warp::post())
        .and(body(limit))
        .and(g(Need::TaskOr(Role::Operate)))
        .and(c())
        .and_then(progress);
    let history = warp::path!("job" / Segment / "tasks")
        .and(get())
        .and(read())
        .and(warp::query::<HistoryQuery>())
        .and(c())
        .and_then(job_history);
    let get_job = warp::path!("job" / Segment)
        .and(get())
        .and(read())
        .and(c())
        .and_then(get_job);
    let delete_job = warp::path!("job" / Segment)
        .and(warp::delete())
        .and(g(admin))
        .and(c())
        .and_then(delete_job);
    let run_job = warp::path!("job" / Segment)
        .and(warp::put())
        .and(g(operate))
        .and(warp::query::<RunQuery>())
        .and(c())
        .and_then(run_job);
    let kill = warp::path!("task" / "kill" / Segment)
        .and(warp::delete())
        .and(g(operate))
        .and(c())
        .and_then(kill);
    let purge = warp::path!("task" / "all")
        .and(warp::delete())
        .and(g(admin))
        .and(c())
        .and_then(purge);
    let complete = warp::path!("task" / Segment)
        .and(warp::put())
        .and(body(limit))
        .and(g(Need::TaskOr(Role::Operate)))
        .and(c())
        .and_then(complete);
    let get_task = warp::path!("task" / Segment)
        .and(get())
        .and(read())
        .and(c())
        .and_then(get_task);
    let output = warp::path!("task" / Segment / "output")
        .and(get())
        .and(read())
        .and(warp::query::<output::OutputQuery>())
        .and(c())
        .and_then(output::task_output);
    let dot = warp::path!("graph" / "dot")
        .and(get())
        .and(read())
        .and(c())
        .and_then(graph_dot);
    let svg = warp::path!("graph" / "svg")
        .and(get())
        .and(read())
        .and(warp::query::<SvgQuery>())
        .and(c())
        .and_then(graph_svg);
    let next = warp::path!("job" / Segment / "next")
        .and(get())
        .and(read())
        .and(warp::query::<NextQuery>())
        .and(c())
        .and_then(next_runs);
    let csv = warp::path!("graph" / "csv")
        .and(get())
        .and(read())
        .and(c())
        .and_then(graph_csv);
    let stats = warp::path!("stats" / Segment)
        .and(get())
        .and(read())
        .and(c())
        .and_then(stats);
    let workers = warp::path!("workers")
        .and(get())
        .and(read())
        .and(c())
        .and_then(workers);
    let leader = warp::path!("leader")
        .and(get())
        .and(read())
        .and(c())
        .map(|ctx: Ctx| json_reply(&json!({ "leader": ctx.leader() })));
    let admin_routes = tokens::routes(c_ctx.clone());
    let control_routes = control::routes(c_ctx);

    admin_routes
        .or(control_routes)
        .unify()
        .or(iso)
        .unify()
        .or(dependency)
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
        .or(purge)
        .unify()
        .or(complete)
        .unify()
        .or(get_task)
        .unify()
        .or(output)
        .unify()
        .boxed()
        .or(dot)
        .unify()
        .or(svg)
        .unify()
        .or(next)
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

/// Every refusal warp makes, as a sentence in Chronos' error body.
async fn handle_rejection(rejection: Rejection) -> Result<Response, Infallible> {
    let with = |status: StatusCode, message: &str| ApiError {
        status,
        message: message.to_owned(),
    };
    if let Some(login) = rejection.find::<guard::LoginRequired>() {
        let location = format!("/login?next={}", ui::encode(&login.next));
        let mut response = StatusCode::SEE_OTHER.into_response();
        if let Ok(value) = HeaderValue::from_str(&location) {
            response.headers_mut().insert(header::LOCATION, value);
        }
        return Ok(response);
    }
    let error = if rejection.is_not_found() {
        with(
            StatusCode::NOT_FOUND,
            "there is no such route; see docs/compatibility.md for the routes served",
        )
    } else if let Some(e) = rejection.find::<ApiError>() {
        e.clone()
    } else if rejection.find::<warp::reject::InvalidQuery>().is_some() {
        ApiError::bad_request("the query string could not be read (is a parameter given twice?)")
    } else if rejection.find::<warp::reject::PayloadTooLarge>().is_some() {
        with(StatusCode::PAYLOAD_TOO_LARGE, "the request body is too large")
    } else if rejection.find::<warp::reject::LengthRequired>().is_some() {
        with(
            StatusCode::LENGTH_REQUIRED,
            "the request needs a Content-Length header",
        )
    } else if rejection.find::<warp::reject::UnsupportedMediaType>().is_some() {
        with(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the body must be JSON (Content-Type: application/json)",
        )
    } else if rejection.find::<warp::reject::MethodNotAllowed>().is_some() {
        with(
            StatusCode::METHOD_NOT_ALLOWED,
            "this route does not accept that method; the Allow header lists the ones it does",
        )
    } else if let Some(e) = rejection.find::<warp::reject::MissingHeader>() {
        ApiError::bad_request(format!("the request needs a {} header", e.name()))
    } else if let Some(e) = rejection.find::<warp::reject::InvalidHeader>() {
        ApiError::bad_request(format!("the {} header is not valid", e.name()))
    } else {
        tracing::warn!(?rejection, "An unexpected rejection.");
        ApiError::bad_request("the request could not be understood")
    };
    Ok(error.into_response())
}

/// The methods a path accepts, for `OPTIONS` and the `Allow` header of a 405; `None` for a path
/// no route serves. It mirrors the routes above and `allow_lists_every_route` keeps it honest.
fn allowed_methods(path: &str) -> Option<&'static str> {
    table::route_of(path).map(|r| r.methods)
}

/// `OPTIONS`: the methods of the path in `Allow` (no CORS preflight, as CORS is not configured).
fn options_reply(path: &str) -> Response {
    match allowed_methods(path) {
        Some(allow) => {
            let mut response = no_content();
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(allow));
            response
        }
        None => ApiError {
            status: StatusCode::NOT_FOUND,
            message: "there is no such route; see docs/compatibility.md for the routes served".to_owned(),
        }
        .into_response(),
    }
}

// ----- handlers -----

async fn upsert(who: Caller, body: Bytes, ctx: Ctx, route: Route) -> Result<Response, Infallible> {
    respond(
        async {
            let (job, provided) = dto::parse_job(&body, route, &ctx.defaults)?;
            dto::check_policy(&job, &ctx.policy)?;
            ctx.engine()?.upsert(job, provided, who.actor()).await?;
            Ok(no_content())
        }
        .await,
    )
}

/// `GET /jobs` fills `fetch` from `uris` and the other way round, as Chronos' list does.
fn with_fetch_shim(job: &Job) -> Job {
    let mut job = job.for_clients();
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
    limit: Option<String>,
    offset: Option<String>,
}

/// Which of the matching jobs a search returns: Chronos' `slice(offset, offset + limit)`, so a
/// negative limit returns nothing and a negative offset starts at the first job.
fn search_window(offset: i64, limit: i64) -> (usize, usize) {
    let from = offset.max(0);
    let until = offset.saturating_add(limit);
    let skip = usize::try_from(from).unwrap_or(usize::MAX);
    let take = usize::try_from(until.saturating_sub(from)).unwrap_or(0);
    (skip, take)
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
            let whole = |name, text: &Option<String>| params::number(name, text.as_deref(), "a whole number");
            let (offset, limit) = search_window(
                whole("offset", &q.offset)?.unwrap_or(0),
                whole("limit", &q.limit)?.unwrap_or(10),
            );
            let jobs = ctx
                .engine()?
                .read(move |state| {
                    state
                        .jobs
                        .values()
                        .filter(|e| {
                            search_matches(e.search.name(), e.search.command(), &name, &command, &any)
                        })
                        .skip(offset)
                        .take(limit)
                        .map(|e| e.job.for_clients())
                        .collect::<Vec<_>>()
                })
                .await?;
            Ok(json_reply(&jobs))
        }
        .await,
    )
}

/// One `/jobs/summary` entry, in the key order of Chronos' `JobSummaryWrapperSerializer`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JobSummary {
    name: String,
    status: &'static str,
    state: String,
    schedule: String,
    parents: Vec<String>,
    disabled: bool,
    /// Beyond Chronos: why a queued task can't start yet.
    #[serde(skip_serializing_if = "Option::is_none")]
    queued_reason: Option<String>,
}

#[derive(Serialize)]
struct Summaries {
    jobs: Vec<JobSummary>,
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
                        .map(|e| JobSummary {
                            name: e.job.name.clone(),
                            status: e.job.last_status(),
                            state: state.job_state(&e.job.name),
                            schedule: e.job.schedule.clone().unwrap_or_default(),
                            parents: e.job.parents().to_vec(),
                            disabled: e.job.disabled,
                            queued_reason: e.waiting.as_ref().map(ToString::to_string),
                        })
                        .collect::<Vec<_>>()
                })
                .await?;
            Ok(json_reply(&Summaries { jobs }))
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
                                "accepting": w.accepting,
                                "runs": if w.runs.processes { "everything" } else { "containers" },
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

async fn get_job(Segment(name): Segment, ctx: Ctx) -> Result<Response, Infallible> {
    respond(
        async {
            let lookup = name.clone();
            let job = ctx
                .engine()?
                .read(move |state| state.jobs.get(&lookup).map(|e| e.job.for_clients()))
                .await?;
            let job = job.ok_or(engine::Error::JobNotFound { name })?;
            Ok(json_reply(&job))
        }
        .await,
    )
}

async fn delete_job(Segment(name): Segment, who: Caller, ctx: Ctx) -> Result<Response, Infallible> {
    respond(
        async {
            ctx.engine()?.delete(name, who.actor()).await?;
            Ok(no_content())
        }
        .await,
    )
}

#[derive(Debug, Deserialize)]
struct RunQuery {
    arguments: Option<String>,
}

async fn run_job(Segment(name): Segment, who: Caller, q: RunQuery, ctx: Ctx) -> Result<Response, Infallible> {
    respond(
        async {
            let arguments = q.arguments;
            ctx.engine()?.run_now(name, arguments, who.actor()).await?;
            Ok(no_content())
        }
        .await,
    )
}

async fn mark_success(Segment(name): Segment, who: Caller, ctx: Ctx) -> Result<Response, Infallible> {
    respond(
        async {
            let label = name.clone();
            let marked = ctx.engine()?.mark_success(name, who.actor()).await?;
            Ok(text(format!("marked job {label} as successful: {marked}")))
        }
        .await,
    )
}

async fn kill(Segment(name): Segment, who: Caller, ctx: Ctx) -> Result<Response, Infallible> {
    respond(
        async {
            ctx.engine()?.kill(name, who.actor()).await?;
            Ok(no_content())
        }
        .await,
    )
}

/// 2.x's purge: drops every queued task and pending retry.
async fn purge(who: Caller, ctx: Ctx) -> Result<Response, Infallible> {
    respond(
        async {
            ctx.engine()?.purge(who.actor()).await?;
            Ok(no_content())
        }
        .await,
    )
}

async fn complete(
    Segment(task_id): Segment,
    body: Bytes,
    who: Caller,
    ctx: Ctx,
) -> Result<Response, Infallible> {
    respond(
        async {
            who.may_act_for_task(&task_id)?;
            if body.trim_ascii().is_empty() {
                return Err(ApiError::bad_request(
                    "the request needs a body: {\"statusCode\": 0} for success, another number for failure",
                ));
            }
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
                .complete(parse_task_id(&task_id)?, status_code, who.actor())
                .await?;
            Ok(no_content())
        }
        .await,
    )
}

async fn progress(
    Segment(job): Segment,
    Segment(task_id): Segment,
    body: Bytes,
    who: Caller,
    ctx: Ctx,
) -> Result<Response, Infallible> {
    respond(
        async {
            who.may_act_for_task(&task_id)?;
            let task_id = parse_task_id(&task_id)?;
            if matches!(who.principal, crate::auth::Principal::Task { .. }) {
                // A task's token reports progress only while its task is open.
                let id = task_id.clone();
                let open = ctx.engine()?.read(move |s| s.tasks.contains_key(&id)).await?;
                if !open {
                    return Err(ApiError {
                        status: StatusCode::FORBIDDEN,
                        message: format!("task {task_id} has ended; its token is no longer valid"),
                    });
                }
            }
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
                .progress(job, task_id, elements)
                .await?;
            Ok(no_content())
        }
        .await,
    )
}

/// Task ids are typed past this edge; one that is not in the Chronos shape goes no further.
fn parse_task_id(text: &str) -> Result<TaskId, ApiError> {
    TaskId::parse(text).ok_or_else(|| {
        ApiError::bad_request(format!(
            "'{text}' is not a valid task id (expected ct:<dueMillis>:<attempt>:<jobName>:<arguments>)"
        ))
    })
}

#[derive(Debug, Deserialize)]
struct HistoryQuery {
    limit: Option<String>,
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
        "scheduled": task.scheduled,
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

async fn job_history(Segment(job): Segment, q: HistoryQuery, ctx: Ctx) -> Result<Response, Infallible> {
    respond(
        async {
            let limit = params::number::<u32>("limit", q.limit.as_deref(), "a whole number, zero or more")?
                .unwrap_or(20)
                .min(1000);
            let tasks = ctx.engine()?.history(job, limit).await?;
            Ok(json_reply(&tasks.iter().map(task_json).collect::<Vec<_>>()))
        }
        .await,
    )
}

async fn get_task(Segment(task_id): Segment, ctx: Ctx) -> Result<Response, Infallible> {
    respond(
        async {
            let task = ctx.engine()?.task(parse_task_id(&task_id)?).await?;
            Ok(json_reply(&task_json(&task)))
        }
        .await,
    )
}

/// `/job/stat`'s histogram, in the key order of Chronos' `HistogramSerializer`.
#[derive(Serialize)]
struct ChronosHistogram {
    #[serde(rename = "75thPercentile")]
    p75: f64,
    #[serde(rename = "95thPercentile")]
    p95: f64,
    #[serde(rename = "98thPercentile")]
    p98: f64,
    #[serde(rename = "99thPercentile")]
    p99: f64,
    median: f64,
    mean: f64,
    count: usize,
}

impl From<&Histogram> for ChronosHistogram {
    fn from(h: &Histogram) -> ChronosHistogram {
        ChronosHistogram {
            p75: h.p75,
            p95: h.p95,
            p98: h.p98,
            p99: h.p99,
            median: h.median,
            mean: h.mean,
            count: h.count,
        }
    }
}

/// A `taskStatHistory` entry, in the key order of Chronos' `JobStatWrapperSerializer`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TaskStat<'a> {
    task_id: &'a str,
    job_name: &'a str,
    slave_id: &'a str,
    start_time: String,
    end_time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    duration: Option<String>,
    status: &'static str,
    /// Only for data jobs.
    #[serde(skip_serializing_if = "Option::is_none")]
    num_elements_processed: Option<i64>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JobStat<'a> {
    histogram: ChronosHistogram,
    task_stat_history: Vec<TaskStat<'a>>,
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

async fn job_stat(Segment(job): Segment, ctx: Ctx) -> Result<Response, Infallible> {
    respond(
        async {
            let data_job = {
                let name = job.clone();
                ctx.engine()?
                    .read(move |s| s.jobs.get(&name).map(|e| e.job.data_processing_job_type))
                    .await?
                    .unwrap_or(false)
            };
            let (histogram, tasks) = ctx.engine()?.stat(job).await?;
            let task_stat_history = tasks
                .iter()
                .map(|t| TaskStat {
                    task_id: &t.id,
                    job_name: &t.job,
                    slave_id: &t.worker,
                    start_time: chronos_time(t.started_ms),
                    end_time: chronos_time(t.finished_ms),
                    duration: t
                        .started_ms
                        .zip(t.finished_ms)
                        .map(|(s, f)| chronos_duration(f - s)),
                    status: match t.state {
                        TaskState::Finished => "Success",
                        TaskState::Running | TaskState::Waiting => "Running",
                        TaskState::Queued => "Idle",
                        TaskState::Failed | TaskState::Killed | TaskState::Lost | TaskState::Skipped => {
                            "Fail"
                        }
                    },
                    num_elements_processed: data_job.then_some(t.elements_processed),
                })
                .collect();
            Ok(json_reply(&JobStat {
                histogram: ChronosHistogram::from(&histogram),
                task_stat_history,
            }))
        }
        .await,
    )
}

async fn stats(Segment(key): Segment, ctx: Ctx) -> Result<Response, Infallible> {
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

/// `GET /graph/svg?job=`: the DAG drawn by [`crate::graph::layout`], each job coloured by its
/// state and linked to its page; with `job`, only that job, its ancestors and its descendants.
#[derive(Debug, Deserialize)]
struct SvgQuery {
    job: Option<String>,
}

async fn graph_svg(q: SvgQuery, ctx: Ctx) -> Result<Response, Infallible> {
    respond(async { Ok(typed(draw_graph(&ctx, q.job).await?, "image/svg+xml")) }.await)
}

/// The graph as SVG, or one job's neighbourhood in it; for the route and the UI's graph page.
async fn draw_graph(ctx: &Ctx, job: Option<String>) -> Result<String, ApiError> {
    Ok(draw_graph_within(ctx, job, usize::MAX).await?.unwrap_or_default())
}

/// [`draw_graph`], or `None` when more than `most` jobs would be drawn: the job page draws a
/// job's neighbourhood only while it stays a picture one takes in at a glance.
async fn draw_graph_within(ctx: &Ctx, job: Option<String>, most: usize) -> Result<Option<String>, ApiError> {
    use crate::graph::layout;
    let focus = job.clone();
    let input = ctx
        .engine()?
        .read(move |s| {
            let keep = focus.as_deref().map(|name| layout::neighbourhood(&s.graph, name));
            if keep.as_ref().is_some_and(std::collections::BTreeSet::is_empty) {
                return None;
            }
            let drawn = keep
                .as_ref()
                .map_or(s.graph.len(), std::collections::BTreeSet::len);
            if drawn > most {
                return Some(None);
            }
            Some(Some(layout::graph_input(
                &s.graph,
                |name| keep.as_ref().is_none_or(|k| k.contains(name)),
                |name| node_state(s, name),
            )))
        })
        .await?;
    let Some((nodes, edges)) = input.ok_or_else(|| engine::Error::JobNotFound {
        name: job.clone().unwrap_or_default(),
    })?
    else {
        return Ok(None);
    };
    // Laying out a thousand jobs takes milliseconds: off the engine and the reactor.
    let failed = |e: &dyn std::fmt::Display| ApiError::internal(format!("drawing the graph failed: {e}"));
    tokio::task::spawn_blocking(move || {
        let drawn = layout::layout(&nodes, &edges)?;
        let options = layout::SvgOptions {
            link_prefix: "/jobs/".to_owned(),
            highlight: job,
            ..layout::SvgOptions::default()
        };
        Ok::<_, layout::Error>(Some(layout::render_svg(&drawn, &options)))
    })
    .await
    .map_err(|e| failed(&e))?
    .map_err(|e| failed(&e))
}

/// How the graph colours a job: its last outcome, whether it runs or waits, and whether it is on.
fn node_state(s: &engine::State, name: &str) -> crate::graph::layout::NodeState {
    use crate::graph::layout::{Activity, NodeState, Outcome};
    let Some(entry) = s.jobs.get(name) else {
        return NodeState::default();
    };
    let outcome = match entry.job.last_status() {
        "success" => Outcome::Success,
        "failure" => Outcome::Failure,
        _ => Outcome::NeverRun,
    };
    let activity = if !entry.running.is_empty() {
        Activity::Running
    } else if !entry.queue.is_empty() {
        Activity::Queued
    } else {
        Activity::Idle
    };
    NodeState {
        outcome,
        activity,
        disabled: entry.job.disabled,
    }
}

/// `GET /job/<name>/next?count=`: the job's next scheduled runs (default 10, at most 1000), as
/// ISO 8601 instants; empty for a dependent job or one with no runs left.
#[derive(Debug, Deserialize)]
struct NextQuery {
    count: Option<String>,
}

const MAX_NEXT_RUNS: usize = 1000;

async fn next_runs(Segment(name): Segment, q: NextQuery, ctx: Ctx) -> Result<Response, Infallible> {
    respond(
        async {
            let count = match q.count.as_deref() {
                None => 10,
                Some(text) => text
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_NEXT_RUNS).contains(n))
                    .ok_or_else(|| {
                        ApiError::bad_request(format!(
                            "field 'count': must be a whole number from 1 to {MAX_NEXT_RUNS}, not {text:?}"
                        ))
                    })?,
            };
            let lookup = name.clone();
            let runs = ctx
                .engine()?
                .read(move |s| {
                    s.jobs.get(&lookup).map(|e| {
                        e.schedule
                            .as_ref()
                            .map(|sch| sch.upcoming(count))
                            .unwrap_or_default()
                    })
                })
                .await?
                .ok_or(engine::Error::JobNotFound { name })?;
            let runs: Vec<String> = runs.into_iter().map(crate::clock::iso).collect();
            Ok(json_reply(&runs))
        }
        .await,
    )
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
    /// `json` (the default) or `prometheus`; see [`prometheus::negotiate`].
    format: Option<String>,
}

/// Codahale's metrics JSON, in its key order. Metric names are sorted within each kind, as
/// Codahale's registry sorts them.
#[derive(Serialize)]
struct Metrics {
    version: &'static str,
    gauges: serde_json::Map<String, Value>,
    counters: serde_json::Map<String, Value>,
    histograms: serde_json::Map<String, Value>,
    meters: serde_json::Map<String, Value>,
    timers: serde_json::Map<String, Value>,
}

/// A Codahale histogram (`MetricsModule`'s `HistogramSerializer`, without the samples).
#[derive(Serialize)]
struct CodahaleHistogram {
    count: usize,
    max: f64,
    mean: f64,
    min: f64,
    p50: f64,
    p75: f64,
    p95: f64,
    p98: f64,
    p99: f64,
    p999: f64,
    stddev: f64,
}

/// `/metrics` in the Prometheus text format: this server's own families, then the engine's when
/// it leads. `valid` carries a refused `format` value.
async fn prometheus_metrics(valid: Result<(), ApiError>, ctx: Ctx) -> Result<Response, Infallible> {
    respond(
        async {
            valid?;
            let mut out = prometheus::Exposition::default();
            let engine = ctx.cluster.engine();
            prometheus::write_server(&mut out, engine.is_some(), &ctx.http, ctx.auth.evictions());
            if let Some(engine) = engine {
                let now_ms = crate::clock::now().timestamp_millis();
                let per_job = ctx.metrics_per_job;
                out = engine
                    .read(move |s| {
                        prometheus::write_engine(&mut out, s, now_ms, per_job);
                        out
                    })
                    .await?;
            }
            Ok(typed(out.finish(), prometheus::CONTENT_TYPE))
        }
        .await,
    )
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
                        let shape = CodahaleHistogram {
                            count: h.count,
                            max: h.max,
                            mean: h.mean,
                            min: h.min,
                            p50: h.median,
                            p75: h.p75,
                            p95: h.p95,
                            p98: h.p98,
                            p99: h.p99,
                            p999: h.p999,
                            stddev: h.stddev,
                        };
                        histograms.insert(
                            format!("jobs.run.time.{}", e.job.name),
                            serde_json::to_value(shape).unwrap_or_default(),
                        );
                    }
                    Metrics {
                        version: "4.0.0",
                        gauges,
                        counters,
                        histograms,
                        meters: serde_json::Map::new(),
                        timers: serde_json::Map::new(),
                    }
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
    fn refusals_name_their_field_in_the_body() {
        let named = ApiError::bad_request("field 'container.image': is required");
        assert_eq!(named.field(), Some("container.image"));
        assert_eq!(ApiError::bad_request("no such job").field(), None);
        assert_eq!(ApiError::bad_request("field 'unclosed").field(), None);
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("ct%3A1%3A0%3Aa%3A-x%201"), "ct:1:0:a:-x 1");
        assert_eq!(percent_decode("plain"), "plain");
        assert_eq!(percent_decode("bad%zz%4"), "bad%zz%4");
    }

    #[test]
    fn search_windows_follow_scala_slice() {
        for ((offset, limit), want) in [
            ((0, 10), (0, 10)),
            ((2, 3), (2, 3)),
            ((0, -1), (0, 0)),
            ((-1, 10), (0, 9)),
            ((-20, 10), (0, 0)),
            ((5, i64::MAX), (5, usize::try_from(i64::MAX - 5).unwrap())),
        ] {
            assert_eq!(
                search_window(offset, limit),
                want,
                "offset {offset}, limit {limit}"
            );
        }
    }

    #[test]
    fn allow_lists_every_route() {
        for (path, want) in [
            ("/ping", Some("GET, HEAD, OPTIONS")),
            ("/metrics", Some("GET, HEAD, OPTIONS")),
            ("/v1/scheduler/iso8601", Some("POST, PUT, OPTIONS")),
            ("/scheduler/dependency", Some("POST, PUT, OPTIONS")),
            ("/v1/scheduler/jobs/summary", Some("GET, HEAD, OPTIONS")),
            ("/v1/scheduler/job/a.b", Some("GET, HEAD, PUT, DELETE, OPTIONS")),
            ("/v1/scheduler/job/success/a", Some("PUT, OPTIONS")),
            (
                "/v1/scheduler/job/a/task/ct:1:0:a:/progress",
                Some("POST, OPTIONS"),
            ),
            ("/scheduler/task/kill/a", Some("DELETE, OPTIONS")),
            ("/scheduler/task/all", Some("DELETE, OPTIONS")),
            ("/scheduler/task/ct:1:0:a:", Some("GET, HEAD, PUT, OPTIONS")),
            ("/v1/scheduler/tokens", Some("GET, HEAD, POST, OPTIONS")),
            ("/openapi.json", Some("GET, HEAD, OPTIONS")),
            ("/jobs/a/edit", Some("GET, OPTIONS")),
            ("/v1/scheduler/job/", None),
            ("/v1/scheduler/stats/mean", Some("GET, HEAD, OPTIONS")),
            ("/v1/scheduler/nope", None),
            ("/logging", None),
        ] {
            assert_eq!(allowed_methods(path), want, "{path}");
        }
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
