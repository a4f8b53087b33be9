//! The one SQL store, generic over the database: migrations, commits, reads and row decoding
//! shared by SQLite and PostgreSQL.
//!
//! A backend contributes only what really differs (see [`Backend`]): its schema steps, the
//! column that orders tasks by insertion, and the name of the two-argument minimum; opening,
//! SQLite's checkpoints and PostgreSQL's leader lock stay in `sqlite.rs` and `postgres.rs`.
//! Statements are built with `QueryBuilder`, which writes each database's placeholders.

mod commit;

use sqlx::{
    ColumnIndex, Database, Decode, Encode, Executor, FromRow, IntoArguments, Pool, QueryBuilder, Row, Type,
};

use super::{
    AuditEntry, AuditQuery, CommitReport, Error, Store, StoredJob, StoredNotice, StoredToken, TaskRecord,
    TaskState, Write,
};
use crate::job::TaskId;

/// What one database does differently; implemented for `sqlx::Sqlite` and `sqlx::Postgres`.
pub trait Backend: Database {
    /// The versioned schema steps, in order; `schema_version` records how many have been applied.
    /// Steps are only ever appended, so existing databases keep their version.
    const MIGRATIONS: &'static [&'static str];
    /// Creates the table of applied step counts, if missing.
    const VERSION_TABLE: &'static str;
    /// The column that orders tasks by insertion, breaking ties between tasks created in the
    /// same millisecond: SQLite's implicit `rowid`, PostgreSQL's explicit `seq`.
    const TASK_SEQ: &'static str;
    /// The smaller of two values: `MIN` in SQLite, `LEAST` in PostgreSQL.
    const LEAST: &'static str;
    /// What the store keeps besides its pool.
    type State: Send + Sync + 'static;
    /// Reads the leadership epoch inside a commit, holding it against a successor's takeover
    /// until the commit ends (see [`Term::fence`]); empty where one server owns the database.
    const FENCE: &'static str;
}

/// The schema step of API tokens and the audit log, the same on both databases but for the
/// audit log's id column (SQLite's row id alias, PostgreSQL's sequence). SQLite reads `BIGINT`
/// as an integer column, so one text serves both.
macro_rules! tokens_and_audit_step {
    ($audit_id:literal) => {
        concat!(
            "CREATE TABLE tokens (name TEXT PRIMARY KEY, role TEXT NOT NULL, hash TEXT NOT NULL, \
             created_ms BIGINT NOT NULL, last_used_ms BIGINT);\n",
            "CREATE TABLE audit (id ",
            $audit_id,
            ", at_ms BIGINT NOT NULL, principal TEXT NOT NULL, role TEXT NOT NULL, \
             source TEXT NOT NULL, method TEXT NOT NULL, route TEXT NOT NULL, job TEXT NOT NULL, \
             outcome TEXT NOT NULL);\n",
            "CREATE INDEX audit_by_time ON audit (at_ms);\n"
        )
    };
}
pub(super) use tokens_and_audit_step;

/// The schema step of the scheduler-wide pause: one row, `paused_ms` null while it runs.
pub(super) const PAUSE_STEP: &str =
    "CREATE TABLE pause (id INTEGER PRIMARY KEY CHECK (id = 1), paused_ms BIGINT);";
/// The schema step of the notification outbox, the same text on both databases. `state` is
/// `pending`, `delivered` or `abandoned`; only pending rows are read back, by age.
pub(super) const NOTICES_STEP: &str = "\
CREATE TABLE notices (id TEXT PRIMARY KEY, created_ms BIGINT NOT NULL, body TEXT NOT NULL, \
state TEXT NOT NULL DEFAULT 'pending', done_ms BIGINT);
CREATE INDEX notices_pending ON notices (created_ms) WHERE state = 'pending';
CREATE INDEX notices_by_age ON notices (created_ms);
";

/// The schema step that lets a batch committed again find its own run claims: a claim records
/// who made it, so only another claimant's claim counts as lost.
pub(super) const CLAIMANT_STEP: &str = "ALTER TABLE run_claims ADD COLUMN claimant TEXT NOT NULL DEFAULT '';";

/// A store on a SQL database: `SqliteStore` and `PostgresStore` are this with their backend.
pub struct SqlStore<DB: Backend> {
    pub(super) pool: Pool<DB>,
    pub(super) backend: DB::State,
    pub(super) term: Term,
}

/// Who commits through a store value.
#[derive(Debug)]
pub(super) struct Term {
    /// Unique to the store value; with a group number it names the claimant of each run claim
    /// (see [`Store::commit_group`]).
    pub(super) claimant: String,
    /// Numbers the plain commits, each a claimant of its own.
    pub(super) commits: std::sync::atomic::AtomicU64,
    /// The leadership epoch every commit checks first, under a share lock on the leader row:
    /// a deposed leader's late commit fails with [`Error::Fenced`] instead of landing on top of
    /// its successor's state, and a successor's takeover waits for commits already under way.
    pub(super) fence: Option<i64>,
}

impl Term {
    /// A claimant unique to this process and moment.
    pub(super) fn unique() -> Term {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        Term::new(format!("{}-{nanos}", std::process::id()), None)
    }

    pub(super) fn new(claimant: String, fence: Option<i64>) -> Term {
        Term {
            claimant,
            commits: std::sync::atomic::AtomicU64::new(0),
            fence,
        }
    }

    /// The claimant of a commit in `group`, or of a plain commit.
    fn claimant(&self, group: Option<u64>) -> String {
        match group {
            Some(group) => format!("{}/g{group}", self.claimant),
            None => {
                let n = self.commits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                format!("{}/c{n}", self.claimant)
            }
        }
    }
}

/// Wraps a driver error with the store operation that failed.
pub(super) fn query_err(operation: &'static str) -> impl FnOnce(sqlx::Error) -> Error {
    move |source| Error::Query { operation, source }
}

/// Applies the schema steps `schema_version` does not count yet, on a connection inside a
/// transaction that the caller opened (and locked, where its database needs it) and commits.
pub(super) async fn migrate<DB>(conn: &mut DB::Connection) -> Result<(), Error>
where
    DB: Backend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'q> i64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
{
    sqlx::raw_sql(DB::VERSION_TABLE)
        .execute(&mut *conn)
        .await
        .map_err(query_err("migrate"))?;
    let row = QueryBuilder::<DB>::new("SELECT MAX(version) FROM schema_version")
        .build()
        .fetch_one(&mut *conn)
        .await
        .map_err(query_err("migrate"))?;
    let version: Option<i64> = column(&row, 0, || "schema_version".to_owned())?;
    let applied = usize::try_from(version.unwrap_or(0)).unwrap_or(0);
    for (index, step) in DB::MIGRATIONS.iter().enumerate().skip(applied) {
        sqlx::raw_sql(*step)
            .execute(&mut *conn)
            .await
            .map_err(query_err("migrate"))?;
        let mut record = QueryBuilder::<DB>::new("INSERT INTO schema_version (version) VALUES (");
        record.push_bind(index as i64 + 1).push(")");
        record
            .build()
            .execute(&mut *conn)
            .await
            .map_err(query_err("migrate"))?;
    }
    Ok(())
}

/// Reads one column, reporting a missing column or a type mismatch as a corrupt row instead of
/// panicking as `Row::get` would.
fn column<'r, R, T, I>(row: &'r R, index: I, what: impl FnOnce() -> String) -> Result<T, Error>
where
    R: Row,
    I: ColumnIndex<R> + std::fmt::Display,
    T: Decode<'r, R::Database> + Type<R::Database>,
{
    row.try_get(&index).map_err(|e| Error::Corrupt {
        what: what(),
        reason: format!("column {index}: {e}"),
    })
}

/// A stored task id, which is only ever written in the Chronos shape.
fn parse_task_id(text: &str) -> Result<TaskId, Error> {
    TaskId::parse(text).ok_or_else(|| Error::Corrupt {
        what: format!("task {text}"),
        reason: "its id is not in the Chronos shape ct:<due>:<attempt>:<job>:<arguments>".to_owned(),
    })
}

/// A number stored wider than its field, as a corrupt row rather than a silent truncation.
fn narrow<T: TryFrom<i64>>(value: i64, name: &str, what: impl FnOnce() -> String) -> Result<T, Error> {
    T::try_from(value).map_err(|_| Error::Corrupt {
        what: what(),
        reason: format!("column {name}: {value} is out of range"),
    })
}

fn task_from_row<R>(row: &R) -> Result<TaskRecord, Error>
where
    R: Row,
    for<'n> &'n str: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
{
    let id: String = column(row, "id", || "a task".to_owned())?;
    let what = || format!("task {id}");
    let state: String = column(row, "state", what)?;
    let state = TaskState::parse(&state).ok_or_else(|| Error::Corrupt {
        what: what(),
        reason: format!("unknown state {state:?}"),
    })?;
    let exit_code: Option<i64> = column(row, "exit_code", what)?;
    Ok(TaskRecord {
        job: column(row, "job", what)?,
        attempt: narrow(column(row, "attempt", what)?, "attempt", what)?,
        due_ms: column(row, "due_ms", what)?,
        arguments: column(row, "arguments", what)?,
        state,
        created_ms: column(row, "created_ms", what)?,
        started_ms: column(row, "started_ms", what)?,
        finished_ms: column(row, "finished_ms", what)?,
        exit_code: exit_code
            .map(|code| narrow(code, "exit_code", what))
            .transpose()?,
        message: column(row, "message", what)?,
        stdout: column(row, "stdout", what)?,
        stderr: column(row, "stderr", what)?,
        elements_processed: column(row, "elements_processed", what)?,
        worker: column(row, "worker", what)?,
        scheduled: column::<_, i64, _>(row, "scheduled", what)? != 0,
        id: parse_task_id(&id)?,
    })
}

fn job_from_row<R>(row: &R) -> Result<StoredJob, Error>
where
    R: Row,
    for<'n> &'n str: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
{
    let name: String = column(row, "name", || "a job".to_owned())?;
    let what = || format!("job {name}");
    let corrupt = |e: serde_json::Error| Error::Corrupt {
        what: what(),
        reason: e.to_string(),
    };
    let body: String = column(row, "body", what)?;
    let satisfied: String = column(row, "satisfied", what)?;
    let job = serde_json::from_str(&body).map_err(corrupt)?;
    let satisfied = serde_json::from_str(&satisfied).map_err(corrupt)?;
    Ok(StoredJob { job, satisfied })
}

/// Final tasks are never in these states; kept in one place for every statement that says so.
const OPEN_STATES: &str = "('queued', 'running', 'waiting')";

impl<DB: Backend> SqlStore<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
{
    /// Runs a read on the pool, naming the operation in its error.
    async fn rows(
        &self,
        mut query: QueryBuilder<DB>,
        operation: &'static str,
    ) -> Result<Vec<DB::Row>, Error> {
        query
            .build()
            .fetch_all(&self.pool)
            .await
            .map_err(query_err(operation))
    }
}

impl<DB> Store for SqlStore<DB>
where
    DB: Backend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'q> String: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Encode<'q, DB> + Type<DB>,
    for<'r> (String, i64): FromRow<'r, DB::Row>,
    for<'r> (i64,): FromRow<'r, DB::Row>,
    for<'n> &'n str: ColumnIndex<DB::Row>,
    usize: ColumnIndex<DB::Row>,
{
    async fn commit(&self, batch: &[Write]) -> Result<CommitReport, Error> {
        commit::commit(&self.pool, batch, self.term.fence, &self.term.claimant(None)).await
    }

    async fn commit_group(&self, batch: &[Write], group: u64) -> Result<CommitReport, Error> {
        commit::commit(
            &self.pool,
            batch,
            self.term.fence,
            &self.term.claimant(Some(group)),
        )
        .await
    }

    async fn load_jobs(&self) -> Result<Vec<StoredJob>, Error> {
        let query = QueryBuilder::new("SELECT name, body, satisfied FROM jobs ORDER BY seq");
        let rows = self.rows(query, "load jobs").await?;
        rows.iter().map(job_from_row).collect()
    }

    async fn load_open_tasks(&self) -> Result<Vec<TaskRecord>, Error> {
        let query = QueryBuilder::new(format!(
            "SELECT * FROM tasks WHERE state IN {OPEN_STATES} ORDER BY created_ms, {}",
            DB::TASK_SEQ
        ));
        let rows = self.rows(query, "load open tasks").await?;
        rows.iter().map(task_from_row).collect()
    }

    async fn load_tokens(&self) -> Result<Vec<StoredToken>, Error> {
        let query =
            QueryBuilder::new("SELECT name, role, hash, created_ms, last_used_ms FROM tokens ORDER BY name");
        let rows = self.rows(query, "load tokens").await?;
        rows.iter()
            .map(|row| {
                let what = || "a token".to_owned();
                Ok(StoredToken {
                    name: column(row, "name", what)?,
                    role: column(row, "role", what)?,
                    hash: column(row, "hash", what)?,
                    created_ms: column(row, "created_ms", what)?,
                    last_used_ms: column(row, "last_used_ms", what)?,
                })
            })
            .collect()
    }

    async fn audit(&self, q: &AuditQuery) -> Result<Vec<AuditEntry>, Error> {
        let mut query = QueryBuilder::new(
            "SELECT at_ms, principal, role, source, method, route, job, outcome FROM audit WHERE 1 = 1",
        );
        if let Some(job) = &q.job {
            query.push(" AND job = ").push_bind(job.clone());
        }
        if let Some(principal) = &q.principal {
            query.push(" AND principal = ").push_bind(principal.clone());
        }
        if let Some(since) = q.since_ms {
            query.push(" AND at_ms >= ").push_bind(since);
        }
        query
            .push(" ORDER BY at_ms DESC, id DESC LIMIT ")
            .push_bind(i64::from(q.limit));
        let rows = self.rows(query, "read the audit log").await?;
        rows.iter()
            .map(|row| {
                let what = || "an audit entry".to_owned();
                let job: String = column(row, "job", what)?;
                Ok(AuditEntry {
                    at_ms: column(row, "at_ms", what)?,
                    principal: column(row, "principal", what)?,
                    role: column(row, "role", what)?,
                    source: column(row, "source", what)?,
                    method: column(row, "method", what)?,
                    route: column(row, "route", what)?,
                    job: (!job.is_empty()).then_some(job),
                    outcome: column(row, "outcome", what)?,
                })
            })
            .collect()
    }

    async fn pending_notices(&self, limit: u32) -> Result<Vec<StoredNotice>, Error> {
        let mut query = QueryBuilder::new(
            "SELECT id, created_ms, body FROM notices WHERE state = 'pending' ORDER BY created_ms, id LIMIT ",
        );
        query.push_bind(i64::from(limit));
        let rows = self.rows(query, "read the notification outbox").await?;
        rows.iter()
            .map(|row| {
                let what = || "a notice".to_owned();
                Ok(StoredNotice {
                    id: column(row, "id", what)?,
                    created_ms: column(row, "created_ms", what)?,
                    body: column(row, "body", what)?,
                })
            })
            .collect()
    }

    async fn launched_through(&self) -> Result<i64, Error> {
        let query = QueryBuilder::new("SELECT MAX(through_ms) FROM launches");
        let rows = self.rows(query, "read the launch mark").await?;
        let through: Option<i64> = match rows.first() {
            Some(row) => column(row, 0, || "the launch mark".to_owned())?,
            None => None,
        };
        Ok(through.unwrap_or(0))
    }

    async fn paused_since(&self) -> Result<Option<i64>, Error> {
        let query = QueryBuilder::new("SELECT paused_ms FROM pause WHERE id = 1");
        let rows = self.rows(query, "read the pause").await?;
        match rows.first() {
            Some(row) => column(row, 0, || "the pause".to_owned()),
            None => Ok(None),
        }
    }

    async fn task(&self, id: &TaskId) -> Result<Option<TaskRecord>, Error> {
        let mut query = QueryBuilder::new("SELECT * FROM tasks WHERE id = ");
        query.push_bind(id.to_string());
        let rows = self.rows(query, "get task").await?;
        rows.first().map(task_from_row).transpose()
    }

    async fn job_tasks(&self, job: &str, limit: u32) -> Result<Vec<TaskRecord>, Error> {
        let mut query = QueryBuilder::new("SELECT * FROM tasks WHERE job = ");
        query.push_bind(job.to_owned());
        query.push(format!(" ORDER BY created_ms DESC, {} DESC LIMIT ", DB::TASK_SEQ));
        query.push_bind(i64::from(limit));
        let rows = self.rows(query, "job tasks").await?;
        rows.iter().map(task_from_row).collect()
    }

    async fn recent_durations(&self, per_job: u32) -> Result<Vec<(String, f64)>, Error> {
        let mut query = QueryBuilder::new(format!(
            "SELECT job, duration FROM (
                 SELECT job, finished_ms - started_ms AS duration,
                        ROW_NUMBER() OVER (PARTITION BY job ORDER BY finished_ms DESC, {} DESC) AS n
                 FROM tasks WHERE state = 'finished' AND started_ms IS NOT NULL AND finished_ms IS NOT NULL)
                 AS recent
             WHERE n <= ",
            DB::TASK_SEQ
        ));
        query.push_bind(i64::from(per_job)).push(" ORDER BY job, n DESC");
        let rows = self.rows(query, "recent durations").await?;
        rows.iter()
            .map(|row| {
                let job: String = column(row, "job", || "a task".to_owned())?;
                let duration: i64 = column(row, "duration", || format!("a task of job {job}"))?;
                Ok((job, duration as f64))
            })
            .collect()
    }

    async fn prune_history(&self, keep_per_job: u32) -> Result<u64, Error> {
        // Finding the old tasks scans the whole history; done as a read, it doesn't hold the one
        // write lock that every group commit needs. The deletes then go in short transactions.
        let mut query = QueryBuilder::new(format!(
            "SELECT id FROM (
                 SELECT id, ROW_NUMBER() OVER (PARTITION BY job ORDER BY created_ms DESC, {} DESC) AS n
                 FROM tasks WHERE state NOT IN {OPEN_STATES}) AS ranked
             WHERE n > ",
            DB::TASK_SEQ
        ));
        query.push_bind(i64::from(keep_per_job));
        let rows = self.rows(query, "prune history").await?;
        let old = rows
            .iter()
            .map(|row| parse_task_id(&column::<_, String, _>(row, 0, || "a task to prune".to_owned())?))
            .collect::<Result<Vec<TaskId>, Error>>()?;
        super::prune_tasks(self, old).await
    }
}
