//! Image history entries the way BuildKit writes them.
use crate::dockerfile::Source;
use crate::image::History;

pub const COMMENT: &str = "buildkit.dockerfile.v0";

/// RFC 3339 `created` time: SOURCE_DATE_EPOCH when given, else now.
pub fn timestamp(epoch: Option<i64>) -> String {
    let t = match epoch {
        Some(e) => chrono::DateTime::from_timestamp(e, 0).unwrap_or_default(),
        None => chrono::Utc::now(),
    };
    t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

pub fn entry(created_by: String, empty_layer: bool, epoch: Option<i64>) -> History {
    History {
        created: Some(timestamp(epoch)),
        created_by: Some(created_by),
        author: None,
        comment: Some(COMMENT.into()),
        empty_layer,
    }
}

/// Go's `%v` of a string slice, as BuildKit prints CMD/ENTRYPOINT/VOLUME.
pub fn go_list(v: &[String]) -> String {
    format!("[{}]", v.join(" "))
}

/// JSON array form, as BuildKit prints CMD/ENTRYPOINT/SHELL in history.
pub fn json_list(v: &[String]) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// COPY/ADD sources as BuildKit's dispatchCopy
/// (frontend/dockerfile/dockerfile2llb/convert_copy.go) writes them in
/// `created_by`: the paths first, then each heredoc as `<<NAME`.
pub fn copy_sources(sources: &[Source]) -> String {
    let paths = sources.iter().filter_map(|s| match s {
        Source::Path(p) => Some(p.clone()),
        Source::Heredoc(_) => None,
    });
    let heredocs = sources.iter().filter_map(|s| match s {
        Source::Heredoc(h) => Some(format!("<<{}", h.name)),
        Source::Path(_) => None,
    });
    paths.chain(heredocs).collect::<Vec<_>>().join(" ")
}

/// Gives metadata entries (no `created` yet) their time the way BuildKit's
/// exporter does (normalizeLayersAndHistory): the time of the first entry
/// with a time that follows the first timeless one, and after that the time
/// of the latest entry with a time before them. So the ENV of `FROM scratch`,
/// cached `ADD`, `ENV`, `RUN` gets the RUN's time, not the cached ADD's.
pub fn fill_created(history: &mut [History]) {
    let mut created: Option<String> = None;
    let mut timeless_seen = false;
    for h in history.iter() {
        match &h.created {
            Some(t) => {
                created = Some(t.clone());
                if timeless_seen {
                    break;
                }
            }
            None => timeless_seen = true,
        }
    }
    let mut timeless_seen = false;
    for h in history.iter_mut() {
        match &h.created {
            Some(t) => {
                if timeless_seen {
                    created = Some(t.clone());
                }
            }
            None => {
                timeless_seen = true;
                h.created = created.clone();
            }
        }
    }
}

/// Go's `strconv.Quote`: how BuildKit's `%q` shows strings in history.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            other => push_go_escaped(&mut out, other),
        }
    }
    out.push('"');
    out
}

/// Go's `%q` of a string slice: `["cat" "/hello.txt"]` (CMD, ENTRYPOINT).
pub fn go_quoted_list(v: &[String]) -> String {
    let items: Vec<String> = v.iter().map(|s| go_quote(s)).collect();
    format!("[{}]", items.join(" "))
}

/// Go's `%q` of an integer: a quoted rune (`'\x03'` for 3 retries).
pub fn go_quote_rune(n: i64) -> String {
    let c = u32::try_from(n)
        .ok()
        .and_then(char::from_u32)
        .unwrap_or(char::REPLACEMENT_CHARACTER);
    let mut out = String::from("'");
    match c {
        '\'' => out.push_str("\\'"),
        '\\' => out.push_str("\\\\"),
        other => push_go_escaped(&mut out, other),
    }
    out.push('\'');
    out
}

/// Escapes as strconv does for characters other than the quote and backslash.
fn push_go_escaped(out: &mut String, c: char) {
    match c {
        '\u{7}' => out.push_str("\\a"),
        '\u{8}' => out.push_str("\\b"),
        '\u{c}' => out.push_str("\\f"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\u{b}' => out.push_str("\\v"),
        c if (c as u32) < 0x20 || c == '\u{7f}' => out.push_str(&format!("\\x{:02x}", c as u32)),
        c if c.is_control() => {
            if (c as u32) <= 0xffff {
                out.push_str(&format!("\\u{:04x}", c as u32))
            } else {
                out.push_str(&format!("\\U{:08x}", c as u32))
            }
        }
        c => out.push(c),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The times Docker 20.10's BuildKit wrote for `FROM scratch`, `ADD`
    /// (cached, 11), `ENV`, `ARG`, `RUN` (16), `ENV`, `RUN` (17), `ARG`: the
    /// first metadata entries take the next layer's time, later ones the
    /// previous layer's.
    #[test]
    fn created_filled_as_buildkit() {
        let e = |t: Option<&str>| History {
            created: t.map(str::to_string),
            ..Default::default()
        };
        let mut h = vec![
            e(Some("11")),
            e(None),
            e(None),
            e(Some("16")),
            e(None),
            e(Some("17")),
            e(None),
        ];
        fill_created(&mut h);
        let got: Vec<_> = h.iter().map(|h| h.created.clone().unwrap()).collect();
        assert_eq!(got, ["11", "16", "16", "16", "16", "17", "17"]);
        // Metadata only after the last layer: that layer's time.
        let mut h = vec![e(Some("11")), e(Some("15")), e(None), e(None)];
        fill_created(&mut h);
        assert_eq!(h[3].created.as_deref(), Some("15"));
    }

    /// `COPY <<EOF /f` and friends: BuildKit's dispatchCopy
    /// (frontend/dockerfile/dockerfile2llb/convert_copy.go) appends `" " +
    /// src` for every path source, then `" <<" + src.Path` for every
    /// heredoc (SourceContents), then `" " + DestPath`; commitToHistory
    /// (convert.go) adds ` # buildkit`. Docker 20.10's frontend has no
    /// heredocs, so this follows the source.
    #[test]
    fn copy_heredoc_history_as_buildkit() {
        let created_by = |df: &str| {
            let ins = crate::dockerfile::first_instruction_after_scratch(df);
            let (kw, args) = match ins {
                crate::dockerfile::Instruction::Copy(c) => ("COPY", c.files),
                crate::dockerfile::Instruction::Add(a) => ("ADD", a.files),
                other => panic!("{other:?}"),
            };
            format!(
                "{kw} {} {} # buildkit",
                copy_sources(&args.sources),
                args.dest
            )
        };
        assert_eq!(
            created_by("COPY <<EOF /f\nhi\nEOF\n"),
            "COPY <<EOF /f # buildkit"
        );
        assert_eq!(
            created_by("COPY <<A a.txt <<-B /d/\n1\nA\n\t2\n\tB\n"),
            "COPY a.txt <<A <<B /d/ # buildkit"
        );
        assert_eq!(
            created_by("ADD <<'EOF' /x\n$y\nEOF\n"),
            "ADD <<EOF /x # buildkit"
        );
    }

    /// Renderings observed in BuildKit (Docker 20.10) image history.
    #[test]
    fn go_quoting_as_buildkit_history() {
        let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            format!("CMD {}", go_quoted_list(&v(&["cat", "/hello.txt"]))),
            r#"CMD ["cat" "/hello.txt"]"#
        );
        assert_eq!(
            format!("SHELL {}", go_list(&v(&["/bin/sh", "-e", "-c"]))),
            "SHELL [/bin/sh -e -c]"
        );
        assert_eq!(go_quote("a\"b\\c\nd\u{1}é"), r#""a\"b\\c\nd\x01é""#);
        assert_eq!(go_quote_rune(0), r"'\x00'");
        assert_eq!(go_quote_rune(3), r"'\x03'");
        assert_eq!(go_quote_rune(65), "'A'");
    }
}
