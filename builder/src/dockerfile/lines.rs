//! Physical lines → logical instruction lines: parser directives at the top,
//! comments, escape-character line continuations, and heredoc bodies
//! (BuildKit's `parser/parser.go` and `parser/directives.go`).

use super::ast::Directives;
use super::error::ParseError;

/// Reads logical lines one at a time; heredoc bodies are pulled by the caller
/// after it has looked at the instruction.
pub struct LineReader<'a> {
    lines: Vec<&'a str>,
    /// Index of the next physical line to read (0-based).
    next: usize,
    pub directives: Directives,
    directives_done: bool,
    seen: Vec<String>,
}

/// One instruction line with continuations joined.
pub struct LogicalLine {
    /// 1-based line where it starts.
    pub line: usize,
    pub text: String,
    /// An empty line was skipped inside the continuation (BuildKit warns).
    pub empty_continuation: bool,
}

impl<'a> LineReader<'a> {
    pub fn new(source: &'a str) -> Self {
        let source = source.strip_prefix('\u{feff}').unwrap_or(source);
        let lines = source
            .split('\n')
            .map(|l| l.strip_suffix('\r').unwrap_or(l))
            .collect::<Vec<_>>();
        // `split` yields a final "" after a trailing newline; it is no line.
        let lines = match lines.split_last() {
            Some((&"", rest)) => rest.to_vec(),
            _ => lines,
        };
        LineReader {
            lines,
            next: 0,
            directives: Directives::default(),
            directives_done: false,
            seen: Vec::new(),
        }
    }

    fn take(&mut self) -> Option<&'a str> {
        let l = self.lines.get(self.next).copied();
        if l.is_some() {
            self.next += 1;
        }
        l
    }

    /// The next instruction line, or `None` at end of file.
    pub fn next_logical(&mut self) -> Result<Option<LogicalLine>, ParseError> {
        while let Some(raw) = self.take() {
            let lineno = self.next;
            let trimmed = raw.trim_start();
            self.directive(trimmed)
                .map_err(|m| ParseError::new(lineno, m))?;
            if is_comment(trimmed) {
                continue;
            }
            let (first, mut complete) = self.trim_continuation(trimmed);
            if complete && first.is_empty() {
                continue;
            }
            let mut text = first.to_string();
            let mut empty_continuation = false;
            while !complete {
                let Some(raw) = self.take() else { break };
                if is_comment(raw.trim_start()) {
                    // Comments inside a continuation are skipped.
                    continue;
                }
                if raw.trim().is_empty() {
                    // Deprecated but accepted: skipped without ending it.
                    empty_continuation = true;
                    continue;
                }
                let (part, done) = self.trim_continuation(raw);
                text.push_str(part);
                complete = done;
            }
            return Ok(Some(LogicalLine {
                line: lineno,
                text,
                empty_continuation,
            }));
        }
        Ok(None)
    }

    /// Reads a heredoc body up to its terminator line. Returns the body with a
    /// `\n` after each line, or `None` if the file ended first.
    pub fn heredoc_body(&mut self, name: &str, chomp: bool) -> Option<String> {
        let mut content = String::new();
        while let Some(raw) = self.take() {
            let candidate = if chomp {
                raw.trim_start_matches('\t')
            } else {
                raw
            };
            if candidate == name {
                return Some(content);
            }
            content.push_str(raw);
            content.push('\n');
        }
        None
    }

    /// Strips a trailing escape character (plus spaces/tabs after it).
    /// Returns the text and whether the logical line is complete.
    ///
    /// As BuildKit's continuation regex (`([^\\])\\[ \t]*$|^\\[ \t]*$`), an
    /// escape preceded by another escape (`C=trailing\\`) is an escaped
    /// escape character, not a continuation: the line ends there.
    fn trim_continuation<'s>(&self, line: &'s str) -> (&'s str, bool) {
        let escape = self.directives.escape;
        let t = line.trim_end_matches([' ', '\t']);
        match t.strip_suffix(escape) {
            Some(body) if !body.ends_with(escape) => (body, false),
            _ => (line, true),
        }
    }

    /// Recognises `# name=value` parser directives while still at the top.
    fn directive(&mut self, line: &str) -> Result<(), String> {
        if self.directives_done {
            return Ok(());
        }
        let Some((name, value)) = parse_directive(line) else {
            self.directives_done = true;
            return Ok(());
        };
        let name = name.to_ascii_lowercase();
        if !matches!(name.as_str(), "escape" | "syntax" | "check") {
            // An unknown directive ends the directive section, like BuildKit.
            self.directives_done = true;
            return Ok(());
        }
        if self.seen.contains(&name) {
            return Err(format!("only one {name} parser directive can be used"));
        }
        self.seen.push(name.clone());
        match name.as_str() {
            "escape" => {
                self.directives.escape = match value {
                    "\\" => '\\',
                    "`" => '`',
                    other => {
                        return Err(format!(
                            "invalid escape token '{other}' does not match ` or \\"
                        ))
                    }
                }
            }
            // Like BuildKit's DetectSyntax/ParseDirective, the value ends at
            // the first blank (`# syntax=img // opts`).
            "syntax" => self.directives.syntax = Some(first_field(value)),
            _ => self.directives.check = Some(first_field(value)),
        }
        Ok(())
    }
}

fn first_field(value: &str) -> String {
    value.split(' ').next().unwrap_or(value).to_string()
}

fn is_comment(trimmed_start: &str) -> bool {
    trimmed_start.starts_with('#')
}

/// Matches `^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$`.
fn parse_directive(line: &str) -> Option<(&str, &str)> {
    let rest = line.strip_prefix('#')?.trim_start();
    let name_len = rest
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit())))
        .map_or(rest.len(), |(i, _)| i);
    if name_len == 0 {
        return None;
    }
    let (name, after) = rest.split_at(name_len);
    let value = after.trim_start().strip_prefix('=')?.trim();
    if value.is_empty() {
        return None;
    }
    Some((name, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logical(src: &str) -> Vec<(usize, String)> {
        let mut r = LineReader::new(src);
        let mut out = Vec::new();
        while let Some(l) = r.next_logical().unwrap() {
            out.push((l.line, l.text));
        }
        out
    }

    #[test]
    fn continuations_comments_and_blank_lines() {
        let src = "FROM x\n\n# c\nRUN a \\\n  b \\\n# inner comment\n\n  c\nRUN d\\  \t\nRUN e\n";
        assert_eq!(
            logical(src),
            vec![
                (1, "FROM x".to_string()),
                (4, "RUN a   b   c".to_string()),
                (9, "RUN dRUN e".to_string()),
            ]
        );
    }

    #[test]
    fn escaped_escape_at_end_is_no_continuation() {
        // BuildKit: `ENV C=trailing\\` ends the instruction (value `trailing\`).
        assert_eq!(
            logical("ENV C=trailing\\\\\nRUN x\n"),
            vec![
                (1, "ENV C=trailing\\\\".to_string()),
                (2, "RUN x".to_string())
            ]
        );
        // Trailing blanks after it change nothing; a lone escape continues.
        assert_eq!(
            logical("ENV C=a\\\\ \t\nRUN x \\\n\\\n y\n"),
            vec![
                (1, "ENV C=a\\\\ \t".to_string()),
                (2, "RUN x  y".to_string())
            ]
        );
        let mut r = LineReader::new("# escape=`\nENV C=a``\nRUN x `\n y\n");
        assert_eq!(r.next_logical().unwrap().unwrap().text, "ENV C=a``");
        assert_eq!(r.next_logical().unwrap().unwrap().text, "RUN x  y");
    }

    #[test]
    fn crlf_and_bom() {
        assert_eq!(
            logical("\u{feff}FROM x\r\nRUN a \\\r\n b\r\n"),
            vec![(1, "FROM x".to_string()), (2, "RUN a  b".to_string())]
        );
    }

    #[test]
    fn directives_only_at_top() {
        let mut r =
            LineReader::new("# escape=`\n# syntax=docker/dockerfile:1\nFROM x\nRUN a `\n b\n");
        let l1 = r.next_logical().unwrap().unwrap();
        assert_eq!(l1.text, "FROM x");
        assert_eq!(r.directives.escape, '`');
        assert_eq!(r.directives.syntax.as_deref(), Some("docker/dockerfile:1"));
        assert_eq!(r.next_logical().unwrap().unwrap().text, "RUN a  b");

        // After an instruction, or after a blank line, it is just a comment.
        let mut r = LineReader::new("FROM x\n# escape=`\n");
        r.next_logical().unwrap();
        r.next_logical().unwrap();
        assert_eq!(r.directives.escape, '\\');
        let mut r = LineReader::new("\n# escape=`\nFROM x\n");
        r.next_logical().unwrap();
        assert_eq!(r.directives.escape, '\\');
        // Unknown directive ends the section.
        let mut r = LineReader::new("# foo=bar\n# escape=`\nFROM x\n");
        r.next_logical().unwrap();
        assert_eq!(r.directives.escape, '\\');
        // check= is recorded, case-insensitive names.
        let mut r = LineReader::new("#CHECK = skip=all\n# Escape = \\\nFROM x\n");
        r.next_logical().unwrap();
        assert_eq!(r.directives.check.as_deref(), Some("skip=all"));
        let mut r = LineReader::new(
            "# syntax = dockerfile:experimental // opts\n#check = skip=all // x\nFROM x\n",
        );
        r.next_logical().unwrap();
        assert_eq!(
            r.directives.syntax.as_deref(),
            Some("dockerfile:experimental")
        );
        assert_eq!(r.directives.check.as_deref(), Some("skip=all"));
    }

    #[test]
    fn directive_errors() {
        let mut r = LineReader::new("# escape=\\\n# escape=`\nFROM x\n");
        let e = r.next_logical().err().unwrap();
        assert_eq!(
            e.to_string(),
            "Dockerfile:2: only one escape parser directive can be used"
        );
        let mut r = LineReader::new("# escape=x\nFROM x\n");
        let e = r.next_logical().err().unwrap();
        assert_eq!(e.line, 1);
        assert!(e.message.contains("invalid escape token 'x'"), "{e}");
    }

    #[test]
    fn heredoc_bodies() {
        let mut r = LineReader::new("RUN <<EOF\n  a\n\tb\nEOF\n");
        r.next_logical().unwrap();
        assert_eq!(r.heredoc_body("EOF", false).as_deref(), Some("  a\n\tb\n"));
        let mut r = LineReader::new("RUN <<-EOF\n\ta\n\t\tEOF\n");
        r.next_logical().unwrap();
        assert_eq!(r.heredoc_body("EOF", true).as_deref(), Some("\ta\n"));
        let mut r = LineReader::new("RUN <<EOF\na\n");
        r.next_logical().unwrap();
        assert_eq!(r.heredoc_body("EOF", false), None);
    }
}
