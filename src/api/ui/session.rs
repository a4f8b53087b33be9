//! The login form (`GET`/`POST /login`) and `POST /logout`: a browser trades the admin's
//! credentials, or an API token, for a session cookie that is HttpOnly and SameSite=Strict.

use std::convert::Infallible;
use std::net::SocketAddr;

use serde::Deserialize;
use warp::Filter;
use warp::http::{HeaderValue, StatusCode, header};
use warp::reply::{Reply, Response};

use super::super::guard::{SESSION_COOKIE, SESSION_LIFETIME, session_cookie};
use super::super::{ApiError, Ctx, respond, with_ctx};
use super::{STYLE, esc, html};

/// Login and logout forms are small; anything larger is refused before it is read.
const FORM_LIMIT: u64 = 8 * 1024;

/// The path comes before the method in each filter, as in the API's routes: a method rejection
/// would otherwise outrank every other route's 404, and any unknown path would answer 405.
pub(super) fn routes(ctx: Ctx) -> warp::filters::BoxedFilter<(Response,)> {
    let form = warp::path!("login")
        .and(warp::get())
        .and(warp::query::<LoginQuery>())
        .and(with_ctx(ctx.clone()))
        .map(|q: LoginQuery, ctx: Ctx| login_form(&ctx, &q.next, None, StatusCode::OK));
    let login = warp::path!("login")
        .and(warp::post())
        .and(warp::body::content_length_limit(FORM_LIMIT))
        .and(warp::body::form::<LoginForm>())
        .and(warp::addr::remote())
        .and(warp::ext::optional::<crate::tls::Peer>())
        .and(with_ctx(ctx.clone()))
        .map(
            |form: LoginForm, remote: Option<SocketAddr>, peer: Option<crate::tls::Peer>, ctx: Ctx| {
                login(&ctx, form, remote.or(peer.map(|p| p.0)))
            },
        );
    let logout = warp::path!("logout")
        .and(warp::post())
        .and(warp::body::content_length_limit(FORM_LIMIT))
        .and(warp::body::form::<LogoutForm>())
        .and(warp::header::optional::<String>("cookie"))
        .and(with_ctx(ctx))
        .and_then(logout);
    form.or(login).unify().or(logout).unify().boxed()
}

#[derive(Debug, Default, Deserialize)]
struct LoginQuery {
    #[serde(default)]
    next: String,
}

#[derive(Debug, Deserialize)]
struct LoginForm {
    #[serde(default)]
    user: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    next: String,
}

#[derive(Debug, Deserialize)]
struct LogoutForm {
    #[serde(default)]
    csrf: String,
}

/// Where to go after logging in: a path of ours, never another site.
fn local(next: &str) -> &str {
    if next.starts_with('/') && !next.starts_with("//") && !next.contains('\\') {
        next
    } else {
        "/"
    }
}

fn redirect(to: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(value) = HeaderValue::from_str(to) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

fn login_form(ctx: &Ctx, next: &str, error: Option<&str>, status: StatusCode) -> Response {
    if !ctx.auth.required() {
        // Nobody needs to log in: every caller acts as the admin.
        return redirect(local(next));
    }
    let error = error
        .map(|e| {
            format!(
                r#"<p class="notice bad" role="alert" id="login-error">{}</p>"#,
                esc(e)
            )
        })
        .unwrap_or_default();
    let page = format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark"><title>Log in · kairos</title><style>{STYLE}</style></head>
<body><header><span class="brand">kairos</span></header>
<main class="narrow"><h1>Log in</h1>{error}
<form class="stack" method="post" action="/login">
<label for="user">User</label><input id="user" name="user" autocomplete="username" autofocus>
<label for="password">Password or API token</label><input id="password" name="password" type="password" autocomplete="current-password" required>
<input type="hidden" name="next" value="{next}">
<button type="submit">Log in</button>
</form></main></body></html>"#,
        next = esc(local(next))
    );
    let mut response = html(page);
    *response.status_mut() = status;
    response
}

fn login(ctx: &Ctx, form: LoginForm, from: Option<SocketAddr>) -> Response {
    if !ctx.auth.required() {
        return redirect(local(&form.next));
    }
    match ctx.auth.login(&form.user, &form.password, from) {
        Ok((secret, _csrf)) => {
            let secure = if ctx.leader_scheme == "https" {
                "; Secure"
            } else {
                ""
            };
            let cookie = format!(
                "{SESSION_COOKIE}={secret}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
                SESSION_LIFETIME.as_secs()
            );
            let mut response = redirect(local(&form.next));
            if let Ok(value) = HeaderValue::from_str(&cookie) {
                response.headers_mut().insert(header::SET_COOKIE, value);
            }
            response
        }
        Err(error) => login_form(ctx, &form.next, Some(&error.message), error.status),
    }
}

async fn logout(form: LogoutForm, cookies: Option<String>, ctx: Ctx) -> Result<Response, Infallible> {
    respond(
        async {
            if let Some(secret) = cookies.as_deref().and_then(session_cookie) {
                let csrf = ctx.auth.csrf_of(secret);
                if let Some(csrf) = csrf
                    && !super::super::guard::csrf_matches(&csrf, Some(&form.csrf))
                {
                    return Err(ApiError {
                        status: StatusCode::FORBIDDEN,
                        message: "logging out needs the page's CSRF token; reload the page".to_owned(),
                    });
                }
                ctx.auth.logout(secret);
            }
            let mut response = redirect("/login");
            let gone = format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
            if let Ok(value) = HeaderValue::from_str(&gone) {
                response.headers_mut().insert(header::SET_COOKIE, value);
            }
            Ok(response)
        }
        .await,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_are_followed_after_login() {
        for (next, want) in [
            ("/jobs/a?x=1", "/jobs/a?x=1"),
            ("", "/"),
            ("https://evil.example/", "/"),
            ("//evil.example/", "/"),
            ("/\\evil.example", "/"),
            ("jobs", "/"),
        ] {
            assert_eq!(local(next), want, "{next}");
        }
    }
}
