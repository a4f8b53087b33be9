//! Authentication in front of every route but `/ping`, `/leader`, `/openapi.json` and `/login`: who
//! is calling (HTTP Basic with the admin credentials or a token as password, a Bearer API token, a task's
//! own token, or a browser's session cookie from the login form), whether their role allows the
//! route, and a pause for addresses that keep failing.
//!
//! A session cookie is HttpOnly and SameSite=Strict, and every change made with it must carry
//! the session's CSRF token in `X-CSRF-Token`; sessions live in the leader's memory, so a
//! restart or a failover asks people to log in again.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
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

/// The browser session's cookie.
pub(super) const SESSION_COOKIE: &str = "kairos_session";
/// How long a login lasts.
pub(super) const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Sessions kept at most; the oldest go first when more people log in.
const MAX_SESSIONS: usize = 10_000;
/// Addresses whose failed logins are counted at once.
const MAX_FAILING_ADDRESSES: usize = 10_000;

/// One browser's login.
struct Session {
    principal: Principal,
    /// The token it logged in with, if any: deleting the token ends the session.
    token_hash: Option<String>,
    csrf: String,
    expires: Instant,
}

/// What the guard knows: the credentials and tokens, and recent failures by address.
pub(super) struct Auth {
    pub(super) credentials: Option<Credentials>,
    pub(super) task_tokens: Option<TaskTokens>,
    pub(super) tokens: Tokens,
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
    /// By the SHA-256 of the cookie's value, so the map holds no usable secret.
    sessions: Mutex<HashMap<String, Session>>,
    /// Entries pushed out of the full tables: (sessions, failing addresses), for `/metrics`.
    evicted: (AtomicU64, AtomicU64),
}

impl Auth {
    /// Authentication is on when admin credentials are configured.
    pub(super) fn new(credentials: Option<Credentials>, tokens: Tokens) -> Auth {
        Auth {
            task_tokens: credentials.as_ref().map(Credentials::task_tokens),
            credentials,
            tokens,
            failures: Mutex::new(HashMap::new()),
            sessions: Mutex::new(HashMap::new()),
            evicted: (AtomicU64::new(0), AtomicU64::new(0)),
        }
    }

    /// Entries pushed out of the full tables so far: (sessions, failing addresses).
    pub(super) fn evictions(&self) -> (u64, u64) {
        (
            self.evicted.0.load(Ordering::Relaxed),
            self.evicted.1.load(Ordering::Relaxed),
        )
    }

    /// Whether callers must say who they are.
    pub(super) fn required(&self) -> bool {
        self.credentials.is_some()
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The login form: the admin's credentials, or any user name with an API token as the
    /// password. Gives the cookie's value and the session's CSRF token, or why not.
    pub(super) fn login(
        &self,
        user: &str,
        password: &str,
        from: Option<SocketAddr>,
    ) -> Result<(String, String), ApiError> {
        let ip = from.map_or(IpAddr::from([0, 0, 0, 0]), |a| a.ip());
        if self.blocked(ip) {
            return Err(too_many());
        }
        let admin = self
            .credentials
            .as_ref()
            .is_some_and(|c| c.matches(user, password));
        let found = if admin {
            Some((
                Principal::Admin {
                    user: user.to_owned(),
                },
                None,
            ))
        } else {
            self.tokens.find(password).map(|token| {
                let principal = Principal::Token {
                    name: token.name.clone(),
                    role: token.role,
                };
                (principal, Some(token.hash))
            })
        };
        let Some((principal, token_hash)) = found else {
            self.failed(ip);
            return Err(ApiError {
                status: StatusCode::UNAUTHORIZED,
                message: "wrong user or password (an API token may be given as the password)".to_owned(),
            });
        };
        let secret = crate::auth::new_secret().map_err(|e| ApiError::internal(e.to_string()))?;
        let csrf = crate::auth::new_secret().map_err(|e| ApiError::internal(e.to_string()))?;
        let mut sessions = self.sessions();
        let now = Instant::now();
        sessions.retain(|_, s| s.expires > now);
        if sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(k, _)| k.clone())
        {
            sessions.remove(&oldest);
            self.evicted.0.fetch_add(1, Ordering::Relaxed);
        }
        sessions.insert(
            crate::auth::hash_secret(&secret),
            Session {
                principal,
                token_hash,
                csrf: csrf.clone(),
                expires: now + SESSION_LIFETIME,
            },
        );
        Ok((secret, csrf))
    }

    /// Ends the session with this cookie value.
    pub(super) fn logout(&self, secret: &str) {
        self.sessions().remove(&crate::auth::hash_secret(secret));
    }

    /// The CSRF token of a live session.
    pub(super) fn csrf_of(&self, secret: &str) -> Option<String> {
        self.session(secret).map(|(_, csrf)| csrf)
    }

    /// The principal and CSRF token of a live session.
    fn session(&self, secret: &str) -> Option<(Principal, String)> {
        let key = crate::auth::hash_secret(secret);
        let mut sessions = self.sessions();
        let session = sessions.get(&key)?;
        let token_gone = match (&session.token_hash, &session.principal) {
            (Some(hash), Principal::Token { name, .. }) => {
                self.tokens.named(name).is_none_or(|t| &t.hash != hash)
            }
            _ => false,
        };
        if session.expires <= Instant::now() || token_gone {
            sessions.remove(&key);
            return None;
        }
        Some((session.principal.clone(), session.csrf.clone()))
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
        // A scan from many addresses must not grow the table without bound: stale entries go
        // first, then, if it is still full, the oldest (its address gets a fresh count).
        if failures.len() >= MAX_FAILING_ADDRESSES && !failures.contains_key(&ip) {
            failures.retain(|_, (_, since)| since.elapsed() <= FAILURE_WINDOW);
            if failures.len() >= MAX_FAILING_ADDRESSES
                && let Some(oldest) = failures
                    .iter()
                    .min_by_key(|(_, (_, since))| *since)
                    .map(|(ip, _)| *ip)
            {
                failures.remove(&oldest);
                self.evicted.1.fetch_add(1, Ordering::Relaxed);
            }
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
    /// The CSRF token of the caller's session, when a session cookie authenticated it.
    pub(super) csrf: Option<String>,
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

/// What a request presents.
struct Presented<'a> {
    method: &'a warp::http::Method,
    authorization: Option<&'a str>,
    cookie: Option<&'a str>,
    csrf: Option<&'a str>,
    remote: Option<SocketAddr>,
}

/// Whether `given` is the session's CSRF token, compared in constant time like every secret.
pub(super) fn csrf_matches(expected: &str, given: Option<&str>) -> bool {
    use subtle::ConstantTimeEq as _;
    given.is_some_and(|given| bool::from(given.as_bytes().ct_eq(expected.as_bytes())))
}

/// The value of the session cookie among a request's cookies.
pub(super) fn session_cookie(cookies: &str) -> Option<&str> {
    cookies
        .split(';')
        .filter_map(|c| c.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value)
}

/// Authenticates the request and checks `need`; extracts the [`Caller`].
pub(super) fn guard(
    ctx: Ctx,
    need: Need,
) -> impl Filter<Extract = (Caller,), Error = warp::Rejection> + Clone {
    warp::method()
        .and(warp::path::full())
        .and(warp::header::optional::<String>("authorization"))
        .and(warp::header::optional::<String>("cookie"))
        .and(warp::header::optional::<String>("x-csrf-token"))
        .and(warp::addr::remote())
        .and(warp::ext::optional::<crate::tls::Peer>())
        .and(with_ctx(ctx))
        .and_then(
            move |method: warp::http::Method,
                  path: warp::path::FullPath,
                  authorization: Option<String>,
                  cookie: Option<String>,
                  csrf: Option<String>,
                  remote: Option<SocketAddr>,
                  peer: Option<crate::tls::Peer>,
                  ctx: Ctx| async move {
                let remote = remote.or(peer.map(|p| p.0));
                let presented = Presented {
                    method: &method,
                    authorization: authorization.as_deref(),
                    cookie: cookie.as_deref().and_then(session_cookie),
                    csrf: csrf.as_deref(),
                    remote,
                };
                check(&ctx, need, &presented)
                    .map(|(principal, csrf)| Caller {
                        principal,
                        csrf,
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

/// A page needs someone logged in: the browser goes to the login form, and comes back to `next`.
#[derive(Debug)]
pub(super) struct LoginRequired {
    pub(super) next: String,
}

impl warp::reject::Reject for LoginRequired {}

/// The guard of the web UI's pages: like [`guard`] with the read role, but a caller who has not
/// logged in is sent to the login form rather than refused.
pub(super) fn viewer(ctx: Ctx) -> impl Filter<Extract = (Caller,), Error = warp::Rejection> + Clone {
    warp::path::full()
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and(
            guard(ctx, Need::Role(Role::Read))
                .map(Ok)
                .or_else(
                    |rejection: warp::Rejection| async move { Ok::<_, warp::Rejection>((Err(rejection),)) },
                ),
        )
        .and_then(
            |path: warp::path::FullPath, query: String, caller: Result<Caller, warp::Rejection>| async move {
                match caller {
                    Ok(caller) => Ok(caller),
                    Err(rejection) => {
                        let unauthenticated = rejection
                            .find::<ApiError>()
                            .is_some_and(|e| e.status == StatusCode::UNAUTHORIZED);
                        if !unauthenticated {
                            return Err(rejection);
                        }
                        let mut next = path.as_str().to_owned();
                        if !query.is_empty() {
                            next.push('?');
                            next.push_str(&query);
                        }
                        Err(warp::reject::custom(LoginRequired { next }))
                    }
                }
            },
        )
}

fn too_many() -> ApiError {
    ApiError {
        status: StatusCode::TOO_MANY_REQUESTS,
        message: "too many failed attempts from this address; wait a minute".to_owned(),
    }
}

/// The caller's principal and, for a session, its CSRF token.
fn check(ctx: &Ctx, need: Need, presented: &Presented<'_>) -> Result<(Principal, Option<String>), ApiError> {
    let auth = &ctx.auth;
    if auth.credentials.is_none() {
        return Ok((Principal::Anonymous, None));
    }
    let ip = presented.remote.map_or(IpAddr::from([0, 0, 0, 0]), |a| a.ip());
    if auth.blocked(ip) {
        return Err(too_many());
    }
    let header = presented.authorization;
    let mut csrf = None;
    let found = match (header, presented.cookie) {
        (None, Some(cookie)) => auth.session(cookie).map(|(principal, token)| {
            csrf = Some(token);
            (principal, None)
        }),
        _ => auth.principal(header),
    };
    let Some((principal, hash)) = found else {
        // Only wrong credentials count towards a pause: asking without any is how clients start,
        // and an expired session is not an attack.
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
    if let Some(expected) = &csrf
        && !presented.method.is_safe()
        && !csrf_matches(expected, presented.csrf)
    {
        return Err(ApiError {
            status: StatusCode::FORBIDDEN,
            message: "a change made with a session cookie needs its CSRF token in the X-CSRF-Token header; reload the page".to_owned(),
        });
    }
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
        Ok((principal, csrf))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_logins_from_many_addresses_stay_within_the_table_and_count_evictions() {
        let auth = Auth::new(None, Tokens::default());
        let address = |i: u32| IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
        for i in 0..MAX_FAILING_ADDRESSES as u32 + 5 {
            auth.failed(address(i));
        }
        assert_eq!(auth.failures().len(), MAX_FAILING_ADDRESSES);
        assert_eq!(auth.evictions(), (0, 5));
        // A new address still gets counted, and blocked after its failures.
        let last = address(1 << 20);
        for _ in 0..FAILURES_ALLOWED {
            auth.failed(last);
        }
        assert!(auth.blocked(last));
        assert_eq!(auth.evictions(), (0, 6), "only its first failure evicted one");
    }
}
