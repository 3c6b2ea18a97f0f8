//! Heredoc markers (`<<EOF`, `<<-EOF`, `<<'EOF'`, `3<<EOF`) in RUN/COPY/ADD
//! lines, detected like BuildKit's `heredocsFromLine` / `ParseHeredoc`.

use super::lex::Lexer;

/// A heredoc marker found in an instruction line (body not read yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marker {
    pub name: String,
    pub expand: bool,
    pub chomp: bool,
    pub fd: Option<u32>,
}

fn no_env(_: &str) -> Option<String> {
    None
}

/// Heredoc markers of a line, in order. Words are split with quotes and
/// escapes kept, so a quoted `"<<EOF"` is not a marker.
pub fn markers(line: &str) -> Vec<Marker> {
    if !line.contains("<<") {
        return Vec::new();
    }
    let mut lx = Lexer::new('\\');
    lx.raw_quotes = true;
    lx.raw_escapes = true;
    // `<<$EOF` names a heredoc "$EOF".
    lx.skip_unset = true;
    // BuildKit ignores lexing errors here: such a line simply has no heredoc.
    let words = lx.process_words(line, &no_env).unwrap_or_default();
    words.iter().filter_map(|w| parse_marker(w)).collect()
}

/// Parses one word as a heredoc marker: `^(\d*)<<(-?)\s*([^<]*)$`.
pub fn parse_marker(word: &str) -> Option<Marker> {
    let digits = word.len() - word.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    let (fd, after) = word.split_at(digits);
    let after = after.strip_prefix("<<")?;
    let (chomp, rest) = match after.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, after),
    };
    let rest = rest.trim_start();
    if rest.is_empty() || rest.contains('<') {
        return None;
    }
    let mut lx = Lexer::new('\\');
    lx.skip_unset = true;
    let words = lx.process_words(rest, &no_env).ok()?;
    if words.len() != 1 {
        return None;
    }
    lx.raw_quotes = true;
    let raw = lx.process_words(rest, &no_env).ok()?;
    if raw.len() != 1 {
        return None;
    }
    let quotes = |s: &str| s.chars().filter(|&c| c == '\'' || c == '"').count();
    // Quotes that disappear when unquoting mean the delimiter was quoted.
    let expand = quotes(&words[0]) == quotes(&raw[0]);
    Some(Marker {
        name: words[0].clone(),
        expand,
        chomp,
        fd: if fd.is_empty() { None } else { fd.parse().ok() },
    })
}

/// Removes leading tabs from every line (`<<-`).
pub fn chomp(content: &str) -> String {
    content
        .split_inclusive('\n')
        .map(|l| l.trim_start_matches('\t'))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_forms() {
        let m = |name: &str, expand, chomp, fd| Marker {
            name: name.to_string(),
            expand,
            chomp,
            fd,
        };
        assert_eq!(markers("RUN <<EOF"), vec![m("EOF", true, false, None)]);
        assert_eq!(markers("RUN <<-EOT bash"), vec![m("EOT", true, true, None)]);
        assert_eq!(markers("RUN <<'EOF'"), vec![m("EOF", false, false, None)]);
        assert_eq!(
            markers(r#"RUN <<"EOF""#),
            vec![m("EOF", false, false, None)]
        );
        assert_eq!(
            markers("RUN 3<<EOF cat /proc/self/fd/3"),
            vec![m("EOF", true, false, Some(3))]
        );
        assert_eq!(
            markers("RUN <<FILE1 cat > file1 && <<FILE2 cat > file2"),
            vec![m("FILE1", true, false, None), m("FILE2", true, false, None)]
        );
        assert_eq!(
            markers("COPY <<EOF /dest"),
            vec![m("EOF", true, false, None)]
        );
        assert!(markers(r#"RUN echo "<<EOF""#).is_empty());
        assert!(markers("RUN echo a<<EOF").is_empty());
        assert!(markers("RUN echo <<").is_empty());
        assert!(markers("RUN echo 'unterminated <<EOF").is_empty());
        // Blanks after `<<`, BuildKit's parser_heredoc_test vectors.
        assert_eq!(markers("RUN <<  EOF"), vec![m("EOF", true, false, None)]);
        assert_eq!(
            markers("RUN <<  EOF  > foo"),
            vec![m("EOF", true, false, None)]
        );
        assert_eq!(parse_marker("<<- EOF"), Some(m("EOF", true, true, None)));
        assert_eq!(parse_marker("<< EOF"), Some(m("EOF", true, false, None)));
        assert_eq!(markers("RUN << -EOF"), vec![m("-EOF", true, false, None)]);
        assert_eq!(markers("RUN <<$EOF"), vec![m("$EOF", true, false, None)]);
        assert_eq!(markers("RUN <<eo'f'"), vec![m("eof", false, false, None)]);
        assert_eq!(markers("RUN <<eo\\'f"), vec![m("eo'f", true, false, None)]);
        assert_eq!(
            markers("RUN <<'e'o\\'f"),
            vec![m("eo'f", false, false, None)]
        );
        assert_eq!(
            markers("RUN <<'one two'"),
            vec![m("one two", false, false, None)]
        );
        assert_eq!(markers("RUN <<EO\"F\""), vec![m("EOF", false, false, None)]);
        assert!(markers("RUN <<EOF'").is_empty());
        assert!(markers("RUN <<<EOF").is_empty());
    }

    #[test]
    fn chomp_strips_leading_tabs() {
        assert_eq!(chomp("\t\ta\n b\n\tc\n"), "a\n b\nc\n");
    }
}
