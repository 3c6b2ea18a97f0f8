//! `login`'s check that a registry accepts a user name and password before
//! they are saved: `GET /v2/` (the distribution spec's version check)
//! anonymously; on a Basic challenge again with the credentials, on a
//! Bearer challenge a token request to the realm with them.
use super::{Credential, Registry};
use anyhow::{bail, Context, Result};

/// Fails with a message naming `host` when it refuses `cred`.
pub fn check_login(reg: &Registry, host: &str, cred: &Credential) -> Result<()> {
    let (client, base) = http_client(reg, host)?;
    let url = format!("{base}/v2/");
    super::block_on(async move {
        let describe = |e: reqwest::Error| describe(host, e);
        let resp = client.get(&url).send().await.map_err(describe)?;
        if resp.status().is_success() {
            // An open registry: nothing to check the credentials against.
            return Ok(());
        }
        if resp.status() != reqwest::StatusCode::UNAUTHORIZED {
            bail!("registry {host}: GET {url} answered {}", resp.status());
        }
        let challenge = super::challenge_of(&resp);
        let refused = || {
            anyhow::anyhow!(
                "registry {host} answered 401 Unauthorized: wrong user name or password for {:?}",
                cred.username
            )
        };
        if challenge.len() >= 6 && challenge[..6].eq_ignore_ascii_case("bearer") {
            let params = challenge_params(&challenge[6..]);
            let realm = params
                .iter()
                .find(|(k, _)| k == "realm")
                .map(|(_, v)| v.clone())
                .with_context(|| format!("registry {host}: Bearer challenge without realm"))?;
            let mut query = vec![("account".to_string(), cred.username.clone())];
            if let Some((_, s)) = params.iter().find(|(k, _)| k == "service") {
                query.push(("service".into(), s.clone()));
            }
            let resp = client
                .get(&realm)
                .query(&query)
                .basic_auth(&cred.username, Some(&cred.secret))
                .send()
                .await
                .map_err(describe)?;
            return match resp.status() {
                s if s.is_success() => Ok(()),
                reqwest::StatusCode::UNAUTHORIZED | reqwest::StatusCode::FORBIDDEN => {
                    Err(refused())
                }
                s => bail!("registry {host}: token server {realm} answered {s}"),
            };
        }
        let resp = client
            .get(&url)
            .basic_auth(&cred.username, Some(&cred.secret))
            .send()
            .await
            .map_err(describe)?;
        match resp.status() {
            s if s.is_success() => Ok(()),
            reqwest::StatusCode::UNAUTHORIZED | reqwest::StatusCode::FORBIDDEN => Err(refused()),
            s => bail!("registry {host}: GET {url} answered {s}"),
        }
    })?
}

/// An http client for `host` (its CA trusted, as [`Registry::client_for`])
/// and the base URL of its API (`http[s]://host`).
pub(super) fn http_client(reg: &Registry, host: &str) -> Result<(reqwest::Client, String)> {
    super::install_crypto_provider();
    let scheme = if reg.hosts.insecure(host) {
        "http"
    } else {
        "https"
    };
    let api_host = if host == "docker.io" {
        "registry-1.docker.io"
    } else {
        host
    };
    let mut builder = reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(30))
        .timeout(std::time::Duration::from_secs(120));
    if let Some(ca) = reg.hosts.ca_file(host) {
        let pem = std::fs::read(&ca).with_context(|| format!("reading CA {}", ca.display()))?;
        let cert =
            reqwest::Certificate::from_pem(&pem).with_context(|| format!("CA {}", ca.display()))?;
        builder = builder.tls_certs_merge([cert]);
    }
    let client = builder.build().context("setting up an http client")?;
    Ok((client, format!("{scheme}://{api_host}")))
}

/// A request error with its causes (reqwest's Display omits them).
pub(super) fn describe(host: &str, e: reqwest::Error) -> anyhow::Error {
    let mut msg = format!("registry {host}: {e}");
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        msg.push_str(&format!(": {s}"));
        src = s.source();
    }
    anyhow::anyhow!(msg)
}

/// `realm="https://auth",service="registry"` → pairs.
pub(super) fn challenge_params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let after = after.trim_start();
        let (value, next) = if let Some(q) = after.strip_prefix('"') {
            match q.find('"') {
                Some(end) => (q[..end].to_string(), &q[end + 1..]),
                None => (q.to_string(), ""),
            }
        } else {
            match after.find(',') {
                Some(end) => (after[..end].trim().to_string(), &after[end..]),
                None => (after.trim().to_string(), ""),
            }
        };
        out.push((key, value));
        rest = next.trim_start().trim_start_matches(',').trim_start();
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_bearer_challenge() {
        let p = super::challenge_params(
            r#" realm="https://auth.example.com/token",service="registry.example.com",scope="repository:a:pull""#,
        );
        assert_eq!(
            p[0],
            ("realm".into(), "https://auth.example.com/token".into())
        );
        assert_eq!(p[1], ("service".into(), "registry.example.com".into()));
        assert_eq!(p[2].0, "scope");
    }
}
