//! Authentication in front of every route but `/ping` and `/leader`: who is calling (HTTP Basic
//! with the admin credentials or a token as password, a Bearer API token, or a task's own token),
//! whether their role allows the route, and a pause for addresses that keep failing.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use warp::Filter;
use warp::http::StatusCode;

use super::{ApiError, Ctx, with_ctx};
use crate::auth::{Credentials, Principal, Role, TaskTokens, Tokens};
use crate::engine::Actor;

/// Failed attempts from one address within [`FAILURE_WINDOW`] before it gets `429`.
const FAILURES_ALLOWED: u32 = 10;
const FAILURE_WINDOW: Duration = Duration::from_secs(60);

/// What the guard knows: the credentials and tokens, and recent failures by address.
pub(super) struct Auth {
    pub(super) credentials: Option<Credentials>,
    pub(super) task_tokens: Option<TaskTokens>,
    pub(super) tokens: Tokens,
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl Auth {
    /// Authentication is on when admin credentials are configured.
    pub(super) fn new(credentials: Option<Credentials>, tokens: Tokens) -> Auth {
        Auth {
            task_tokens: credentials.as_ref().map(Credentials::task_tokens),
            credentials,
            tokens,
            failures: Mutex::new(HashMap::new()),
        }
    }

    fn failures(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, (u32, Instant)>> {
        self.failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn blocked(&self, ip: IpAddr) -> bool {
        let mut failures = self.failures();
        match failures.get(&ip) {
            Some((_, since)) if since.elapsed() > FAILURE_WINDOW => {
                failures.remove(&ip);
                false
            }
            Some((count, _)) => *count >= FAILURES_ALLOWED,
            None => false,
        }
    }

    fn failed(&self, ip: IpAddr) {
        let mut failures = self.failures();
        // Forget stale entries now and then, so a scan from many addresses cannot grow it forever.
        if failures.len() > 10_000 {
            failures.retain(|_, (_, since)| since.elapsed() <= FAILURE_WINDOW);
        }
        let entry = failures.entry(ip).or_insert((0, Instant::now()));
        entry.0 += 1;
    }

    /// The principal a request's `Authorization` header names, if it names a valid one.
    fn principal(&self, header: Option<&str>) -> Option<(Principal, Option<String>)> {
        let header = header?;
        if let Some(encoded) = header.strip_prefix("Basic ") {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(encoded.trim())
                .ok()?;
            let text = String::from_utf8(decoded).ok()?;
            let (user, password) = text.split_once(':')?;
            if self
                .credentials
                .as_ref()
                .is_some_and(|c| c.matches(user, password))
            {
                return Some((
                    Principal::Admin {
                        user: user.to_owned(),
                    },
                    None,
                ));
            }
            // Clients that only know Basic send a token as the password.
            return self.bearer(password);
        }
        self.bearer(header.strip_prefix("Bearer ")?.trim())
    }

    fn bearer(&self, secret: &str) -> Option<(Principal, Option<String>)> {
        if let Some(token) = self.tokens.find(secret) {
            let principal = Principal::Token {
                name: token.name.clone(),
                role: token.role,
            };
            return Some((principal, Some(token.hash)));
        }
        let task_id = self.task_tokens.as_ref()?.verify(secret)?;
        Some((Principal::Task { task_id }, None))
    }
}

/// What a route asks of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Need {
    Role(Role),
    /// The role, or the token of the task the route names (the handler checks which task).
    TaskOr(Role),
}

/// Who is calling, for the handler and the audit log.
#[derive(Debug, Clone)]
pub(super) struct Caller {
    pub(super) principal: Principal,
    pub(super) source: String,
    pub(super) method: String,
    pub(super) route: String,
}

impl Caller {
    /// The audit log's view of this caller.
    pub(super) fn actor(&self) -> Option<Actor> {
        Some(Actor {
            principal: self.principal.name(),
            role: self.principal.role().map_or("task", Role::as_str).to_owned(),
            source: self.source.clone(),
            method: self.method.clone(),
            route: self.route.clone(),
        })
    }

    /// A task token may act only for its own task.
    pub(super) fn may_act_for_task(&self, task_id: &str) -> Result<(), ApiError> {
        match &self.principal {
            Principal::Task { task_id: own } if own != task_id => Err(ApiError {
                status: StatusCode::FORBIDDEN,
                message: format!("this task's token is valid only for task {own}"),
            }),
            _ => Ok(()),
        }
    }
}

/// Authenticates the request and checks `need`; extracts the [`Caller`].
pub(super) fn guard(
    ctx: Ctx,
    need: Need,
) -> impl Filter<Extract = (Caller,), Error = warp::Rejection> + Clone {
    warp::method()
        .and(warp::path::full())
        .and(warp::header::optional::<String>("authorization"))
        .and(warp::addr::remote())
        .and(warp::ext::optional::<crate::tls::Peer>())
        .and(with_ctx(ctx))
        .and_then(
            move |method: warp::http::Method,
                  path: warp::path::FullPath,
                  header: Option<String>,
                  remote: Option<SocketAddr>,
                  peer: Option<crate::tls::Peer>,
                  ctx: Ctx| async move {
                let remote = remote.or(peer.map(|p| p.0));
                check(&ctx, need, header.as_deref(), remote)
                    .map(|principal| Caller {
                        principal,
                        source: remote.map(|a| a.ip().to_string()).unwrap_or_default(),
                        method: method.to_string(),
                        route: path.as_str().to_owned(),
                    })
                    .map_err(warp::reject::custom)
            },
        )
}

/// A guard for routes that only read: it checks and extracts nothing.
pub(super) fn reader(ctx: Ctx) -> impl Filter<Extract = (), Error = warp::Rejection> + Clone {
    guard(ctx, Need::Role(Role::Read)).map(|_| ()).untuple_one()
}

fn check(
    ctx: &Ctx,
    need: Need,
    header: Option<&str>,
    remote: Option<SocketAddr>,
) -> Result<Principal, ApiError> {
    let auth = &ctx.auth;
    if auth.credentials.is_none() {
        return Ok(Principal::Anonymous);
    }
    let ip = remote.map_or(IpAddr::from([0, 0, 0, 0]), |a| a.ip());
    if auth.blocked(ip) {
        return Err(ApiError {
            status: StatusCode::TOO_MANY_REQUESTS,
            message: "too many failed attempts from this address; wait a minute".to_owned(),
        });
    }
    let Some((principal, hash)) = auth.principal(header) else {
        // Only wrong credentials count towards a pause: asking without any is how clients start.
        if header.is_some() {
            auth.failed(ip);
        }
        return Err(ApiError {
            status: StatusCode::UNAUTHORIZED,
            message: "authentication is required: HTTP Basic with the admin's credentials, or an API \
                      token (Authorization: Bearer <token>)"
                .to_owned(),
        });
    };
    if let (Some(hash), Principal::Token { name, .. }) = (hash, &principal) {
        let now = crate::clock::now().timestamp_millis();
        if auth.tokens.used(&hash, now)
            && let Ok(engine) = ctx.engine()
        {
            let name = name.clone();
            tokio::spawn(async move { engine.token_used(name, now).await });
        }
    }
    let allowed = match (need, &principal) {
        (Need::TaskOr(_), Principal::Task { .. }) => true,
        (Need::Role(_), Principal::Task { .. }) => false,
        (Need::Role(role) | Need::TaskOr(role), p) => p.role().is_some_and(|has| has >= role),
    };
    if allowed {
        Ok(principal)
    } else {
        let has = principal.role().map_or("a task's token", Role::as_str);
        let role = match need {
            Need::Role(role) | Need::TaskOr(role) => role,
        };
        Err(ApiError {
            status: StatusCode::FORBIDDEN,
            message: format!(
                "this needs the {} role; {} has {has}",
                role.as_str(),
                principal.name()
            ),
        })
    }
}

/// Origins allowed to call the API from a browser (`--cors-origin`).
pub(super) fn cors_allowed(origins: &Arc<Vec<String>>, origin: &str) -> bool {
    origins.iter().any(|o| o == origin)
}
