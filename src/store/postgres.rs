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
    super::sql::CLAIMANT_STEP,
    // The leader lease: who holds it, until when (by the database's clock), in which term, and
    // the application name of the holder's sessions, so a successor can end them.
    r#"
ALTER TABLE leader ADD COLUMN epoch BIGINT NOT NULL DEFAULT 0;
ALTER TABLE leader ADD COLUMN expires TIMESTAMPTZ;
ALTER TABLE leader ADD COLUMN session TEXT;
"#,
];

/// Advisory lock keys are per database; both spell "kairos" in ASCII, plus a purpose number.
const MIGRATION_LOCK: i64 = 0x6b61_6972_6f73_0001;
pub(super) const LEADER_LOCK: i64 = 0x6b61_6972_6f73_0002;

/// How much sooner than the database a leader counts its lease as over: the two clocks are
/// compared only through lengths, and a renewal's start is taken before it is sent, so this
/// only has to cover the clocks' rates drifting apart over one lease.
const LEASE_MARGIN: Duration = Duration::from_millis(500);

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
    const FENCE: &'static str = "SELECT epoch FROM leader WHERE id = 1 FOR SHARE";
}

/// The shared store: [`SqlStore`] on a PostgreSQL database.
pub type PostgresStore = SqlStore<Postgres>;

/// What the leader lock needs besides the pool.
#[derive(Clone)]
pub struct Leadership {
    /// Kept to open the leader's dedicated connection, which must not come from the pool.
    options: PgConnectOptions,
    /// The URL without its password, for error messages.
    location: String,
    /// The application name of every session of this server, unique to the process: a
    /// successor ends them all when this server's lease runs out (it may be frozen, not dead).
    session: String,
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
        let session = format!("kairos-{}", sql::Term::unique().claimant);
        let options = PgConnectOptions::from_str(url)
            .map_err(open_err)?
            .application_name(&session);
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
            backend: Leadership {
                options,
                location,
                session,
            },
            term: sql::Term::unique(),
        })
    }

    /// The same database, committing as leader in the term `epoch` (from
    /// [`LeaderGuard::epoch`]): every commit fails with [`Error::Fenced`] once a successor has
    /// taken the lease.
    pub fn for_term(&self, epoch: i64) -> PostgresStore {
        SqlStore {
            pool: self.pool.clone(),
            backend: self.backend.clone(),
            term: sql::Term::new(format!("term-{epoch}"), Some(epoch)),
        }
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
    /// pool, plus a lease in the `leader` row that the holder renews ([`LeaderGuard::renew`]).
    /// The lock alone cannot tell a frozen leader (stopped, swapped out, paused by a debugger)
    /// from a live one: its session stays open. So when the lock is taken but the lease has run
    /// out by the database's clock, this ends every session of the holder
    /// (`pg_terminate_backend`), which frees the lock, and takes over.
    ///
    /// On success the term's epoch is raised, which fences every later commit of the previous
    /// leader (see [`PostgresStore::for_term`]); `holder` (the server's address) is recorded
    /// for [`PostgresStore::current_leader`]; and the guard owns the connection. `None` means a
    /// live leader holds the lease.
    ///
    /// # Errors
    /// Fails when the database cannot be reached or the lease cannot be recorded; the lock is
    /// not kept then.
    pub async fn try_acquire_leadership(
        &self,
        holder: &str,
        lease: Duration,
    ) -> Result<Option<LeaderGuard>, Error> {
        let open_err = |source| Error::Open {
            location: self.backend.location.clone(),
            source,
        };
        let options = self.backend.options.clone().options(LEADER_KEEPALIVES);
        let mut conn = PgConnection::connect_with(&options).await.map_err(open_err)?;
        let mut acquired = try_lock(&mut conn).await?;
        if !acquired && end_expired_leader(&mut conn).await? {
            // The lock goes with the ended sessions as soon as their backends exit.
            for _ in 0..40 {
                tokio::time::sleep(Duration::from_millis(50)).await;
                acquired = try_lock(&mut conn).await?;
                if acquired {
                    break;
                }
            }
        }
        if !acquired {
            let _ = conn.close().await;
            return Ok(None);
        }
        let began = tokio::time::Instant::now();
        // Should this fail, dropping `conn` ends the session and with it the lock.
        let epoch: i64 = sqlx::query_scalar(
            "INSERT INTO leader (id, holder, since, epoch, expires, session)
             VALUES (1, $1, now(), 1, now() + $2::float8 * interval '1 millisecond', $3)
             ON CONFLICT (id) DO UPDATE SET holder = excluded.holder, since = excluded.since,
                 epoch = leader.epoch + 1, expires = excluded.expires, session = excluded.session
             RETURNING epoch",
        )
        .bind(holder)
        .bind(lease.as_millis() as f64)
        .bind(&self.backend.session)
        .fetch_one(&mut conn)
        .await
        .map_err(query_err("record leader"))?;
        Ok(Some(LeaderGuard {
            conn: Some(conn),
            holder: holder.to_owned(),
            epoch,
            lease,
            valid_until: began + lease.saturating_sub(LEASE_MARGIN),
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

/// Whether the leader lock is free now; takes it if so.
async fn try_lock(conn: &mut PgConnection) -> Result<bool, Error> {
    sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(LEADER_LOCK)
        .fetch_one(conn)
        .await
        .map_err(query_err("acquire leadership"))
}

/// Ends every session of a leader whose lease has run out by the database's clock; returns
/// whether there was one.
async fn end_expired_leader(conn: &mut PgConnection) -> Result<bool, Error> {
    let expired: Option<Option<String>> =
        sqlx::query_scalar("SELECT session FROM leader WHERE id = 1 AND expires < now()")
            .fetch_optional(&mut *conn)
            .await
            .map_err(query_err("read the leader's lease"))?;
    let Some(session) = expired.flatten() else {
        return Ok(false);
    };
    let ended: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE application_name = $1 AND pid <> pg_backend_pid()) AS ended",
    )
    .bind(&session)
    .fetch_one(&mut *conn)
    .await
    .map_err(query_err("end the expired leader's sessions"))?;
    tracing::warn!(
        sessions = ended,
        "The leader's lease ran out while its lock was held (a frozen or stalled process); \
         ended its database sessions to take over."
    );
    Ok(ended > 0)
}

/// Leadership among the servers sharing one database: the leader lock, held for as long as
/// this guard's connection lives, and the lease, held for as long as [`LeaderGuard::renew`]
/// keeps succeeding.
///
/// If the connection dies (the database restarts, the network breaks, a successor ends the
/// session), PostgreSQL frees the lock and another server can take over. A leader that cannot
/// renew (frozen, or cut off from the database) loses the lease when it runs out by the
/// database's clock, and a successor ends its sessions. The holder therefore renews every
/// second or so and stops acting as leader as soon as [`LeaderGuard::valid_until`] has passed
/// by its own monotonic clock, which is the database's expiry less a margin; its commits are
/// fenced by the epoch besides (see [`PostgresStore::for_term`]), and
/// [`PostgresStore::claim_run`] guards against a double start regardless.
///
/// Dropping the guard closes the connection, and the server frees the lock as soon as it sees
/// the socket close, normally within milliseconds; [`LeaderGuard::close`] frees it before
/// returning.
#[derive(Debug)]
pub struct LeaderGuard {
    /// `None` once the connection was found dead or closed.
    conn: Option<PgConnection>,
    holder: String,
    epoch: i64,
    lease: Duration,
    /// Until when (monotonic) this leader may act.
    valid_until: tokio::time::Instant,
}

impl LeaderGuard {
    /// The holder recorded when leadership was taken.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// The term of this leadership, raised by every takeover.
    pub fn epoch(&self) -> i64 {
        self.epoch
    }

    /// Until when this leader may act, by the process's monotonic clock: past it, a successor
    /// may have taken over.
    pub fn valid_until(&self) -> tokio::time::Instant {
        self.valid_until
    }

    /// Renews the lease for another lease length; returns whether leadership is still held.
    ///
    /// Once this returns false the connection is dropped, so the lock is surely given up, and
    /// every later call returns false too: leadership, once lost, must be acquired anew. A
    /// renewal that takes longer than the lease counts as failed.
    pub async fn renew(&mut self) -> bool {
        let Some(conn) = self.conn.as_mut() else {
            return false;
        };
        let began = tokio::time::Instant::now();
        let renew = sqlx::query(
            "UPDATE leader SET expires = now() + $1::float8 * interval '1 millisecond'
             WHERE id = 1 AND epoch = $2",
        )
        .bind(self.lease.as_millis() as f64)
        .bind(self.epoch)
        .execute(&mut *conn);
        let renewed = matches!(
            tokio::time::timeout(self.lease, renew).await,
            Ok(Ok(done)) if done.rows_affected() == 1
        );
        if renewed && began < self.valid_until {
            self.valid_until = began + self.lease.saturating_sub(LEASE_MARGIN);
            return true;
        }
        // Renewed too late (the process was frozen past the lease): a successor may have
        // taken over in the meantime, so this term is over either way.
        self.conn = None;
        false
    }

    /// Gives up leadership now: clears the recorded holder and the lease, releases the lock and
    /// closes the connection.
    ///
    /// # Errors
    /// Fails when the session was already broken; the lock is gone either way, because the
    /// connection is closed regardless.
    pub async fn close(mut self) -> Result<(), Error> {
        let Some(mut conn) = self.conn.take() else {
            return Ok(());
        };
        // Clear the holder while the lock is still ours, so we cannot erase a successor's name.
        let cleared = sqlx::query(
            "UPDATE leader SET holder = NULL, since = now(), expires = NULL, session = NULL
             WHERE id = 1 AND epoch = $1",
        )
        .bind(self.epoch)
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
