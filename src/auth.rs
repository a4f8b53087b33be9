//! Who may do what: principals, roles, API tokens and task tokens. No HTTP here: `api::guard`
//! reads credentials from requests and asks this module; the engine keeps the token table.
//!
//! Secrets are never stored or logged: API tokens are kept as SHA-256 hashes, and every
//! comparison of a secret runs in constant time.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::job::TaskId;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum Error {
    #[error("'{0}' is not a role; use read, operate or admin")]
    UnknownRole(String),
    #[error("credentials must be USER:PASSWORD with neither part empty")]
    Credentials,
    #[error("cannot read random bytes for a secret: {0}")]
    Random(String),
}

/// What a principal may do; each role includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Every GET except tokens and the audit log.
    Read,
    /// Read, plus run now, kill, mark success, async completion and progress.
    Operate,
    /// Everything: jobs, tokens, the audit log.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Operate => "operate",
            Role::Admin => "admin",
        }
    }

    /// # Errors
    /// An unknown role name.
    pub fn parse(text: &str) -> Result<Role, Error> {
        match text {
            "read" => Ok(Role::Read),
            "operate" => Ok(Role::Operate),
            "admin" => Ok(Role::Admin),
            other => Err(Error::UnknownRole(other.to_owned())),
        }
    }
}

/// Who made a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// The `--http-credentials` user: an admin.
    Admin { user: String },
    /// An API token, by name.
    Token { name: String, role: Role },
    /// A task's own token: it may complete the task and report its progress, nothing else.
    Task { task_id: TaskId },
    /// Authentication is off (loopback without credentials, or `--insecure-no-auth`).
    Anonymous,
}

impl Principal {
    /// The name recorded in the audit log.
    pub fn name(&self) -> String {
        match self {
            Principal::Admin { user } => user.clone(),
            Principal::Token { name, .. } => format!("token:{name}"),
            Principal::Task { task_id } => format!("task:{task_id}"),
            Principal::Anonymous => "anonymous".to_owned(),
        }
    }

    /// The role, for the audit log and for checks; a task token has none of its own.
    pub fn role(&self) -> Option<Role> {
        match self {
            Principal::Admin { .. } | Principal::Anonymous => Some(Role::Admin),
            Principal::Token { role, .. } => Some(*role),
            Principal::Task { .. } => None,
        }
    }
}

/// The admin's `USER:PASSWORD` (Chronos' `--http_credentials`).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}:***)", self.user)
    }
}

impl Credentials {
    /// # Errors
    /// Text that is not `USER:PASSWORD` with both parts non-empty.
    pub fn parse(text: &str) -> Result<Credentials, Error> {
        match text.split_once(':') {
            Some((user, password)) if !user.is_empty() && !password.is_empty() => Ok(Credentials {
                user: user.to_owned(),
                password: password.to_owned(),
            }),
            _ => Err(Error::Credentials),
        }
    }

    /// Whether a Basic user and password are these, in constant time.
    pub fn matches(&self, user: &str, password: &str) -> bool {
        let user_ok = user.as_bytes().ct_eq(self.user.as_bytes());
        let password_ok = password.as_bytes().ct_eq(self.password.as_bytes());
        bool::from(user_ok & password_ok)
    }

    /// The key for task tokens, derived from the admin password: every server of a cluster
    /// (which share the password) signs and checks the same tokens, across restarts, and a new
    /// password revokes them all.
    pub fn task_tokens(&self) -> TaskTokens {
        let mut hasher = Sha256::new();
        hasher.update(b"kairos task tokens\0");
        hasher.update(self.user.as_bytes());
        hasher.update(b"\0");
        hasher.update(self.password.as_bytes());
        TaskTokens {
            key: hasher.finalize().to_vec(),
        }
    }
}

/// Signs and checks the token each task gets in `KAIROS_TASK_TOKEN`.
#[derive(Clone)]
pub struct TaskTokens {
    key: Vec<u8>,
}

impl std::fmt::Debug for TaskTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TaskTokens(***)")
    }
}

impl TaskTokens {
    fn mac(&self, task_id: &TaskId) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
        mac.update(task_id.as_bytes());
        mac
    }

    /// The task's token: `kt_<task id, hex>_<signature, hex>`, so that it names its task.
    pub fn token(&self, task_id: &TaskId) -> String {
        let signature = self.mac(task_id).finalize().into_bytes();
        format!("kt_{}_{}", hex(task_id.as_bytes()), hex(&signature))
    }

    /// The task a token was issued to, if it is genuine.
    pub fn verify(&self, token: &str) -> Option<TaskId> {
        let rest = token.strip_prefix("kt_")?;
        let (id, signature) = rest.split_once('_')?;
        let task_id = TaskId::parse(std::str::from_utf8(&unhex(id)?).ok()?)?;
        let signature = unhex(signature)?;
        self.mac(&task_id).verify_slice(&signature).ok()?;
        Some(task_id)
    }
}

/// An API token as the engine keeps it (never its secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub name: String,
    pub role: Role,
    /// SHA-256 of the secret, hex.
    pub hash: String,
    pub created_ms: i64,
    pub last_used_ms: Option<i64>,
}

/// The token table, shared between the engine (which changes and stores it) and the guard
/// (which looks secrets up in it), by hash.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    by_hash: Arc<RwLock<HashMap<String, Token>>>,
}

impl Tokens {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Token>> {
        self.by_hash
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Token>> {
        self.by_hash
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The token whose secret this is. The table is keyed by hash, so the lookup compares
    /// hashes, not secrets: timing says nothing about a secret.
    pub fn find(&self, secret: &str) -> Option<Token> {
        self.read().get(&hash_secret(secret)).cloned()
    }

    pub fn put(&self, token: Token) {
        let mut tokens = self.write();
        tokens.retain(|_, t| t.name != token.name);
        tokens.insert(token.hash.clone(), token);
    }

    pub fn remove(&self, name: &str) -> Option<Token> {
        let mut tokens = self.write();
        let hash = tokens.values().find(|t| t.name == name)?.hash.clone();
        tokens.remove(&hash)
    }

    /// Every token, by name.
    pub fn list(&self) -> Vec<Token> {
        let mut tokens: Vec<Token> = self.read().values().cloned().collect();
        tokens.sort_by(|a, b| a.name.cmp(&b.name));
        tokens
    }

    pub fn named(&self, name: &str) -> Option<Token> {
        self.read().values().find(|t| t.name == name).cloned()
    }

    /// Notes a use; returns true when it is worth recording (the last one recorded is over a
    /// minute old), so that a busy token does not cost a write per request.
    pub fn used(&self, hash: &str, now_ms: i64) -> bool {
        let mut tokens = self.write();
        let Some(token) = tokens.get_mut(hash) else {
            return false;
        };
        let stale = token.last_used_ms.is_none_or(|t| now_ms - t > 60_000);
        if stale {
            token.last_used_ms = Some(now_ms);
        }
        stale
    }
}

/// SHA-256 of a token's secret, hex: what is stored.
pub fn hash_secret(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

/// A new API token secret: 32 random bytes, hex, with a prefix that says what it is.
///
/// # Errors
/// When the system's random source cannot be read.
pub fn new_secret() -> Result<String, Error> {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .map_err(|e| Error::Random(e.to_string()))?;
    Ok(format!("kairos_{}", hex(&bytes)))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_match_only_themselves_and_never_print_the_password() {
        let c = Credentials::parse("admin:s3:cret").unwrap();
        assert!(c.matches("admin", "s3:cret"));
        assert!(!c.matches("admin", "s3:cre"));
        assert!(!c.matches("root", "s3:cret"));
        assert!(!format!("{c:?}").contains("s3"));
        for bad in ["admin", ":x", "admin:", ""] {
            assert_eq!(Credentials::parse(bad), Err(Error::Credentials), "{bad}");
        }
    }

    #[test]
    fn task_tokens_name_their_task_and_cannot_be_forged() {
        let tokens = Credentials::parse("a:b").unwrap().task_tokens();
        let token = tokens.token(&TaskId::new(1, 0, "job", ""));
        assert_eq!(tokens.verify(&token).as_deref(), Some("ct:1:0:job:"));
        // Another task id with the same signature, another key, or garbage: refused.
        let forged = token.replace(&hex(b"ct:1:0:job:"), &hex(b"ct:1:0:other:"));
        assert_eq!(tokens.verify(&forged), None);
        let other = Credentials::parse("a:c").unwrap().task_tokens();
        assert_eq!(other.verify(&token), None);
        assert_eq!(tokens.verify("kt_zz_00"), None);
        assert_eq!(tokens.verify("Bearer"), None);
    }

    #[test]
    fn the_token_table_finds_by_secret_and_keeps_one_per_name() {
        let tokens = Tokens::default();
        let secret = new_secret().unwrap();
        assert!(secret.starts_with("kairos_") && secret.len() == 7 + 64);
        tokens.put(Token {
            name: "ci".into(),
            role: Role::Operate,
            hash: hash_secret(&secret),
            created_ms: 1,
            last_used_ms: None,
        });
        assert_eq!(tokens.find(&secret).map(|t| t.role), Some(Role::Operate));
        assert_eq!(tokens.find("kairos_wrong"), None);
        assert!(tokens.used(&hash_secret(&secret), 100_000));
        assert!(
            !tokens.used(&hash_secret(&secret), 100_500),
            "recorded at most once a minute"
        );
        assert_eq!(tokens.remove("ci").map(|t| t.name), Some("ci".into()));
        assert!(tokens.list().is_empty());
    }

    #[test]
    fn roles_are_ordered_and_named() {
        assert!(Role::Read < Role::Operate && Role::Operate < Role::Admin);
        for role in [Role::Read, Role::Operate, Role::Admin] {
            assert_eq!(Role::parse(role.as_str()), Ok(role));
        }
        assert!(Role::parse("root").is_err());
    }
}
