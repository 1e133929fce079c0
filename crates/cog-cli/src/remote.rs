//! `--server URL`: the admin API (`cog serve`) as the CLI's backend, over
//! HTTP/1.1 with the admin token in `COG_TOKEN` — the CLI talking to its
//! API server the way kubectl does, with the same verbs, output and exit
//! codes as over `--store`.
//!
//! Reads page through the list endpoints; read-modify-write verbs (`plan
//! update`, `tenant update`, `plugin update`) read the object's ETag and
//! write with `If-Match`, reading again when another writer got there
//! first. Problems map to exit codes by their type: `invalid`, `malformed`,
//! `too-large`, `unauthorized` and `forbidden` → 2; `not-found`, `exists`,
//! `in-use` and `stale` → 3; `plugin-refused` → 6; anything else, and a
//! server that cannot be reached → 4.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use cog_control::admin::{IssuedKey, KeyInfo, NamedPlan, NamedPlugin, NamedTenant, Page, Usage};
use cog_control::store::Version;
use cog_control::{
    ApiKey, AuditEntry, Change, KeyStatus, PlacementTable, Plan, PluginLang, PluginSpec, Spec,
    State, Status, Tenant, Window,
};
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::exit::{Exit, Result};

/// How long one request may take.
const TIMEOUT: Duration = Duration::from_secs(30);
/// The most of an answer read.
const MAX_ANSWER: usize = 64 << 20;
/// Items asked for per page when reading a whole list.
const PAGE: u32 = 1000;
/// Read-modify-write attempts before a busy object is given up on.
const ATTEMPTS: usize = 8;
const PROBLEMS: &str = "https://cog.dev/problems/";

/// A running admin API.
pub(crate) struct Remote {
    /// `http://host:port` plus any path prefix, without a trailing `/`.
    base: String,
    token: String,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.debug_struct("Remote").field("base", &self.base).finish()
    }
}

/// An answer, read whole.
struct Answer {
    status: StatusCode,
    etag: Option<String>,
    body: Bytes,
}

/// The problem document of a failed request, as far as the CLI reads it.
#[derive(serde::Deserialize)]
struct ProblemBody {
    #[serde(rename = "type")]
    kind: String,
    title: String,
    #[serde(default)]
    detail: Option<String>,
    #[serde(default)]
    field: Option<String>,
}

/// `s` as one path segment: unreserved bytes as they are, the rest
/// percent-encoded (an id with `/` or `..` stays one segment).
fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    // `.` and `..` alone would be resolved away by the URL's path rules.
    match out.as_str() {
        "." => "%2E".into(),
        ".." => "%2E%2E".into(),
        _ => out,
    }
}

/// The exit a problem answer means.
fn problem(status: StatusCode, body: &[u8]) -> Exit {
    let Ok(p) = serde_json::from_slice::<ProblemBody>(body) else {
        return Exit::Store(format!(
            "the server answered {status} without a problem document"
        ));
    };
    let detail = p.detail.unwrap_or(p.title);
    let kind = p.kind.strip_prefix(PROBLEMS).unwrap_or(&p.kind);
    match kind {
        "invalid" => Exit::Usage(match p.field {
            Some(field) => format!("invalid: {field}: {detail}"),
            None => detail,
        }),
        "malformed" | "too-large" => Exit::Usage(detail),
        "unauthorized" | "forbidden" => Exit::Usage(format!(
            "the server refused the token in COG_TOKEN: {detail}"
        )),
        "not-found" | "exists" | "in-use" | "stale" => Exit::State(detail),
        "plugin-refused" => Exit::Plugin(detail),
        _ => Exit::Store(format!("the server answered {status}: {detail}")),
    }
}

/// `Change` from the server's JSON: its fields are the diff's own words.
fn change(v: &serde_json::Value) -> Option<Change> {
    let word = |k: &str, of: &[&'static str]| {
        let s = v.get(k)?.as_str()?;
        of.iter().find(|w| **w == s).copied()
    };
    Some(Change {
        action: word("action", &["create", "update", "delete"])?,
        kind: word("kind", &["plan", "tenant", "plugin"])?,
        id: v.get("id")?.as_str()?.to_owned(),
    })
}

impl Remote {
    /// A client of the admin API at `url` (`http://HOST:PORT[/PREFIX]`),
    /// authenticated by `token`.
    pub(crate) fn new(url: &str, token: Option<String>) -> Result<Remote> {
        let base = url.trim_end_matches('/');
        let uri: http::Uri = base
            .parse()
            .map_err(|e| Exit::Usage(format!("--server {url}: {e}")))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(Exit::Usage(format!(
                    "--server {url}: this build speaks plain HTTP; reach a TLS server through \
                     a local proxy, or run the CLI where the API listens on loopback"
                )));
            }
            _ => {
                return Err(Exit::Usage(format!(
                    "--server {url}: expected http://HOST:PORT"
                )));
            }
        }
        if uri.query().is_some() {
            return Err(Exit::Usage(format!("--server {url}: no query, please")));
        }
        let token = token.filter(|t| !t.is_empty()).ok_or_else(|| {
            Exit::Usage("--server needs an admin token in COG_TOKEN (cog token create)".into())
        })?;
        let client = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
        Ok(Remote {
            base: base.to_owned(),
            token,
            client,
        })
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        if_match: Option<&str>,
        content_type: &str,
        body: Bytes,
    ) -> Result<Answer> {
        let unreachable = |e: &dyn std::fmt::Display| {
            Exit::Store(format!("the server {} cannot be reached: {e}", self.base))
        };
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header(header::AUTHORIZATION, format!("Bearer {}", self.token))
            .header(header::ACCEPT, "application/json");
        if !body.is_empty() {
            req = req.header(header::CONTENT_TYPE, content_type);
        }
        if let Some(tag) = if_match {
            req = req.header(header::IF_MATCH, tag);
        }
        let req = req
            .body(Full::new(body))
            .map_err(|e| Exit::Usage(format!("{path}: {e}")))?;
        let exchange = async {
            let res = self
                .client
                .request(req)
                .await
                .map_err(|e| unreachable(&e))?;
            let status = res.status();
            let etag = res
                .headers()
                .get(header::ETAG)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let body = Limited::new(res.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map_err(|e| unreachable(&e))?
                .to_bytes();
            Ok(Answer { status, etag, body })
        };
        tokio::time::timeout(TIMEOUT, exchange)
            .await
            .map_err(|_| unreachable(&format!("no answer within {TIMEOUT:?}")))?
    }

    /// `a`'s body as `T` when it succeeded, else the exit its problem means.
    fn parse<T: DeserializeOwned>(a: &Answer) -> Result<T> {
        if !a.status.is_success() {
            return Err(problem(a.status, &a.body));
        }
        let body: &[u8] = if a.body.is_empty() { b"null" } else { &a.body };
        serde_json::from_slice(body).map_err(|e| {
            Exit::Store(format!(
                "the server's answer cannot be read ({}): {e}",
                a.status
            ))
        })
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<(T, Option<String>)> {
        let a = self.call(Method::GET, path, None, "", Bytes::new()).await?;
        Ok((Self::parse(&a)?, a.etag))
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: &impl Serialize,
        if_match: Option<&str>,
    ) -> Result<Answer> {
        let body = serde_json::to_vec(body).map_err(|e| Exit::Usage(e.to_string()))?;
        self.call(method, path, if_match, "application/json", body.into())
            .await
    }

    async fn write<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: &impl Serialize,
    ) -> Result<T> {
        Self::parse(&self.send(method, path, body, None).await?)
    }

    /// Every item of a list endpoint, page after page. Pages must move on:
    /// a cursor given twice, or a page that promises more with nothing in
    /// it (a proxy answering every page with the first, a broken server),
    /// is an error, not a loop that never ends.
    async fn all<T: DeserializeOwned>(&self, path: &str) -> Result<(Vec<T>, Option<String>)> {
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        let mut seen = std::collections::HashSet::new();
        let mut first_etag = None;
        loop {
            let mut url = format!("{path}?limit={PAGE}");
            if let Some(c) = &cursor {
                url.push_str("&cursor=");
                url.push_str(&segment(c));
            }
            let (page, etag): (Page<T>, _) = self.get(&url).await?;
            first_etag = first_etag.or(etag);
            let empty = page.items.is_empty();
            items.extend(page.items);
            match page.next_cursor {
                Some(c) if empty || !seen.insert(c.clone()) => {
                    return Err(Exit::Store(format!(
                        "{path}: the server's pages do not move on (a page {}); is a proxy \
                         answering every page alike?",
                        if empty {
                            "with nothing in it promised more"
                        } else {
                            "pointed back to an earlier one"
                        }
                    )));
                }
                Some(c) => cursor = Some(c),
                None => return Ok((items, first_etag)),
            }
        }
    }

    /// What the API shows of the store: plans, tenants, plugins and keys
    /// (never their hashes). Admin tokens stay with the store; the audit
    /// log is [`audit`](Self::audit).
    pub(crate) async fn state(&self) -> Result<State> {
        let (plans, etag) = self.all::<NamedPlan>("/v1/plans").await?;
        let (tenants, _) = self.all::<NamedTenant>("/v1/tenants").await?;
        let (plugins, _) = self.all::<NamedPlugin>("/v1/plugins").await?;
        let (keys, _) = self.all::<KeyInfo>("/v1/keys").await?;
        let version = etag
            .as_deref()
            .and_then(|t| t.trim_matches('"').parse::<Version>().ok())
            .unwrap_or_default();
        let spec = Spec {
            plans: plans.into_iter().map(|p| (p.name, p.plan)).collect(),
            tenants: tenants.into_iter().map(|t| (t.id, t.tenant)).collect(),
            plugins: plugins.into_iter().map(|p| (p.name, p.plugin)).collect(),
            ..Spec::default()
        };
        let keys = keys
            .into_iter()
            .map(|k| {
                let key = ApiKey {
                    tenant: k.tenant,
                    hash: String::new(),
                    created: k.created,
                    expires: k.expires,
                    revoked: k.status == KeyStatus::Revoked.as_str(),
                };
                (k.id, key)
            })
            .collect();
        Ok(State {
            revision: version.revision,
            stamp: version.stamp,
            spec,
            keys,
            tokens: BTreeMap::new(),
            audit: Vec::new(),
            placement: None,
        })
    }

    /// The audit log, oldest first.
    pub(crate) async fn audit(&self) -> Result<Vec<AuditEntry>> {
        Ok(self.all("/v1/audit").await?.0)
    }

    /// Reads `path` (its ETag too), changes what it holds with `edit`,
    /// and writes it back on that revision, reading again when another
    /// writer got there first.
    async fn read_modify_write<N, T>(
        &self,
        path: &str,
        method: Method,
        inner: impl Fn(N) -> T,
        edit: impl Fn(&mut T),
        body: impl Fn(&T) -> serde_json::Value,
    ) -> Result<T>
    where
        N: DeserializeOwned,
    {
        for _ in 0..ATTEMPTS {
            let (named, etag): (N, _) = self.get(path).await?;
            let mut value = inner(named);
            edit(&mut value);
            let a = self
                .send(method.clone(), path, &body(&value), etag.as_deref())
                .await?;
            if a.status == StatusCode::PRECONDITION_FAILED {
                continue;
            }
            return Self::parse::<N>(&a).map(&inner);
        }
        Err(Exit::State(format!(
            "{path}: changed by other writers {ATTEMPTS} times in a row; try again"
        )))
    }

    /// The placement table; `None` when the store has none (404).
    pub(crate) async fn placement(&self) -> Result<Option<PlacementTable>> {
        let a = self
            .call(Method::GET, "/v1/placement", None, "", Bytes::new())
            .await?;
        if a.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        Self::parse(&a).map(Some)
    }

    pub(crate) async fn add_deployment(&self, name: &str) -> Result<PlacementTable> {
        self.write(
            Method::POST,
            "/v1/placement/deployments",
            &serde_json::json!({ "name": name }),
        )
        .await
    }

    pub(crate) async fn move_partition(&self, partition: u8, to: &str) -> Result<PlacementTable> {
        self.write(
            Method::PUT,
            &format!("/v1/placement/partitions/{partition}"),
            &serde_json::json!({ "deployment": to }),
        )
        .await
    }

    pub(crate) async fn create_plan(&self, name: &str, plan: &Plan) -> Result {
        let _: NamedPlan = self
            .write(
                Method::POST,
                "/v1/plans",
                &serde_json::json!({"name": name, "plan": plan}),
            )
            .await?;
        Ok(())
    }

    pub(crate) async fn update_plan(&self, name: &str, edit: impl Fn(&mut Plan)) -> Result<Plan> {
        let path = format!("/v1/plans/{}", segment(name));
        self.read_modify_write(
            &path,
            Method::PUT,
            |n: NamedPlan| n.plan,
            edit,
            |p| serde_json::json!(p),
        )
        .await
    }

    async fn delete(&self, path: &str) -> Result {
        let a = self
            .call(Method::DELETE, path, None, "", Bytes::new())
            .await?;
        Self::parse::<serde_json::Value>(&a).map(drop)
    }

    pub(crate) async fn delete_plan(&self, name: &str) -> Result {
        self.delete(&format!("/v1/plans/{}", segment(name))).await
    }

    pub(crate) async fn create_tenant(&self, id: &str, tenant: &Tenant) -> Result {
        let _: NamedTenant = self
            .write(
                Method::POST,
                "/v1/tenants",
                &serde_json::json!({"id": id, "tenant": tenant}),
            )
            .await?;
        Ok(())
    }

    pub(crate) async fn update_tenant(
        &self,
        id: &str,
        edit: impl Fn(&mut Tenant),
    ) -> Result<Tenant> {
        let path = format!("/v1/tenants/{}", segment(id));
        self.read_modify_write(
            &path,
            Method::PUT,
            |n: NamedTenant| n.tenant,
            edit,
            |t| serde_json::json!(t),
        )
        .await
    }

    pub(crate) async fn set_status(&self, id: &str, status: Status) -> Result<Tenant> {
        let verb = match status {
            Status::Active => "resume",
            Status::Suspended => "suspend",
        };
        let a = self
            .call(
                Method::POST,
                &format!("/v1/tenants/{}/{verb}", segment(id)),
                None,
                "",
                Bytes::new(),
            )
            .await?;
        Ok(Self::parse::<NamedTenant>(&a)?.tenant)
    }

    pub(crate) async fn delete_tenant(&self, id: &str) -> Result {
        self.delete(&format!("/v1/tenants/{}", segment(id))).await
    }

    /// Issues a key; returns its id and the whole key.
    pub(crate) async fn create_key(
        &self,
        tenant: &str,
        ttl: Option<Duration>,
    ) -> Result<(String, String)> {
        let k: IssuedKey = self
            .write(
                Method::POST,
                &format!("/v1/tenants/{}/keys", segment(tenant)),
                &serde_json::json!({"expires_in": ttl.map(|d| Window(d).to_string())}),
            )
            .await?;
        Ok((k.id, k.key))
    }

    pub(crate) async fn revoke_key(&self, id: &str) -> Result {
        self.delete(&format!("/v1/keys/{}", segment(id))).await
    }

    /// Uploads plugin bytes in `lang` as plugin `name` (the server checks
    /// them in its sandbox): a new plugin runs for nobody yet, an installed
    /// one keeps what it had. The answer and its ETag.
    async fn upload(
        &self,
        name: &str,
        bytes: &[u8],
        lang: PluginLang,
    ) -> Result<(NamedPlugin, Option<String>)> {
        let lang = match lang {
            PluginLang::Python => "python",
            _ => "wasm",
        };
        let a = self
            .call(
                Method::PUT,
                &format!("/v1/plugins/{}?lang={lang}", segment(name)),
                None,
                "application/octet-stream",
                Bytes::copy_from_slice(bytes),
            )
            .await?;
        Ok((Self::parse(&a)?, a.etag))
    }

    /// Uploads plugin bytes and makes the plugin what `spec` says; returns
    /// the digest.
    pub(crate) async fn install_plugin(
        &self,
        name: &str,
        bytes: &[u8],
        spec: &PluginSpec,
    ) -> Result<String> {
        let path = format!("/v1/plugins/{}", segment(name));
        let (installed, etag) = self.upload(name, bytes, spec.lang).await?;
        // Everything else the spec says, in one write on that revision.
        let patch = serde_json::json!({
            "version": spec.version,
            "config": spec.config,
            "enabled": spec.enabled,
            "on_error": spec.on_error,
            "limits": spec.limits,
            "attach": spec.attach,
        });
        let a = self
            .send(Method::PATCH, &path, &patch, etag.as_deref())
            .await?;
        let _: NamedPlugin = Self::parse(&a)?;
        Ok(installed.plugin.digest)
    }

    pub(crate) async fn update_plugin(
        &self,
        name: &str,
        edit: impl Fn(&mut PluginSpec),
    ) -> Result<PluginSpec> {
        let path = format!("/v1/plugins/{}", segment(name));
        self.read_modify_write(
            &path,
            Method::PATCH,
            |n: NamedPlugin| n.plugin,
            edit,
            |p| {
                serde_json::json!({
                    "version": p.version,
                    "config": p.config,
                    "enabled": p.enabled,
                    "on_error": p.on_error,
                    "limits": p.limits,
                    "attach": p.attach,
                })
            },
        )
        .await
    }

    pub(crate) async fn delete_plugin(&self, name: &str) -> Result {
        self.delete(&format!("/v1/plugins/{}", segment(name))).await
    }

    /// Makes the store match `desired`. Plugin bytes the server does not
    /// hold yet (`blobs`, by digest) are uploaded first, each as an upload
    /// of its plugin (a new one runs for nobody until the document says
    /// otherwise; an installed one runs the new bytes at once); the
    /// document then goes in as one commit.
    pub(crate) async fn apply(
        &self,
        desired: &Spec,
        blobs: &BTreeMap<String, Vec<u8>>,
        prune: bool,
    ) -> Result<Vec<Change>> {
        let held = self.state().await?;
        let mut uploaded_new = Vec::new();
        for (name, p) in &desired.plugins {
            let on_server = held.spec.plugins.values().any(|h| h.digest == p.digest);
            if let (false, Some(bytes)) = (on_server, blobs.get(&p.digest)) {
                self.upload(name, bytes, p.lang).await?;
                if !held.spec.plugins.contains_key(name) {
                    uploaded_new.push(name.as_str());
                }
            }
        }
        let mut doc = desired.clone();
        for p in doc.plugins.values_mut() {
            p.file = None;
        }
        let path = format!("/v1/apply?prune={prune}");
        let v: serde_json::Value = self.write(Method::POST, &path, &doc).await?;
        let changes = v
            .get("changes")
            .and_then(|c| c.as_array())
            .ok_or_else(|| Exit::Store("the server's answer to apply has no changes".into()))?;
        changes
            .iter()
            .map(|c| {
                let mut ch = change(c).ok_or_else(|| {
                    Exit::Store(format!(
                        "the server's answer to apply names {c}, not a change"
                    ))
                })?;
                // A plugin this run uploaded first did not exist before it.
                if ch.kind == "plugin" && uploaded_new.contains(&ch.id.as_str()) {
                    ch.action = "create";
                }
                Ok(ch)
            })
            .collect()
    }

    /// A tenant's standing against its limits, from the server's limiter.
    pub(crate) async fn usage(&self, tenant: &str) -> Result<Usage> {
        Ok(self
            .get(&format!("/v1/tenants/{}/usage", segment(tenant)))
            .await?
            .0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_stay_segments() {
        assert_eq!(segment("acme-1.x_y~"), "acme-1.x_y~");
        assert_eq!(segment("a/b"), "a%2Fb");
        assert_eq!(segment(".."), "%2E%2E");
        assert_eq!(segment("é ?#"), "%C3%A9%20%3F%23");
    }

    #[test]
    fn problems_map_to_the_store_backends_exit_codes() {
        let p = |kind: &str, field: Option<&str>| {
            let body = serde_json::json!({
                "type": format!("{PROBLEMS}{kind}"), "title": "t", "status": 400,
                "detail": "d", "field": field,
            });
            problem(StatusCode::BAD_REQUEST, body.to_string().as_bytes())
        };
        assert!(
            matches!(p("invalid", Some("plans.x.rate")), Exit::Usage(m) if m == "invalid: plans.x.rate: d")
        );
        assert!(matches!(p("malformed", None), Exit::Usage(m) if m == "d"));
        assert!(matches!(p("unauthorized", None), Exit::Usage(m) if m.contains("COG_TOKEN")));
        assert!(matches!(p("forbidden", None), Exit::Usage(_)));
        for kind in ["not-found", "exists", "in-use", "stale"] {
            assert!(
                matches!(p(kind, None), Exit::State(m) if m == "d"),
                "{kind}"
            );
        }
        assert!(matches!(p("plugin-refused", None), Exit::Plugin(_)));
        assert!(matches!(p("store-unavailable", None), Exit::Store(_)));
        assert!(matches!(
            problem(StatusCode::BAD_GATEWAY, b"<html>"),
            Exit::Store(m) if m.contains("502")
        ));
    }

    #[test]
    fn changes_read_back_as_the_diffs_words() {
        let c = change(&serde_json::json!({"action": "create", "kind": "plan", "id": "p"}));
        assert_eq!(
            c,
            Some(Change {
                action: "create",
                kind: "plan",
                id: "p".into()
            })
        );
        assert_eq!(
            change(&serde_json::json!({"action": "explode", "kind": "plan", "id": "p"})),
            None
        );
    }

    /// A server (or a proxy before it) answering every page with the same
    /// page: the listing ends with an error instead of looping for ever.
    /// The same for a page that promises more with nothing in it.
    #[tokio::test]
    async fn pages_that_do_not_move_on_are_an_error() {
        // Each page, and how many are asked for before the error: the
        // repeated cursor shows on the second, the empty page on the first.
        for (page, pages) in [
            (
                r#"{"items":[{"name":"free","plan":{"limits":[]}}],"next_cursor":"free"}"#,
                2,
            ),
            (r#"{"items":[],"next_cursor":"x"}"#, 1),
        ] {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let served = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let count = served.clone();
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                loop {
                    let Ok((mut conn, _)) = listener.accept().await else {
                        return;
                    };
                    let count = count.clone();
                    tokio::spawn(async move {
                        let mut buf = vec![0u8; 8192];
                        let mut have = Vec::new();
                        loop {
                            let Ok(n) = conn.read(&mut buf).await else {
                                return;
                            };
                            if n == 0 {
                                return;
                            }
                            have.extend_from_slice(&buf[..n]);
                            while let Some(end) = have.windows(4).position(|w| w == b"\r\n\r\n") {
                                have.drain(..end + 4);
                                count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                let answer = format!(
                                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                                     content-length: {}\r\n\r\n{page}",
                                    page.len()
                                );
                                if conn.write_all(answer.as_bytes()).await.is_err() {
                                    return;
                                }
                            }
                        }
                    });
                }
            });
            let remote = Remote::new(&format!("http://{addr}"), Some("t".into())).unwrap();
            let listed = tokio::time::timeout(
                Duration::from_secs(10),
                remote.all::<NamedPlan>("/v1/plans"),
            )
            .await
            .expect("the listing ends");
            assert!(
                matches!(&listed, Err(Exit::Store(m)) if m.contains("do not move on")),
                "{page}"
            );
            assert_eq!(
                served.load(std::sync::atomic::Ordering::Relaxed),
                pages,
                "pages asked for: {page}"
            );
        }
    }
}
