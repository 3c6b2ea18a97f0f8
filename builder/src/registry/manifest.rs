//! Manifest downloads with a size bound. oci-client reads a manifest body
//! whole before returning it, so a hostile registry could make a pull (and
//! berth-buildd) buffer any amount; here the body is read in chunks and
//! refused past [`MAX_MANIFEST_SIZE`] (Content-Length checked first). Blobs
//! still go through oci-client, which streams them.
//!
//! Authentication follows the distribution spec's challenge: anonymous
//! first; on `WWW-Authenticate: Basic` the credentials; on `Bearer` a token
//! for `repository:<name>:pull` from the realm (with the credentials, if
//! any), kept for the later requests of the same fetcher.
use super::login::{challenge_params, describe, http_client};
use super::{Credential, Registry};
use crate::image::{check_size, MAX_MANIFEST_SIZE};
use anyhow::{bail, Context, Result};
use tokio::sync::Mutex;

/// Manifest media types berth asks for and understands.
pub(super) const ACCEPT: &[&str] = &[
    crate::image::MEDIA_MANIFEST,
    crate::image::MEDIA_INDEX,
    crate::image::MEDIA_DOCKER_MANIFEST,
    super::pull::MEDIA_DOCKER_LIST,
];

enum Auth {
    None,
    Basic,
    Bearer(String),
}

/// Fetches manifests of one repository of one registry host.
pub(super) struct ManifestFetcher {
    client: reqwest::Client,
    base: String,
    host: String,
    repository: String,
    cred: Option<Credential>,
    auth: Mutex<Auth>,
}

impl ManifestFetcher {
    /// `cred` is `host`'s credential (looked up once per transfer: a
    /// credential helper is a process to run).
    pub fn new(
        reg: &Registry,
        host: &str,
        repository: &str,
        cred: Option<Credential>,
    ) -> Result<Self> {
        let (client, base) = http_client(reg, host)?;
        Ok(Self {
            client,
            base,
            host: host.to_string(),
            repository: repository.to_string(),
            cred,
            auth: Mutex::new(Auth::None),
        })
    }

    fn unauthorized(&self, detail: &str) -> anyhow::Error {
        anyhow::anyhow!(
            "registry {} answered 401 Unauthorized: the credentials are missing or wrong (berth-build login {}){detail}",
            self.host,
            self.host
        )
    }

    async fn send(&self, url: &str) -> Result<reqwest::Response> {
        let mut req = self
            .client
            .get(url)
            .header(reqwest::header::ACCEPT, ACCEPT.join(", "));
        match &*self.auth.lock().await {
            Auth::None => {}
            Auth::Basic => {
                if let Some(c) = &self.cred {
                    req = req.basic_auth(&c.username, Some(&c.secret));
                }
            }
            Auth::Bearer(t) => req = req.bearer_auth(t),
        }
        req.send().await.map_err(|e| describe(&self.host, e))
    }

    /// Answers a 401's challenge; false when there is nothing more to try.
    async fn authenticate(&self, challenge: &str) -> Result<bool> {
        let mut auth = self.auth.lock().await;
        let scheme = challenge.split_whitespace().next().unwrap_or("");
        if scheme.eq_ignore_ascii_case("basic") {
            if self.cred.is_none() || matches!(*auth, Auth::Basic) {
                return Ok(false);
            }
            *auth = Auth::Basic;
            return Ok(true);
        }
        if !scheme.eq_ignore_ascii_case("bearer") || matches!(*auth, Auth::Bearer(_)) {
            return Ok(false);
        }
        let params = challenge_params(&challenge[scheme.len()..]);
        let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let realm = get("realm")
            .with_context(|| format!("registry {}: Bearer challenge without realm", self.host))?;
        let mut query = vec![(
            "scope".to_string(),
            format!("repository:{}:pull", self.repository),
        )];
        if let Some(s) = get("service") {
            query.push(("service".into(), s));
        }
        let mut req = self.client.get(&realm).query(&query);
        if let Some(c) = &self.cred {
            req = req.basic_auth(&c.username, Some(&c.secret));
        }
        let resp = req.send().await.map_err(|e| describe(&self.host, e))?;
        if !resp.status().is_success() {
            return Err(self.unauthorized(&format!(
                ": the token server {realm} answered {}",
                resp.status()
            )));
        }
        let body = read_bounded(resp, 1 << 20, "token response").await?;
        let v: serde_json::Value = serde_json::from_slice(&body)
            .with_context(|| format!("registry {}: token response is not JSON", self.host))?;
        let token = v
            .get("token")
            .or_else(|| v.get("access_token"))
            .and_then(|t| t.as_str())
            .with_context(|| format!("registry {}: token response without a token", self.host))?;
        *auth = Auth::Bearer(token.to_string());
        Ok(true)
    }

    /// The manifest `reference` (tag or digest): its bytes and the
    /// `mediaType` they declare (empty when they declare none).
    pub async fn get(&self, reference: &str) -> Result<(Vec<u8>, String)> {
        let url = format!("{}/v2/{}/manifests/{reference}", self.base, self.repository);
        let what = format!("manifest {}/{}:{reference}", self.host, self.repository);
        let mut resp = self.send(&url).await?;
        for _ in 0..2 {
            if resp.status() != reqwest::StatusCode::UNAUTHORIZED {
                break;
            }
            let challenge = super::challenge_of(&resp);
            if !self.authenticate(&challenge).await? {
                return Err(self.unauthorized(""));
            }
            resp = self.send(&url).await?;
        }
        let status = resp.status();
        if status == reqwest::StatusCode::UNAUTHORIZED {
            return Err(self.unauthorized(""));
        }
        if !status.is_success() {
            let body = read_bounded(resp, 64 << 10, "error response")
                .await
                .unwrap_or_default();
            bail!(
                "fetching {what}: registry {} answered {status}: {}",
                self.host,
                String::from_utf8_lossy(&body).trim()
            );
        }
        let bytes = read_bounded(resp, MAX_MANIFEST_SIZE, &what).await?;
        #[derive(serde::Deserialize)]
        struct Probe {
            #[serde(rename = "mediaType", default)]
            media_type: Option<String>,
        }
        let probe: Probe = serde_json::from_slice(&bytes)
            .with_context(|| format!("registry {} sent a {what} that is not JSON", self.host))?;
        Ok((bytes, probe.media_type.unwrap_or_default()))
    }
}

/// Reads a response body of at most `limit` bytes ([`crate::image::TooLarge`]
/// past it, before reading on when Content-Length already says so).
async fn read_bounded(mut resp: reqwest::Response, limit: u64, what: &str) -> Result<Vec<u8>> {
    if let Some(len) = resp.content_length() {
        check_size(what, len, limit)?;
    }
    let mut out = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .with_context(|| format!("reading {what}"))?
    {
        out.extend_from_slice(&chunk);
        check_size(what, out.len() as u64, limit)?;
    }
    Ok(out)
}
