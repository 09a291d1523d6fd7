//! The `http` connector: an API read page by page over HTTP(S).
//!
//! A poll asks for everything new: from the position committed with the last batch (the `cursor`'s highest
//! value taken, minus `lookback`), or everything when there is no cursor (`load: replace` or `upsert`). Every page
//! is checked against the manifest (valid JSON, an array at `format.records`) before anything is kept; a page
//! that is not fails the run, which commits nothing. Each page holding records is **archived** under
//! `<warehouse>/archive/<source>/<batch>-<run>/page-00001.<ext>` — gzip, then AES-256-GCM with the key of domain
//! `quarantine`, like the quarantine's raw records: a response holds personal data in clear — and becomes a unit
//! of the batch. The ledger's rows of the batch carry the new position, committed with them, so:
//! - a crash before the ledger's commit leaves archived pages no commit names, and the next run asks again from
//!   the old position;
//! - a crash after it leaves a pending batch, completed by the next run from the archived pages (no request).
//!
//! Requests: a client timeout per request, `rate_limit` requests per second, retries with exponential backoff on
//! network errors, 429 and 5xx (honouring `Retry-After`), redirects followed on the API's origin only; secrets
//! from the environment, never in a message (request URLs are named by their origin and path, without query).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, FixedOffset, Utc};
use serde_json::Value;
use url::Url;

use super::archive::Archive;
use super::{Connector, ConnectorError, FileEntry, Polled, secret as env};
use crate::format::json;
use crate::ingest::LedgerRow;
use crate::manifest::{ApiKeyIn, Format, HttpAuth, HttpMethod, Pagination, SourceManifest};

/// Largest response read (the page is held in memory while it is checked).
pub const MAX_RESPONSE_BYTES: usize = 256 << 20;
/// Longest wait a `Retry-After` may ask for.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);
/// First backoff between two attempts; doubled each time.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);

pub struct HttpConnector {
    spec: crate::manifest::HttpConnector,
    api: Url,
    /// How records are found in a page, for counting them and reading the cursor.
    records: Records,
    /// The units' extension, for the format reader (`json`, `ndjson`, `csv`, `parquet`).
    extension: &'static str,
    archive: Archive,
    client: reqwest::Client,
    auth: Option<Auth>,
    /// An OAuth 2 token and when it expires.
    token: tokio::sync::Mutex<Option<(String, Instant)>>,
    /// When the last request was sent (`rate_limit`).
    last_request: tokio::sync::Mutex<Option<Instant>>,
}

/// The secrets of `auth`, read from the environment when the connector is built.
enum Auth {
    Bearer(String),
    ApiKey { name: String, place: ApiKeyIn, value: String },
    Basic { username: String, password: String },
    Oauth2 { token_url: Url, client_id: String, client_secret: String, scope: Option<String> },
}

#[derive(Clone)]
enum Records {
    /// `format: json`: the array at this dotted path (empty: the document).
    Json(String),
    /// `format: ndjson`: one record per line.
    Lines,
    /// Not counted (CSV, Parquet): one page, or pages by `Link` header.
    Opaque,
}

impl HttpConnector {
    pub fn new(
        m: &SourceManifest,
        spec: &crate::manifest::HttpConnector,
        lh: &crate::Lakehouse,
    ) -> Result<Self, ConnectorError> {
        let invalid = |detail: String| ConnectorError::Http { request: spec.url.clone(), detail };
        let api = Url::parse(&spec.url).map_err(|e| invalid(format!("not a URL ({e})")))?;
        let (records, extension) = match m.format() {
            Format::Json { records, .. } => (Records::Json(records.clone()), "json"),
            Format::Ndjson { .. } => (Records::Lines, "ndjson"),
            Format::Geojson { .. } => (Records::Json("features".into()), "geojson"),
            Format::Csv { .. } => (Records::Opaque, "csv"),
            Format::Parquet => (Records::Opaque, "parquet"),
            Format::Xlsx { .. } => (Records::Opaque, "xlsx"),
        };
        let auth = match &spec.auth {
            None => None,
            Some(HttpAuth::Bearer { token_env }) => Some(Auth::Bearer(env(token_env, "auth.token_env")?)),
            Some(HttpAuth::ApiKey { name, place, value_env }) => {
                Some(Auth::ApiKey { name: name.clone(), place: *place, value: env(value_env, "auth.value_env")? })
            }
            Some(HttpAuth::Basic { username_env, password_env }) => Some(Auth::Basic {
                username: env(username_env, "auth.username_env")?,
                password: env(password_env, "auth.password_env")?,
            }),
            Some(HttpAuth::Oauth2 { token_url, client_id_env, client_secret_env, scope }) => Some(Auth::Oauth2 {
                token_url: Url::parse(token_url).map_err(|e| invalid(format!("token_url is not a URL ({e})")))?,
                client_id: env(client_id_env, "auth.client_id_env")?,
                client_secret: env(client_secret_env, "auth.client_secret_env")?,
                scope: scope.clone(),
            }),
        };
        let origin = api.origin();
        let redirects = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() >= 5 || attempt.url().origin() != origin {
                attempt.stop()
            } else {
                attempt.follow()
            }
        });
        let client = reqwest::Client::builder()
            .timeout(spec.timeout.0)
            .connect_timeout(spec.timeout.0)
            .redirect(redirects)
            .user_agent(concat!("lakehouse/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| invalid(format!("the HTTP client cannot be built: {}", e.without_url())))?;
        Ok(Self {
            spec: spec.clone(),
            api,
            records,
            extension,
            archive: Archive::new(lh, m.name.as_str(), MAX_RESPONSE_BYTES as u64)?,
            client,
            auth,
            token: Default::default(),
            last_request: Default::default(),
        })
    }

    /// How a request is named in messages: method, origin and path, the page's number; never the query (an API
    /// key may be in it) nor a next-page token.
    fn describe(&self, url: &Url, page: u32) -> String {
        let method = match self.spec.method {
            HttpMethod::Get => "GET",
            HttpMethod::Post => "POST",
        };
        format!("{method} {}{} (page {page})", url.origin().ascii_serialization(), url.path())
    }

    /// Waits so that requests keep to `rate_limit`.
    async fn pace(&self) {
        let Some(rate) = self.spec.rate_limit.filter(|r| *r > 0.0) else { return };
        let gap = Duration::from_secs_f64(1.0 / rate);
        let mut last = self.last_request.lock().await;
        if let Some(at) = *last {
            let next = at + gap;
            let now = Instant::now();
            if next > now {
                tokio::time::sleep(next - now).await;
            }
        }
        *last = Some(Instant::now());
    }

    /// An OAuth 2 access token: the one of this run until it expires, else a new one.
    async fn access_token(&self, request: &str) -> Result<String, ConnectorError> {
        let Some(Auth::Oauth2 { token_url, client_id, client_secret, scope }) = &self.auth else {
            return Ok(String::new());
        };
        let mut token = self.token.lock().await;
        if let Some((value, expires)) = token.as_ref()
            && Instant::now() < *expires
        {
            return Ok(value.clone());
        }
        let failed = |detail: String| ConnectorError::Http { request: request.to_string(), detail };
        let where_ =
            format!("the OAuth 2 token endpoint {}{}", token_url.origin().ascii_serialization(), token_url.path());
        let mut form = vec![("grant_type", "client_credentials")];
        if let Some(scope) = scope {
            form.push(("scope", scope));
        }
        let response = self
            .client
            .post(token_url.clone())
            .basic_auth(client_id, Some(client_secret))
            .form(&form)
            .send()
            .await
            .map_err(|e| failed(format!("{where_} cannot be reached: {}", e.without_url())))?;
        let status = response.status();
        if status.is_client_error() {
            return Err(ConnectorError::Auth {
                request: request.to_string(),
                detail: format!("{where_} answered {status}: check the client id and secret (connector.auth)"),
            });
        }
        if !status.is_success() {
            return Err(failed(format!("{where_} answered {status}")));
        }
        let body = read_body(response, request).await?;
        let parsed: Value = serde_json::from_slice(&body)
            .map_err(|_| failed(format!("{where_} did not answer a JSON object with `access_token`")))?;
        let Some(access) = parsed.get("access_token").and_then(Value::as_str) else {
            return Err(failed(format!("{where_} answered without `access_token`")));
        };
        // Asked again a little before it expires (an hour when the server does not say).
        let lifetime = parsed.get("expires_in").and_then(Value::as_u64).unwrap_or(3600);
        let expires = Instant::now() + Duration::from_secs(lifetime.saturating_sub(30).max(1));
        *token = Some((access.to_string(), expires));
        Ok(access.to_string())
    }

    /// One request, with the manifest's headers, body and authentication.
    async fn send(&self, url: &Url, request: &str) -> Result<reqwest::Response, ConnectorError> {
        let mut url = url.clone();
        let mut builder_headers = Vec::new();
        match &self.auth {
            Some(Auth::ApiKey { name, place: ApiKeyIn::Query, value })
                if !url.query_pairs().any(|(k, _)| k == name.as_str()) =>
            {
                url.query_pairs_mut().append_pair(name, value);
            }
            Some(Auth::ApiKey { name, place: ApiKeyIn::Header, value }) => builder_headers.push((name, value)),
            _ => {}
        }
        let mut builder = match self.spec.method {
            HttpMethod::Get => self.client.get(url),
            HttpMethod::Post => self.client.post(url),
        };
        for (name, value) in &self.spec.headers {
            builder = builder.header(name, value);
        }
        for (name, value) in builder_headers {
            builder = builder.header(name, value);
        }
        if let Some(body) = &self.spec.body {
            builder = builder.header(reqwest::header::CONTENT_TYPE, "application/json").body(body.to_string());
        }
        builder = match &self.auth {
            Some(Auth::Bearer(token)) => builder.bearer_auth(token),
            Some(Auth::Basic { username, password }) => builder.basic_auth(username, Some(password)),
            Some(Auth::Oauth2 { .. }) => builder.bearer_auth(self.access_token(request).await?),
            _ => builder,
        };
        builder.send().await.map_err(|e| ConnectorError::Http { request: request.to_string(), detail: network(&e) })
    }

    /// A page's response: sent again on network errors, 429 and 5xx, up to `retries` times.
    async fn fetch(&self, url: &Url, request: &str) -> Result<(reqwest::header::HeaderMap, Bytes), ConnectorError> {
        let mut attempt = 0u32;
        let mut backoff = FIRST_BACKOFF;
        loop {
            self.pace().await;
            let (failure, wait) = match self.send(url, request).await {
                Ok(response) if response.status().is_success() => {
                    let headers = response.headers().clone();
                    match read_body(response, request).await {
                        Ok(body) => return Ok((headers, body)),
                        Err(ConnectorError::Http { detail, .. }) => (detail, None),
                        Err(other) => return Err(other),
                    }
                }
                Ok(response) => {
                    let status = response.status();
                    let retry_after = retry_after(response.headers());
                    if status == reqwest::StatusCode::UNAUTHORIZED && self.token_based() {
                        // The token may have been revoked: a new one for the next attempt.
                        *self.token.lock().await = None;
                    }
                    if status.is_redirection() {
                        return Err(ConnectorError::Http {
                            request: request.to_string(),
                            detail: format!(
                                "answered {status}, a redirect to another origin (or too many): not followed, the \
                                 credentials are sent to the API's origin only"
                            ),
                        });
                    }
                    let again = status == reqwest::StatusCode::TOO_MANY_REQUESTS
                        || status.is_server_error()
                        || (status == reqwest::StatusCode::UNAUTHORIZED && attempt == 0 && self.token_based());
                    if !again {
                        return Err(ConnectorError::Http { request: request.to_string(), detail: refused(status) });
                    }
                    (format!("answered {status}"), retry_after)
                }
                Err(ConnectorError::Http { detail, .. }) => (detail, None),
                Err(other) => return Err(other),
            };
            if attempt >= self.spec.retries {
                let tries = attempt + 1;
                return Err(ConnectorError::Http {
                    request: request.to_string(),
                    detail: format!("{failure} ({tries} attempts; connector.retries is {})", self.spec.retries),
                });
            }
            attempt += 1;
            let wait = wait.unwrap_or(backoff).min(MAX_RETRY_AFTER);
            tracing::warn!(request, attempt, wait_secs = wait.as_secs_f64(), failure = %failure, "retrying");
            tokio::time::sleep(wait).await;
            backoff = backoff.saturating_mul(2);
        }
    }

    /// OAuth 2: a token refused may be renewed.
    fn token_based(&self) -> bool {
        matches!(self.auth, Some(Auth::Oauth2 { .. }))
    }
}

/// What a status that is not retried means, without the body (it may echo a request's data).
fn refused(status: reqwest::StatusCode) -> String {
    let hint = match status.as_u16() {
        401 => ": the credentials were refused (connector.auth and its environment variables)",
        403 => ": the credentials are not allowed this resource",
        404 => ": check connector.url and its params",
        400 | 422 => ": the API refused the request's parameters (connector.params, pagination, cursor)",
        _ => "",
    };
    format!("answered {status}{hint}")
}

/// A network error's message, without its URL (which may carry an API key).
fn network(e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "no answer within connector.timeout"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "the request failed"
    };
    let mut detail = String::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() { what.to_string() } else { format!("{what} ({detail})") }
}

/// The body of a response, at most [`MAX_RESPONSE_BYTES`]: a larger one is a `Response` error (not retried), a
/// body cut short an `Http` one (retried).
async fn read_body(mut response: reqwest::Response, request: &str) -> Result<Bytes, ConnectorError> {
    let too_large = || ConnectorError::Response {
        request: request.to_string(),
        detail: format!("the response is larger than {} MiB, the most a page may hold", MAX_RESPONSE_BYTES >> 20),
    };
    if response.content_length().is_some_and(|n| n > MAX_RESPONSE_BYTES as u64) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                    return Err(too_large());
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(Bytes::from(body)),
            Err(e) => {
                let detail = format!("the response was cut: {}", network(&e));
                return Err(ConnectorError::Http { request: request.to_string(), detail });
            }
        }
    }
}

/// `Retry-After`: seconds, or an HTTP date.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let text = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = text.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = DateTime::parse_from_rfc2822(text).ok()?;
    (at.with_timezone(&Utc) - Utc::now()).to_std().ok()
}

/// The URL of the next page in a `Link` header (RFC 8288: `<url>; rel="next"`).
fn link_next(headers: &reqwest::header::HeaderMap) -> Option<String> {
    for value in headers.get_all(reqwest::header::LINK) {
        let Ok(text) = value.to_str() else { continue };
        for link in text.split(',') {
            let mut parts = link.split(';');
            let target = parts.next()?.trim();
            let is_next = parts.any(|p| {
                let p = p.trim();
                let Some(rel) = p.strip_prefix("rel=") else { return false };
                rel.trim_matches('"').split_whitespace().any(|r| r.eq_ignore_ascii_case("next"))
            });
            if is_next && target.starts_with('<') && target.ends_with('>') {
                return Some(target[1..target.len() - 1].to_string());
            }
        }
    }
    None
}

/// A value of the cursor field: what orders it.
#[derive(Debug, Clone)]
enum Mark {
    Time(DateTime<FixedOffset>),
    Number(f64),
}

impl Mark {
    fn parse(text: &str) -> Option<Mark> {
        if let Ok(t) = DateTime::parse_from_rfc3339(text) {
            return Some(Mark::Time(t));
        }
        text.parse::<f64>().ok().filter(|n| n.is_finite()).map(Mark::Number)
    }

    fn of(value: &Value) -> Option<(Mark, String)> {
        let text = match value {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => return None,
        };
        Some((Mark::parse(&text)?, text))
    }

    /// Whether `self` comes after `other` (values of two kinds are not compared).
    fn after(&self, other: &Mark) -> Option<bool> {
        match (self, other) {
            (Mark::Time(a), Mark::Time(b)) => Some(a > b),
            (Mark::Number(a), Mark::Number(b)) => Some(a > b),
            _ => None,
        }
    }
}

/// The highest cursor value seen, with its text as the API wrote it.
#[derive(Default)]
struct HighWater {
    best: Option<(Mark, String)>,
    /// Values that are neither a timestamp nor a number, or of the other kind than the first.
    ignored: u64,
}

impl HighWater {
    fn see(&mut self, value: Option<&Value>) {
        let Some(value) = value.filter(|v| !v.is_null()) else { return };
        let Some((mark, text)) = Mark::of(value) else {
            self.ignored += 1;
            return;
        };
        match &self.best {
            None => self.best = Some((mark, text)),
            Some((best, _)) => match mark.after(best) {
                Some(true) => self.best = Some((mark, text)),
                Some(false) => {}
                None => self.ignored += 1,
            },
        }
    }
}

/// A record's field, found as the JSON reader finds a column's (`json::lookup`).
fn field_of<'a>(record: &'a Value, field: &str) -> Option<&'a Value> {
    match record {
        Value::Object(obj) => json::lookup(obj, field).ok().flatten(),
        _ => None,
    }
}

/// What a page holds: its records' count, and where the next page is.
struct Page {
    records: usize,
    next_token: Option<String>,
    next_url: Option<String>,
}

impl HttpConnector {
    /// Checks a page against the manifest: counts its records, feeds the cursor, finds the next page's token or
    /// URL. The messages name the page, never its content.
    fn read_page(&self, body: &[u8], request: &str, high: &mut HighWater) -> Result<Page, ConnectorError> {
        let wrong = |detail: String| ConnectorError::Response { request: request.to_string(), detail };
        let cursor = self.spec.cursor.as_ref().map(|c| c.field.as_str());
        let from = match &self.spec.pagination {
            Pagination::Cursor { from, .. } | Pagination::NextUrl { from } => Some(from.as_str()),
            _ => None,
        };
        match &self.records {
            Records::Json(path) => {
                let doc: Value = serde_json::from_slice(body).map_err(|e| wrong(not_json(body, &e)))?;
                // The format's own check: a page kept is one its reader reads.
                let items = json::records_at(&doc, path).map_err(wrong)?;
                if let Some(field) = cursor {
                    items.iter().for_each(|r| high.see(field_of(r, field)));
                }
                let next = from.and_then(|f| json::walk(&doc, f).ok()).and_then(|v| match v {
                    Value::String(s) if !s.is_empty() => Some(s.clone()),
                    Value::Number(n) => Some(n.to_string()),
                    _ => None,
                });
                let (next_token, next_url) = match &self.spec.pagination {
                    Pagination::NextUrl { .. } => (None, next),
                    _ => (next, None),
                };
                Ok(Page { records: items.len(), next_token, next_url })
            }
            Records::Lines => {
                let mut records = 0;
                for (i, line) in body.split(|b| *b == b'\n').enumerate() {
                    if line.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    records += 1;
                    if let Some(field) = cursor {
                        let value: Value = serde_json::from_slice(line)
                            .map_err(|e| wrong(json::json_error(&e, Some(i as u64 + 1))))?;
                        high.see(field_of(&value, field));
                    }
                }
                Ok(Page { records, next_token: None, next_url: None })
            }
            Records::Opaque => Ok(Page { records: usize::from(!body.is_empty()), next_token: None, next_url: None }),
        }
    }

    /// Every page's URL before its page parameters: the API's, its params, the cursor's.
    fn base_url(&self, since: Option<&str>) -> Url {
        let mut url = self.api.clone();
        {
            let mut query = url.query_pairs_mut();
            for (k, v) in &self.spec.params {
                query.append_pair(k, v);
            }
            if let (Some(c), Some(since)) = (&self.spec.cursor, since) {
                query.append_pair(&c.param, since);
            }
        }
        if url.query() == Some("") {
            url.set_query(None);
        }
        url
    }

    /// Reads the pages, archiving those that hold records into `units`. On an error, `units` holds the pages
    /// archived so far (the caller removes them).
    async fn pages(
        &self,
        since: Option<&str>,
        batch: i64,
        high: &mut HighWater,
        units: &mut Vec<FileEntry>,
    ) -> Result<(), ConnectorError> {
        let dir = Archive::run_dir(batch);
        let base = self.base_url(since);
        let mut url = self.paged(&base, 0, None);
        let mut last_token: Option<String> = None;
        for page_no in 1u32.. {
            let request = self.describe(&url, page_no);
            if page_no > self.spec.max_pages {
                let detail = format!(
                    "more than {} pages (connector.max_pages): a pagination that does not end, or raise the limit",
                    self.spec.max_pages
                );
                return Err(ConnectorError::Response { request, detail });
            }
            let (headers, body) = self.fetch(&url, &request).await?;
            let page = self.read_page(&body, &request, high)?;
            tracing::info!(request = %request, records = page.records, "page read");
            if page.records > 0 {
                let path = format!("{dir}/page-{page_no:05}.{}", self.extension);
                self.archive.put(&path, &body).await?;
                let (size, last_modified) = (body.len() as u64, Utc::now());
                units.push(FileEntry { path, size, last_modified, etag: None, refused: None });
            }
            let n = u64::from(page_no);
            let next = match &self.spec.pagination {
                Pagination::None => None,
                Pagination::Page { size, .. } => {
                    let full = size.is_none_or(|s| page.records as u64 >= s);
                    (page.records > 0 && full).then(|| self.paged(&base, n, None))
                }
                Pagination::Offset { limit, .. } => {
                    (page.records > 0 && page.records as u64 >= *limit).then(|| self.paged(&base, n, None))
                }
                Pagination::Cursor { .. } => match page.next_token {
                    Some(token) if last_token.as_deref() == Some(token.as_str()) => {
                        let detail = "the next-page token is the one just used: the pagination would not end".into();
                        return Err(ConnectorError::Response { request, detail });
                    }
                    Some(token) => {
                        let next = self.paged(&base, n, Some(&token));
                        last_token = Some(token);
                        Some(next)
                    }
                    None => None,
                },
                Pagination::NextUrl { .. } => {
                    page.next_url.map(|next| self.follow(&url, &next, &request)).transpose()?
                }
                Pagination::LinkHeader => {
                    link_next(&headers).map(|next| self.follow(&url, &next, &request)).transpose()?
                }
            };
            match next {
                Some(next) => url = next,
                None => return Ok(()),
            }
        }
        Ok(())
    }

    /// `base` with the parameters of page `n` (from 0) for page and offset pagination, or the next token.
    fn paged(&self, base: &Url, n: u64, token: Option<&str>) -> Url {
        let mut url = base.clone();
        match &self.spec.pagination {
            Pagination::Page { param, first, size_param, size } => {
                let mut q = url.query_pairs_mut();
                q.append_pair(param, &(first + n).to_string());
                if let (Some(p), Some(s)) = (size_param, size) {
                    q.append_pair(p, &s.to_string());
                }
            }
            Pagination::Offset { param, limit_param, limit } => {
                let mut q = url.query_pairs_mut();
                q.append_pair(param, &(n * limit).to_string());
                q.append_pair(limit_param, &limit.to_string());
            }
            Pagination::Cursor { param, .. } => {
                if let Some(token) = token {
                    url.query_pairs_mut().append_pair(param, token);
                }
            }
            Pagination::None | Pagination::NextUrl { .. } | Pagination::LinkHeader => {}
        }
        url
    }

    /// A next page's URL from the API: resolved against the page's own, on the API's origin only.
    fn follow(&self, current: &Url, next: &str, request: &str) -> Result<Url, ConnectorError> {
        let url = current.join(next).map_err(|_| ConnectorError::Response {
            request: request.to_string(),
            detail: "the next page's URL is not a URL".into(),
        })?;
        if url.origin() != self.api.origin() {
            return Err(ConnectorError::Response {
                request: request.to_string(),
                detail: format!(
                    "the next page is on another origin ({}): not followed, the credentials are sent to the API's \
                     origin only",
                    url.origin().ascii_serialization()
                ),
            });
        }
        Ok(url)
    }

    /// The value the cursor asks from: the committed position minus `lookback`, or `initial`.
    fn since(&self, position: Option<&str>) -> Result<Option<String>, ConnectorError> {
        let Some(cursor) = &self.spec.cursor else { return Ok(None) };
        let Some(position) = position else { return Ok(Some(cursor.initial.clone())) };
        let Some(lookback) = cursor.lookback else { return Ok(Some(position.to_string())) };
        match Mark::parse(position) {
            Some(Mark::Time(t)) => {
                let back = chrono::Duration::from_std(lookback.0).unwrap_or(chrono::Duration::zero());
                let utc = t.offset().local_minus_utc() == 0;
                Ok(Some((t - back).to_rfc3339_opts(chrono::SecondsFormat::AutoSi, utc)))
            }
            _ => Err(ConnectorError::Http {
                request: self.describe(&self.api, 1),
                detail: format!(
                    "connector.cursor.lookback applies to timestamps, and the highest `{}` taken is not one (remove \
                     lookback for a numeric cursor)",
                    cursor.field
                ),
            }),
        }
    }
}

#[async_trait::async_trait]
impl Connector for HttpConnector {
    fn location(&self) -> &Url {
        self.archive.url()
    }

    async fn poll(
        &self,
        taken: &BTreeMap<String, LedgerRow>,
        position: Option<&str>,
        batch: i64,
    ) -> Result<Polled, ConnectorError> {
        self.archive.sweep(taken).await;
        let since = self.since(position)?;
        let mut high = HighWater::default();
        if let Some(p) = position {
            high.see(Some(&Value::String(p.to_string())));
        }
        let mut units = Vec::new();
        if let Err(e) = self.pages(since.as_deref(), batch, &mut high, &mut units).await {
            self.discard(&units).await;
            return Err(e);
        }
        if high.ignored > 0
            && let Some(cursor) = &self.spec.cursor
        {
            tracing::warn!(
                field = %cursor.field,
                values = high.ignored,
                "cursor values that are neither a timestamp nor a number (or not of the kind of the others) were not \
                 counted for the position"
            );
        }
        let position = self.spec.cursor.as_ref().and(high.best.map(|(_, text)| text));
        Ok(Polled { units, rejected: Vec::new(), waiting: Vec::new(), position })
    }

    fn archive(&self) -> Option<&Archive> {
        Some(&self.archive)
    }
}

/// Why a body is not JSON, without its content: an HTML page is named as such.
fn not_json(body: &[u8], e: &serde_json::Error) -> String {
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        None => "the body is empty, not a JSON document".into(),
        Some(b'<') => "the body is an HTML or XML page, not JSON (an error page?)".into(),
        Some(_) if e.is_eof() => {
            format!("the JSON document is cut short at line {} column {} (truncated response)", e.line(), e.column())
        }
        Some(_) => format!("not a JSON document: {}", json::json_error(e, None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_link_is_read_as_rfc_8288_writes_it() {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.append(
            reqwest::header::LINK,
            r#"<https://api.example/x?page=1>; rel="prev", <https://api.example/x?page=3>; rel="next""#.parse().unwrap(),
        );
        assert_eq!(link_next(&headers).as_deref(), Some("https://api.example/x?page=3"));
        let mut headers = reqwest::header::HeaderMap::new();
        headers.append(reqwest::header::LINK, r#"</x?page=2>; rel="next last""#.parse().unwrap());
        assert_eq!(link_next(&headers).as_deref(), Some("/x?page=2"));
        let mut headers = reqwest::header::HeaderMap::new();
        headers.append(reqwest::header::LINK, r#"<https://api.example/x?page=1>; rel="first""#.parse().unwrap());
        assert_eq!(link_next(&headers), None);
    }

    #[test]
    fn the_high_water_mark_orders_timestamps_as_instants_and_numbers_as_numbers() {
        let mut high = HighWater::default();
        for v in ["2024-03-01T10:00:00+01:00", "2024-03-01T09:30:00Z", "2024-02-29T23:59:59Z"] {
            high.see(Some(&Value::String(v.into())));
        }
        // 10:00+01:00 is 09:00Z: before 09:30Z.
        assert_eq!(high.best.as_ref().map(|(_, t)| t.as_str()), Some("2024-03-01T09:30:00Z"));
        high.see(Some(&serde_json::json!(17)));
        high.see(Some(&Value::String("not a time".into())));
        high.see(Some(&Value::Null));
        assert_eq!(high.ignored, 2);
        let mut numbers = HighWater::default();
        for v in [serde_json::json!(9), serde_json::json!(10), serde_json::json!("8")] {
            numbers.see(Some(&v));
        }
        assert_eq!(numbers.best.map(|(_, t)| t), Some("10".into()));
    }

    #[test]
    fn a_retry_after_is_seconds_or_a_date() {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(reqwest::header::RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(7)));
        let later = (Utc::now() + chrono::Duration::seconds(90)).to_rfc2822();
        headers.insert(reqwest::header::RETRY_AFTER, later.parse().unwrap());
        let wait = retry_after(&headers).unwrap();
        assert!(wait > Duration::from_secs(80) && wait <= Duration::from_secs(90), "{wait:?}");
    }
}
