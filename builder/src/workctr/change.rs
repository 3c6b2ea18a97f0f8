//! `--change 'INSTRUCTION …'`: the Dockerfile instructions `docker commit`
//! and `docker import` accept (CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, ONBUILD,
//! USER, VOLUME, WORKDIR, and STOPSIGNAL as buildah does), applied to an
//! image's config.
use crate::image::RunConfig;
use anyhow::{bail, Context, Result};

/// Applies one `--change` to `cfg`.
pub fn apply(cfg: &mut RunConfig, change: &str) -> Result<()> {
    let change = change.trim();
    let (word, rest) = change
        .split_once(char::is_whitespace)
        .map(|(w, r)| (w, r.trim()))
        .unwrap_or((change, ""));
    let word = word.to_ascii_uppercase();
    if rest.is_empty() && word != "CMD" && word != "ENTRYPOINT" {
        bail!("--change {change:?}: {word} needs an argument");
    }
    match word.as_str() {
        "CMD" => cfg.cmd = Some(command(rest)?),
        "ENTRYPOINT" => {
            cfg.entrypoint = Some(command(rest)?);
            // As in a Dockerfile: a new ENTRYPOINT drops the inherited CMD.
            cfg.cmd = None;
        }
        "ENV" => {
            for (k, v) in pairs(rest, "ENV")? {
                cfg.env_set(&k, &v);
            }
        }
        "LABEL" => {
            for (k, v) in pairs(rest, "LABEL")? {
                cfg.labels.insert(k, v);
            }
        }
        "EXPOSE" => {
            for p in rest.split_whitespace() {
                let p = if p.contains('/') {
                    p.to_ascii_lowercase()
                } else {
                    format!("{p}/tcp")
                };
                let port = p.split('/').next().unwrap_or_default();
                if port.parse::<u16>().is_err() {
                    bail!("--change {change:?}: bad port {p:?}");
                }
                cfg.exposed_ports.insert(p, serde_json::json!({}));
            }
        }
        "VOLUME" => {
            let vols = if rest.starts_with('[') {
                serde_json::from_str::<Vec<String>>(rest)
                    .with_context(|| format!("--change {change:?}: bad JSON array"))?
            } else {
                rest.split_whitespace().map(str::to_string).collect()
            };
            for v in vols {
                cfg.volumes.insert(v, serde_json::json!({}));
            }
        }
        "USER" => cfg.user = rest.to_string(),
        "WORKDIR" => {
            cfg.working_dir = if rest.starts_with('/') {
                rest.to_string()
            } else {
                let base = if cfg.working_dir.is_empty() {
                    "/"
                } else {
                    &cfg.working_dir
                };
                format!("{}/{rest}", base.trim_end_matches('/'))
            }
        }
        "ONBUILD" => cfg.on_build.push(rest.to_string()),
        "STOPSIGNAL" => cfg.stop_signal = rest.to_string(),
        w => bail!(
            "--change {change:?}: {w} is not one of CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, ONBUILD, STOPSIGNAL, USER, VOLUME, WORKDIR"
        ),
    }
    Ok(())
}

/// Exec form (a JSON array) or shell form (`/bin/sh -c …`).
fn command(rest: &str) -> Result<Vec<String>> {
    if rest.starts_with('[') {
        if let Ok(v) = serde_json::from_str::<Vec<String>>(rest) {
            return Ok(v);
        }
    }
    if rest.is_empty() {
        return Ok(Vec::new());
    }
    Ok(vec!["/bin/sh".into(), "-c".into(), rest.into()])
}

/// `K=V K2="V 2"` or the legacy `K V…` form.
fn pairs(rest: &str, what: &str) -> Result<Vec<(String, String)>> {
    let words = split_words(rest)?;
    let first_has_eq = words.first().is_some_and(|w| w.contains('='));
    if !first_has_eq {
        let (k, v) = rest
            .split_once(char::is_whitespace)
            .with_context(|| format!("{what} {rest:?}: want KEY=VALUE"))?;
        return Ok(vec![(k.to_string(), v.trim().to_string())]);
    }
    words
        .into_iter()
        .map(|w| {
            w.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .with_context(|| format!("{what} {rest:?}: {w:?} is not KEY=VALUE"))
        })
        .collect()
}

/// Splits on whitespace outside quotes, removing the quotes and backslashes.
fn split_words(s: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quote = None::<char>;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (_, '\\') if quote != Some('\'') => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
                in_word = true;
            }
            (None, '"' | '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (Some(q), c) if c == q => quote = None,
            (None, c) if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            (_, c) => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if quote.is_some() {
        bail!("unterminated quote in {s:?}");
    }
    if in_word {
        out.push(cur);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_apply_like_docker_commit() {
        let mut c = RunConfig::default();
        apply(&mut c, r#"CMD ["/bin/sh","-c","cat /hello"]"#).unwrap();
        assert_eq!(c.cmd.as_ref().unwrap()[2], "cat /hello");
        apply(&mut c, "CMD echo hi").unwrap();
        assert_eq!(
            c.cmd,
            Some(vec!["/bin/sh".into(), "-c".into(), "echo hi".into()])
        );
        apply(&mut c, r#"ENV A=1 B="two words""#).unwrap();
        assert_eq!(c.env_get("B"), Some("two words"));
        apply(&mut c, "ENV C legacy form").unwrap();
        assert_eq!(c.env_get("C"), Some("legacy form"));
        apply(&mut c, "EXPOSE 80 53/udp").unwrap();
        assert!(c.exposed_ports.contains_key("80/tcp") && c.exposed_ports.contains_key("53/udp"));
        apply(&mut c, "WORKDIR /srv").unwrap();
        apply(&mut c, "WORKDIR app").unwrap();
        assert_eq!(c.working_dir, "/srv/app");
        assert!(apply(&mut c, "RUN true").is_err());
        assert!(apply(&mut c, "EXPOSE http").is_err());
    }
}
