//! `RUN --mount=type=...,key=value` parsing (BuildKit's
//! `instructions/commands_runmount.go`).
//!
//! String values (target, source, from, id, env) are kept unexpanded here; a
//! resolved plan expands them and fills defaults with [`finalize`].

use super::ast::{parse_octal_mode, Mount, MountType, SharingMode};

/// Parses the value of one `--mount=` flag.
pub fn parse_mount(value: &str) -> Result<Mount, String> {
    let fields = split_csv(value)?;
    let mut m = Mount {
        kind: MountType::Bind,
        target: None,
        source: None,
        from: None,
        id: None,
        sharing: None,
        mode: None,
        uid: None,
        gid: None,
        readonly: false,
        required: false,
        size: None,
        env: None,
    };
    let mut readonly: Option<bool> = None;
    let type_name = |k: MountType| match k {
        MountType::Bind => "bind",
        MountType::Cache => "cache",
        MountType::Tmpfs => "tmpfs",
        MountType::Secret => "secret",
        MountType::Ssh => "ssh",
    };
    for field in &fields {
        let Some((key, val)) = field.split_once('=') else {
            match field.to_ascii_lowercase().as_str() {
                "readonly" | "ro" => readonly = Some(true),
                "readwrite" | "rw" => readonly = Some(false),
                "required" if matches!(m.kind, MountType::Secret | MountType::Ssh) => {
                    m.required = true
                }
                "required" => {
                    return Err(format!(
                        "unexpected key 'required' for mount type '{}'",
                        type_name(m.kind)
                    ))
                }
                _ => return Err(format!("invalid field '{field}' must be a key=value pair")),
            }
            continue;
        };
        let key = key.to_ascii_lowercase();
        let val = val.to_string();
        let unexpected = || {
            format!(
                "unexpected key '{key}' for mount type '{}'",
                type_name(m.kind)
            )
        };
        match key.as_str() {
            "type" => {
                m.kind = match val.to_ascii_lowercase().as_str() {
                    "bind" => MountType::Bind,
                    "cache" => MountType::Cache,
                    "tmpfs" => MountType::Tmpfs,
                    "secret" => MountType::Secret,
                    "ssh" => MountType::Ssh,
                    _ => return Err(format!("unsupported mount type {val:?}")),
                }
            }
            "from" => m.from = Some(val),
            "source" | "src" => m.source = Some(val),
            "target" | "dst" | "destination" => m.target = Some(val),
            "readonly" | "ro" => readonly = Some(parse_bool(&key, &val)?),
            "readwrite" | "rw" => readonly = Some(!parse_bool(&key, &val)?),
            "required" => {
                if !matches!(m.kind, MountType::Secret | MountType::Ssh) {
                    return Err(unexpected());
                }
                m.required = parse_bool(&key, &val)?;
            }
            "size" => {
                if m.kind != MountType::Tmpfs {
                    return Err(unexpected());
                }
                m.size = Some(parse_ram_bytes(&val)?);
            }
            "id" => m.id = Some(val),
            "sharing" => {
                if m.kind != MountType::Cache {
                    return Err(unexpected());
                }
                m.sharing = Some(match val.to_ascii_lowercase().as_str() {
                    "shared" => SharingMode::Shared,
                    "private" => SharingMode::Private,
                    "locked" => SharingMode::Locked,
                    _ => return Err(format!("unsupported sharing value {val:?}")),
                });
            }
            "mode" => {
                m.mode = Some(
                    parse_octal_mode(&val)
                        .map_err(|_| format!("invalid mount mode {val:?}: must be octal"))?,
                )
            }
            "uid" => {
                m.uid = Some(
                    val.parse()
                        .map_err(|_| format!("invalid mount uid {val:?}"))?,
                )
            }
            "gid" => {
                m.gid = Some(
                    val.parse()
                        .map_err(|_| format!("invalid mount gid {val:?}"))?,
                )
            }
            "env" => m.env = Some(val),
            _ => return Err(format!("unexpected key '{key}' in '{field}'")),
        }
    }
    let file_info = matches!(
        m.kind,
        MountType::Secret | MountType::Ssh | MountType::Cache
    );
    if !file_info {
        for (set, what) in [
            (m.mode.is_some(), "mode"),
            (m.uid.is_some(), "uid"),
            (m.gid.is_some(), "gid"),
        ] {
            if set {
                return Err(format!(
                    "{what} not allowed for {:?} type mounts",
                    type_name(m.kind)
                ));
            }
        }
    }
    m.readonly = readonly.unwrap_or(!matches!(m.kind, MountType::Cache | MountType::Tmpfs));
    if matches!(m.kind, MountType::Secret | MountType::Ssh) {
        if m.from.is_some() {
            return Err(format!(
                "{} mount should not have a from",
                type_name(m.kind)
            ));
        }
        // For secrets and ssh, `source` is an alias of `id`.
        if let Some(src) = m.source.take() {
            if m.id.is_some() {
                return Err("both source and id can't be set".to_string());
            }
            m.id = Some(src);
        }
    }
    if m.kind == MountType::Cache && m.sharing.is_none() {
        m.sharing = Some(SharingMode::Shared);
    }
    if matches!(
        m.kind,
        MountType::Bind | MountType::Cache | MountType::Tmpfs
    ) && m.target.is_none()
    {
        return Err(format!(
            "mount type {} requires a target",
            type_name(m.kind)
        ));
    }
    if m.kind == MountType::Secret && m.target.is_none() && m.id.is_none() && m.env.is_none() {
        return Err("secret mount requires an id or a target".to_string());
    }
    Ok(m)
}

/// Fills the defaults that depend on (expanded) string values: cache id =
/// target, secret id = base name of target, secret target =
/// `/run/secrets/<id>`, ssh id = `default`.
pub fn finalize(m: &mut Mount) {
    match m.kind {
        MountType::Cache => {
            if m.id.as_deref().unwrap_or("").is_empty() {
                m.id = m.target.clone();
            }
        }
        MountType::Secret => {
            if m.id.is_none() {
                if let Some(t) = &m.target {
                    let base = t.trim_end_matches('/').rsplit('/').next().unwrap_or(t);
                    m.id = Some(base.to_string());
                }
            }
            if m.target.is_none() && m.env.is_none() {
                if let Some(id) = &m.id {
                    m.target = Some(format!("/run/secrets/{id}"));
                }
            }
        }
        MountType::Ssh => {
            if m.id.is_none() {
                m.id = Some("default".to_string());
            }
        }
        MountType::Bind | MountType::Tmpfs => {}
    }
}

fn parse_bool(key: &str, v: &str) -> Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "t" | "true" => Ok(true),
        "0" | "f" | "false" => Ok(false),
        _ => Err(format!("invalid value for {key}: {v:?}")),
    }
}

/// Docker's `units.RAMInBytes`: `64m`, `1g`, `512KiB`, `100` (binary units).
fn parse_ram_bytes(s: &str) -> Result<u64, String> {
    let err = || format!("invalid size {s:?}");
    let lower = s.trim().to_ascii_lowercase();
    let num_len = lower
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(lower.len());
    let (num, unit) = lower.split_at(num_len);
    let value: f64 = num.parse().map_err(|_| err())?;
    let unit = unit.trim();
    let unit = unit
        .strip_suffix("ib")
        .or_else(|| unit.strip_suffix('b'))
        .unwrap_or(unit);
    let mult: f64 = match unit {
        "" => 1.0,
        "k" => 1024.0,
        "m" => 1024.0 * 1024.0,
        "g" => 1024.0 * 1024.0 * 1024.0,
        "t" => 1024f64.powi(4),
        "p" => 1024f64.powi(5),
        _ => return Err(err()),
    };
    Ok((value * mult) as u64)
}

/// Splits one CSV record (Go `encoding/csv`): commas separate fields, a field
/// may be double-quoted with `""` standing for a quote.
fn split_csv(s: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    None => return Err(format!("invalid mount {s:?}: unterminated quote")),
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                }
            }
            match chars.next() {
                None => {
                    fields.push(field);
                    return Ok(fields);
                }
                Some(',') => {}
                Some(_) => return Err(format!("invalid mount {s:?}: extraneous quote")),
            }
        } else {
            loop {
                match chars.next() {
                    None => {
                        fields.push(field);
                        return Ok(fields);
                    }
                    Some(',') => break,
                    Some(c) => field.push(c),
                }
            }
        }
        fields.push(field);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_mount_defaults() {
        let mut m = parse_mount("type=cache,target=/root/.cache/go-build").unwrap();
        assert_eq!(m.kind, MountType::Cache);
        assert_eq!(m.sharing, Some(SharingMode::Shared));
        assert!(!m.readonly);
        finalize(&mut m);
        assert_eq!(m.id.as_deref(), Some("/root/.cache/go-build"));
    }

    #[test]
    fn all_keys() {
        let m = parse_mount("type=cache,id=gomod,target=/go/pkg,sharing=locked,mode=0755,uid=1000,gid=1000,from=builder,source=/cache,ro").unwrap();
        assert_eq!(m.id.as_deref(), Some("gomod"));
        assert_eq!(m.sharing, Some(SharingMode::Locked));
        assert_eq!(m.mode, Some(0o755));
        assert_eq!((m.uid, m.gid), (Some(1000), Some(1000)));
        assert_eq!(m.from.as_deref(), Some("builder"));
        assert_eq!(m.source.as_deref(), Some("/cache"));
        assert!(m.readonly);

        let m = parse_mount("target=/src,rw").unwrap();
        assert_eq!(m.kind, MountType::Bind);
        assert!(!m.readonly);
        assert!(
            parse_mount("target=/src").unwrap().readonly,
            "bind defaults to read-only"
        );

        let m = parse_mount("type=tmpfs,target=/tmp,size=64m").unwrap();
        assert_eq!(m.size, Some(64 << 20));
        assert!(!m.readonly);

        let mut m = parse_mount("type=secret,id=aws,required").unwrap();
        assert!(m.required && m.readonly);
        finalize(&mut m);
        assert_eq!(m.target.as_deref(), Some("/run/secrets/aws"));
        let mut m = parse_mount("type=secret,target=/root/.npmrc,required=false").unwrap();
        finalize(&mut m);
        assert_eq!(m.id.as_deref(), Some(".npmrc"));
        let m = parse_mount("type=secret,src=token,env=TOKEN").unwrap();
        assert_eq!(
            (m.id.as_deref(), m.source.as_deref()),
            (Some("token"), None)
        );
        let mut m = parse_mount("type=ssh").unwrap();
        finalize(&mut m);
        assert_eq!(m.id.as_deref(), Some("default"));
        let m = parse_mount(r#""type=bind","target=/a,b""#).unwrap();
        assert_eq!(m.target.as_deref(), Some("/a,b"));
    }

    #[test]
    fn errors() {
        let cases = [
            ("type=nfs,target=/x", "unsupported mount type"),
            ("type=cache", "requires a target"),
            ("type=bind,target=/x,mode=0700", "mode not allowed"),
            (
                "type=bind,target=/x,sharing=locked",
                "unexpected key 'sharing'",
            ),
            ("type=cache,target=/x,sharing=weird", "unsupported sharing"),
            ("type=cache,target=/x,required", "unexpected key 'required'"),
            ("type=tmpfs,target=/x,size=lots", "invalid size"),
            ("type=cache,target=/x,mode=999", "must be octal"),
            ("type=secret,id=a,from=b", "should not have a from"),
            ("type=cache,target=/x,bogus=1", "unexpected key 'bogus'"),
            ("type=cache,target=/x,novalue", "must be a key=value pair"),
            ("type=secret", "requires an id or a target"),
        ];
        for (input, want) in cases {
            let e = parse_mount(input).unwrap_err();
            assert!(e.contains(want), "{input}: {e}");
        }
    }
}
