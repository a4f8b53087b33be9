//! The web UI's first pages, rendered on the server: jobs (`/`), one job (`/jobs/<name>`), the
//! graph (`/graph`), workers (`/workers`) and what waits (`/queue`). They sit behind the same guard as the API (read role), so with credentials
//! on a browser asks for them with its own Basic prompt until the login form exists.

use std::collections::HashSet;
use std::convert::Infallible;
use std::fmt::Write as _;

use serde::Deserialize;
use warp::Filter;
use warp::reply::Response;

use super::guard::{self, Caller};
use super::{ApiError, Ctx, Segment, respond, with_ctx};
use crate::auth::Role;
use crate::engine::{JobEntry, State};

mod audit;
mod editor;
mod session;
mod task;

/// Rows per page unless the page asks for another size, and the most it may ask for.
const PAGE_ROWS: usize = 50;
const MAX_PAGE_ROWS: usize = 500;

/// The pages, for `api::routes` to put in front of everything but the API.
pub(super) fn routes(ctx: Ctx) -> warp::filters::BoxedFilter<(Response,)> {
    let view = {
        let ctx = ctx.clone();
        move || guard::viewer(ctx.clone())
    };
    let c = {
        let ctx = ctx.clone();
        move || with_ctx(ctx.clone())
    };
    let jobs = warp::path::end()
        .and(warp::get())
        .and(view())
        .and(warp::query::<JobsQuery>())
        .and(c())
        .and_then(jobs_page);
    let job = warp::path!("jobs" / Segment)
        .and(warp::get())
        .and(view())
        .and(c())
        .and_then(job_page);
    let graph = warp::path!("graph")
        .and(warp::get())
        .and(view())
        .and(warp::query::<GraphQuery>())
        .and(c())
        .and_then(graph_page);
    let workers = warp::path!("workers")
        .and(warp::get())
        .and(view())
        .and(c())
        .and_then(workers_page);
    let queue = warp::path!("queue")
        .and(warp::get())
        .and(view())
        .and(c())
        .and_then(queue_page);
    let task = warp::path!("tasks" / Segment)
        .and(warp::get())
        .and(view())
        .and(c())
        .and_then(task::task_page);
    let new_job = warp::path!("new")
        .and(warp::get())
        .and(view())
        .and(warp::query::<editor::NewQuery>())
        .and(c())
        .and_then(editor::new_page);
    let edit_job = warp::path!("jobs" / Segment / "edit")
        .and(warp::get())
        .and(view())
        .and(c())
        .and_then(editor::edit_page);
    let audit = warp::path!("audit")
        .and(warp::get())
        .and(view())
        .and(warp::query::<audit::AuditPageQuery>())
        .and(c())
        .and_then(audit::audit_page);
    new_job
        .or(jobs)
        .unify()
        .or(job)
        .unify()
        .or(graph)
        .unify()
        .or(workers)
        .unify()
        .or(queue)
        .unify()
        .boxed()
        .or(task)
        .unify()
        .or(edit_job)
        .unify()
        .or(audit)
        .unify()
        .or(session::routes(ctx))
        .unify()
        .boxed()
}

/// Whether the caller's role reaches `role`.
fn may(who: &Caller, role: Role) -> bool {
    who.principal.role().is_some_and(|has| has >= role)
}

/// `/?q=&state=&outcome=&sort=&desc=&page=&rows=&partial=`.
#[derive(Debug, Default, Deserialize)]
struct JobsQuery {
    #[serde(default)]
    q: String,
    state: Option<String>,
    outcome: Option<String>,
    sort: Option<String>,
    #[serde(default)]
    desc: bool,
    page: Option<usize>,
    rows: Option<usize>,
    /// Only the table, for the page's own refresh.
    #[serde(default)]
    partial: bool,
}

/// What the jobs table shows of one job.
struct JobRow {
    name: String,
    when: String,
    next: String,
    state: String,
    outcome: &'static str,
    last: String,
    successes: u64,
    errors: u64,
    owner: String,
    disabled: bool,
}

const SORTS: [&str; 7] = ["name", "next", "state", "outcome", "successes", "errors", "owner"];

/// The jobs with a retry pending, gathered once per request: filtering or sorting by state
/// looks at every job.
fn retrying(s: &State) -> HashSet<&str> {
    s.retrying.values().map(String::as_str).collect()
}

fn state_of(retrying: &HashSet<&str>, entry: &JobEntry) -> &'static str {
    if !entry.running.is_empty() {
        "running"
    } else if !entry.queue.is_empty() || retrying.contains(entry.job.name.as_str()) {
        "queued"
    } else {
        "idle"
    }
}

fn row(retrying: &HashSet<&str>, entry: &JobEntry) -> JobRow {
    let job = &entry.job;
    let when = match &entry.schedule {
        Some(schedule) => schedule.describe(),
        None => format!("after {}", job.parents().join(", ")),
    };
    let next = entry
        .schedule
        .as_ref()
        .and_then(|s| s.next_run())
        .filter(|_| !job.disabled)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_default();
    let outcome = job.last_status();
    let last = match outcome {
        "success" => readable(&job.last_success),
        "failure" => readable(&job.last_error),
        _ => String::new(),
    };
    JobRow {
        name: job.name.clone(),
        when,
        next,
        state: state_of(retrying, entry).to_owned(),
        outcome,
        last,
        successes: job.success_count,
        errors: job.error_count,
        owner: job.owner.clone(),
        disabled: job.disabled,
    }
}

/// One page of matching jobs and how many match. The filters and the sort look at every job,
/// but only the page's rows are built, so 100,000 jobs cost a scan and a sort of references.
fn select(s: &State, q: &JobsQuery, rows: usize, page: usize) -> (Vec<JobRow>, usize) {
    let needle = q.q.trim().to_lowercase();
    // Prepared once: `str::contains` would prepare the needle again for every field of every job.
    let finder = memchr::memmem::Finder::new(needle.as_bytes());
    let hit = |text: &str| finder.find(text.as_bytes()).is_some();
    let retrying = retrying(s);
    let found: Vec<&JobEntry> = s
        .jobs
        .values()
        .filter(|e| {
            // A needle holding NUL could match across fields; no typed search does.
            needle.is_empty() || hit(e.search.all())
        })
        .filter(|e| {
            q.state
                .as_deref()
                .is_none_or(|want| want.is_empty() || state_of(&retrying, e) == want)
        })
        .filter(|e| {
            q.outcome
                .as_deref()
                .is_none_or(|want| want.is_empty() || e.job.last_status() == want)
        })
        .collect();
    let next = |e: &JobEntry| e.schedule.as_ref().and_then(|s| s.next_run());
    let total = found.len();
    let start = page.saturating_mul(rows);
    let shown = match q.sort.as_deref().unwrap_or("name") {
        "next" => one_page(found, |e| (next(e).is_none(), next(e)), q.desc, start, rows),
        "state" => one_page(found, |e| state_of(&retrying, e), q.desc, start, rows),
        "outcome" => one_page(found, |e| e.job.last_status(), q.desc, start, rows),
        "successes" => one_page(found, |e| e.job.success_count, q.desc, start, rows),
        "errors" => one_page(found, |e| e.job.error_count, q.desc, start, rows),
        "owner" => one_page(found, |e| e.job.owner.as_str(), q.desc, start, rows),
        // The name itself as the key: comparisons then read the names without going through
        // their jobs.
        _ => one_page(found, |e| e.job.name.as_str(), q.desc, start, rows),
    };
    (shown.into_iter().map(|e| row(&retrying, e)).collect(), total)
}

/// Rows `start..start + rows` of `found` ordered by `key`, then by name (names are unique, so
/// the order is total and pages never overlap), descending with `desc`. Only the rows up to the
/// page's end are sorted, after a linear selection: the first page of 100,000 jobs costs a pass
/// over them rather than a full sort.
fn one_page<'a, K: Ord>(
    found: Vec<&'a JobEntry>,
    key: impl Fn(&'a JobEntry) -> K,
    desc: bool,
    start: usize,
    rows: usize,
) -> Vec<&'a JobEntry> {
    page_of(found, key, |e| e.job.name.as_str(), desc, start, rows)
}

/// [`one_page`] for any item with a unique `name`.
fn page_of<'a, T, K: Ord>(
    found: Vec<&'a T>,
    key: impl Fn(&'a T) -> K,
    name: impl Fn(&T) -> &str,
    desc: bool,
    start: usize,
    rows: usize,
) -> Vec<&'a T> {
    let mut keyed: Vec<(K, &'a T)> = found.into_iter().map(|e| (key(e), e)).collect();
    let order = |a: &(K, &T), b: &(K, &T)| {
        let ascending = a.0.cmp(&b.0).then_with(|| name(a.1).cmp(name(b.1)));
        if desc { ascending.reverse() } else { ascending }
    };
    let end = start.saturating_add(rows).min(keyed.len());
    if start >= end {
        return Vec::new();
    }
    if end < keyed.len() {
        keyed.select_nth_unstable_by(end, order);
        keyed.truncate(end);
    }
    keyed.sort_unstable_by(order);
    keyed.drain(start..).map(|(_, e)| e).collect()
}

async fn jobs_page(who: Caller, q: JobsQuery, ctx: Ctx) -> Result<Response, Infallible> {
    respond(
        async {
            let rows = q.rows.unwrap_or(PAGE_ROWS).clamp(1, MAX_PAGE_ROWS);
            if let Some(sort) = q.sort.as_deref().filter(|s| !SORTS.contains(s)) {
                return Err(ApiError::bad_request(format!(
                    "field 'sort': '{sort}' is not one of {}",
                    SORTS.join(", ")
                )));
            }
            let page = q.page.unwrap_or(1).max(1) - 1;
            let partial = q.partial;
            let (table, total, paused) = ctx
                .engine()?
                .read(move |s| {
                    let (found, total) = select(s, &q, rows, page);
                    (jobs_table(&found, total, &q, rows, page), total, s.paused_since)
                })
                .await?;
            if partial {
                return Ok(html(table));
            }
            let create = format!("{}{}", paused_banner(&who, paused), create_button(&who));
            let body = format!(
                r#"{create}<form class="filters" role="search" method="get" action="/">
<label>Search <input type="search" name="q" placeholder="name, command or owner" autofocus></label>
<label>State <select name="state"><option value="">any</option><option>idle</option><option>queued</option><option>running</option></select></label>
<label>Last outcome <select name="outcome"><option value="">any</option><option>success</option><option>failure</option><option value="fresh">never run</option></select></label>
<button type="submit">Filter</button>
</form>
<div id="jobs" data-refresh="5000">{table}</div>
<p class="muted">{total} jobs match. The table refreshes itself every 5 seconds.</p>"#
            );
            Ok(html(page_html(&who, "Jobs", &body)))
        }
        .await,
    )
}

/// The table and its pager; the page's script swaps it in place.
fn jobs_table(rows: &[JobRow], total: usize, q: &JobsQuery, per: usize, page: usize) -> String {
    let link = |sort: &str, desc: bool, page: usize| {
        let mut url = format!("/?q={}&sort={sort}&page={}&rows={per}", encode(&q.q), page + 1);
        for (key, value) in [("state", &q.state), ("outcome", &q.outcome)] {
            if let Some(v) = value.as_deref().filter(|v| !v.is_empty()) {
                let _ = write!(url, "&{key}={}", encode(v));
            }
        }
        if desc {
            url.push_str("&desc=true");
        }
        url
    };
    let sort = q.sort.as_deref().unwrap_or("name");
    let mut out = String::from("<table><thead><tr>");
    for (key, title) in [
        ("name", "Name"),
        ("", "Schedule"),
        ("next", "Next run"),
        ("state", "State"),
        ("outcome", "Last outcome"),
        ("successes", "Successes"),
        ("errors", "Errors"),
        ("owner", "Owner"),
    ] {
        if key.is_empty() {
            let _ = write!(out, "<th scope=\"col\">{title}</th>");
            continue;
        }
        let active = key == sort;
        let mark = match (active, q.desc) {
            (true, false) => " ▲",
            (true, true) => " ▼",
            _ => "",
        };
        let aria = match (active, q.desc) {
            (true, false) => " aria-sort=\"ascending\"",
            (true, true) => " aria-sort=\"descending\"",
            _ => "",
        };
        let _ = write!(
            out,
            "<th scope=\"col\"{aria}><a href=\"{}\">{title}{mark}</a></th>",
            esc(&link(key, active && !q.desc, 0))
        );
    }
    out.push_str("</tr></thead><tbody>");
    if rows.is_empty() {
        out.push_str("<tr><td colspan=\"8\" class=\"empty\">No jobs match. Create one with <code>POST /v1/scheduler/iso8601</code>.</td></tr>");
    }
    for r in rows {
        let disabled = if r.disabled {
            " <span class=\"tag\">disabled</span>"
        } else {
            ""
        };
        let _ = write!(
            out,
            "<tr><th scope=\"row\"><a href=\"/jobs/{name}\">{name}</a>{disabled}</th><td>{when}</td><td class=\"time\">{next}</td>\
             <td><span class=\"state {state}\">{state}</span></td><td><span class=\"outcome {outcome}\">{outcome_text}</span> <span class=\"muted\">{last}</span></td>\
             <td class=\"num\">{successes}</td><td class=\"num\">{errors}</td><td>{owner}</td></tr>",
            name = esc(&r.name),
            when = esc(&r.when),
            next = esc(&r.next),
            state = r.state,
            outcome = r.outcome,
            outcome_text = if r.outcome == "fresh" {
                "never run"
            } else {
                r.outcome
            },
            last = esc(&r.last),
            successes = r.successes,
            errors = r.errors,
            owner = esc(&r.owner),
        );
    }
    out.push_str("</tbody></table>");
    let pages = total.div_ceil(per).max(1);
    let _ = write!(out, "<nav class=\"pager\" aria-label=\"Pages\">");
    if page > 0 {
        let _ = write!(
            out,
            "<a rel=\"prev\" href=\"{}\">← Previous</a>",
            esc(&link(sort, q.desc, page - 1))
        );
    }
    let _ = write!(out, " <span>Page {} of {pages}</span> ", page + 1);
    if page + 1 < pages {
        let _ = write!(
            out,
            "<a rel=\"next\" href=\"{}\">Next →</a>",
            esc(&link(sort, q.desc, page + 1))
        );
    }
    out.push_str("</nav>");
    out
}

async fn job_page(Segment(name): Segment, who: Caller, ctx: Ctx) -> Result<Response, Infallible> {
    respond(
        async {
            let lookup = name.clone();
            let found = ctx
                .engine()?
                .read(move |s| {
                    s.jobs.get(&lookup).map(|e| {
                        let definition = serde_json::to_string_pretty(&e.job.for_clients()).unwrap_or_default();
                        let next = e.schedule.as_ref().map(|s| s.upcoming(10)).unwrap_or_default();
                        (row(&retrying(s), e), definition, next)
                    })
                })
                .await?;
            let Some((r, definition, next)) = found else {
                return Err(crate::engine::Error::JobNotFound { name }.into());
            };
            let tasks = ctx.engine()?.history(name.clone(), 20).await?;
            let mut body = format!(
                "<p><span class=\"state {state}\">{state}</span> · {when} · last outcome <span class=\"outcome {outcome}\">{outcome}</span> {last}</p>",
                state = r.state,
                when = esc(&r.when),
                outcome = r.outcome,
                last = esc(&r.last)
            );
            body.push_str(&actions(&who, &name, r.disabled));
            body.push_str("<h2>Next runs</h2>");
            if next.is_empty() {
                body.push_str("<p class=\"muted\">None scheduled: it runs after its parents, or has no runs left.</p>");
            } else {
                body.push_str("<ol class=\"next\">");
                for t in next {
                    let _ = write!(body, "<li><time datetime=\"{}\">{}</time></li>", crate::clock::iso(t), t.format("%a %-d %b %Y %H:%M:%S UTC"));
                }
                body.push_str("</ol>");
            }
            body.push_str("<h2>Recent tasks</h2><table><thead><tr><th scope=\"col\">Task</th><th scope=\"col\">State</th><th scope=\"col\">Worker</th><th scope=\"col\">Started</th><th scope=\"col\">Duration</th><th scope=\"col\">Exit</th><th scope=\"col\">Message</th></tr></thead><tbody>");
            if tasks.is_empty() {
                body.push_str("<tr><td colspan=\"7\" class=\"empty\">No tasks yet.</td></tr>");
            }
            for t in &tasks {
                let started = t.started_ms.map(|ms| crate::clock::from_millis(ms).format("%Y-%m-%d %H:%M:%S").to_string()).unwrap_or_default();
                let duration = match (t.started_ms, t.finished_ms) {
                    (Some(s), Some(f)) => format!("{:.3} s", (f - s) as f64 / 1000.0),
                    _ => String::new(),
                };
                let _ = write!(
                    body,
                    "<tr><td><a href=\"/tasks/{link}\"><code>{id}</code></a></td><td><span class=\"state {st}\">{st}</span></td><td>{worker}</td><td>{started}</td><td class=\"num\">{duration}</td><td class=\"num\">{exit}</td><td>{message}</td></tr>",
                    id = esc(&t.id),
                    link = encode(&t.id),
                    st = t.state.as_str(),
                    worker = esc(&t.worker),
                    exit = t.exit_code.map(|c| c.to_string()).unwrap_or_default(),
                    message = esc(&t.message),
                );
            }
            body.push_str("</tbody></table>");
            // Up to 60 jobs, the neighbourhood is drawn in place; beyond, it is a link.
            let drawn = super::draw_graph_within(&ctx, Some(name.clone()), 60).await?;
            let picture = drawn.map(|svg| format!("<div class=\"graph\">{svg}</div>")).unwrap_or_default();
            let _ = write!(
                body,
                "<h2>Place in the graph</h2>{picture}<p><a href=\"/graph?job={0}\">Its ancestors and descendants on the graph page</a></p><h2>Definition</h2><pre>{1}</pre>",
                encode(&name),
                esc(&definition)
            );
            Ok(html(page_html(&who, &name, &body)))
        }
        .await,
    )
}

/// The job page's buttons, as far as the caller's role reaches: they call the API as it is.
fn actions(who: &Caller, name: &str, disabled: bool) -> String {
    let name = esc(name);
    let mut out = String::new();
    if may(who, Role::Operate) {
        let _ = write!(
            out,
            r#"<div class="actions"><label for="run-args">Arguments</label><input id="run-args" placeholder="optional, for this run">
<button type="button" data-call="PUT" data-url="/v1/scheduler/job/{name}" data-args="run-args">Run now</button>
<button type="button" data-call="DELETE" data-url="/v1/scheduler/task/kill/{name}" data-confirm="Kill the running and queued tasks of {name}?">Kill</button>
<button type="button" data-call="PUT" data-url="/v1/scheduler/job/success/{name}">Mark success</button>"#
        );
        if may(who, Role::Admin) {
            let toggle = if disabled { "Enable" } else { "Disable" };
            let _ = write!(
                out,
                r#"<button type="button" data-toggle="{name}" data-disabled="{disabled}">{toggle}</button>
<a class="button" href="/jobs/{name}/edit">Edit</a><a class="button" href="/new?parent={name}">Add a child</a>
<button type="button" class="danger" data-call="DELETE" data-url="/v1/scheduler/job/{name}" data-confirm="Delete the job {name} and its history?" data-go="/">Delete</button>"#
            );
        }
        out.push_str(r#"</div><p id="status" role="status" class="notice"></p>"#);
    }
    out
}

#[derive(Debug, Deserialize)]
struct GraphQuery {
    job: Option<String>,
}

async fn graph_page(who: Caller, q: GraphQuery, ctx: Ctx) -> Result<Response, Infallible> {
    respond(
        async {
            let svg = super::draw_graph(&ctx, q.job.clone()).await?;
            let title = match &q.job {
                Some(job) => format!("Graph around {job}"),
                None => "Graph".to_owned(),
            };
            let body = format!(
                "<p class=\"muted\">Each job links to its page. <a href=\"/v1/scheduler/graph/svg\">The picture alone</a>.</p><div class=\"graph\">{svg}</div>"
            );
            Ok(html(page_html(&who, &title, &body)))
        }
        .await,
    )
}

/// A bar for `used` of `total`, with the figures in words for screen readers and in the title.
fn bar(label: &str, used: f64, total: f64, unit: &str) -> String {
    let share = if total > 0.0 {
        (used / total).clamp(0.0, 1.0)
    } else {
        0.0
    };
    let words = format!("{label}: {used:.1} of {total:.1}{unit} used");
    format!(
        "<div class=\"bar\" role=\"img\" aria-label=\"{words}\" title=\"{words}\"><span class=\"fill\" style=\"width:{:.1}%\"></span><span class=\"what\">{label} {used:.1} / {total:.1}{unit}</span></div>",
        share * 100.0
    )
}

async fn workers_page(who: Caller, ctx: Ctx) -> Result<Response, Infallible> {
    respond(
        async {
            let table = ctx
                .engine()?
                .read(|s| {
                    let mut out = String::from("<table><thead><tr><th scope=\"col\">Worker</th><th scope=\"col\">State</th><th scope=\"col\">Resources</th><th scope=\"col\">Attributes</th><th scope=\"col\">Last heartbeat</th><th scope=\"col\">Running tasks</th></tr></thead><tbody>");
                    if s.workers.is_empty() {
                        out.push_str("<tr><td colspan=\"6\" class=\"empty\">No workers. Start one with <code>kairos agent</code>, or run the server without <code>--no-local-worker</code>.</td></tr>");
                    }
                    for w in s.workers.values() {
                        let attributes: Vec<String> = w.attributes.iter().map(|(k, v)| format!("{}={}", esc(k), esc(v))).collect();
                        let tasks: Vec<String> = w.tasks.iter().map(|t| format!("<code>{}</code>", esc(t))).collect();
                        let _ = write!(
                            out,
                            "<tr><th scope=\"row\">{name}{local}<div class=\"muted\">{host}</div></th><td><span class=\"state {st}\">{st}</span></td><td>{cpus}{mem}{disk}</td><td>{attrs}</td><td class=\"time\">{beat}</td><td>{tasks}</td></tr>",
                            name = esc(&w.name),
                            local = if w.is_local() { " <span class=\"tag\">built-in</span>" } else { "" },
                            host = esc(&w.hostname),
                            st = w.state.as_str(),
                            cpus = bar("cpus", w.used.cpus, w.total.cpus, ""),
                            mem = bar("mem", w.used.mem, w.total.mem, " MB"),
                            disk = bar("disk", w.used.disk, w.total.disk, " MB"),
                            attrs = attributes.join("<br>"),
                            beat = w.last_heartbeat.format("%Y-%m-%d %H:%M:%S UTC"),
                            tasks = tasks.join("<br>"),
                        );
                    }
                    out.push_str("</tbody></table>");
                    out
                })
                .await?;
            Ok(html(page_html(&who, "Workers", &table)))
        }
        .await,
    )
}

/// The "New job" link, for admins.
fn create_button(who: &Caller) -> &'static str {
    if may(who, Role::Admin) {
        r#"<p><a class="button" href="/new">New job</a></p>"#
    } else {
        ""
    }
}

/// While the scheduler is paused, a notice saying so on the pages that list work, with the way
/// out for admins.
fn paused_banner(who: &Caller, paused_since: Option<i64>) -> String {
    let Some(since) = paused_since else {
        return String::new();
    };
    let resume = if may(who, Role::Admin) {
        r#" <button type="button" data-call="PUT" data-url="/v1/scheduler/resume">Resume</button>"#
    } else {
        ""
    };
    format!(
        r#"<p class="notice paused" role="status"><strong>The scheduler is paused</strong> since {}: nothing new starts; running tasks go on.{resume}</p><p id="status" role="status" class="notice"></p>"#,
        crate::clock::from_millis(since).format("%Y-%m-%d %H:%M:%S UTC")
    )
}

/// How many upcoming runs the queue page lists.
const UPCOMING_ROWS: usize = 20;

async fn queue_page(who: Caller, ctx: Ctx) -> Result<Response, Infallible> {
    respond(
        async {
            let (table, paused, upcoming) = ctx
                .engine()?
                .read(|s| {
                    let mut out = String::from("<table><thead><tr><th scope=\"col\">Job</th><th scope=\"col\">Task</th><th scope=\"col\">Due</th><th scope=\"col\">Why it waits</th></tr></thead><tbody>");
                    let mut rows = 0;
                    for entry in s.jobs.values() {
                        for (i, id) in entry.queue.iter().enumerate() {
                            let why = match (&entry.waiting, i) {
                                _ if s.paused_since.is_some() => "the scheduler is paused".to_owned(),
                                (Some(reason), 0) => reason.to_string(),
                                _ if !entry.running.is_empty() && entry.job.concurrency() != crate::job::ConcurrencyPolicy::Allow => "its job's task is still running, and its concurrency policy waits for it".to_owned(),
                                (_, 0) => "starting".to_owned(),
                                _ => "behind an earlier task of its job".to_owned(),
                            };
                            rows += 1;
                            let _ = write!(out, "{}", queue_row(&entry.job.name, id, s, &why));
                        }
                    }
                    for (id, job) in &s.retrying {
                        rows += 1;
                        let _ = write!(out, "{}", queue_row(job, id, s, "a retry, waiting for its time"));
                    }
                    if rows == 0 {
                        out.push_str("<tr><td colspan=\"4\" class=\"empty\">Nothing waits: every task due has started.</td></tr>");
                    }
                    out.push_str("</tbody></table>");
                    (out, s.paused_since, upcoming_table(s))
                })
                .await?;
            let pause = if paused.is_none() && may(&who, Role::Admin) {
                r#"<p><button type="button" data-call="PUT" data-url="/v1/scheduler/pause" data-confirm="Pause the scheduler? Nothing new starts until it resumes; running tasks go on.">Pause the scheduler</button></p><p id="status" role="status" class="notice"></p>"#
            } else {
                ""
            };
            let body = format!(
                "{}{pause}{table}<h2>Coming up</h2>{upcoming}",
                paused_banner(&who, paused)
            );
            Ok(html(page_html(&who, "Queue", &body)))
        }
        .await,
    )
}

/// The next scheduled runs across every job, as `/upcoming` lists them.
fn upcoming_table(s: &State) -> String {
    let runs = s.upcoming(None, UPCOMING_ROWS);
    let mut out = String::from(
        "<table class=\"narrow\"><thead><tr><th scope=\"col\">When</th><th scope=\"col\">Job</th></tr></thead><tbody>",
    );
    for (at, job) in &runs {
        let _ = write!(
            out,
            "<tr><td class=\"time\">{}</td><th scope=\"row\"><a href=\"/jobs/{job}\">{job}</a></th></tr>",
            at.format("%Y-%m-%d %H:%M:%S UTC"),
            job = esc(job)
        );
    }
    if runs.is_empty() {
        out.push_str("<tr><td colspan=\"2\" class=\"empty\">No scheduled runs ahead.</td></tr>");
    }
    out.push_str("</tbody></table>");
    out
}

fn queue_row(job: &str, id: &crate::job::TaskId, s: &State, why: &str) -> String {
    let due = s
        .tasks
        .get(id)
        .map(|t| {
            crate::clock::from_millis(t.record.due_ms)
                .format("%Y-%m-%d %H:%M:%S UTC")
                .to_string()
        })
        .unwrap_or_default();
    format!(
        "<tr><th scope=\"row\"><a href=\"/jobs/{job}\">{job}</a></th><td><code>{id}</code></td><td class=\"time\">{due}</td><td>{why}</td></tr>",
        job = esc(job),
        id = esc(id),
        why = esc(why)
    )
}

/// The one layout every page shares: the navigation (the audit log for admins), who is logged
/// in with a way out, and the session's CSRF token for the page's script.
fn page_html(who: &Caller, title: &str, body: &str) -> String {
    let audit = if may(who, Role::Admin) {
        r#"<a href="/audit">Audit</a>"#
    } else {
        ""
    };
    let (csrf, account) = match &who.csrf {
        Some(csrf) => (
            csrf.as_str(),
            format!(
                r#"<form class="account" method="post" action="/logout"><span class="muted">{} ({})</span><input type="hidden" name="csrf" value="{}"><button type="submit">Log out</button></form>"#,
                esc(&who.principal.name()),
                who.principal.role().map_or("task", Role::as_str),
                esc(csrf)
            ),
        ),
        None => ("", String::new()),
    };
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark"><meta name="csrf" content="{csrf}"><title>{title} · kairos</title><style>{STYLE}</style></head>
<body><header><a class="brand" href="/">kairos</a><nav aria-label="Main"><a href="/">Jobs</a><a href="/graph">Graph</a><a href="/workers">Workers</a><a href="/queue">Queue</a>{audit}</nav>{account}</header>
<main><h1>{title}</h1>
{body}</main><script>{SCRIPT}</script></body></html>"#,
        csrf = esc(csrf),
        title = esc(title)
    )
}

const STYLE: &str = "
:root{--bg:#fff;--fg:#1d2330;--muted:#5d6778;--line:#dde2ea;--head:#f4f6f9;--link:#1f5fbf;--ok:#1d7a3a;--bad:#b42318;--run:#175cd3;--wait:#a15c07}
@media (prefers-color-scheme:dark){:root{--bg:#14171c;--fg:#e6e9ef;--muted:#9aa4b2;--line:#2c323c;--head:#1c2027;--link:#7cb0ff;--ok:#5cc97c;--bad:#ff7b72;--run:#7cb0ff;--wait:#f5b84c}}
*{box-sizing:border-box}body{margin:0;background:var(--bg);color:var(--fg);font:15px/1.5 system-ui,-apple-system,'Segoe UI',sans-serif}
header{display:flex;gap:2rem;align-items:center;padding:.6rem 1.5rem;border-bottom:1px solid var(--line);background:var(--head)}
header nav{display:flex;gap:1.2rem}.brand{font-weight:700;font-size:1.1rem}
a{color:var(--link)}a:focus-visible,button:focus-visible,input:focus-visible,textarea:focus-visible,select:focus-visible{outline:3px solid var(--link);outline-offset:2px}
main{padding:1rem 1.5rem;max-width:110rem}h1{font-size:1.5rem;margin:.3rem 0 1rem}h2{font-size:1.15rem;margin-top:1.6rem}
.filters{display:flex;flex-wrap:wrap;gap:1rem;align-items:end;margin-bottom:1rem}.filters label{display:flex;flex-direction:column;font-size:.85rem;color:var(--muted)}
input,textarea,select,button{font:inherit;padding:.35rem .5rem;border:1px solid var(--line);border-radius:6px;background:var(--bg);color:var(--fg)}button{cursor:pointer;background:var(--head)}
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.4rem .6rem;border-bottom:1px solid var(--line);vertical-align:top}
thead th{background:var(--head);font-size:.85rem;white-space:nowrap}thead th a{color:var(--fg);text-decoration:none}tbody th{font-weight:600;white-space:nowrap}.time{white-space:nowrap}
.num{text-align:right;font-variant-numeric:tabular-nums}.muted{color:var(--muted)}.empty{text-align:center;color:var(--muted);padding:2rem}
.state,.outcome,.tag{display:inline-block;padding:0 .45rem;border-radius:999px;font-size:.8rem;border:1px solid currentColor}
.state.running{color:var(--run)}.state.queued{color:var(--wait)}.state.idle{color:var(--muted)}.outcome.success,.state.finished{color:var(--ok)}.outcome.failure,.state.failed{color:var(--bad)}.outcome.fresh,.tag{color:var(--muted)}
.pager{display:flex;gap:1rem;justify-content:center;padding:1rem}pre{background:var(--head);padding:1rem;border-radius:6px;overflow:auto}
.bar{position:relative;min-width:14rem;height:1.35rem;margin:.15rem 0;border:1px solid var(--line);border-radius:4px;overflow:hidden}
.bar .fill{position:absolute;inset:0 auto 0 0;background:color-mix(in srgb,var(--run) 25%,transparent)}.bar .what{position:relative;padding:0 .4rem;font-size:.8rem;font-variant-numeric:tabular-nums}
.state.active{color:var(--ok)}.state.lost{color:var(--bad)}
.graph{overflow:auto;border:1px solid var(--line);border-radius:6px;max-height:80vh}.next{columns:2}
header .account{margin-left:auto;display:flex;gap:.6rem;align-items:center}
.button{display:inline-block;padding:.35rem .7rem;border:1px solid var(--line);border-radius:6px;background:var(--head);color:var(--fg);text-decoration:none}
.actions{display:flex;flex-wrap:wrap;gap:.5rem;align-items:center;margin:1rem 0}.actions label{color:var(--muted);font-size:.85rem}
button.danger{color:var(--bad);border-color:currentColor}
.notice:empty{display:none}.notice.paused{color:var(--wait)}.notice.paused button{margin-left:.8rem}table.narrow{width:auto;min-width:24rem}.notice{padding:.5rem .8rem;border-radius:6px;border:1px solid currentColor}.notice.bad{color:var(--bad)}.notice.ok{color:var(--ok)}
.editor{display:grid;grid-template-columns:repeat(auto-fill,minmax(22rem,1fr));gap:.8rem 1.5rem;max-width:80rem}
.field{display:flex;flex-direction:column;gap:.2rem}.field.check{flex-direction:row;flex-wrap:wrap;align-items:center;gap:.5rem}.field.wide,.editor .actions,.editor .notice{grid-column:1/-1}
.field textarea{font-family:ui-monospace,monospace}.hint{font-size:.8rem;color:var(--muted)}.error{color:var(--bad);font-weight:600}[aria-invalid=true]{border-color:var(--bad);border-width:2px}.error:empty{display:none}
[aria-invalid=true]{border-color:var(--bad);outline:2px solid var(--bad)}
.narrow{max-width:26rem}.stack{display:flex;flex-direction:column;gap:.4rem}.stack button{margin-top:.8rem}
.facts{display:grid;grid-template-columns:max-content 1fr;gap:.2rem 1.5rem}.facts dt{color:var(--muted)}.facts dd{margin:0}
#output pre{max-height:60vh;white-space:pre-wrap;word-break:break-word}
";

/// Refreshes a block marked `data-refresh` in place, without reloading the page.
const SCRIPT: &str = r#"
for (const el of document.querySelectorAll('[data-refresh]')) {
  const every = Number(el.dataset.refresh);
  setInterval(async () => {
    if (document.hidden) return;
    const url = new URL(location.href); url.searchParams.set('partial', 'true');
    try { const r = await fetch(url, {credentials: 'same-origin'}); if (r.ok) el.innerHTML = await r.text(); } catch (_) {}
  }, every);
}
for (const [key, value] of new URLSearchParams(location.search)) {
  const field = document.querySelector(`.filters [name=${key}]`); if (field) field.value = value;
}
const csrf = document.querySelector('meta[name=csrf]').content;
async function call(method, url, body) {
  const headers = {'X-CSRF-Token': csrf};
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let r;
  try {
    r = await fetch(url, {method, headers, credentials: 'same-origin', body: body === undefined ? undefined : JSON.stringify(body)});
  } catch (e) { return {ok: false, status: 0, data: {message: 'the server cannot be reached'}}; }
  const text = await r.text();
  let data = null; try { data = JSON.parse(text); } catch (_) { data = {message: text}; }
  return {ok: r.ok, status: r.status, data};
}
function say(text, ok) {
  const status = document.getElementById('status');
  if (status) { status.textContent = text; status.className = 'notice ' + (ok ? 'ok' : 'bad'); }
}
function refused(r) { return (r.data && r.data.message) || ('refused with status ' + r.status); }
for (const b of document.querySelectorAll('button[data-call]')) b.addEventListener('click', async () => {
  if (b.dataset.confirm && !confirm(b.dataset.confirm)) return;
  let url = b.dataset.url;
  const args = b.dataset.args && document.getElementById(b.dataset.args).value;
  if (args) url += '?arguments=' + encodeURIComponent(args);
  b.disabled = true;
  const r = await call(b.dataset.call, url);
  b.disabled = false;
  if (!r.ok) return say(refused(r), false);
  if (b.dataset.go) location.href = b.dataset.go; else location.reload();
});
async function save(job) {
  const route = job.parents && job.parents.length ? 'dependency' : 'iso8601';
  return call('POST', '/v1/scheduler/' + route, job);
}
for (const b of document.querySelectorAll('button[data-toggle]')) b.addEventListener('click', async () => {
  const got = await call('GET', '/v1/scheduler/job/' + encodeURIComponent(b.dataset.toggle));
  if (!got.ok) return say(refused(got), false);
  got.data.disabled = b.dataset.disabled !== 'true';
  // Counters are kairos' own: a job sent without them keeps them.
  for (const kept of ['successCount', 'errorCount', 'lastSuccess', 'lastError', 'errorsSinceLastSuccess']) delete got.data[kept];
  const r = await save(got.data);
  if (!r.ok) return say(refused(r), false);
  location.reload();
});
const editor = document.getElementById('editor');
if (editor) editor.addEventListener('submit', async (event) => {
  event.preventDefault();
  for (const e of editor.querySelectorAll('.error')) e.textContent = '';
  for (const e of editor.querySelectorAll('[aria-invalid]')) e.removeAttribute('aria-invalid');
  say('', true);
  const mark = (field, message) => {
    let box = editor.querySelector(`[data-field="${field}"]`) || editor.querySelector(`[data-field="${field.split(/[.\[]/)[0]}"]`) || editor.querySelector('[data-field="json"]');
    box.querySelector('.error').textContent = message;
    const input = box.querySelector('input,textarea'); input.setAttribute('aria-invalid', 'true'); input.focus();
  };
  let job;
  try { job = JSON.parse(editor.elements.json.value || '{}'); } catch (e) { return mark('json', 'not valid JSON: ' + e.message); }
  if (typeof job !== 'object' || job === null || Array.isArray(job)) return mark('json', 'must be a JSON object');
  for (const input of editor.querySelectorAll('[data-field] input, [data-field] textarea')) {
    const field = input.name;
    if (field === 'json') continue;
    if (input.type === 'checkbox') { job[field] = input.checked; continue; }
    const value = input.value.trim();
    if (value === '') continue;
    if (field === 'parents') job.parents = value.split(',').map(p => p.trim()).filter(p => p);
    else if (input.type === 'number') job[field] = Number(value);
    else job[field] = value;
  }
  const r = await save(job);
  if (r.ok) { location.href = '/jobs/' + encodeURIComponent(job.name); return; }
  const message = refused(r);
  if (r.data && r.data.field) mark(r.data.field, message); else say(message, false);
});
const output = document.querySelector('[data-follow]');
if (output) {
  const out = document.getElementById('stdout'), err = document.getElementById('stderr');
  const source = new EventSource(output.dataset.follow);
  out.textContent = ''; err.textContent = '';
  source.addEventListener('stdout', e => { out.textContent += JSON.parse(e.data); });
  source.addEventListener('stderr', e => { err.textContent += JSON.parse(e.data); });
  source.addEventListener('reset', () => { out.textContent = ''; err.textContent = ''; });
  source.addEventListener('end', e => {
    source.close();
    const end = JSON.parse(e.data);
    const state = document.getElementById('task-state');
    state.textContent = end.state; state.className = 'state ' + end.state;
    document.getElementById('task-exit').textContent = end.exitCode === null ? '—' : end.exitCode;
    document.getElementById('task-message').textContent = end.message;
    document.getElementById('live').textContent = 'The task has ended.';
  });
  source.addEventListener('error', () => { if (source.readyState === EventSource.CLOSED) document.getElementById('live').textContent = 'Following stopped; reload to try again.'; });
}
"#;

/// A stored ISO 8601 instant (`2026-11-30T22:20:22.574Z`) as the tables show instants.
fn readable(iso: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(iso)
        .map(|t| t.to_utc().format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|_| iso.to_owned())
}

fn html(body: String) -> Response {
    super::typed(body, "text/html; charset=utf-8")
}

/// Text for HTML, in element content and in quoted attributes alike.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A query value or path segment, percent-encoded (all but RFC 3986's unreserved characters).
pub(super) fn encode(text: &str) -> String {
    use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
    const RESERVED: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    utf8_percent_encode(text, RESERVED).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_for_html_and_urls() {
        assert_eq!(esc(r#"<a href="x">&'"#), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
        assert_eq!(encode("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
        assert_eq!(readable("2026-11-30T22:20:22.574Z"), "2026-11-30 22:20:22 UTC");
        assert_eq!(readable("not a time"), "not a time");
    }

    proptest::proptest! {
        /// Every page the selection gives is the matching slice of a full, stable sort.
        #[test]
        fn a_page_is_the_slice_of_the_full_sort(
            keys in proptest::collection::vec(0u8..4, 0..80),
            desc: bool,
            rows in 1usize..12,
        ) {
            let items: Vec<(u8, String)> =
                keys.iter().enumerate().map(|(i, k)| (*k, format!("job-{i:03}"))).collect();
            let mut sorted: Vec<&(u8, String)> = items.iter().collect();
            sorted.sort_by(|a, b| {
                let ascending = a.0.cmp(&b.0).then_with(|| a.1.cmp(&b.1));
                if desc { ascending.reverse() } else { ascending }
            });
            for page in 0..=items.len() / rows + 1 {
                let start = page * rows;
                let got = page_of(items.iter().collect(), |e| e.0, |e| e.1.as_str(), desc, start, rows);
                let want: Vec<_> = sorted.iter().skip(start).take(rows).copied().collect();
                proptest::prop_assert_eq!(got, want);
            }
        }
    }
}
