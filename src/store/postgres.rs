//! The shared store: one PostgreSQL database that several kairos servers can use at once.
//!
//! It keeps the same tables and the same semantics as the SQLite store, so the engine cannot tell
//! them apart. On top of that it has what high availability needs and SQLite cannot give: a
//! claim table that lets exactly one server start a given scheduled run, and a leader lease built
//! on a session-level advisory lock.
//!
//! Only what is PostgreSQL's own lives here: its schema steps, connecting and migrating under an
//! advisory lock, and the leader lease; everything else is the generic [`SqlStore`].

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgConnection, PgPoolOptions};
use sqlx::{Connection, Postgres};

use super::sql::{self, Backend, SqlStore, query_err};
use super::{Error, Store, Write};

/// Versioned schema steps; `schema_version` records how many have been applied.
///
/// Step 1 is SQLite's step 1 in PostgreSQL types. SQLite's implicit `rowid`, which breaks ties
/// between tasks created in the same millisecond, becomes an explicit `seq` here. Step 2 holds the
/// tables only a shared database needs. A new SQLite step gets its PostgreSQL twin appended here;
/// the two version counters need not be equal.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE jobs (
    seq BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    body TEXT NOT NULL,
    satisfied TEXT NOT NULL DEFAULT '[]'
);
CREATE TABLE tasks (
    seq BIGSERIAL NOT NULL,
    id TEXT PRIMARY KEY,
    job TEXT NOT NULL,
    attempt BIGINT NOT NULL,
    due_ms BIGINT NOT NULL,
    arguments TEXT NOT NULL,
    state TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    started_ms BIGINT,
    finished_ms BIGINT,
    exit_code BIGINT,
    message TEXT NOT NULL,
    stdout TEXT NOT NULL,
    stderr TEXT NOT NULL,
    elements_processed BIGINT NOT NULL DEFAULT 0,
    worker TEXT NOT NULL
);
CREATE INDEX tasks_by_job ON tasks (job, created_ms);
CREATE INDEX tasks_open ON tasks (state) WHERE state IN ('queued', 'running', 'waiting');
"#,
    r#"
CREATE TABLE run_claims (
    job TEXT NOT NULL,
    due_ms BIGINT NOT NULL,
    PRIMARY KEY (job, due_ms)
);
CREATE TABLE leader (
    id INT PRIMARY KEY CHECK (id = 1),
    holder TEXT,
    since TIMESTAMPTZ
);
"#,
    "CREATE INDEX run_claims_by_due ON run_claims (due_ms);",
    r#"
CREATE TABLE launches (id INT PRIMARY KEY CHECK (id = 1), through_ms BIGINT NOT NULL);
ALTER TABLE tasks ADD COLUMN scheduled BIGINT NOT NULL DEFAULT 0;
"#,
    super::sql::tokens_and_audit_step!("BIGSERIAL PRIMARY KEY"),
    super::sql::PAUSE_STEP,
    super::sql::NOTICES_STEP,
];

/// Advisory lock keys are per database; both spell "kairos" in ASCII, plus a purpose number.
const MIGRATION_LOCK: i64 = 0x6b61_6972_6f73_0001;
pub(super) const LEADER_LOCK: i64 = 0x6b61_6972_6f73_0002;

/// How long a liveness ping of the leader's connection may take before the lease counts as lost.
const PING_TIMEOUT: Duration = Duration::from_secs(5);

/// TCP keepalive settings for the leader's session, so the server notices a vanished leader and
/// frees its lock in about 10 + 3 × 5 = 25 seconds instead of the system default of two hours.
const LEADER_KEEPALIVES: [(&str, &str); 3] = [
    ("tcp_keepalives_idle", "10"),
    ("tcp_keepalives_interval", "5"),
    ("tcp_keepalives_count", "3"),
];

impl Backend for Postgres {
    const MIGRATIONS: &'static [&'static str] = MIGRATIONS;
    const VERSION_TABLE: &'static str = "CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)";
    const TASK_SEQ: &'static str = "seq";
    const LEAST: &'static str = "LEAST";
    type State = Leadership;
}

/// The shared store: [`SqlStore`] on a PostgreSQL database.
pub type PostgresStore = SqlStore<Postgres>;

/// What the leader lock needs besides the pool.
pub struct Leadership {
    /// Kept to open the leader's dedicated connection, which must not come from the pool.
    options: PgConnectOptions,
    /// The URL without its password, for error messages.
    location: String,
}

/// The URL with any password removed, from the user-info part and from a `password=` query
/// parameter, so it can go into logs and error messages.
///
/// It errs on the side of removing too much: a URL malformed enough to be refused may still hold
/// a password, and a password may contain `/`, `?` or `@`.
pub(super) fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        // sqlx accepts only URLs, so this is refused anyway; a key=value string may hold secrets.
        return "<not a postgres:// URL>".to_owned();
    };
    // The last `@` ends the user info even when the password contains `@` itself.
    let rest = match rest.rsplit_once('@') {
        Some((userinfo, host_and_more)) => {
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{user}@{host_and_more}")
        }
        None => rest.to_owned(),
    };
    let (head, query) = match rest.split_once('?') {
        Some((head, query)) => (head, Some(query)),
        None => (rest.as_str(), None),
    };
    let mut out = format!("{scheme}://{head}");
    if let Some(query) = query {
        let pairs: Vec<&str> = query
            .split('&')
            .map(|pair| {
                let key = pair.split('=').next().unwrap_or_default();
                if key.eq_ignore_ascii_case("password") {
                    "password=<redacted>"
                } else {
                    pair
                }
            })
            .collect();
        out.push('?');
        out.push_str(&pairs.join("&"));
    }
    out
}

impl SqlStore<Postgres> {
    /// Connects to the database at `url` (a `postgres://` URL) and brings its schema up to date.
    ///
    /// Several servers may open the same database at once: migrations run under a transaction
    /// advisory lock, so one applies them and the others find them done.
    ///
    /// # Errors
    /// Fails when the URL is malformed, the server cannot be reached or refuses the login, or a
    /// migration fails.
    pub async fn open(url: &str) -> Result<PostgresStore, Error> {
        let location = redact_url(url);
        let open_err = |source| Error::Open {
            location: location.clone(),
            source,
        };
        let options = PgConnectOptions::from_str(url).map_err(open_err)?;
        // One direct connection first: the pool retries refused connections until its timeout
        // and then reports only "timed out", while this reports the real cause at once.
        let mut conn = PgConnection::connect_with(&options).await.map_err(open_err)?;
        // Under a transaction advisory lock, so servers starting together against a fresh
        // database do not both create the tables.
        let mut tx = conn.begin().await.map_err(query_err("migrate"))?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(MIGRATION_LOCK)
            .execute(&mut *tx)
            .await
            .map_err(query_err("migrate"))?;
        sql::migrate::<Postgres>(&mut tx).await?;
        tx.commit().await.map_err(query_err("migrate"))?;
        // Closing politely is a courtesy; the schema is already committed.
        let _ = conn.close().await;
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(30))
            .connect_lazy_with(options.clone());
        Ok(SqlStore {
            pool,
            backend: Leadership { options, location },
        })
    }

    /// Records that the scheduled run of `job` due at `due_ms` has been taken.
    ///
    /// Returns true for the first caller only, on any server sharing the database, and false for
    /// every later one; a server starts the run only when this returns true. Claims go away
    /// with their job.
    ///
    /// # Errors
    /// Fails when the database cannot be reached.
    pub async fn claim_run(&self, job: &str, due_ms: i64) -> Result<bool, Error> {
        let claim = Write::ClaimRun {
            job: job.to_owned(),
            due_ms,
            task_id: crate::job::TaskId::new(due_ms, 0, job, ""),
        };
        Ok(self.commit(&[claim]).await?.lost_claims.is_empty())
    }

    /// Tries to become the leader among the servers sharing this database, without waiting.
    ///
    /// Leadership is a session-level advisory lock held by a connection of its own, outside the
    /// pool, and lasts exactly as long as that session. On success `holder` (the server's
    /// `host:port`) is recorded for [`PostgresStore::current_leader`] and the returned guard owns
    /// the connection. `None` means another session holds the lock.
    ///
    /// # Errors
    /// Fails when the database cannot be reached or the holder cannot be recorded; the lock is
    /// not kept then.
    pub async fn try_acquire_leadership(&self, holder: &str) -> Result<Option<LeaderGuard>, Error> {
        let open_err = |source| Error::Open {
            location: self.backend.location.clone(),
            source,
        };
        let options = self.backend.options.clone().options(LEADER_KEEPALIVES);
        let mut conn = PgConnection::connect_with(&options).await.map_err(open_err)?;
        let acquired: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(LEADER_LOCK)
            .fetch_one(&mut conn)
            .await
            .map_err(query_err("acquire leadership"))?;
        if !acquired {
            let _ = conn.close().await;
            return Ok(None);
        }
        // Should this fail, dropping `conn` ends the session and with it the lock.
        sqlx::query(
            "INSERT INTO leader (id, holder, since) VALUES (1, $1, now())
             ON CONFLICT (id) DO UPDATE SET holder = excluded.holder, since = excluded.since",
        )
        .bind(holder)
        .execute(&mut conn)
        .await
        .map_err(query_err("record leader"))?;
        Ok(Some(LeaderGuard {
            conn: Some(conn),
            holder: holder.to_owned(),
        }))
    }

    /// The `holder` of the current leader, or `None` when no server holds the leader lock.
    ///
    /// The recorded holder counts only while some session holds the lock, so a leader that died
    /// without cleaning up is not reported once the server has ended its session.
    ///
    /// # Errors
    /// Fails when the database cannot be reached.
    pub async fn current_leader(&self) -> Result<Option<String>, Error> {
        // A bigint advisory key shows in pg_locks as its high half in classid, its low half in
        // objid, and objsubid 1.
        let holder: Option<Option<String>> = sqlx::query_scalar(
            "SELECT holder FROM leader WHERE id = 1 AND EXISTS (
                 SELECT 1 FROM pg_locks
                 WHERE locktype = 'advisory' AND granted AND objsubid = 1
                   AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
                   AND classid::bigint = ($1 >> 32) AND objid::bigint = ($1 & 4294967295))",
        )
        .bind(LEADER_LOCK)
        .fetch_optional(&self.pool)
        .await
        .map_err(query_err("current leader"))?;
        Ok(holder.flatten())
    }
}

/// Leadership among the servers sharing one database, held for as long as this guard's
/// connection lives.
///
/// If the connection dies (the database restarts, the network breaks, an administrator ends the
/// session), PostgreSQL frees the lock and another server can take over. The holder therefore
/// has to call [`LeaderGuard::is_alive`] every few seconds and stop acting as leader as soon as
/// it returns false. A leader cut off from the database notices within the 5-second ping
/// timeout, while the server frees the lock of an unreachable client only after about 25 seconds
/// of failed TCP keepalives, so the old leader has stepped down before a new one can start,
/// provided it pings more often than every 20 seconds. [`PostgresStore::claim_run`] guards
/// against a double start regardless.
///
/// Dropping the guard closes the connection, and the server frees the lock as soon as it sees
/// the socket close, normally within milliseconds; [`LeaderGuard::close`] frees it before
/// returning.
#[derive(Debug)]
pub struct LeaderGuard {
    /// `None` once the connection was found dead or closed.
    conn: Option<PgConnection>,
    holder: String,
}

impl LeaderGuard {
    /// The holder recorded when leadership was taken.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// Whether leadership is still held: the session answers a `SELECT 1` within 5 seconds.
    ///
    /// Once this returns false the connection is dropped, so the lock is surely given up, and
    /// every later call returns false too: leadership, once lost, must be acquired anew.
    pub async fn is_alive(&mut self) -> bool {
        let Some(conn) = self.conn.as_mut() else {
            return false;
        };
        let ping = sqlx::query("SELECT 1").execute(&mut *conn);
        let alive = matches!(tokio::time::timeout(PING_TIMEOUT, ping).await, Ok(Ok(_)));
        if !alive {
            self.conn = None;
        }
        alive
    }

    /// Gives up leadership now: clears the recorded holder, releases the lock and closes the
    /// connection.
    ///
    /// # Errors
    /// Fails when the session was already broken; the lock is gone either way, because the
    /// connection is closed regardless.
    pub async fn close(mut self) -> Result<(), Error> {
        let Some(mut conn) = self.conn.take() else {
            return Ok(());
        };
        // Clear the holder while the lock is still ours, so we cannot erase a successor's name.
        let cleared =
            sqlx::query("UPDATE leader SET holder = NULL, since = now() WHERE id = 1 AND holder = $1")
                .bind(&self.holder)
                .execute(&mut conn)
                .await
                .map_err(query_err("release leadership"));
        let unlocked = sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(LEADER_LOCK)
            .execute(&mut conn)
            .await
            .map_err(query_err("release leadership"));
        let closed = conn.close().await.map_err(query_err("release leadership"));
        cleared.and(unlocked).and(closed).map(|_| ())
    }
}
