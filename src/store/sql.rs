//! The statements of a commit, shared by the SQL stores: a coalesced batch becomes a few
//! multi-row statements instead of one statement per write.
//!
//! With SQLite every statement is a round trip to sqlx's worker thread, and with PostgreSQL one
//! over the network; at a thousand tasks a second the trips, not the rows, were the cost.

use sqlx::{Database, Encode, Executor, FromRow, Pool, QueryBuilder, Type};

use super::{Error, LostClaims, StoredJob, TaskRecord, Write};

/// Wraps a driver error with the store operation that failed.
pub(super) fn query_err(operation: &'static str) -> impl FnOnce(sqlx::Error) -> Error {
    move |source| Error::Query { operation, source }
}

/// Commits a batch in one transaction: `Store::commit` for both SQL stores.
pub(super) async fn commit<DB>(pool: &Pool<DB>, batch: &[Write]) -> Result<LostClaims, Error>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Encode<'q, DB> + Type<DB>,
    for<'r> (String, i64): FromRow<'r, DB::Row>,
    DB::Arguments: sqlx::IntoArguments<DB>,
{
    let mut lost = LostClaims::new();
    if batch.is_empty() {
        return Ok(lost);
    }
    let mut tx = pool.begin().await.map_err(query_err("commit"))?;
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
                let inserted: Vec<(String, i64)> = claims_query::<DB>(&claims)
                    .build_query_as()
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(query_err("claim runs"))?;
                lost.extend(lost_claims(&claims, &inserted));
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
                let mut query = QueryBuilder::<DB>::new("INSERT INTO launches (id, through_ms) VALUES (1, ");
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
            Step::Tasks(mut tasks) => {
                tasks.retain(|t| !lost.contains(&t.id));
                if tasks.is_empty() {
                    continue;
                }
                tasks_query::<DB>(&tasks)
                    .build()
                    .execute(&mut *tx)
                    .await
                    .map_err(query_err("put tasks"))?;
            }
        }
    }
    tx.commit().await.map_err(query_err("commit"))?;
    Ok(lost)
}

/// Rows per multi-row statement: far below both databases' limits on bound values, and few
/// distinct statement texts for the prepared-statement caches.
const ROWS_PER_STATEMENT: usize = 64;

/// One step of a commit, in order.
enum Step<'a> {
    Delete(&'a str),
    Claims(Vec<(&'a str, i64, &'a str)>),
    Jobs(Vec<&'a StoredJob>),
    Tasks(Vec<&'a TaskRecord>),
    Mark(i64),
}

/// Coalesces a batch (see [`super::coalesce`], which also orders it deletes, claims, jobs,
/// tasks) and groups it into steps of at most [`ROWS_PER_STATEMENT`] rows of one kind. Within a
/// step every task id and job name is unique, as PostgreSQL's multi-row upsert requires.
fn steps(batch: &[Write]) -> Vec<Step<'_>> {
    let mut steps: Vec<Step<'_>> = Vec::new();
    for write in super::coalesce(batch) {
        let full = |len: usize| len >= ROWS_PER_STATEMENT;
        match (write, steps.last_mut()) {
            (Write::DeleteJob(name), _) => steps.push(Step::Delete(name)),
            (Write::ClaimRun { job, due_ms, task_id }, Some(Step::Claims(claims))) if !full(claims.len()) => {
                claims.push((job, *due_ms, task_id));
            }
            (Write::ClaimRun { job, due_ms, task_id }, _) => {
                steps.push(Step::Claims(vec![(job, *due_ms, task_id)]));
            }
            (Write::PutJob(stored), Some(Step::Jobs(jobs))) if !full(jobs.len()) => jobs.push(stored),
            (Write::PutJob(stored), _) => steps.push(Step::Jobs(vec![stored])),
            (Write::PutTask(task), Some(Step::Tasks(tasks))) if !full(tasks.len()) => tasks.push(task),
            (Write::PutTask(task), _) => steps.push(Step::Tasks(vec![task])),
            (Write::LaunchedThrough(ms), _) => steps.push(Step::Mark(*ms)),
        }
    }
    steps
}

/// Inserts claims, returning the `(job, due_ms)` of those that were new.
fn claims_query<DB: Database>(claims: &[(&str, i64, &str)]) -> QueryBuilder<DB>
where
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
{
    let mut query = QueryBuilder::new("INSERT INTO run_claims (job, due_ms) ");
    query.push_values(claims, |mut row, (job, due_ms, _)| {
        row.push_bind(job.to_string()).push_bind(*due_ms);
    });
    query.push(" ON CONFLICT DO NOTHING RETURNING job, due_ms");
    query
}

/// The tasks of the claims that were not among the inserted `(job, due_ms)` pairs.
fn lost_claims(claims: &[(&str, i64, &str)], inserted: &[(String, i64)]) -> Vec<String> {
    claims
        .iter()
        .filter(|(job, due_ms, _)| !inserted.iter().any(|(j, d)| j == job && d == due_ms))
        .map(|(_, _, task_id)| task_id.to_string())
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

/// Inserts or updates tasks. The update leaves `elements_processed` alone: progress arrives
/// separately, straight to the store.
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
        row.push_bind(task.id.clone())
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
