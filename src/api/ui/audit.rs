//! `/audit`, for admins: who changed what, from where, and whether it was refused; newest first,
//! narrowed by job or principal.

use std::convert::Infallible;
use std::fmt::Write as _;

use serde::Deserialize;
use warp::http::StatusCode;
use warp::reply::Response;

use super::super::guard::Caller;
use super::super::{ApiError, Ctx, respond};
use super::{esc, html, may, page_html};
use crate::auth::Role;
use crate::store::AuditQuery;

/// Entries one page shows.
const SHOWN: u32 = 200;

#[derive(Debug, Default, Deserialize)]
pub(super) struct AuditPageQuery {
    #[serde(default)]
    job: String,
    #[serde(default)]
    principal: String,
}

pub(super) async fn audit_page(who: Caller, q: AuditPageQuery, ctx: Ctx) -> Result<Response, Infallible> {
    respond(
        async {
            if !may(&who, Role::Admin) {
                return Err(ApiError {
                    status: StatusCode::FORBIDDEN,
                    message: format!("the audit log needs the admin role; {} has less", who.principal.name()),
                });
            }
            let query = AuditQuery {
                job: Some(q.job.clone()).filter(|j| !j.is_empty()),
                principal: Some(q.principal.clone()).filter(|p| !p.is_empty()),
                since_ms: None,
                limit: SHOWN,
            };
            let entries = ctx.engine()?.audit(query).await?;
            let mut body = format!(
                r#"<form class="filters" role="search" method="get" action="/audit">
<label>Job <input name="job" value="{}"></label><label>Who <input name="principal" value="{}"></label><button type="submit">Filter</button></form>
<table><thead><tr><th scope="col">When</th><th scope="col">Who</th><th scope="col">Role</th><th scope="col">From</th><th scope="col">Request</th><th scope="col">Job</th><th scope="col">Outcome</th></tr></thead><tbody>"#,
                esc(&q.job),
                esc(&q.principal)
            );
            if entries.is_empty() {
                body.push_str(r#"<tr><td colspan="7" class="empty">No changes recorded.</td></tr>"#);
            }
            for e in &entries {
                let outcome = if e.outcome == "ok" {
                    r#"<span class="outcome success">ok</span>"#.to_owned()
                } else {
                    format!(r#"<span class="outcome failure">refused</span> {}"#, esc(&e.outcome))
                };
                let job = e
                    .job
                    .as_deref()
                    .map(|j| format!(r#"<a href="/jobs/{0}">{0}</a>"#, esc(j)))
                    .unwrap_or_default();
                let _ = write!(
                    body,
                    r#"<tr><td class="time">{at}</td><td>{who}</td><td>{role}</td><td>{from}</td><td><code>{method} {route}</code></td><td>{job}</td><td>{outcome}</td></tr>"#,
                    at = crate::clock::from_millis(e.at_ms).format("%Y-%m-%d %H:%M:%S UTC"),
                    who = esc(&e.principal),
                    role = esc(&e.role),
                    from = esc(&e.source),
                    method = esc(&e.method),
                    route = esc(&e.route),
                );
            }
            let _ = write!(
                body,
                r#"</tbody></table><p class="muted">The newest {SHOWN} entries that match; <code>GET /v1/scheduler/audit</code> reads further back.</p>"#
            );
            Ok(html(page_html(&who, "Audit log", &body)))
        }
        .await,
    )
}
