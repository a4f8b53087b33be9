//! Downloads a task's fetch entries into its sandbox before it starts, with the Mesos fetcher's
//! semantics: http(s), `file://` and absolute-path sources, an optional output name, archive
//! extraction, the executable bit and a download cache.
//!
//! Local sources are read with the task's rights ([`Identity::open`]): a task gets only the
//! files its `runAsUser` could read itself, and a worker's `--fetch-schemes` limits the schemes.
//!
//! Every transfer is written to a uniquely named part file beside its destination and renamed
//! into place only once complete, so a failed or timed-out fetch never leaves a truncated file
//! under the name a task (or a later cache lookup) would use.

use std::collections::hash_map::DefaultHasher;
use std::ffi::OsString;
use std::hash::{Hash, Hasher};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

use super::user::Identity;

/// One entry of a job's `fetch` list (or of its deprecated `uris`, which mean `extract: true`).
#[derive(Debug, Clone, PartialEq)]
pub struct FetchSpec {
    pub uri: String,
    pub executable: bool,
    pub cache: bool,
    pub extract: bool,
    pub output_file: String,
}

/// Why a fetch failed; the Display text becomes the failed task's message, so each one names the
/// URI and says what went wrong in a sentence.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "cannot fetch '{uri}': the scheme '{scheme}' is not supported (use http, https, file or an absolute path)"
    )]
    UnsupportedScheme { uri: String, scheme: String },
    #[error("cannot fetch '{uri}': the scheme '{scheme}' is not allowed here (allowed: {allowed})")]
    SchemeNotAllowed {
        uri: String,
        scheme: String,
        allowed: String,
    },
    #[error("cannot fetch '{uri}': runAsUser '{user}' may not read {}", .path.display())]
    NotReadable {
        uri: String,
        user: String,
        path: PathBuf,
    },
    #[error("cannot fetch '{uri}': it is neither an absolute path nor a URI with a scheme")]
    NotAbsolute { uri: String },
    #[error("cannot fetch '{uri}': the URI names no file, so an output_file is needed")]
    NoFileName { uri: String },
    #[error("cannot fetch '{uri}': the file name '{name}' {reason}")]
    BadFileName {
        uri: String,
        name: String,
        reason: &'static str,
    },
    #[error("cannot fetch '{uri}': {reason}")]
    Http { uri: String, reason: String },
    #[error("cannot fetch '{uri}': the server answered {status}")]
    Status {
        uri: String,
        status: reqwest::StatusCode,
    },
    #[error("cannot fetch '{uri}': the download did not finish within {timeout:?}")]
    Timeout { uri: String, timeout: Duration },
    #[error("cannot fetch '{uri}': cannot {action} {}: {source}", .path.display())]
    Io {
        uri: String,
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot fetch '{uri}': cannot extract {}: {reason}", .path.display())]
    Extract {
        uri: String,
        path: PathBuf,
        reason: String,
    },
}

/// Downloads every entry into `sandbox` (which exists), using `cache_dir` for `cache: true` entries.
///
/// Entries are fetched in order and the first failure stops the rest: the task cannot start
/// without all of them anyway. `timeout` bounds each entry's transfer (request, redirects and
/// body, or the local copy); extraction afterwards is not counted against it. Only `schemes`
/// may be used (`file` covers absolute paths), and local files are opened as `identity`.
pub async fn fetch_all(
    specs: &[FetchSpec],
    sandbox: &Path,
    cache_dir: &Path,
    timeout: Duration,
    identity: &Identity,
    schemes: &[String],
) -> Result<(), Error> {
    for spec in specs {
        check_scheme(&spec.uri, schemes)?;
    }
    // One client for the whole list so connections to the same host are reused; it is built only
    // when an http entry needs it.
    let mut client = None;
    for spec in specs {
        fetch_one(spec, &mut client, sandbox, cache_dir, timeout, identity).await?;
    }
    Ok(())
}

/// Refuses a URI whose scheme is not among `schemes` (an absolute path is a `file`). A URI
/// without a scheme kairos can fetch passes here and is refused, named, when it is fetched.
///
/// # Errors
/// [`Error::SchemeNotAllowed`], naming the URI, its scheme and the allowed ones.
pub fn check_scheme(uri: &str, schemes: &[String]) -> Result<(), Error> {
    let scheme = if uri.starts_with('/') {
        "file".to_owned()
    } else {
        match scheme_of(uri).map(str::to_ascii_lowercase) {
            Some(scheme) if super::DEFAULT_FETCH_SCHEMES.contains(&scheme.as_str()) => scheme,
            // Schemes kairos cannot fetch at all are refused as such when fetched.
            _ => return Ok(()),
        }
    };
    if schemes.iter().any(|s| s.eq_ignore_ascii_case(&scheme)) {
        Ok(())
    } else {
        Err(Error::SchemeNotAllowed {
            uri: uri.to_owned(),
            scheme,
            allowed: if schemes.is_empty() {
                "none".to_owned()
            } else {
                schemes.join(", ")
            },
        })
    }
}

/// Where an entry's bytes come from.
#[derive(Debug, Clone, PartialEq)]
enum Source {
    Http(String),
    Local(PathBuf),
}

async fn fetch_one(
    spec: &FetchSpec,
    client: &mut Option<reqwest::Client>,
    sandbox: &Path,
    cache_dir: &Path,
    timeout: Duration,
    identity: &Identity,
) -> Result<(), Error> {
    let uri = spec.uri.as_str();
    let source = parse_source(uri)?;
    let natural = natural_name(&source);
    let name = if spec.output_file.is_empty() {
        natural
            .clone()
            .ok_or_else(|| Error::NoFileName { uri: uri.to_owned() })?
    } else {
        spec.output_file.clone()
    };
    let relative = sandbox_relative(&name).map_err(|reason| Error::BadFileName {
        uri: uri.to_owned(),
        name: name.clone(),
        reason,
    })?;
    let dest = sandbox.join(&relative);
    prepare_parent(uri, sandbox, &dest).await?;

    // A local file is opened as the task's user before anything else, a cached copy or not:
    // what it may not read, it never gets.
    let input = match &source {
        Source::Http(url) => {
            if client.is_none() {
                *client = Some(build_client(uri)?);
            }
            Input::Http(url.clone())
        }
        Source::Local(path) => open_local(uri, path, identity).await?,
    };

    if spec.cache {
        let file_name = natural.unwrap_or_else(|| {
            relative
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        });
        let cached = cache_dir.join(cache_file_name(uri, &file_name));
        if is_file(&cached).await {
            tracing::debug!(uri, cached = %cached.display(), "fetch served from the cache");
        } else {
            tokio::fs::create_dir_all(cache_dir)
                .await
                .map_err(|source| io_error(uri, "create the cache directory", cache_dir, source))?;
            transfer(client.as_ref(), uri, input, &cached, timeout).await?;
        }
        let copy = tokio::fs::File::open(&cached)
            .await
            .map_err(|source| io_error(uri, "open", &cached, source))?;
        transfer(client.as_ref(), uri, Input::File(copy, cached), &dest, timeout).await?;
    } else {
        transfer(client.as_ref(), uri, input, &dest, timeout).await?;
    }

    if spec.executable {
        // Mesos never extracts an executable entry: the file itself is what the task runs.
        tokio::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o755))
            .await
            .map_err(|source| io_error(uri, "make executable", &dest, source))?;
    } else if spec.extract {
        let (owned_uri, file, dir) = (uri.to_owned(), dest.clone(), sandbox.to_path_buf());
        tokio::task::spawn_blocking(move || extract(&owned_uri, &file, &dir))
            .await
            .map_err(|e| Error::Extract {
                uri: uri.to_owned(),
                path: dest.clone(),
                reason: format!("the extraction stopped unexpectedly: {e}"),
            })??;
    }
    tracing::info!(uri, dest = %dest.display(), "fetched");
    Ok(())
}

/// Sorts a URI into an http(s) download or a local copy; `file://` and plain absolute paths are
/// local, and any other scheme is refused by name.
fn parse_source(uri: &str) -> Result<Source, Error> {
    if uri.starts_with('/') {
        return Ok(Source::Local(PathBuf::from(uri)));
    }
    let Some(scheme) = scheme_of(uri) else {
        return Err(Error::NotAbsolute { uri: uri.to_owned() });
    };
    match scheme.to_ascii_lowercase().as_str() {
        "http" | "https" => Ok(Source::Http(uri.to_owned())),
        "file" => {
            let rest = &uri[scheme.len() + 1..];
            let rest = rest.strip_prefix("//").unwrap_or(rest);
            // `file://localhost/x` is the same file as `file:///x`.
            let rest = rest.strip_prefix("localhost").unwrap_or(rest);
            if rest.starts_with('/') {
                Ok(Source::Local(PathBuf::from(rest)))
            } else {
                Err(Error::NotAbsolute { uri: uri.to_owned() })
            }
        }
        _ => Err(Error::UnsupportedScheme {
            uri: uri.to_owned(),
            scheme: scheme.to_owned(),
        }),
    }
}

/// The scheme of `uri` as RFC 3986 spells it (a letter, then letters, digits, `+`, `-`, `.`,
/// up to the first colon), or `None` when it has none.
fn scheme_of(uri: &str) -> Option<&str> {
    let (scheme, _) = uri.split_once(':')?;
    let mut chars = scheme.chars();
    let first = chars.next()?;
    let valid = first.is_ascii_alphabetic()
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    valid.then_some(scheme)
}

/// The file name a URI suggests: the last segment of its path, without query or fragment.
fn natural_name(source: &Source) -> Option<String> {
    match source {
        Source::Http(url) => {
            let rest = url.split_once("://").map_or(url.as_str(), |(_, r)| r);
            let rest = rest.split(['?', '#']).next().unwrap_or_default();
            let (_, path) = rest.split_once('/')?;
            let last = path.rsplit('/').next().unwrap_or_default();
            (!last.is_empty()).then(|| last.to_owned())
        }
        Source::Local(path) => path.file_name().map(|n| n.to_string_lossy().into_owned()),
    }
}

/// Checks that `name` stays inside the sandbox and returns it as a relative path; the error is
/// the end of a sentence about the name.
fn sandbox_relative(name: &str) -> Result<PathBuf, &'static str> {
    if name.is_empty() {
        return Err("is empty");
    }
    if name.ends_with('/') {
        return Err("names a directory, not a file");
    }
    let mut relative = PathBuf::new();
    for component in Path::new(name).components() {
        match component {
            Component::Normal(part) => relative.push(part),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err("would land outside the sandbox");
            }
        }
    }
    if relative.as_os_str().is_empty() {
        return Err("names no file");
    }
    Ok(relative)
}

/// Creates the directories an output name like `conf/app.yml` needs and makes sure they really
/// are inside the sandbox: a symlink left by an earlier archive could otherwise point elsewhere.
async fn prepare_parent(uri: &str, sandbox: &Path, dest: &Path) -> Result<(), Error> {
    let Some(parent) = dest.parent() else {
        return Ok(());
    };
    tokio::fs::create_dir_all(parent)
        .await
        .map_err(|source| io_error(uri, "create the directory", parent, source))?;
    let canon_sandbox = tokio::fs::canonicalize(sandbox)
        .await
        .map_err(|source| io_error(uri, "resolve the sandbox", sandbox, source))?;
    let canon_parent = tokio::fs::canonicalize(parent)
        .await
        .map_err(|source| io_error(uri, "resolve the directory", parent, source))?;
    if canon_parent.starts_with(&canon_sandbox) {
        Ok(())
    } else {
        Err(Error::BadFileName {
            uri: uri.to_owned(),
            name: dest.display().to_string(),
            reason: "would land outside the sandbox through a symbolic link",
        })
    }
}

fn build_client(uri: &str) -> Result<reqwest::Client, Error> {
    // reqwest follows up to ten redirects by default, which is what the fetcher wants.
    reqwest::Client::builder()
        .user_agent("kairos-fetcher")
        .build()
        .map_err(|e| http_error(uri, e))
}

/// The cache entry's name: a hash of the whole URI (so two URIs ending in the same file name
/// never share an entry) followed by the file name, to keep the directory readable.
///
/// `DefaultHasher::new()` uses fixed keys, so the name is stable across restarts; should a Rust
/// release change the algorithm, the only cost is one cache miss per URI.
fn cache_file_name(uri: &str, file_name: &str) -> String {
    let mut hasher = DefaultHasher::new();
    uri.hash(&mut hasher);
    let hash = hasher.finish();
    if file_name.is_empty() {
        format!("{hash:016x}")
    } else {
        format!("{hash:016x}-{file_name}")
    }
}

async fn is_file(path: &Path) -> bool {
    tokio::fs::metadata(path).await.is_ok_and(|meta| meta.is_file())
}

/// A name beside `dest` that no other fetch (in this or another process) is writing to.
fn part_path(dest: &Path) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut name = OsString::from(".");
    name.push(dest.file_name().unwrap_or_default());
    name.push(format!(".{}.{n}.part", std::process::id()));
    dest.with_file_name(name)
}

/// What a transfer reads: a URL, or a file already opened (with the task's rights, or the
/// worker's for its own cache), kept with its path for messages.
enum Input {
    Http(String),
    File(tokio::fs::File, PathBuf),
}

/// Opens a local source as the task's user, on a thread of its own (see [`Identity::open`]).
async fn open_local(uri: &str, path: &Path, identity: &Identity) -> Result<Input, Error> {
    let (owned_path, who) = (path.to_path_buf(), identity.clone());
    let opened = tokio::task::spawn_blocking(move || who.open(&owned_path))
        .await
        .unwrap_or_else(|e| Err(io::Error::other(e.to_string())));
    match opened {
        Ok(file) => Ok(Input::File(tokio::fs::File::from_std(file), path.to_path_buf())),
        Err(source) => Err(match identity {
            Identity::Switch(account) if source.kind() == io::ErrorKind::PermissionDenied => {
                Error::NotReadable {
                    uri: uri.to_owned(),
                    user: account.name.clone(),
                    path: path.to_path_buf(),
                }
            }
            // A container user with no account here says so in the error itself.
            _ => io_error(uri, "open", path, source),
        }),
    }
}

/// Copies `input` to `dest` through a part file within `timeout`, removing the part file on any
/// failure so nothing half-written is left behind.
async fn transfer(
    client: Option<&reqwest::Client>,
    uri: &str,
    input: Input,
    dest: &Path,
    timeout: Duration,
) -> Result<(), Error> {
    let part = part_path(dest);
    let copy = async {
        // `create_new` so a stray symlink under the part name is never followed.
        let mut out = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&part)
            .await
            .map_err(|source| io_error(uri, "create", &part, source))?;
        match input {
            Input::Http(url) => {
                let Some(client) = client else {
                    return Err(Error::Http {
                        uri: uri.to_owned(),
                        reason: "no http client was prepared".to_owned(),
                    });
                };
                download(client, uri, &url, &mut out, &part).await?;
            }
            Input::File(mut file, path) => {
                tokio::io::copy(&mut file, &mut out)
                    .await
                    .map_err(|source| io_error(uri, "copy", &path, source))?;
            }
        }
        // A tokio file completes writes in the background; flushing waits for them.
        out.flush()
            .await
            .map_err(|source| io_error(uri, "write", &part, source))?;
        Ok(())
    };
    let result = match tokio::time::timeout(timeout, copy).await {
        Ok(result) => result,
        Err(_) => Err(Error::Timeout {
            uri: uri.to_owned(),
            timeout,
        }),
    };
    let result = match result {
        Ok(()) => tokio::fs::rename(&part, dest)
            .await
            .map_err(|source| io_error(uri, "move the download to", dest, source)),
        Err(e) => Err(e),
    };
    if result.is_err() {
        // The part file may not exist (the request failed before it was written); that is fine.
        let _ = tokio::fs::remove_file(&part).await;
    }
    result
}

/// Streams one http(s) response body to `out`, chunk by chunk, failing on a non-2xx status.
async fn download(
    client: &reqwest::Client,
    uri: &str,
    url: &str,
    out: &mut tokio::fs::File,
    part: &Path,
) -> Result<(), Error> {
    let response = client.get(url).send().await.map_err(|e| http_error(uri, e))?;
    let status = response.status();
    if !status.is_success() {
        return Err(Error::Status {
            uri: uri.to_owned(),
            status,
        });
    }
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| http_error(uri, e))?;
        out.write_all(&chunk)
            .await
            .map_err(|source| io_error(uri, "write", part, source))?;
    }
    Ok(())
}

/// What kind of archive a file name announces.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Archive {
    Tar,
    TarGz,
    Gz,
}

fn archive_kind(file: &Path) -> Option<Archive> {
    let name = file.file_name()?.to_string_lossy().to_ascii_lowercase();
    if name.ends_with(".tar.gz") || name.ends_with(".tgz") {
        Some(Archive::TarGz)
    } else if name.ends_with(".tar") {
        Some(Archive::Tar)
    } else if name.ends_with(".gz") {
        Some(Archive::Gz)
    } else {
        None
    }
}

/// Unpacks `file` into `sandbox` if its name says it is an archive; other files are left alone,
/// as Mesos does. The archive itself stays in the sandbox, also as Mesos does.
fn extract(uri: &str, file: &Path, sandbox: &Path) -> Result<(), Error> {
    let fail = |reason: String| Error::Extract {
        uri: uri.to_owned(),
        path: file.to_path_buf(),
        reason,
    };
    let Some(kind) = archive_kind(file) else {
        return Ok(());
    };
    let input = std::fs::File::open(file).map_err(|source| io_error(uri, "open", file, source))?;
    let input = io::BufReader::new(input);
    match kind {
        Archive::Tar => unpack_tar(input, sandbox).map_err(fail),
        Archive::TarGz => unpack_tar(flate2::read::MultiGzDecoder::new(input), sandbox).map_err(fail),
        Archive::Gz => gunzip(uri, file, input),
    }
}

/// Unpacks every entry with `unpack_in`, which refuses to write outside `dir` (`..` components,
/// links through symlinks); an entry it refuses fails the fetch rather than being dropped
/// silently, as GNU tar's non-zero exit would under Mesos.
fn unpack_tar(input: impl io::Read, dir: &Path) -> Result<(), String> {
    let mut archive = tar::Archive::new(input);
    let entries = archive.entries().map_err(|e| error_chain(&e))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| error_chain(&e))?;
        let name = entry
            .path()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| String::from_utf8_lossy(&entry.path_bytes()).into_owned());
        match entry.unpack_in(dir) {
            Ok(true) => {}
            Ok(false) => return Err(format!("the entry '{name}' would land outside the sandbox")),
            Err(e) => return Err(format!("the entry '{name}': {}", error_chain(&e))),
        }
    }
    Ok(())
}

/// Decompresses a single `.gz` file to its name without `.gz`, beside it.
fn gunzip(uri: &str, file: &Path, input: impl io::Read) -> Result<(), Error> {
    let name = file.file_name().unwrap_or_default().to_string_lossy();
    let stem = &name[..name.len().saturating_sub(3)];
    if stem.is_empty() {
        return Err(Error::Extract {
            uri: uri.to_owned(),
            path: file.to_path_buf(),
            reason: "nothing is left of the name without '.gz'".to_owned(),
        });
    }
    let target = file.with_file_name(stem);
    let part = part_path(&target);
    let result = (|| {
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&part)
            .map_err(|source| io_error(uri, "create", &part, source))?;
        io::copy(&mut flate2::read::MultiGzDecoder::new(input), &mut out).map_err(|e| Error::Extract {
            uri: uri.to_owned(),
            path: file.to_path_buf(),
            reason: error_chain(&e),
        })?;
        std::fs::rename(&part, &target)
            .map_err(|source| io_error(uri, "move the decompressed file to", &target, source))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&part);
    }
    result
}

fn io_error(uri: &str, action: &'static str, path: &Path, source: io::Error) -> Error {
    Error::Io {
        uri: uri.to_owned(),
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// reqwest's own message is often just "error sending request"; the reason (connection refused,
/// too many redirects, …) is further down the source chain, so the message spells it all out.
fn http_error(uri: &str, error: reqwest::Error) -> Error {
    Error::Http {
        uri: uri.to_owned(),
        reason: error_chain(&error.without_url()),
    }
}

/// An error and its sources joined with ": ", skipping a source whose text its parent already
/// includes.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut next = error.source();
    while let Some(source) = next {
        let part = source.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        next = source.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::collections::HashMap;
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use tokio::io::{AsyncBufReadExt, BufReader};
    use tokio::net::{TcpListener, TcpStream};

    const MINUTE: Duration = Duration::from_secs(60);

    /// A loopback HTTP/1.1 server answering GET from a fixed table, with `/redirect` sending a
    /// 302 to `/data.txt`, `/hang` sending part of a body and then stalling, and 404 for the
    /// rest; it counts requests per path.
    struct Server {
        base: String,
        hits: Arc<Mutex<HashMap<String, usize>>>,
    }

    impl Server {
        async fn start(routes: &[(&str, &[u8])]) -> Server {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let base = format!("http://{}", listener.local_addr().unwrap());
            let routes: Arc<HashMap<String, Vec<u8>>> =
                Arc::new(routes.iter().map(|(p, b)| (p.to_string(), b.to_vec())).collect());
            let hits = Arc::new(Mutex::new(HashMap::new()));
            let counted = hits.clone();
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    tokio::spawn(answer(stream, routes.clone(), counted.clone()));
                }
            });
            Server { base, hits }
        }

        fn url(&self, path: &str) -> String {
            format!("{}{path}", self.base)
        }

        fn hits(&self, path: &str) -> usize {
            self.hits.lock().unwrap().get(path).copied().unwrap_or_default()
        }
    }

    async fn answer(
        stream: TcpStream,
        routes: Arc<HashMap<String, Vec<u8>>>,
        hits: Arc<Mutex<HashMap<String, usize>>>,
    ) {
        let mut stream = BufReader::new(stream);
        let mut request_line = String::new();
        if stream.read_line(&mut request_line).await.unwrap_or(0) == 0 {
            return;
        }
        loop {
            let mut header = String::new();
            let n = stream.read_line(&mut header).await.unwrap_or(0);
            if n == 0 || header == "\r\n" {
                break;
            }
        }
        let target = request_line.split(' ').nth(1).unwrap_or("/");
        let path = target.split('?').next().unwrap_or("/").to_owned();
        *hits.lock().unwrap().entry(path.clone()).or_default() += 1;

        let stream = stream.get_mut();
        let head = |status: &str, extra: &str, len: usize| {
            format!("HTTP/1.1 {status}\r\nContent-Length: {len}\r\n{extra}Connection: close\r\n\r\n")
        };
        let reply: Vec<u8> = match path.as_str() {
            "/redirect" => head("302 Found", "Location: /data.txt\r\n", 0).into_bytes(),
            "/hang" => {
                let mut reply = head("200 OK", "", 1_000_000).into_bytes();
                reply.extend_from_slice(b"only the start");
                let _ = stream.write_all(&reply).await;
                let _ = stream.flush().await;
                // Never finish the body: the client's timeout has to end this.
                std::future::pending::<()>().await;
                return;
            }
            _ => match routes.get(&path) {
                Some(body) => {
                    let mut reply = head("200 OK", "", body.len()).into_bytes();
                    reply.extend_from_slice(body);
                    reply
                }
                None => {
                    let mut reply = head("404 Not Found", "", 9).into_bytes();
                    reply.extend_from_slice(b"not found");
                    reply
                }
            },
        };
        let _ = stream.write_all(&reply).await;
        let _ = stream.shutdown().await;
    }

    struct Dirs {
        _root: tempfile::TempDir,
        root: PathBuf,
        sandbox: PathBuf,
        cache: PathBuf,
    }

    fn dirs() -> Dirs {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().to_path_buf();
        let sandbox = path.join("sandbox");
        std::fs::create_dir(&sandbox).unwrap();
        Dirs {
            root: path.clone(),
            sandbox,
            cache: path.join("cache"),
            _root: root,
        }
    }

    fn schemes() -> Vec<String> {
        super::super::Policy::default().fetch_schemes
    }

    fn spec(uri: &str) -> FetchSpec {
        FetchSpec {
            uri: uri.to_owned(),
            executable: false,
            cache: false,
            extract: true,
            output_file: String::new(),
        }
    }

    async fn fetch(specs: &[FetchSpec], d: &Dirs) -> Result<(), Error> {
        fetch_all(specs, &d.sandbox, &d.cache, MINUTE, &Identity::Worker, &schemes()).await
    }

    fn listing(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    fn tar_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, data) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            builder.append_data(&mut header, path, *data).unwrap();
        }
        builder.into_inner().unwrap()
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[tokio::test]
    async fn http_download_lands_under_the_uris_file_name() {
        let server = Server::start(&[("/data.txt", b"hello")]).await;
        let d = dirs();
        // `extract` on a file that is no archive is not an error; the query is not in the name.
        fetch(&[spec(&server.url("/data.txt?version=3"))], &d)
            .await
            .unwrap();
        assert_eq!(listing(&d.sandbox), ["data.txt"]);
        assert_eq!(std::fs::read(d.sandbox.join("data.txt")).unwrap(), b"hello");
    }

    #[tokio::test]
    async fn output_file_renames_the_download() {
        let server = Server::start(&[("/data.txt", b"hello")]).await;
        let d = dirs();
        let mut s = spec(&server.url("/data.txt"));
        s.output_file = "conf/renamed.cfg".to_owned();
        fetch(&[s], &d).await.unwrap();
        assert_eq!(listing(&d.sandbox), ["conf"]);
        assert_eq!(
            std::fs::read(d.sandbox.join("conf/renamed.cfg")).unwrap(),
            b"hello"
        );
    }

    #[tokio::test]
    async fn not_found_names_the_uri_and_status_and_leaves_no_file() {
        let server = Server::start(&[]).await;
        let d = dirs();
        let uri = server.url("/missing.bin");
        let err = fetch(&[spec(&uri)], &d).await.unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, Error::Status { .. }), "{err:?}");
        assert!(message.contains(&uri), "{message}");
        assert!(message.contains("404"), "{message}");
        assert!(listing(&d.sandbox).is_empty());
    }

    #[tokio::test]
    async fn a_stalled_download_times_out_and_leaves_no_partial_file() {
        let server = Server::start(&[]).await;
        let d = dirs();
        let uri = server.url("/hang");
        let err = fetch_all(
            &[spec(&uri)],
            &d.sandbox,
            &d.cache,
            Duration::from_millis(300),
            &Identity::Worker,
            &schemes(),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
        assert!(err.to_string().contains(&uri), "{err}");
        assert!(listing(&d.sandbox).is_empty());
    }

    #[tokio::test]
    async fn a_refused_connection_says_why() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let uri = format!("http://{}/x.txt", listener.local_addr().unwrap());
        drop(listener);
        let d = dirs();
        let err = fetch(&[spec(&uri)], &d).await.unwrap_err();
        assert!(matches!(err, Error::Http { .. }), "{err:?}");
        assert!(err.to_string().contains(&uri), "{err}");
        assert!(listing(&d.sandbox).is_empty());
    }

    #[tokio::test]
    async fn a_redirect_is_followed() {
        let server = Server::start(&[("/data.txt", b"moved here")]).await;
        let d = dirs();
        fetch(&[spec(&server.url("/redirect"))], &d).await.unwrap();
        assert_eq!(std::fs::read(d.sandbox.join("redirect")).unwrap(), b"moved here");
        assert_eq!(server.hits("/redirect"), 1);
        assert_eq!(server.hits("/data.txt"), 1);
    }

    #[tokio::test]
    async fn file_uris_and_absolute_paths_are_copied() {
        let d = dirs();
        let source = d.root.join("source.txt");
        std::fs::write(&source, b"local bytes").unwrap();
        let mut as_file_uri = spec(&format!("file://{}", source.display()));
        as_file_uri.output_file = "via-uri.txt".to_owned();
        let as_path = spec(&source.display().to_string());
        fetch(&[as_file_uri, as_path], &d).await.unwrap();
        assert_eq!(listing(&d.sandbox), ["source.txt", "via-uri.txt"]);
        assert_eq!(
            std::fs::read(d.sandbox.join("via-uri.txt")).unwrap(),
            b"local bytes"
        );
        assert_eq!(
            std::fs::read(d.sandbox.join("source.txt")).unwrap(),
            b"local bytes"
        );
    }

    #[tokio::test]
    async fn a_missing_local_file_fails_and_leaves_nothing() {
        let d = dirs();
        let uri = d.root.join("absent.txt").display().to_string();
        let err = fetch(&[spec(&uri)], &d).await.unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{err:?}");
        assert!(err.to_string().contains(&uri), "{err}");
        assert!(listing(&d.sandbox).is_empty());
    }

    #[tokio::test]
    async fn a_tar_gz_is_extracted_only_when_asked() {
        let archive = gzip(&tar_of(&[
            ("bin/run.sh", b"#!/bin/sh\necho hi\n"),
            ("README", b"read me"),
        ]));
        let server = Server::start(&[("/app.tar.gz", &archive)]).await;

        let d = dirs();
        fetch(&[spec(&server.url("/app.tar.gz"))], &d).await.unwrap();
        assert_eq!(listing(&d.sandbox), ["README", "app.tar.gz", "bin"]);
        assert_eq!(
            std::fs::read(d.sandbox.join("bin/run.sh")).unwrap(),
            b"#!/bin/sh\necho hi\n"
        );

        let d = dirs();
        let mut kept = spec(&server.url("/app.tar.gz"));
        kept.extract = false;
        fetch(&[kept], &d).await.unwrap();
        assert_eq!(listing(&d.sandbox), ["app.tar.gz"]);
        assert_eq!(std::fs::read(d.sandbox.join("app.tar.gz")).unwrap(), archive);
    }

    #[tokio::test]
    async fn plain_tar_and_tgz_are_extracted() {
        let d = dirs();
        let tar = d.root.join("one.tar");
        std::fs::write(&tar, tar_of(&[("one.txt", b"1")])).unwrap();
        let tgz = d.root.join("two.TGZ");
        std::fs::write(&tgz, gzip(&tar_of(&[("two.txt", b"2")]))).unwrap();
        fetch(
            &[spec(&tar.display().to_string()), spec(&tgz.display().to_string())],
            &d,
        )
        .await
        .unwrap();
        assert_eq!(listing(&d.sandbox), ["one.tar", "one.txt", "two.TGZ", "two.txt"]);
    }

    #[tokio::test]
    async fn a_single_gz_is_decompressed() {
        let server = Server::start(&[("/notes.txt.gz", &gzip(b"unzipped text"))]).await;
        let d = dirs();
        fetch(&[spec(&server.url("/notes.txt.gz"))], &d).await.unwrap();
        assert_eq!(listing(&d.sandbox), ["notes.txt", "notes.txt.gz"]);
        assert_eq!(
            std::fs::read(d.sandbox.join("notes.txt")).unwrap(),
            b"unzipped text"
        );
    }

    #[tokio::test]
    async fn a_corrupt_archive_fails_with_the_uri() {
        let server = Server::start(&[("/broken.tar.gz", b"not gzip at all")]).await;
        let d = dirs();
        let uri = server.url("/broken.tar.gz");
        let err = fetch(&[spec(&uri)], &d).await.unwrap_err();
        assert!(matches!(err, Error::Extract { .. }), "{err:?}");
        assert!(err.to_string().contains(&uri), "{err}");
    }

    #[tokio::test]
    async fn executable_sets_mode_0755_and_skips_extraction() {
        let archive = gzip(&tar_of(&[("inner", b"x")]));
        let server = Server::start(&[("/tool", b"#!/bin/sh\n"), ("/tool.tar.gz", &archive)]).await;
        let d = dirs();
        let mut tool = spec(&server.url("/tool"));
        tool.executable = true;
        let mut packed = spec(&server.url("/tool.tar.gz"));
        packed.executable = true;
        fetch(&[tool, packed], &d).await.unwrap();
        assert_eq!(mode(&d.sandbox.join("tool")), 0o755);
        assert_eq!(mode(&d.sandbox.join("tool.tar.gz")), 0o755);
        assert_eq!(listing(&d.sandbox), ["tool", "tool.tar.gz"]);
    }

    #[tokio::test]
    async fn cache_downloads_once_for_two_fetches() {
        let server = Server::start(&[("/big.bin", b"cached body")]).await;
        let mut s = spec(&server.url("/big.bin"));
        s.cache = true;
        let first = dirs();
        fetch(std::slice::from_ref(&s), &first).await.unwrap();
        // A second task's sandbox, sharing the first one's cache directory.
        let second = dirs();
        fetch_all(
            std::slice::from_ref(&s),
            &second.sandbox,
            &first.cache,
            MINUTE,
            &Identity::Worker,
            &schemes(),
        )
        .await
        .unwrap();
        assert_eq!(server.hits("/big.bin"), 1);
        for d in [&first, &second] {
            assert_eq!(std::fs::read(d.sandbox.join("big.bin")).unwrap(), b"cached body");
        }
        let cached = listing(&first.cache);
        assert_eq!(cached.len(), 1);
        assert!(cached[0].ends_with("-big.bin"), "{cached:?}");
    }

    #[tokio::test]
    async fn without_cache_every_fetch_downloads() {
        let server = Server::start(&[("/big.bin", b"fresh body")]).await;
        let s = spec(&server.url("/big.bin"));
        let first = dirs();
        fetch(std::slice::from_ref(&s), &first).await.unwrap();
        let second = dirs();
        fetch(std::slice::from_ref(&s), &second).await.unwrap();
        assert_eq!(server.hits("/big.bin"), 2);
        assert!(!first.cache.exists());
    }

    #[tokio::test]
    async fn an_archive_entry_cannot_escape_the_sandbox() {
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        // `set_path` refuses `..`, so the name is written into the raw header as an attacker would.
        header.as_old_mut().name[..9].copy_from_slice(b"../escape");
        header.set_size(3);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_cksum();
        builder.append(&header, &b"bad"[..]).unwrap();
        let archive = gzip(&builder.into_inner().unwrap());
        let server = Server::start(&[("/evil.tar.gz", &archive)]).await;
        let d = dirs();
        let err = fetch(&[spec(&server.url("/evil.tar.gz"))], &d).await.unwrap_err();
        assert!(matches!(err, Error::Extract { .. }), "{err:?}");
        assert!(err.to_string().contains("../escape"), "{err}");
        assert!(!d.root.join("escape").exists());
        assert_eq!(listing(&d.sandbox), ["evil.tar.gz"]);
    }

    #[tokio::test]
    async fn output_names_outside_the_sandbox_are_refused() {
        let d = dirs();
        let source = d.root.join("source.txt");
        std::fs::write(&source, b"x").unwrap();
        for bad in ["../x", "/etc/x", "a/../../x", "dir/", "."] {
            let mut s = spec(&source.display().to_string());
            s.output_file = bad.to_owned();
            let err = fetch(&[s], &d).await.unwrap_err();
            assert!(matches!(err, Error::BadFileName { .. }), "{bad}: {err:?}");
            assert!(err.to_string().contains(bad), "{err}");
        }
        assert!(listing(&d.sandbox).is_empty());
        assert!(!d.root.join("x").exists());
    }

    #[tokio::test]
    async fn unsupported_and_relative_uris_are_refused() {
        let d = dirs();
        let err = fetch(&[spec("ftp://example.com/file.txt")], &d)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::UnsupportedScheme { .. }), "{err:?}");
        assert!(err.to_string().contains("'ftp'"), "{err}");
        assert!(err.to_string().contains("ftp://example.com/file.txt"), "{err}");

        for uri in ["relative/file.txt", "file://relative.txt", ""] {
            let err = fetch(&[spec(uri)], &d).await.unwrap_err();
            assert!(matches!(err, Error::NotAbsolute { .. }), "{uri}: {err:?}");
        }
        let err = fetch(&[spec("http://example.com/")], &d).await.unwrap_err();
        assert!(matches!(err, Error::NoFileName { .. }), "{err:?}");
    }

    #[test]
    fn names_come_from_the_last_path_segment() {
        let name = |uri: &str| natural_name(&parse_source(uri).unwrap());
        assert_eq!(name("http://h/a/b.tgz?x=1#f").as_deref(), Some("b.tgz"));
        assert_eq!(name("HTTPS://h:8080/b").as_deref(), Some("b"));
        assert_eq!(name("http://h"), None);
        assert_eq!(name("http://h/dir/"), None);
        assert_eq!(name("file:///opt/x.tar").as_deref(), Some("x.tar"));
        assert_eq!(name("file://localhost/opt/y").as_deref(), Some("y"));
        assert_eq!(name("/opt/z.gz").as_deref(), Some("z.gz"));
    }

    #[test]
    fn cache_names_differ_by_uri_and_are_stable() {
        let a = cache_file_name("http://one/f.bin", "f.bin");
        assert_eq!(a, cache_file_name("http://one/f.bin", "f.bin"));
        assert_ne!(a, cache_file_name("http://two/f.bin", "f.bin"));
        assert!(a.ends_with("-f.bin"));
    }

    #[tokio::test]
    async fn only_the_allowed_schemes_are_fetched() {
        let d = dirs();
        let source = d.root.join("source.txt");
        std::fs::write(&source, b"x").unwrap();
        let web_only = ["http".to_owned(), "https".to_owned()];
        for uri in [
            format!("file://{}", source.display()),
            source.display().to_string(),
        ] {
            let err = fetch_all(
                &[spec(&uri)],
                &d.sandbox,
                &d.cache,
                MINUTE,
                &Identity::Worker,
                &web_only,
            )
            .await
            .unwrap_err();
            assert!(matches!(err, Error::SchemeNotAllowed { .. }), "{err:?}");
            assert_eq!(
                err.to_string(),
                format!("cannot fetch '{uri}': the scheme 'file' is not allowed here (allowed: http, https)")
            );
        }
        assert!(check_scheme("HTTP://x/y", &web_only).is_ok());
        assert!(check_scheme("https://x/y", &["file".to_owned()]).is_err());
        assert!(listing(&d.sandbox).is_empty());
    }

    #[tokio::test]
    async fn a_local_file_is_fetched_only_if_the_tasks_user_could_read_it() {
        // SAFETY: geteuid only reads the process's credentials.
        if unsafe { libc::geteuid() } != 0 {
            // Without root the worker is the task's user: its own rights are the task's.
            return;
        }
        let d = dirs();
        std::fs::set_permissions(&d.root, std::fs::Permissions::from_mode(0o755)).unwrap();
        let secret = d.root.join("secret.txt");
        std::fs::write(&secret, b"root only").unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        let public = d.root.join("public.txt");
        std::fs::write(&public, b"for all").unwrap();
        std::fs::set_permissions(&public, std::fs::Permissions::from_mode(0o644)).unwrap();
        let nobody = Identity::Switch(super::super::user::lookup("nobody").unwrap().unwrap());

        let uri = format!("file://{}", secret.display());
        let mut cached = spec(&uri);
        cached.cache = true;
        // The worker (root) may read it, and so it lands in the cache…
        fetch(std::slice::from_ref(&cached), &d).await.unwrap();
        std::fs::remove_file(d.sandbox.join("secret.txt")).unwrap();
        // …but neither the file nor its cached copy goes to a task that could not read it.
        for s in [spec(&uri), cached, spec(&secret.display().to_string())] {
            let err = fetch_all(&[s], &d.sandbox, &d.cache, MINUTE, &nobody, &schemes())
                .await
                .unwrap_err();
            assert!(matches!(err, Error::NotReadable { .. }), "{err:?}");
            assert!(
                err.to_string().contains("runAsUser 'nobody' may not read"),
                "{err}"
            );
        }
        assert!(listing(&d.sandbox).is_empty());
        fetch_all(
            &[spec(&public.display().to_string())],
            &d.sandbox,
            &d.cache,
            MINUTE,
            &nobody,
            &schemes(),
        )
        .await
        .unwrap();
        assert_eq!(std::fs::read(d.sandbox.join("public.txt")).unwrap(), b"for all");
    }
}
