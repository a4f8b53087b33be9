//! The HTTP side of the client: URLs built from path segments (so names and task ids are
//! percent-encoded), credentials on every request, and answers turned into [`Error`]s by kind.

use std::time::Duration;

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use reqwest::{Method, Response, Url};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{Connection, Error};

/// Chronos 3.x's prefix; 2.x's is `scheduler` alone.
pub(super) const V1: &[&str] = &["v1", "scheduler"];

pub struct Client {
    http: reqwest::Client,
    base: Url,
    auth: Option<HeaderValue>,
    /// `--json`: print the server's JSON rather than tables.
    pub(super) json: bool,
}

impl Client {
    pub fn new(connection: &Connection) -> Result<Client, Error> {
        let auth = match (&connection.token, &connection.password) {
            (Some(token), _) => Some(format!("Bearer {token}")),
            (None, Some(password)) => {
                // KAIROS_USER is also `kairos server`'s default runAsUser, so a user alone is
                // not taken as a wish to authenticate; a password is.
                let user = connection.user.as_deref().ok_or_else(|| {
                    Error::Usage("--password (KAIROS_PASSWORD) needs --user (KAIROS_USER)".to_owned())
                })?;
                use base64::Engine as _;
                let pair = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
                Some(format!("Basic {pair}"))
            }
            (None, None) => None,
        };
        let auth = auth
            .map(|value| {
                let mut value = HeaderValue::from_str(&value).map_err(|_| {
                    Error::Usage("the credentials contain characters HTTP cannot carry".to_owned())
                })?;
                value.set_sensitive(true);
                Ok::<_, Error>(value)
            })
            .transpose()?;
        let mut client = Client::anonymous(&connection.server)?;
        client.auth = auth;
        client.json = connection.json;
        Ok(client)
    }

    /// A client for a URL, with the user and password it may carry (`http://u:p@host`) as Basic.
    pub fn anonymous(server: &str) -> Result<Client, Error> {
        let mut base =
            Url::parse(server).map_err(|e| Error::Usage(format!("the server URL {server:?}: {e}")))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(Error::Usage(format!(
                "the server URL {server:?} must start with http:// or https://"
            )));
        }
        let mut auth = None;
        if !base.username().is_empty() {
            use base64::Engine as _;
            let user = percent_decode(base.username());
            let password = base.password().map(percent_decode).unwrap_or_default();
            let pair = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            let mut value = HeaderValue::from_str(&format!("Basic {pair}"))
                .map_err(|_| Error::Usage("the URL's credentials cannot be sent".to_owned()))?;
            value.set_sensitive(true);
            auth = Some(value);
            // Kept out of the URL so it never appears in a message.
            let _ = base.set_username("");
            let _ = base.set_password(None);
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| Error::Usage(format!("making the HTTP client: {e}")))?;
        Ok(Client {
            http,
            base,
            auth,
            json: false,
        })
    }

    /// The server's address, for messages.
    pub fn base(&self) -> &str {
        self.base.as_str()
    }

    /// `base` + the segments, each percent-encoded, + the query.
    pub(super) fn url(&self, segments: &[&str], query: &[(&str, &str)]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url
    }

    /// `/v1/scheduler/<segments>`.
    pub(super) fn api(&self, segments: &[&str], query: &[(&str, &str)]) -> Url {
        let all: Vec<&str> = V1.iter().chain(segments).copied().collect();
        self.url(&all, query)
    }

    /// Sends a request; a non-success status becomes [`Error::Refused`] with the server's message.
    pub(super) async fn send(
        &self,
        method: Method,
        url: Url,
        body: Option<&Value>,
    ) -> Result<Response, Error> {
        let mut request = self.http.request(method, url.clone());
        if let Some(auth) = &self.auth {
            request = request.header(AUTHORIZATION, auth.clone());
        }
        if let Some(body) = body {
            let bytes = serde_json::to_vec(body).map_err(|e| Error::Usage(e.to_string()))?;
            request = request.header(CONTENT_TYPE, "application/json").body(bytes);
        }
        let response = request.send().await.map_err(|e| transport(&url, e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let text = response.text().await.unwrap_or_default();
        let (message, field) = match serde_json::from_str::<Value>(&text) {
            Ok(body) if body["message"].is_string() => (
                body["message"].as_str().unwrap_or_default().to_owned(),
                body["field"].as_str().map(str::to_owned),
            ),
            _ if text.trim().is_empty() => (
                status.canonical_reason().unwrap_or("no reason given").to_owned(),
                None,
            ),
            _ => (text.trim().to_owned(), None),
        };
        Err(Error::Refused {
            status: status.as_u16(),
            message,
            field,
        })
    }

    pub(super) async fn text(&self, url: Url) -> Result<String, Error> {
        let response = self.send(Method::GET, url.clone(), None).await?;
        response.text().await.map_err(|e| transport(&url, e))
    }

    /// GETs JSON, returning the parsed value and the body as the server wrote it (for `--json`).
    pub(super) async fn get<T: DeserializeOwned>(&self, url: Url) -> Result<(T, String), Error> {
        let text = self.text(url.clone()).await?;
        let value = serde_json::from_str(&text).map_err(|e| Error::Answer(format!("{url}: {e}")))?;
        Ok((value, text))
    }

    /// Creates or updates a job on the route its kind needs: `dependency` when it has parents.
    pub(super) async fn save_job(&self, job: &Value) -> Result<(), Error> {
        let dependent = job["parents"].as_array().is_some_and(|p| !p.is_empty());
        let route = if dependent { "dependency" } else { "iso8601" };
        self.send(Method::POST, self.api(&[route], &[]), Some(job))
            .await?;
        Ok(())
    }
}

fn transport(url: &Url, error: reqwest::Error) -> Error {
    if error.is_connect() || error.is_timeout() {
        let reason = std::error::Error::source(&error)
            .map(|s| s.to_string())
            .unwrap_or_else(|| error.to_string());
        Error::Connect {
            url: url.as_str().to_owned(),
            reason,
        }
    } else {
        Error::Answer(format!("{url}: {error}"))
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(byte) = text
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
