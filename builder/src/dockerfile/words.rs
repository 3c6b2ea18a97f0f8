//! Splitting instruction arguments the way BuildKit's parser does *before*
//! any variable expansion (`parser/line_parsers.go`).

/// Splits on unquoted whitespace, keeping quotes and escape characters in the
/// words (they are removed later by expansion). Used by ENV, LABEL and ARG.
pub fn parse_words(rest: &str, escape: char) -> Vec<String> {
    let chars: Vec<char> = rest.chars().collect();
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut blank_ok = false;
    let mut i = 0;
    while i < chars.len() {
        let ch = chars[i];
        i += 1;
        if let Some(q) = quote {
            if ch == q {
                quote = None;
            }
            // The escape character works inside double but not single quotes.
            if ch == escape && q != '\'' {
                match chars.get(i) {
                    None => {
                        quote = None;
                        continue;
                    }
                    Some(&next) => {
                        word.push(ch);
                        word.push(next);
                        i += 1;
                        continue;
                    }
                }
            }
            word.push(ch);
            continue;
        }
        if !in_word {
            if ch.is_whitespace() {
                continue;
            }
            in_word = true;
        }
        if ch.is_whitespace() {
            if blank_ok || !word.is_empty() {
                words.push(std::mem::take(&mut word));
            }
            in_word = false;
            blank_ok = false;
            continue;
        }
        if ch == '\'' || ch == '"' {
            quote = Some(ch);
            blank_ok = true;
        }
        if ch == escape {
            match chars.get(i) {
                // An escape character at the very end is dropped.
                None => continue,
                Some(&next) => {
                    word.push(ch);
                    word.push(next);
                    i += 1;
                    continue;
                }
            }
        }
        word.push(ch);
    }
    if in_word && (blank_ok || !word.is_empty()) {
        words.push(word);
    }
    words
}

/// Splits on runs of whitespace (no quote handling), like BuildKit's
/// `parseStringsWhitespaceDelimited` for FROM, EXPOSE and shell-form COPY.
pub fn split_whitespace(rest: &str) -> Vec<String> {
    rest.split_whitespace().map(str::to_string).collect()
}

/// Leading `--flag[=value]` words of an instruction, and the rest of the line.
///
/// Flag words are unquoted (quotes removed, `\` escapes the next character);
/// a lone `--` ends the flags.
pub fn extract_flags(line: &str) -> (Vec<String>, &str) {
    let mut flags = Vec::new();
    let mut pos = 0;
    let bytes_len = line.len();
    loop {
        let rest = &line[pos..];
        let trimmed = rest.trim_start();
        let start = pos + (rest.len() - trimmed.len());
        if !trimmed.starts_with("--") {
            return (flags, &line[start..]);
        }
        // Read one flag word.
        let mut word = String::new();
        let mut quote: Option<char> = None;
        let mut iter = line[start..].char_indices().peekable();
        let mut end = bytes_len;
        while let Some((off, ch)) = iter.next() {
            if let Some(q) = quote {
                if ch == q {
                    quote = None;
                } else if ch == '\\' {
                    if let Some((_, n)) = iter.next() {
                        word.push(n);
                    } else {
                        quote = None;
                    }
                } else {
                    word.push(ch);
                }
                continue;
            }
            if ch.is_whitespace() {
                end = start + off;
                break;
            }
            match ch {
                '\'' | '"' => quote = Some(ch),
                '\\' => {
                    if let Some((_, n)) = iter.next() {
                        word.push(n);
                    }
                }
                _ => word.push(ch),
            }
        }
        if word == "--" {
            return (flags, line[end..].trim_start());
        }
        flags.push(word);
        pos = end;
        if pos >= bytes_len {
            return (flags, "");
        }
    }
}

/// Outcome of trying the JSON (exec) form.
pub enum Json {
    /// Valid JSON array of strings.
    Array(Vec<String>),
    /// Not JSON: use the shell form.
    NotJson,
}

/// Tries to read `rest` as a JSON array of strings. Like Go's
/// `json.Decoder`, text after the first JSON value is ignored.
pub fn parse_json_array(rest: &str) -> Result<Json, String> {
    let rest = rest.trim_start();
    if !rest.starts_with('[') {
        return Ok(Json::NotJson);
    }
    let mut stream = serde_json::Deserializer::from_str(rest).into_iter::<serde_json::Value>();
    match stream.next() {
        Some(Ok(serde_json::Value::Array(items))) => {
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                match item {
                    serde_json::Value::String(s) => out.push(s),
                    _ => return Err(
                        "when using JSON array syntax, arrays must be comprised of strings only"
                            .to_string(),
                    ),
                }
            }
            Ok(Json::Array(out))
        }
        _ => Ok(Json::NotJson),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_words_keeps_quotes_and_escapes() {
        let cases: &[(&str, &[&str])] = &[
            ("a=1 b=2", &["a=1", "b=2"]),
            (r#"a="x y" b='p q'"#, &[r#"a="x y""#, "b='p q'"]),
            (r"a=x\ y c", &[r"a=x\ y", "c"]),
            (r#"a="q\"uote" z"#, &[r#"a="q\"uote""#, "z"]),
            (r"a='no\' b", &[r"a='no\'", "b"]),
            ("  lead   trail  ", &["lead", "trail"]),
            (r#""""#, &[r#""""#]),
            (r"end\", &["end"]),
        ];
        for (input, want) in cases {
            assert_eq!(parse_words(input, '\\'), *want, "input {input:?}");
        }
        assert_eq!(parse_words("a=x` y", '`'), vec!["a=x` y"]);
    }

    #[test]
    fn extract_flags_stops_at_first_non_flag() {
        let (f, rest) = extract_flags("--from=build --chown=1:1 src dst");
        assert_eq!(f, vec!["--from=build", "--chown=1:1"]);
        assert_eq!(rest, "src dst");
        let (f, rest) = extract_flags(r#"--mount="type=cache,target=/x y" echo --not-a-flag"#);
        assert_eq!(f, vec!["--mount=type=cache,target=/x y"]);
        assert_eq!(rest, "echo --not-a-flag");
        let (f, rest) = extract_flags("--link -- --weird dst");
        assert_eq!(f, vec!["--link"]);
        assert_eq!(rest, "--weird dst");
        let (f, rest) = extract_flags("--link");
        assert_eq!(f, vec!["--link"]);
        assert_eq!(rest, "");
        let (f, rest) = extract_flags("echo hi");
        assert!(f.is_empty());
        assert_eq!(rest, "echo hi");
    }

    #[test]
    fn json_arrays() {
        assert!(
            matches!(parse_json_array(r#"["a", "b c"]"#), Ok(Json::Array(v)) if v == ["a", "b c"])
        );
        assert!(matches!(parse_json_array("echo [x]"), Ok(Json::NotJson)));
        assert!(matches!(parse_json_array("[not json"), Ok(Json::NotJson)));
        assert!(matches!(parse_json_array("['single']"), Ok(Json::NotJson)));
        assert!(parse_json_array("[1, 2]").is_err());
        assert!(matches!(parse_json_array(r#"["a"] trailing"#), Ok(Json::Array(v)) if v == ["a"]));
    }
}
