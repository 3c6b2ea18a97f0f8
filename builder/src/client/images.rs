//! `images` and `history` output as Docker prints it: the same columns,
//! familiar names (`busybox`, not `docker.io/library/busybox`), the config
//! digest as IMAGE ID, relative times and Docker's size units, `-q`,
//! `--digests`, `--no-trunc` and `--filter reference=…|dangling=…|before=…|since=…`.
use super::ImageRow;
use crate::store::HistoryRow;
use anyhow::{bail, Context, Result};
use clap::Args;
use std::io::Write;

#[derive(Debug, Args)]
pub struct ImagesArgs {
    /// Only image IDs.
    #[arg(short, long)]
    pub quiet: bool,
    /// Show the manifest digest of each image.
    #[arg(long)]
    pub digests: bool,
    /// Full IDs.
    #[arg(long = "no-trunc")]
    pub no_trunc: bool,
    /// reference=PATTERN, dangling=true|false, before=IMAGE, since=IMAGE
    /// (repeatable; all must hold).
    #[arg(short, long)]
    pub filter: Vec<String>,
    /// REPOSITORY[:TAG] to list (same as --filter reference=...).
    pub repository: Option<String>,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    pub image: String,
    /// Full IDs and commands.
    #[arg(long = "no-trunc")]
    pub no_trunc: bool,
    /// Only the IDs.
    #[arg(short, long)]
    pub quiet: bool,
    /// Relative times and human sizes (`--human=false`: RFC 3339 and bytes).
    #[arg(short = 'H', long, default_value_t = true, action = clap::ArgAction::Set)]
    pub human: bool,
}

/// Docker's short form of a stored name: `docker.io/library/` and
/// `docker.io/` are dropped.
pub fn familiar(name: &str) -> &str {
    name.strip_prefix("docker.io/library/")
        .or_else(|| name.strip_prefix("docker.io/"))
        .unwrap_or(name)
}

/// (repository, tag) of a stored `name:tag`, familiar form.
fn split_tag(name: &str) -> (String, String) {
    let f = familiar(name);
    let slash = f.rfind('/').map_or(0, |i| i + 1);
    match f[slash..].rfind(':') {
        Some(i) => (f[..slash + i].to_string(), f[slash + i + 1..].to_string()),
        None => (f.to_string(), "<none>".to_string()),
    }
}

fn short_id(digest: &str, no_trunc: bool) -> String {
    if no_trunc {
        digest.to_string()
    } else {
        digest
            .trim_start_matches("sha256:")
            .chars()
            .take(12)
            .collect()
    }
}

/// Go's path.Match for the patterns `--filter reference=` takes: `*`
/// (no '/'), `?` and literal characters.
fn glob(pat: &[u8], s: &[u8]) -> bool {
    match (pat.first(), s.first()) {
        (None, None) => true,
        (Some(b'*'), _) => {
            glob(&pat[1..], s) || (s.first().is_some_and(|&c| c != b'/') && glob(pat, &s[1..]))
        }
        (Some(b'?'), Some(&c)) if c != b'/' => glob(&pat[1..], &s[1..]),
        (Some(p), Some(c)) if p == c => glob(&pat[1..], &s[1..]),
        _ => false,
    }
}

/// Docker's reference filter: the pattern matches the familiar repository
/// or `repository:tag`; a pattern without a tag matches any tag.
fn reference_matches(pattern: &str, stored: &str) -> bool {
    let (repo, tag) = split_tag(stored);
    let pat = familiar(pattern);
    glob(pat.as_bytes(), repo.as_bytes())
        || glob(pat.as_bytes(), format!("{repo}:{tag}").as_bytes())
}

struct Filters {
    references: Vec<String>,
    dangling: Option<bool>,
    before: Option<String>,
    since: Option<String>,
}

fn parse_filters(args: &ImagesArgs, rows: &[ImageRow]) -> Result<Filters> {
    let mut f = Filters {
        references: args.repository.iter().cloned().collect(),
        dangling: None,
        before: None,
        since: None,
    };
    // before/since name an image; its creation time is the bound.
    let created_of = |name: &str| -> Result<String> {
        rows.iter()
            .find(|r| {
                r.tags.iter().any(|t| crate::store::same_name(t, name))
                    || r.id == name
                    || r.digest == name
                    || r.id.trim_start_matches("sha256:").starts_with(name)
            })
            .map(|r| r.created.clone())
            .with_context(|| format!("no such image: {name}"))
    };
    for spec in &args.filter {
        let (k, v) = spec
            .split_once('=')
            .with_context(|| format!("bad filter {spec:?}: want KEY=VALUE"))?;
        match k {
            "reference" => f.references.push(v.to_string()),
            "dangling" => {
                f.dangling = Some(match v {
                    "true" | "1" => true,
                    "false" | "0" => false,
                    _ => bail!("invalid filter 'dangling={v}'"),
                })
            }
            "before" => f.before = Some(created_of(v)?),
            "since" => f.since = Some(created_of(v)?),
            _ => bail!("invalid filter '{k}' (supported: reference, dangling, before, since)"),
        }
    }
    Ok(f)
}

fn parse_time(s: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&chrono::Utc))
}

/// Docker's `units.HumanDuration` + " ago".
fn ago(created: &str) -> String {
    let Some(t) = parse_time(created) else {
        return "N/A".into();
    };
    let secs = (chrono::Utc::now() - t).num_seconds();
    let hours = secs / 3600;
    let d = if secs < 1 {
        "Less than a second".to_string()
    } else if secs == 1 {
        "1 second".into()
    } else if secs < 60 {
        format!("{secs} seconds")
    } else if secs / 60 == 1 {
        "About a minute".into()
    } else if secs < 3600 {
        format!("{} minutes", secs / 60)
    } else if hours == 1 {
        "About an hour".into()
    } else if hours < 48 {
        format!("{hours} hours")
    } else if hours < 24 * 7 * 2 {
        format!("{} days", hours / 24)
    } else if hours < 24 * 30 * 2 {
        format!("{} weeks", hours / 24 / 7)
    } else if hours < 24 * 365 * 2 {
        format!("{} months", hours / 24 / 30)
    } else {
        format!("{} years", hours / 24 / 365)
    };
    format!("{d} ago")
}

/// Docker's `units.HumanSizeWithPrecision(n, 3)`: decimal units and Go's
/// `%.3g` (`4.26MB`, `0B`, `12.3kB`, and Go's own `1e+03kB` just below a
/// unit boundary).
pub fn human_size(n: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1000.0 && i < units.len() - 1 {
        v /= 1000.0;
        i += 1;
    }
    format!("{}{}", go_g(v, 3), units[i])
}

/// Go's `%.{prec}g` of a non-negative number: `prec` significant digits,
/// trailing zeros dropped, exponent form when the exponent is below -4 or
/// not below `prec`.
fn go_g(v: f64, prec: usize) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let trim = |s: String| {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    };
    // The exponent after rounding to `prec` digits decides the form.
    let sci = format!("{:.*e}", prec - 1, v);
    let (mant, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if exp < -4 || exp >= prec as i32 {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{}e{sign}{:02}", trim(mant.to_string()), exp.abs())
    } else {
        let decimals = (prec as i32 - 1 - exp).max(0) as usize;
        trim(format!("{v:.decimals$}"))
    }
}

/// Prints `rows` as columns separated by three spaces (Docker's tabwriter).
fn table(out: &mut dyn Write, rows: &[Vec<String>]) -> std::io::Result<()> {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for r in rows {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            if c + 1 == r.len() {
                line.push_str(cell);
            } else {
                line.push_str(cell);
                line.push_str(&" ".repeat(widths[c] - cell.chars().count() + 3));
            }
        }
        writeln!(out, "{line}")?;
    }
    Ok(())
}

/// `images`: one line per name (untagged images as `<none>`), newest first.
pub fn print_images(mut rows: Vec<ImageRow>, args: &ImagesArgs, out: &mut dyn Write) -> Result<()> {
    let f = parse_filters(args, &rows)?;
    rows.sort_by(|a, b| b.created.cmp(&a.created));
    let mut lines: Vec<Vec<String>> = Vec::new();
    let mut header = vec!["REPOSITORY".to_string(), "TAG".to_string()];
    if args.digests {
        header.push("DIGEST".into());
    }
    header.extend(["IMAGE ID", "CREATED", "SIZE"].map(String::from));
    lines.push(header);
    let mut ids: Vec<String> = Vec::new();
    for img in &rows {
        if let Some(d) = f.dangling {
            if d != img.tags.is_empty() {
                continue;
            }
        }
        let t = parse_time(&img.created);
        if let Some(b) = f.before.as_deref().and_then(parse_time) {
            if t.is_none_or(|t| t >= b) {
                continue;
            }
        }
        if let Some(s) = f.since.as_deref().and_then(parse_time) {
            if t.is_none_or(|t| t <= s) {
                continue;
            }
        }
        let names: Vec<&String> = if f.references.is_empty() {
            img.tags.iter().collect()
        } else {
            img.tags
                .iter()
                .filter(|t| f.references.iter().any(|p| reference_matches(p, t)))
                .collect()
        };
        if !f.references.is_empty() && names.is_empty() {
            continue;
        }
        let id = short_id(&img.id, args.no_trunc);
        if !ids.contains(&id) {
            ids.push(id.clone());
        }
        let pairs: Vec<(String, String)> = if names.is_empty() {
            vec![("<none>".into(), "<none>".into())]
        } else {
            names.iter().map(|n| split_tag(n)).collect()
        };
        for (repo, tag) in pairs {
            let mut l = vec![repo, tag];
            if args.digests {
                l.push(img.digest.clone());
            }
            // Docker's SIZE: the unpacked layers, not the compressed blobs.
            l.extend([id.clone(), ago(&img.created), human_size(img.unpacked_size)]);
            lines.push(l);
        }
    }
    if args.quiet {
        for id in ids {
            writeln!(out, "{id}")?;
        }
        return Ok(());
    }
    table(out, &lines)?;
    Ok(())
}

/// `history`: IMAGE, CREATED, CREATED BY, SIZE, COMMENT, newest first
/// (the rows come newest first from the backend).
pub fn print_history(rows: &[HistoryRow], args: &HistoryArgs, out: &mut dyn Write) -> Result<()> {
    let id = |r: &HistoryRow| {
        r.id.as_deref()
            .map_or("<missing>".to_string(), |i| short_id(i, args.no_trunc))
    };
    if args.quiet {
        for r in rows {
            writeln!(out, "{}", id(r))?;
        }
        return Ok(());
    }
    let mut lines = vec![["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"]
        .map(String::from)
        .to_vec()];
    for r in rows {
        let created = r.history.created.clone().unwrap_or_default();
        let mut by = r.history.created_by.clone().unwrap_or_default();
        if !args.no_trunc && by.chars().count() > 45 {
            // Docker: 44 characters and an ellipsis.
            by = by.chars().take(44).collect::<String>() + "…";
        }
        lines.push(vec![
            id(r),
            if args.human { ago(&created) } else { created },
            by,
            if args.human {
                human_size(r.size)
            } else {
                r.size.to_string()
            },
            r.history.comment.clone().unwrap_or_default(),
        ]);
    }
    table(out, &lines)?;
    Ok(())
}

/// True when `e` is a write to a closed pipe (`berth-build images | head`):
/// the reader is gone, which is not an error worth a message.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(tags: &[&str], id: &str, created: &str) -> ImageRow {
        ImageRow {
            tags: tags.iter().map(|s| s.to_string()).collect(),
            digest: format!("sha256:{}", "d".repeat(64)),
            id: format!("sha256:{}", id.repeat(64 / id.len())),
            // The compressed blobs; SIZE shows the unpacked content.
            size: 2_000_000,
            unpacked_size: 4_261_416,
            created: created.into(),
        }
    }

    fn args(filters: &[&str]) -> ImagesArgs {
        ImagesArgs {
            quiet: false,
            digests: false,
            no_trunc: false,
            filter: filters.iter().map(|s| s.to_string()).collect(),
            repository: None,
        }
    }

    /// The cells of a table line (columns are 3+ spaces apart).
    fn cells(l: &str) -> Vec<&str> {
        l.split("   ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .collect()
    }

    fn list(rows: Vec<ImageRow>, a: &ImagesArgs) -> String {
        let mut out = Vec::new();
        print_images(rows, a, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    fn sample() -> Vec<ImageRow> {
        vec![
            row(
                &["docker.io/library/busybox:latest", "busybox:1.36"],
                "a",
                "2020-01-01T00:00:00Z",
            ),
            row(&["localhost:5000/app/web:v1"], "b", "2021-01-01T00:00:00Z"),
            row(&[], "c", "2022-01-01T00:00:00Z"),
        ]
    }

    #[test]
    fn docker_columns_familiar_names_and_config_ids() {
        let out = list(sample(), &args(&[]));
        let lines: Vec<Vec<&str>> = out.lines().map(cells).collect();
        assert_eq!(
            lines[0],
            ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"],
            "{out}"
        );
        // Newest first; untagged as <none> <none>; familiar names.
        assert_eq!(lines[1][..3], ["<none>", "<none>", "cccccccccccc"], "{out}");
        assert_eq!(
            lines[2][..3],
            ["localhost:5000/app/web", "v1", "bbbbbbbbbbbb"],
            "{out}"
        );
        assert_eq!(
            lines[3][..3],
            ["busybox", "latest", "aaaaaaaaaaaa"],
            "{out}"
        );
        assert_eq!(lines[4][..3], ["busybox", "1.36", "aaaaaaaaaaaa"], "{out}");
        assert!(lines[3][3].ends_with(" years ago"), "{out}");
        assert_eq!(lines[3][4], "4.26MB", "{out}");
        // Columns line up.
        let col = out.lines().next().unwrap().find("IMAGE ID").unwrap();
        assert!(out
            .lines()
            .all(|l| l[col..].starts_with(['I', 'a', 'b', 'c'])));
        let q = list(
            sample(),
            &ImagesArgs {
                quiet: true,
                ..args(&[])
            },
        );
        assert_eq!(q, "cccccccccccc\nbbbbbbbbbbbb\naaaaaaaaaaaa\n");
        let d = list(
            sample(),
            &ImagesArgs {
                digests: true,
                ..args(&[])
            },
        );
        assert!(d.lines().next().unwrap().contains("   DIGEST   "), "{d}");
        assert!(d.contains(&format!("sha256:{}", "d".repeat(64))));
    }

    #[test]
    fn filters() {
        let q = |f: &[&str]| {
            list(
                sample(),
                &ImagesArgs {
                    quiet: true,
                    ..args(f)
                },
            )
        };
        assert_eq!(q(&["dangling=true"]), "cccccccccccc\n");
        assert_eq!(q(&["dangling=false"]), "bbbbbbbbbbbb\naaaaaaaaaaaa\n");
        assert_eq!(q(&["reference=busybox"]), "aaaaaaaaaaaa\n");
        assert_eq!(
            q(&["reference=docker.io/library/busybox:1.36"]),
            "aaaaaaaaaaaa\n"
        );
        // `*` stops at '/' only: "localhost:5000" is one component.
        assert_eq!(q(&["reference=*/app/*"]), "bbbbbbbbbbbb\n");
        assert_eq!(q(&["reference=*"]), "aaaaaaaaaaaa\n");
        assert_eq!(q(&["reference=localhost:5000/app/*"]), "bbbbbbbbbbbb\n");
        assert_eq!(q(&["reference=busy*:1.*"]), "aaaaaaaaaaaa\n");
        assert_eq!(q(&["before=localhost:5000/app/web:v1"]), "aaaaaaaaaaaa\n");
        assert_eq!(q(&["since=busybox"]), "cccccccccccc\nbbbbbbbbbbbb\n");
        // Only the matching names are listed.
        let out = list(sample(), &args(&["reference=busybox:1.36"]));
        assert_eq!(out.lines().count(), 2, "{out}");
        let mut out = Vec::new();
        assert!(print_images(sample(), &args(&["label=x"]), &mut out).is_err());
        assert!(print_images(sample(), &args(&["dangling=maybe"]), &mut out).is_err());
    }

    #[test]
    fn sizes_and_times_as_docker_prints_them() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(4_261_416), "4.26MB");
        assert_eq!(human_size(12_300), "12.3kB");
        assert_eq!(human_size(1_000_000), "1MB");
        assert_eq!(human_size(123_456_789), "123MB");
        assert_eq!(human_size(40), "40B");
        assert_eq!(human_size(1_240), "1.24kB");
        assert_eq!(human_size(4_857_000), "4.86MB");
        assert_eq!(human_size(999_999), "1e+03kB");
        assert_eq!(human_size(1_005), "1kB");
        assert_eq!(human_size(5_000_000_000), "5GB");
        assert_eq!(ago("garbage"), "N/A");
        let t = (chrono::Utc::now() - chrono::Duration::hours(3)).to_rfc3339();
        assert_eq!(ago(&t), "3 hours ago");
        let t = (chrono::Utc::now() - chrono::Duration::days(20)).to_rfc3339();
        assert_eq!(ago(&t), "2 weeks ago");
    }

    #[test]
    fn history_columns_newest_first() {
        let h = |by: &str, empty: bool| crate::image::History {
            created: Some("2020-01-01T00:00:00Z".into()),
            created_by: Some(by.into()),
            author: None,
            comment: Some("buildkit.dockerfile.v0".into()),
            empty_layer: empty,
        };
        let rows = vec![
            HistoryRow {
                id: Some(format!("sha256:{}", "e".repeat(64))),
                history: h("CMD [\"sh\"]", true),
                size: 0,
            },
            HistoryRow {
                id: None,
                history: h(&format!("RUN /bin/sh -c {}", "x".repeat(60)), false),
                size: 1234,
            },
        ];
        let a = HistoryArgs {
            image: "x".into(),
            no_trunc: false,
            quiet: false,
            human: true,
        };
        let mut out = Vec::new();
        print_history(&rows, &a, &mut out).unwrap();
        let out = String::from_utf8(out).unwrap();
        let lines: Vec<Vec<&str>> = out.lines().map(cells).collect();
        assert_eq!(
            lines[0],
            ["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"],
            "{out}"
        );
        assert_eq!(lines[1][0], "eeeeeeeeeeee", "{out}");
        assert_eq!(
            lines[1][2..],
            ["CMD [\"sh\"]", "0B", "buildkit.dockerfile.v0"]
        );
        assert_eq!(lines[2][0], "<missing>", "{out}");
        assert!(lines[2][1].ends_with(" years ago"), "{out}");
        assert_eq!(
            lines[2][2..],
            [
                format!("RUN /bin/sh -c {}…", "x".repeat(29)).as_str(),
                "1.23kB",
                "buildkit.dockerfile.v0"
            ]
        );
        let mut out = Vec::new();
        print_history(&rows, &HistoryArgs { quiet: true, ..a }, &mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "eeeeeeeeeeee\n<missing>\n");
    }
}
