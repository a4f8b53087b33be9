//! The statements of a commit: a coalesced batch becomes a few multi-row statements instead of
//! one statement per write.
//!
//! With SQLite every statement is a round trip to sqlx's worker thread, and with PostgreSQL one
//! over the network; at a thousand tasks a second the trips, not the rows, were the cost.

use sqlx::{Database, Encode, Executor, FromRow, IntoArguments, Pool, QueryBuilder, Type};

use super::{Backend, OPEN_STATES, query_err};
use crate::job::TaskId;
use crate::store::{
    AuditEntry, CommitReport, Error, StoredJob, StoredNotice, StoredToken, TaskRecord, Write,
};

/// Commits a batch in one transaction: `Store::commit` for both SQL stores.
pub(super) async fn commit<DB>(
    pool: &Pool<DB>,
    batch: &[Write],
    fence: Option<i64>,
    claimant: &str,
) -> Result<CommitReport, Error>
where
    DB: Backend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Encode<'q, DB> + Type<DB>,
    for<'r> (String, i64): FromRow<'r, DB::Row>,
    for<'r> (i64,): FromRow<'r, DB::Row>,
    DB::Arguments: IntoArguments<DB>,
{
    if batch.is_empty() {
        return Ok(CommitReport::default());
    }
    let mut conn = pool.acquire().await.map_err(query_err("commit"))?;
    let applied: Result<CommitReport, Error> = async {
        let mut report = CommitReport::default();
        let mut tx = sqlx::Connection::begin(&mut *conn)
            .await
            .map_err(query_err("commit"))?;
        if let Some(epoch) = fence {
            let current: Option<i64> = sqlx::query_scalar(DB::FENCE)
                .fetch_optional(&mut *tx)
                .await
                .map_err(query_err("check leadership"))?;
            if current != Some(epoch) {
                return Err(Error::Fenced { epoch });
            }
        }
        for step in steps(batch) {
            match step {
                Step::Delete(name) => {
                    for table in [
                        "DELETE FROM jobs WHERE name = ",
                        "DELETE FROM tasks WHERE job = ",
                        // A job created again under the same name starts with no claimed runs.
                        "DELETE FROM run_claims WHERE job = ",
                    ] {
                        let mut query = QueryBuilder::<DB>::new(table);
                        query.push_bind(name.to_owned());
                        query
                            .build()
                            .execute(&mut *tx)
                            .await
                            .map_err(query_err("delete job"))?;
                    }
                }
                Step::Claims(claims) => {
                    let inserted: Vec<(String, i64)> = claims_query::<DB>(&claims, claimant)
                        .build_query_as()
                        .fetch_all(&mut *tx)
                        .await
                        .map_err(query_err("claim runs"))?;
                    report.lost_claims.extend(lost_claims(&claims, &inserted));
                }
                Step::Jobs(jobs) => {
                    jobs_query::<DB>(&jobs)?
                        .build()
                        .execute(&mut *tx)
                        .await
                        .map_err(query_err("put jobs"))?;
                }
                Step::Mark(through_ms) => {
                    // Only ever raised, even by a deposed leader committing late.
                    let mut query =
                        QueryBuilder::<DB>::new("INSERT INTO launches (id, through_ms) VALUES (1, ");
                    query.push_bind(through_ms);
                    query.push(
                        ") ON CONFLICT (id) DO UPDATE SET through_ms = CASE \
                         WHEN excluded.through_ms > launches.through_ms THEN excluded.through_ms \
                         ELSE launches.through_ms END",
                    );
                    query
                        .build()
                        .execute(&mut *tx)
                        .await
                        .map_err(query_err("mark launches"))?;
                }
                Step::Pause(since) => {
                    let mut query = QueryBuilder::<DB>::new("INSERT INTO pause (id, paused_ms) VALUES (1, ");
                    query.push_bind(since);
                    query.push(") ON CONFLICT (id) DO UPDATE SET paused_ms = excluded.paused_ms");
                    query
                        .build()
                        .execute(&mut *tx)
                        .await
                        .map_err(query_err("set the pause"))?;
                }
                Step::Tasks(mut tasks) => {
                    tasks.retain(|t| !report.lost_claims.contains(&t.id));
                    if tasks.is_empty() {
                        continue;
                    }
                    tasks_query::<DB>(&tasks)
                        .build()
                        .execute(&mut *tx)
                        .await
                        .map_err(query_err("put tasks"))?;
                }
                Step::Progress(progress) => {
                    // Progress comes a few at a time (one API call each), so one statement per task.
                    for (task_id, elements) in progress {
                        let found: Vec<(String, i64)> = progress_query::<DB>(task_id, elements)
                            .build_query_as()
                            .fetch_all(&mut *tx)
                            .await
                            .map_err(query_err("add progress"))?;
                        if found.is_empty() && !report.unknown_progress.iter().any(|id| id == task_id) {
                            report.unknown_progress.push(task_id.clone());
                        }
                    }
                }
                Step::PruneTasks(ids) => {
                    for chunk in ids.chunks(PRUNE_ROWS_PER_STATEMENT) {
                        let mut query = QueryBuilder::<DB>::new("DELETE FROM tasks WHERE id IN (");
                        let mut separated = query.separated(", ");
                        for id in chunk {
                            separated.push_bind(id.to_string());
                        }
                        query.push(format!(
                            ") AND state NOT IN {OPEN_STATES} RETURNING id, created_ms"
                        ));
                        report.pruned += count(query, &mut *tx, "prune history").await?;
                    }
                }
                Step::PutToken(token) => {
                    let mut query = QueryBuilder::<DB>::new(
                        "INSERT INTO tokens (name, role, hash, created_ms, last_used_ms) VALUES (",
                    );
                    let mut values = query.separated(", ");
                    values
                        .push_bind(token.name.clone())
                        .push_bind(token.role.clone())
                        .push_bind(token.hash.clone())
                        .push_bind(token.created_ms)
                        .push_bind(token.last_used_ms);
                    query.push(
                        ") ON CONFLICT (name) DO UPDATE SET role = excluded.role, hash = excluded.hash, \
                         created_ms = excluded.created_ms, last_used_ms = excluded.last_used_ms",
                    );
                    query
                        .build()
                        .execute(&mut *tx)
                        .await
                        .map_err(query_err("put token"))?;
                }
                Step::DeleteToken(name) => {
                    let mut query = QueryBuilder::<DB>::new("DELETE FROM tokens WHERE name = ");
                    query.push_bind(name.to_owned());
                    query
                        .build()
                        .execute(&mut *tx)
                        .await
                        .map_err(query_err("delete token"))?;
                }
                Step::Audit(entries) => {
                    let mut query = QueryBuilder::<DB>::new(
                        "INSERT INTO audit (at_ms, principal, role, source, method, route, job, outcome) ",
                    );
                    query.push_values(entries, |mut row, e| {
                        row.push_bind(e.at_ms)
                            .push_bind(e.principal.clone())
                            .push_bind(e.role.clone())
                            .push_bind(e.source.clone())
                            .push_bind(e.method.clone())
                            .push_bind(e.route.clone())
                            .push_bind(e.job.clone().unwrap_or_default())
                            .push_bind(e.outcome.clone());
                    });
                    query
                        .build()
                        .execute(&mut *tx)
                        .await
                        .map_err(query_err("audit"))?;
                }
                Step::PruneAudit { before_ms, limit } => {
                    let mut query = QueryBuilder::<DB>::new(
                        "DELETE FROM audit WHERE id IN (SELECT id FROM audit WHERE at_ms < ",
                    );
                    query.push_bind(before_ms).push(" LIMIT ");
                    query.push_bind(i64::from(limit)).push(") RETURNING route, at_ms");
                    report.pruned += count(query, &mut *tx, "prune audit").await?;
                }
                Step::Notices(notices) => {
                    let mut query = QueryBuilder::<DB>::new("INSERT INTO notices (id, created_ms, body) ");
                    query.push_values(&notices, |mut row, n| {
                        row.push_bind(n.id.clone())
                            .push_bind(n.created_ms)
                            .push_bind(n.body.clone());
                    });
                    query.push(" ON CONFLICT (id) DO NOTHING RETURNING id, created_ms");
                    let inserted: Vec<(String, i64)> = query
                        .build_query_as()
                        .fetch_all(&mut *tx)
                        .await
                        .map_err(query_err("put notices"))?;
                    report.known_notices.extend(
                        notices
                            .iter()
                            .filter(|n| !inserted.iter().any(|(id, _)| *id == n.id))
                            .map(|n| n.id.clone()),
                    );
                }
                Step::NoticeDone { id, delivered, at_ms } => {
                    let mut query = QueryBuilder::<DB>::new("UPDATE notices SET state = ");
                    query.push_bind(if delivered { "delivered" } else { "abandoned" }.to_owned());
                    query.push(", done_ms = ").push_bind(at_ms);
                    query.push(" WHERE id = ").push_bind(id.to_owned());
                    query
                        .build()
                        .execute(&mut *tx)
                        .await
                        .map_err(query_err("mark a notice done"))?;
                }
                Step::PruneNotices { before_ms, limit } => {
                    let mut query = QueryBuilder::<DB>::new(
                        "DELETE FROM notices WHERE id IN (SELECT id FROM notices WHERE created_ms < ",
                    );
                    query.push_bind(before_ms).push(" LIMIT ");
                    query
                        .push_bind(i64::from(limit))
                        .push(") RETURNING id, created_ms");
                    report.pruned += count(query, &mut *tx, "prune notices").await?;
                }
                Step::PruneClaims { before_ms, limit } => {
                    // The key, not a row id: SQLite and PostgreSQL name theirs differently.
                    let mut query = QueryBuilder::<DB>::new(
                        "DELETE FROM run_claims WHERE (job, due_ms) IN (
                             SELECT job, due_ms FROM run_claims WHERE due_ms < ",
                    );
                    query.push_bind(before_ms).push(" LIMIT ");
                    query.push_bind(i64::from(limit)).push(") RETURNING job, due_ms");
                    report.pruned += count(query, &mut *tx, "prune claims").await?;
                }
            }
        }
        tx.commit().await.map_err(query_err("commit"))?;
        Ok(report)
    }
    .await;
    if applied.is_err() {
        // A transaction that failed, at `COMMIT` above all (SQLite's "database or disk is
        // full"), can leave its connection inside it, holding the write lock: every other
        // writer then waits for it, and a later batch on that connection would only nest in
        // the failed transaction and be lost with it, though reported committed. So the
        // connection is closed, which rolls back whatever it holds, instead of going back to
        // the pool.
        conn.close_on_drop();
    }
    applied
}

/// Runs a statement that returns `(text, integer)` rows and counts them: the rows a delete
/// removed, counted the same way on both databases.
async fn count<DB>(
    mut query: QueryBuilder<DB>,
    conn: &mut DB::Connection,
    operation: &'static str,
) -> Result<u64, Error>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'r> (String, i64): FromRow<'r, DB::Row>,
    DB::Arguments: IntoArguments<DB>,
{
    let rows: Vec<(String, i64)> = query
        .build_query_as()
        .fetch_all(conn)
        .await
        .map_err(query_err(operation))?;
    Ok(rows.len() as u64)
}

/// Rows per multi-row statement: far below both databases' limits on bound values, and few
/// distinct statement texts for the prepared-statement caches.
const ROWS_PER_STATEMENT: usize = 64;

/// Ids per statement of a [`Write::PruneTasks`]: one bound value each, far below both limits.
const PRUNE_ROWS_PER_STATEMENT: usize = 500;

/// One step of a commit, in order.
enum Step<'a> {
    Delete(&'a str),
    Claims(Vec<(&'a str, i64, &'a TaskId)>),
    Jobs(Vec<&'a StoredJob>),
    Tasks(Vec<&'a TaskRecord>),
    /// Elements to add per task, summed over the run's progress writes of that task.
    Progress(Vec<(&'a TaskId, i64)>),
    Mark(i64),
    Pause(Option<i64>),
    PruneTasks(&'a [TaskId]),
    PruneClaims {
        before_ms: i64,
        limit: u32,
    },
    PutToken(&'a StoredToken),
    DeleteToken(&'a str),
    Audit(Vec<&'a AuditEntry>),
    PruneAudit {
        before_ms: i64,
        limit: u32,
    },
    Notices(Vec<&'a StoredNotice>),
    NoticeDone {
        id: &'a str,
        delivered: bool,
        at_ms: i64,
    },
    PruneNotices {
        before_ms: i64,
        limit: u32,
    },
}

/// Coalesces a batch (see [`crate::store::coalesce_runs`], which also orders each run deletes,
/// claims, jobs, tasks, progress, mark) and groups each run into steps of at most
/// [`ROWS_PER_STATEMENT`] rows of one kind. Within a step every task id and job name is unique,
/// as PostgreSQL's multi-row upsert requires; a step never spans two runs.
fn steps(batch: &[Write]) -> Vec<Step<'_>> {
    let mut steps: Vec<Step<'_>> = Vec::new();
    for run in crate::store::coalesce_runs(batch) {
        let first = steps.len();
        for write in run {
            let full = |len: usize| len >= ROWS_PER_STATEMENT;
            // Only a step of this run may take more rows.
            let last = if steps.len() > first {
                steps.last_mut()
            } else {
                None
            };
            match (write, last) {
                (Write::DeleteJob(name), _) => steps.push(Step::Delete(name)),
                (Write::ClaimRun { job, due_ms, task_id }, Some(Step::Claims(claims)))
                    if !full(claims.len()) =>
                {
                    claims.push((job, *due_ms, task_id));
                }
                (Write::ClaimRun { job, due_ms, task_id }, _) => {
                    steps.push(Step::Claims(vec![(job, *due_ms, task_id)]));
                }
                (Write::PutJob(stored), Some(Step::Jobs(jobs))) if !full(jobs.len()) => jobs.push(stored),
                (Write::PutJob(stored), _) => steps.push(Step::Jobs(vec![stored])),
                (Write::PutTask(task), Some(Step::Tasks(tasks))) if !full(tasks.len()) => tasks.push(task),
                (Write::PutTask(task), _) => steps.push(Step::Tasks(vec![task])),
                (Write::AddProgress { task_id, elements }, Some(Step::Progress(progress))) => {
                    add_progress(progress, task_id, *elements);
                }
                (Write::AddProgress { task_id, elements }, _) => {
                    let mut progress = Vec::new();
                    add_progress(&mut progress, task_id, *elements);
                    steps.push(Step::Progress(progress));
                }
                (Write::LaunchedThrough(ms), _) => steps.push(Step::Mark(*ms)),
                (Write::SetPause(since), _) => steps.push(Step::Pause(*since)),
                (Write::PruneTasks(ids), _) => steps.push(Step::PruneTasks(ids)),
                (Write::PutToken(token), _) => steps.push(Step::PutToken(token)),
                (Write::DeleteToken(name), _) => steps.push(Step::DeleteToken(name)),
                (Write::Audit(entry), Some(Step::Audit(entries))) if !full(entries.len()) => {
                    entries.push(entry)
                }
                (Write::Audit(entry), _) => steps.push(Step::Audit(vec![entry])),
                (Write::PruneAudit { before_ms, limit }, _) => steps.push(Step::PruneAudit {
                    before_ms: *before_ms,
                    limit: *limit,
                }),
                (Write::PutNotice(notice), Some(Step::Notices(notices))) if !full(notices.len()) => {
                    notices.push(notice);
                }
                (Write::PutNotice(notice), _) => steps.push(Step::Notices(vec![notice])),
                (Write::NoticeDone { id, delivered, at_ms }, _) => steps.push(Step::NoticeDone {
                    id,
                    delivered: *delivered,
                    at_ms: *at_ms,
                }),
                (Write::PruneNotices { before_ms, limit }, _) => steps.push(Step::PruneNotices {
                    before_ms: *before_ms,
                    limit: *limit,
                }),
                (Write::PruneClaims { before_ms, limit }, _) => steps.push(Step::PruneClaims {
                    before_ms: *before_ms,
                    limit: *limit,
                }),
            }
        }
    }
    steps
}

/// Adds one progress write to a step, summing it into an earlier one of the same task: adding
/// the saturated sum once is the same as adding each in turn, since none is negative.
fn add_progress<'a>(progress: &mut Vec<(&'a TaskId, i64)>, task_id: &'a TaskId, elements: i64) {
    let elements = elements.max(0);
    match progress.iter_mut().find(|(id, _)| *id == task_id) {
        Some((_, sum)) => *sum = sum.saturating_add(elements),
        None => progress.push((task_id, elements)),
    }
}

/// Adds to a task's count, returning `(id, count)` if the task exists. The sum is clamped at
/// `i64::MAX`: past it PostgreSQL refuses the value and SQLite stores a REAL that no read decodes.
fn progress_query<DB: Backend>(task_id: &str, elements: i64) -> QueryBuilder<DB>
where
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
{
    let mut query = QueryBuilder::new(format!(
        "UPDATE tasks SET elements_processed = {}(elements_processed, 9223372036854775807 - ",
        DB::LEAST
    ));
    query.push_bind(elements).push(") + ").push_bind(elements);
    query.push(" WHERE id = ").push_bind(task_id.to_owned());
    query.push(" RETURNING id, elements_processed");
    query
}

/// Inserts claims, returning the `(job, due_ms)` of those that were new.
/// Inserts the claims, returning those that are ours: new, or made by this claimant before (a
/// batch committed again after an unknown outcome); another claimant's claim is not returned.
fn claims_query<DB: Database>(claims: &[(&str, i64, &TaskId)], claimant: &str) -> QueryBuilder<DB>
where
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
{
    let mut query = QueryBuilder::new("INSERT INTO run_claims (job, due_ms, claimant) ");
    query.push_values(claims, |mut row, (job, due_ms, _)| {
        row.push_bind(job.to_string())
            .push_bind(*due_ms)
            .push_bind(claimant.to_owned());
    });
    query.push(
        " ON CONFLICT (job, due_ms) DO UPDATE SET claimant = excluded.claimant \
         WHERE run_claims.claimant = excluded.claimant RETURNING job, due_ms",
    );
    query
}

/// The tasks of the claims that were not among the inserted `(job, due_ms)` pairs.
fn lost_claims(claims: &[(&str, i64, &TaskId)], inserted: &[(String, i64)]) -> Vec<TaskId> {
    claims
        .iter()
        .filter(|(job, due_ms, _)| !inserted.iter().any(|(j, d)| j == job && d == due_ms))
        .map(|(_, _, task_id)| (*task_id).clone())
        .collect()
}

/// Inserts or updates jobs; an update keeps a job's `seq`, so its place in creation order.
fn jobs_query<DB: Database>(jobs: &[&StoredJob]) -> Result<QueryBuilder<DB>, Error>
where
    for<'q> String: Encode<'q, DB> + Type<DB>,
{
    let mut rows = Vec::with_capacity(jobs.len());
    for stored in jobs {
        let body = serde_json::to_string(&stored.job).map_err(|e| Error::Corrupt {
            what: format!("job {}", stored.job.name),
            reason: e.to_string(),
        })?;
        let satisfied = serde_json::to_string(&stored.satisfied).unwrap_or_default();
        rows.push((stored.job.name.clone(), body, satisfied));
    }
    let mut query = QueryBuilder::new("INSERT INTO jobs (name, body, satisfied) ");
    query.push_values(rows, |mut row, (name, body, satisfied)| {
        row.push_bind(name).push_bind(body).push_bind(satisfied);
    });
    query.push(" ON CONFLICT (name) DO UPDATE SET body = excluded.body, satisfied = excluded.satisfied");
    Ok(query)
}

/// Inserts or updates tasks. The update leaves `elements_processed` alone: only
/// [`Write::AddProgress`] changes a stored count.
fn tasks_query<DB: Database>(tasks: &[&TaskRecord]) -> QueryBuilder<DB>
where
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Encode<'q, DB> + Type<DB>,
{
    let mut query = QueryBuilder::new(
        "INSERT INTO tasks (id, job, attempt, due_ms, arguments, state, created_ms, started_ms,
             finished_ms, exit_code, message, stdout, stderr, elements_processed, worker, scheduled) ",
    );
    query.push_values(tasks, |mut row, task| {
        row.push_bind(task.id.to_string())
            .push_bind(task.job.clone())
            .push_bind(i64::from(task.attempt))
            .push_bind(task.due_ms)
            .push_bind(task.arguments.clone())
            .push_bind(task.state.as_str().to_owned())
            .push_bind(task.created_ms)
            .push_bind(task.started_ms)
            .push_bind(task.finished_ms)
            .push_bind(task.exit_code.map(i64::from))
            .push_bind(task.message.clone())
            .push_bind(task.stdout.clone())
            .push_bind(task.stderr.clone())
            .push_bind(task.elements_processed)
            .push_bind(task.worker.clone())
            .push_bind(i64::from(task.scheduled));
    });
    query.push(
        " ON CONFLICT (id) DO UPDATE SET state = excluded.state, started_ms = excluded.started_ms,
             finished_ms = excluded.finished_ms, exit_code = excluded.exit_code,
             message = excluded.message, stdout = excluded.stdout, stderr = excluded.stderr,
             worker = excluded.worker",
    );
    query
}
