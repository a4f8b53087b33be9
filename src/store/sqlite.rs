//! The embedded default store: one SQLite file in the data directory, in WAL mode.
//!
//! Only what is SQLite's own lives here: its schema steps, opening the file, and checkpointing
//! the write-ahead log; everything else is the generic [`SqlStore`].

use std::path::Path;
use std::str::FromStr;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqlitePool};

use super::Error;
use super::sql::{self, Backend, SqlStore, query_err};

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
    super::sql::tokens_and_audit_step!("INTEGER PRIMARY KEY AUTOINCREMENT"),
    super::sql::PAUSE_STEP,
    super::sql::NOTICES_STEP,
    super::sql::CLAIMANT_STEP,
];

impl Backend for Sqlite {
    const MIGRATIONS: &'static [&'static str] = MIGRATIONS;
    const VERSION_TABLE: &'static str =
        "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)";
    const TASK_SEQ: &'static str = "rowid";
    const LEAST: &'static str = "MIN";
    type State = Checkpoints;
    // One server owns the file: there is no one to be fenced from.
    const FENCE: &'static str = "";
}

/// The embedded store: [`SqlStore`] on one SQLite file.
pub type SqliteStore = SqlStore<Sqlite>;

/// The background checkpoints of a store's write-ahead log (see `open`), stopped with the store.
pub struct Checkpoints(tokio::task::JoinHandle<()>);

impl Drop for Checkpoints {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How often the write-ahead log is copied back into the database file.
const CHECKPOINT_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

/// Frames of log (4 KiB pages) past which a checkpoint waits for the writer to finish the log:
/// 64 MiB, a few seconds of the heaviest load measured (docs/reliability.md).
const LOG_LIMIT_FRAMES: i64 = 16_384;

/// Copies the write-ahead log into the database, in small steps. SQLite would otherwise do it
/// inside whichever commit crosses 1,000 pages of log, with an fsync, delaying that commit by
/// tens of milliseconds. A passive checkpoint on its own connection runs beside the writer; the
/// interval is short because a checkpoint's cost grows with the log it copies: measured at
/// 1,000 runs a second, checkpoints every 5 s, 1 s and 250 ms held launches back by about 80,
/// 20 and 5 ms each (the scheduling-lag benchmark in docs/performance.md). With nothing new in
/// the log, a checkpoint is a no-op.
///
/// A passive checkpoint never waits, so under writes that never pause it can fall behind for
/// good, and the log grows without bound (2 GB beside a 0.7 GB database was seen at 2,000 job
/// creates a second). Past [`LOG_LIMIT_FRAMES`] the checkpoint truncates instead: it waits its
/// turn for the writer lock (the busy timeout), copies the rest and empties the log.
async fn checkpoint_loop(pool: SqlitePool) {
    let mut tick = tokio::time::interval(CHECKPOINT_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let passive: Result<(i64, i64, i64), _> = sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
            .fetch_one(&pool)
            .await;
        match passive {
            Ok((_, log, _)) if log > LOG_LIMIT_FRAMES => {
                let truncate = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                    .execute(&pool)
                    .await;
                if let Err(error) = truncate {
                    tracing::warn!(%error, frames = log, "Truncating the SQLite log failed; retrying.");
                }
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "Checkpointing the SQLite log failed; retrying."),
        }
    }
}

impl SqlStore<Sqlite> {
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
            // A log emptied by a checkpoint is cut back to this size rather than kept at its peak.
            .pragma("journal_size_limit", "67108864")
            .busy_timeout(std::time::Duration::from_secs(10));
        // Migrations run on a connection of their own, closed before the pool opens: a pooled
        // connection that had read the schema before a migration changed a table would prepare
        // its queries against the old columns, and sqlx indexes rows by the columns it saw
        // first (a panic inside sqlx when SQLite re-prepares with more).
        {
            use sqlx::{ConnectOptions as _, Connection as _};
            let mut conn = options.connect().await.map_err(open_err)?;
            let mut tx = conn.begin().await.map_err(query_err("migrate"))?;
            sql::migrate::<Sqlite>(&mut tx).await?;
            tx.commit().await.map_err(query_err("migrate"))?;
            conn.close().await.map_err(query_err("migrate"))?;
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(open_err)?;
        let checkpoints = Checkpoints(tokio::spawn(checkpoint_loop(pool.clone())));
        Ok(SqlStore {
            pool,
            backend: checkpoints,
            term: sql::Term::unique(),
        })
    }
}
