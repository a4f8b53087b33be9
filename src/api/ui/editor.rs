//! The job editor, `/new` and `/jobs/<name>/edit`: a form for the fields people change most and
//! the rest as JSON. The page's script sends it to `POST /v1/scheduler/iso8601` (or
//! `/dependency` when it has parents) and shows a refusal next to the field it names.

use std::convert::Infallible;
use std::fmt::Write as _;

use serde::Deserialize;
use serde_json::{Map, Value};
use warp::http::StatusCode;
use warp::reply::Response;

use super::super::guard::Caller;
use super::super::{ApiError, Ctx, Segment, respond};
use super::{esc, html, may, page_html};
use crate::auth::Role;

/// The form's fields: the job field, its label, the input kind, and a hint.
const FIELDS: [(&str, &str, Input, &str); 15] = [
    ("name", "Name", Input::Text, "letters, digits, '_', '-' and '.'"),
    (
        "command",
        "Command",
        Input::Area,
        "run with /bin/sh -c unless shell is off",
    ),
    (
        "schedule",
        "Schedule",
        Input::Text,
        "R/2026-12-01T09:00:00Z/PT1H; leave empty for a dependent job",
    ),
    (
        "scheduleTimeZone",
        "Schedule time zone",
        Input::Text,
        "for example Europe/Paris",
    ),
    (
        "parents",
        "Parents",
        Input::Text,
        "for a dependent job: parent names, comma-separated",
    ),
    (
        "epsilon",
        "Epsilon",
        Input::Text,
        "how late a missed run may still start, for example PT60S",
    ),
    ("owner", "Owner", Input::Text, "e-mail addresses, comma-separated"),
    ("description", "Description", Input::Text, ""),
    ("cpus", "cpus", Input::Number, ""),
    ("mem", "mem (MB)", Input::Number, ""),
    ("disk", "disk (MB)", Input::Number, ""),
    ("retries", "Retries", Input::Number, ""),
    ("shell", "Run through a shell", Input::Check, ""),
    (
        "async",
        "Asynchronous (completes through the API)",
        Input::Check,
        "",
    ),
    ("disabled", "Disabled", Input::Check, ""),
];

/// Fields kairos keeps itself: the editor neither shows nor sends them.
const KEPT_BY_KAIROS: [&str; 6] = [
    "successCount",
    "errorCount",
    "lastSuccess",
    "lastError",
    "errorsSinceLastSuccess",
    "softError",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Input {
    Text,
    Area,
    Number,
    Check,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct NewQuery {
    /// Prefills the parents, for "add a child".
    parent: Option<String>,
}

fn admin_only(who: &Caller) -> Result<(), ApiError> {
    if may(who, Role::Admin) {
        Ok(())
    } else {
        Err(ApiError {
            status: StatusCode::FORBIDDEN,
            message: format!(
                "editing jobs needs the admin role; {} has less",
                who.principal.name()
            ),
        })
    }
}

pub(super) async fn new_page(who: Caller, q: NewQuery, _ctx: Ctx) -> Result<Response, Infallible> {
    respond(
        async {
            admin_only(&who)?;
            let mut job = Map::new();
            job.insert("shell".to_owned(), Value::Bool(true));
            if let Some(parent) = q.parent.filter(|p| !p.is_empty()) {
                job.insert("parents".to_owned(), Value::from(vec![parent]));
            }
            Ok(html(page_html(&who, "New job", &form(&job, false))))
        }
        .await,
    )
}

pub(super) async fn edit_page(Segment(name): Segment, who: Caller, ctx: Ctx) -> Result<Response, Infallible> {
    respond(
        async {
            admin_only(&who)?;
            let lookup = name.clone();
            let job = ctx
                .engine()?
                .read(move |s| {
                    s.jobs
                        .get(&lookup)
                        .map(|e| serde_json::to_value(e.job.for_clients()))
                })
                .await?;
            let Some(Ok(Value::Object(job))) = job else {
                return Err(crate::engine::Error::JobNotFound { name }.into());
            };
            Ok(html(page_html(&who, &format!("Edit {name}"), &form(&job, true))))
        }
        .await,
    )
}

/// A form field's value as the input shows it.
fn shown(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
            .collect::<Vec<_>>()
            .join(", "),
        Some(other) => other.to_string(),
    }
}

fn form(job: &Map<String, Value>, editing: bool) -> String {
    let mut out = String::from(
        r#"<form id="editor" class="editor" novalidate><p id="status" role="status" class="notice"></p>"#,
    );
    for (field, label, input, hint) in FIELDS {
        let value = shown(job.get(field));
        let id = format!("f-{field}");
        let hint_html = if hint.is_empty() {
            String::new()
        } else {
            format!(r#"<span class="hint" id="{id}-hint">{}</span>"#, esc(hint))
        };
        let described = if hint.is_empty() {
            format!(r#"aria-describedby="{id}-error""#)
        } else {
            format!(r#"aria-describedby="{id}-hint {id}-error""#)
        };
        let control = match input {
            Input::Text => {
                let readonly = if editing && field == "name" {
                    " readonly"
                } else {
                    ""
                };
                format!(
                    r#"<input id="{id}" name="{field}" value="{}" {described}{readonly}>"#,
                    esc(&value)
                )
            }
            Input::Number => format!(
                r#"<input id="{id}" name="{field}" type="number" step="any" min="0" value="{}" {described}>"#,
                esc(&value)
            ),
            Input::Area => format!(
                r#"<textarea id="{id}" name="{field}" rows="3" {described}>{}</textarea>"#,
                esc(&value)
            ),
            Input::Check => {
                let checked = if job.get(field).and_then(Value::as_bool) == Some(true) {
                    " checked"
                } else {
                    ""
                };
                format!(r#"<input id="{id}" name="{field}" type="checkbox"{checked} {described}>"#)
            }
        };
        let class = if input == Input::Check {
            "field check"
        } else {
            "field"
        };
        let _ = write!(
            out,
            r#"<div class="{class}" data-field="{field}"><label for="{id}">{label}</label>{control}{hint_html}<span class="error" id="{id}-error" role="alert"></span></div>"#,
            label = esc(label)
        );
    }
    let rest: Map<String, Value> = job
        .iter()
        .filter(|(k, _)| !FIELDS.iter().any(|f| f.0 == k.as_str()) && !KEPT_BY_KAIROS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let rest = serde_json::to_string_pretty(&Value::Object(rest)).unwrap_or_else(|_| "{}".to_owned());
    let _ = write!(
        out,
        r#"<div class="field wide" data-field="json"><label for="f-json">Other fields (JSON)</label><textarea id="f-json" name="json" rows="12" spellcheck="false" aria-describedby="f-json-hint f-json-error">{}</textarea><span class="hint" id="f-json-hint">container, environmentVariables, constraints, fetch and every other field of the job, as in the API</span><span class="error" id="f-json-error" role="alert"></span></div>
<div class="actions"><button type="submit">Save</button> <a href="{}">Cancel</a></div></form>"#,
        esc(&rest),
        if editing {
            format!("/jobs/{}", esc(&shown(job.get("name"))))
        } else {
            "/".to_owned()
        }
    );
    out
}
