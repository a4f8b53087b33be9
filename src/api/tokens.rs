//! The admin routes: API tokens (`/tokens`) and the audit log (`/audit`).

use std::convert::Infallible;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};
use warp::http::StatusCode;
use warp::reply::{Reply, Response};
use warp::{Filter, filters::BoxedFilter};

use super::guard::{self, Caller, Need};
use super::{ApiError, Ctx, Segment, body, json_reply, no_content, respond, with_ctx};
use crate::auth::{self, Role};
use crate::store::{AuditQuery, StoredToken};

/// Names are short words, so they can sit in a path and a log line.
fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

pub(super) fn routes(ctx: Ctx) -> BoxedFilter<(Response,)> {
    let admin = {
        let ctx = ctx.clone();
        move || guard::guard(ctx.clone(), Need::Role(Role::Admin))
    };
    let c = {
        let ctx = ctx.clone();
        move || with_ctx(ctx.clone())
    };
    let create = warp::path!("tokens")
        .and(warp::post())
        .and(body(ctx.max_body_bytes))
        .and(admin())
        .and(c())
        .and_then(create);
    let list = warp::path!("tokens")
        .and(warp::get().or(warp::head()).unify())
        .and(admin())
        .and(c())
        .and_then(list);
    let delete = warp::path!("tokens" / Segment)
        .and(warp::delete())
        .and(admin())
        .and(c())
        .and_then(delete);
    let audit = warp::path!("audit")
        .and(warp::get().or(warp::head()).unify())
        .and(admin())
        .and(warp::query::<AuditParams>())
        .and(c())
        .and_then(audit);
    create
        .or(list)
        .unify()
        .or(delete)
        .unify()
        .or(audit)
        .unify()
        .boxed()
}

/// `POST /tokens {"name": …, "role": …}`: the answer holds the secret, shown this once.
async fn create(body: Bytes, who: Caller, ctx: Ctx) -> Result<Response, Infallible> {
    respond(
        async {
            let value: Value = serde_json::from_slice(&body)
                .map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}")))?;
            let name = value.get("name").and_then(Value::as_str).unwrap_or_default();
            if !valid_name(name) {
                return Err(ApiError::bad_request(
                    "field 'name': is required: 1 to 64 letters, digits, '_', '-' or '.'",
                ));
            }
            let role = value.get("role").and_then(Value::as_str).unwrap_or_default();
            let role = Role::parse(role).map_err(|e| ApiError::bad_request(format!("field 'role': {e}")))?;
            if ctx.auth.tokens.named(name).is_some() {
                return Err(ApiError {
                    status: StatusCode::CONFLICT,
                    message: format!("a token named '{name}' exists; delete it first to replace it"),
                });
            }
            let secret = auth::new_secret().map_err(|e| ApiError {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                message: e.to_string(),
            })?;
            let created_ms = crate::clock::now().timestamp_millis();
            let token = StoredToken {
                name: name.to_owned(),
                role: role.as_str().to_owned(),
                hash: auth::hash_secret(&secret),
                created_ms,
                last_used_ms: None,
            };
            ctx.engine()?.put_token(token, who.actor()).await?;
            let body = json!({"name": name, "role": role.as_str(), "token": secret,
                "created": crate::clock::iso(crate::clock::from_millis(created_ms))});
            Ok(warp::reply::with_status(json_reply(&body), StatusCode::CREATED).into_response())
        }
        .await,
    )
}

/// `GET /tokens`: names, roles and times; never a secret.
async fn list(_who: Caller, ctx: Ctx) -> Result<Response, Infallible> {
    let time = |ms: Option<i64>| ms.map(|ms| crate::clock::iso(crate::clock::from_millis(ms)));
    let tokens: Vec<Value> = ctx
        .auth
        .tokens
        .list()
        .into_iter()
        .map(|t| json!({"name": t.name, "role": t.role.as_str(), "created": time(Some(t.created_ms)), "lastUsed": time(t.last_used_ms)}))
        .collect();
    respond(Ok(json_reply(&tokens)))
}

async fn delete(Segment(name): Segment, who: Caller, ctx: Ctx) -> Result<Response, Infallible> {
    respond(
        async {
            if ctx.engine()?.delete_token(name.clone(), who.actor()).await? {
                Ok(no_content())
            } else {
                Err(ApiError {
                    status: StatusCode::NOT_FOUND,
                    message: format!("no token named '{name}'"),
                })
            }
        }
        .await,
    )
}

#[derive(Debug, Deserialize)]
struct AuditParams {
    job: Option<String>,
    principal: Option<String>,
    /// An ISO 8601 instant.
    since: Option<String>,
    limit: Option<String>,
}

/// `GET /audit?job=&principal=&since=&limit=`: changes, newest first.
async fn audit(_who: Caller, q: AuditParams, ctx: Ctx) -> Result<Response, Infallible> {
    respond(
        async {
            let since_ms = match q.since.as_deref() {
                None | Some("") => None,
                Some(text) => Some(
                    chrono::DateTime::parse_from_rfc3339(text)
                        .map_err(|e| ApiError::bad_request(format!("field 'since': not an ISO 8601 instant: {e}")))?
                        .timestamp_millis(),
                ),
            };
            let query = AuditQuery {
                job: q.job,
                principal: q.principal,
                since_ms,
                limit: super::params::number::<u32>("limit", q.limit.as_deref(), "a whole number, zero or more")?
                    .unwrap_or(100)
                    .min(10_000),
            };
            let entries = ctx.engine()?.audit(query).await?;
            let entries: Vec<Value> = entries
                .into_iter()
                .map(|e| {
                    json!({"at": crate::clock::iso(crate::clock::from_millis(e.at_ms)), "principal": e.principal,
                        "role": e.role, "source": e.source, "method": e.method, "route": e.route,
                        "job": e.job, "outcome": e.outcome})
                })
                .collect();
            Ok(json_reply(&entries))
        }
        .await,
    )
}
