//! The embedded default store: one SQLite file in the data directory, in WAL mode.

use std::path::Path;
use std::str::FromStr;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Row, SqlitePool};

use super::sql::query_err;
use super::{Error, LostClaims, Store, StoredJob, TaskRecord, TaskState, Write, sql};

/// Versioned schema steps; `schema_version` records how many have been applied.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    body TEXT NOT NULL,
    satisfied TEXT NOT NULL DEFAULT '[]'
);
CREATE TABLE tasks (
    id TEXT PRIMARY KEY,
    job TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    due_ms INTEGER NOT NULL,
    arguments TEXT NOT NULL,
    state TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    started_ms INTEGER,
    finished_ms INTEGER,
    exit_code INTEGER,
    message TEXT NOT NULL,
    stdout TEXT NOT NULL,
    stderr TEXT NOT NULL,
    elements_processed INTEGER NOT NULL DEFAULT 0,
    worker TEXT NOT NULL
);
CREATE INDEX tasks_by_job ON tasks (job, created_ms);
CREATE INDEX tasks_open ON tasks (state) WHERE state IN ('queued', 'running', 'waiting');
"#,
    r#"
CREATE TABLE run_claims (
    job TEXT NOT NULL,
    due_ms INTEGER NOT NULL,
    PRIMARY KEY (job, due_ms)
);
"#,
    "CREATE INDEX run_claims_by_due ON run_claims (due_ms);",
    // Before progress additions were clamped, a sum past i64 was stored by SQLite as REAL, which
    // no read can decode. CAST saturates a too-large REAL at the largest integer.
    "UPDATE tasks SET elements_processed = CAST(elements_processed AS INTEGER)
     WHERE typeof(elements_processed) <> 'integer';",
    r#"
CREATE TABLE launches (id INTEGER PRIMARY KEY CHECK (id = 1), through_ms INTEGER NOT NULL);
ALTER TABLE tasks ADD COLUMN scheduled INTEGER NOT NULL DEFAULT 0;
"#,
];

pub struct SqliteStore {
    pool: SqlitePool,
    /// Checkpoints the write-ahead log in the background (see `open`); stopped with the store.
    checkpoints: tokio::task::JoinHandle<()>,
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        self.checkpoints.abort();
    }
}

/// Old tasks deleted per transaction when pruning.
const PRUNE_CHUNK: usize = 500;

/// How often the write-ahead log is copied back into the database file.
const CHECKPOINT_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

/// Copies the write-ahead log into the database, in small steps. SQLite would otherwise do it
/// inside whichever commit crosses 1,000 pages of log, with an fsync, delaying that commit by
/// tens of milliseconds. A passive checkpoint on its own connection runs beside the writer; the
/// interval is short because a checkpoint's cost grows with the log it copies: measured at
/// 1,000 runs a second, checkpoints every 5 s, 1 s and 250 ms held launches back by about 80,
/// 20 and 5 ms each (the scheduling-lag benchmark in docs/performance.md). With nothing new in
/// the log, a checkpoint is a no-op.
async fn checkpoint_loop(pool: SqlitePool) {
    let mut tick = tokio::time::interval(CHECKPOINT_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(error) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").execute(&pool).await {
            tracing::warn!(%error, "Checkpointing the SQLite log failed; retrying.");
        }
    }
}

impl SqliteStore {
    /// Opens (creating if needed) `kairos.db` in `dir` and brings its schema up to date.
    ///
    /// # Errors
    /// Fails when the file cannot be opened or migrated.
    pub async fn open(dir: &Path) -> Result<SqliteStore, Error> {
        let location = dir.join("kairos.db").display().to_string();
        let open_err = |source| Error::Open {
            location: location.clone(),
            source,
        };
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{location}"))
            .map_err(open_err)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // WAL with NORMAL survives a process crash without losing committed transactions;
            // only a power loss may drop the last few, which is SQLite's documented trade-off.
            .synchronous(SqliteSynchronous::Normal)
            // 8 MiB of page cache per connection instead of SQLite's 2 MiB: the recent tasks
            // that each group commit updates stay in memory instead of being read back.
            .pragma("cache_size", "-8192")
            // Checkpoints run in the background instead (`checkpoint_loop`).
            .pragma("wal_autocheckpoint", "0")
            .busy_timeout(std::time::Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(open_err)?;
        let checkpoints = tokio::spawn(checkpoint_loop(pool.clone()));
        let store = SqliteStore { pool, checkpoints };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<(), Error> {
        let mut tx = self.pool.begin().await.map_err(query_err("migrate"))?;
        sqlx::query("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            .execute(&mut *tx)
            .await
            .map_err(query_err("migrate"))?;
        let version: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM schema_version")
            .fetch_one(&mut *tx)
            .await
            .map_err(query_err("migrate"))?;
        let applied = usize::try_from(version.unwrap_or(0)).unwrap_or(0);
        for (index, step) in MIGRATIONS.iter().enumerate().skip(applied) {
            sqlx::raw_sql(*step)
                .execute(&mut *tx)
                .await
                .map_err(query_err("migrate"))?;
            sqlx::query("INSERT INTO schema_version (version) VALUES (?)")
                .bind(index as i64 + 1)
                .execute(&mut *tx)
                .await
                .map_err(query_err("migrate"))?;
        }
        tx.commit().await.map_err(query_err("migrate"))
    }
}

/// Reads one column, reporting a missing column or a type mismatch as a corrupt row instead of
/// panicking as `Row::get` would.
fn column<'r, T>(row: &'r SqliteRow, name: &str, what: impl FnOnce() -> String) -> Result<T, Error>
where
    T: sqlx::Decode<'r, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite>,
{
    row.try_get(name).map_err(|e| Error::Corrupt {
        what: what(),
        reason: format!("column {name}: {e}"),
    })
}

fn task_from_row(row: &SqliteRow) -> Result<TaskRecord, Error> {
    let id: String = column(row, "id", || "a task".to_owned())?;
    let what = || format!("task {id}");
    let state: String = column(row, "state", what)?;
    let state = TaskState::parse(&state).ok_or_else(|| Error::Corrupt {
        what: what(),
        reason: format!("unknown state {state:?}"),
    })?;
    Ok(TaskRecord {
        job: column(row, "job", what)?,
        attempt: u32::try_from(column::<i64>(row, "attempt", what)?).unwrap_or(0),
        due_ms: column(row, "due_ms", what)?,
        arguments: column(row, "arguments", what)?,
        state,
        created_ms: column(row, "created_ms", what)?,
        started_ms: column(row, "started_ms", what)?,
        finished_ms: column(row, "finished_ms", what)?,
        exit_code: column::<Option<i64>>(row, "exit_code", what)?.map(|c| c as i32),
        message: column(row, "message", what)?,
        stdout: column(row, "stdout", what)?,
        stderr: column(row, "stderr", what)?,
        elements_processed: column(row, "elements_processed", what)?,
        worker: column(row, "worker", what)?,
        scheduled: column::<i64>(row, "scheduled", what)? != 0,
        id,
    })
}

impl Store for SqliteStore {
    async fn commit(&self, batch: &[Write]) -> Result<LostClaims, Error> {
        sql::commit(&self.pool, batch).await
    }

    async fn load_jobs(&self) -> Result<Vec<StoredJob>, Error> {
        let rows = sqlx::query("SELECT name, body, satisfied FROM jobs ORDER BY seq")
            .fetch_all(&self.pool)
            .await
            .map_err(query_err("load jobs"))?;
        rows.iter()
            .map(|row| {
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
            })
            .collect()
    }

    async fn load_open_tasks(&self) -> Result<Vec<TaskRecord>, Error> {
        let rows = sqlx::query(
            "SELECT * FROM tasks WHERE state IN ('queued', 'running', 'waiting') ORDER BY created_ms",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(query_err("load open tasks"))?;
        rows.iter().map(task_from_row).collect()
    }

    async fn launched_through(&self) -> Result<i64, Error> {
        let through: Option<i64> = sqlx::query_scalar("SELECT MAX(through_ms) FROM launches")
            .fetch_one(&self.pool)
            .await
            .map_err(query_err("read the launch mark"))?;
        Ok(through.unwrap_or(0))
    }

    async fn task(&self, id: &str) -> Result<Option<TaskRecord>, Error> {
        let row = sqlx::query("SELECT * FROM tasks WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(query_err("get task"))?;
        row.as_ref().map(task_from_row).transpose()
    }

    async fn job_tasks(&self, job: &str, limit: u32) -> Result<Vec<TaskRecord>, Error> {
        let rows =
            sqlx::query("SELECT * FROM tasks WHERE job = ? ORDER BY created_ms DESC, rowid DESC LIMIT ?")
                .bind(job)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await
                .map_err(query_err("job tasks"))?;
        rows.iter().map(task_from_row).collect()
    }

    async fn recent_durations(&self, per_job: u32) -> Result<Vec<(String, f64)>, Error> {
        let rows = sqlx::query(
            "SELECT job, duration FROM (
                 SELECT job, finished_ms - started_ms AS duration,
                        ROW_NUMBER() OVER (PARTITION BY job ORDER BY finished_ms DESC) AS n
                 FROM tasks WHERE state = 'finished' AND started_ms IS NOT NULL AND finished_ms IS NOT NULL)
             WHERE n <= ? ORDER BY job, n DESC",
        )
        .bind(i64::from(per_job))
        .fetch_all(&self.pool)
        .await
        .map_err(query_err("recent durations"))?;
        rows.iter()
            .map(|row| {
                let job: String = column(row, "job", || "a task".to_owned())?;
                let duration: i64 = column(row, "duration", || format!("a task of job {job}"))?;
                Ok((job, duration as f64))
            })
            .collect()
    }

    async fn add_progress(&self, task_id: &str, elements: i64) -> Result<bool, Error> {
        // Clamped at i64::MAX: past it SQLite would store a REAL that no read can decode.
        let done = sqlx::query(
            "UPDATE tasks SET elements_processed = MIN(elements_processed, 9223372036854775807 - ?1) + ?1
             WHERE id = ?2",
        )
        .bind(elements.max(0))
        .bind(task_id)
        .execute(&self.pool)
        .await
        .map_err(query_err("add progress"))?;
        Ok(done.rows_affected() > 0)
    }

    async fn prune_history(&self, keep_per_job: u32) -> Result<u64, Error> {
        // Finding the old tasks scans the whole history; done as a read, it doesn't hold the one
        // write lock that every group commit needs. The deletes then go in short transactions.
        let old: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM (
                 SELECT id, ROW_NUMBER() OVER (PARTITION BY job ORDER BY created_ms DESC) AS n
                 FROM tasks WHERE state NOT IN ('queued', 'running', 'waiting'))
             WHERE n > ?",
        )
        .bind(i64::from(keep_per_job))
        .fetch_all(&self.pool)
        .await
        .map_err(query_err("prune history"))?;
        let mut pruned = 0;
        for chunk in old.chunks(PRUNE_CHUNK) {
            let mut query = sqlx::QueryBuilder::<sqlx::Sqlite>::new("DELETE FROM tasks WHERE id IN (");
            let mut ids = query.separated(", ");
            for id in chunk {
                ids.push_bind(id.clone());
            }
            query.push(") AND state NOT IN ('queued', 'running', 'waiting')");
            let done = query
                .build()
                .execute(&self.pool)
                .await
                .map_err(query_err("prune history"))?;
            pruned += done.rows_affected();
        }
        Ok(pruned)
    }

    async fn prune_claims(&self, before_ms: i64) -> Result<u64, Error> {
        let mut pruned = 0;
        loop {
            let done = sqlx::query(
                "DELETE FROM run_claims WHERE rowid IN (
                     SELECT rowid FROM run_claims WHERE due_ms < ? LIMIT ?)",
            )
            .bind(before_ms)
            .bind(PRUNE_CHUNK as i64)
            .execute(&self.pool)
            .await
            .map_err(query_err("prune claims"))?;
            pruned += done.rows_affected();
            if done.rows_affected() < PRUNE_CHUNK as u64 {
                return Ok(pruned);
            }
        }
    }
}
