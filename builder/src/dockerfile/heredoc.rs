//! Heredoc markers (`<<EOF`, `<<-EOF`, `<<'EOF'`, `3<<EOF`) in RUN/COPY/ADD
//! lines, detected like BuildKit's `heredocsFromLine` / `ParseHeredoc`, and
//! the shell script a RUN with heredocs runs (which its history shows).

use super::ast::Heredoc;
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

/// What a shell-form RUN with heredocs runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunScript {
    /// The shell's command string.
    Inline(String),
    /// A RUN that is one heredoc whose body starts with `#!`: BuildKit
    /// writes the body to an executable file, mounts it read-only at
    /// [`PIPES_DIR`]`/<name>` and has the shell run that path, so the
    /// interpreter the shebang names runs the script.
    File { name: String, data: String },
}

/// Where BuildKit mounts a shebang heredoc's file.
pub const PIPES_DIR: &str = "/dev/pipes";

/// What a shell-form RUN with heredocs runs, as BuildKit's dispatchRun
/// (frontend/dockerfile/dockerfile2llb/convert.go) builds it, so the image
/// history's `created_by` is the same:
/// * a command that is one heredoc marker and nothing else (`<<EOF`,
///   `<< 'EOF'`, `<<-EOF`, `3<<EOF`: `parser.MustParseHeredoc` of the whole
///   command) runs the body itself, tabs stripped for `<<-`: a heredoc that
///   works whatever the shell — or, when the body starts with `#!`, the body
///   as a file ([`RunScript::File`]);
/// * otherwise the command line, then for each heredoc a newline, its body
///   as written (for `<<-` the shell strips the tabs) and its delimiter,
///   with no newline after the last one.
pub fn run_script(cmd: &str, heredocs: &[Heredoc]) -> RunScript {
    let Some(first) = heredocs.first() else {
        return RunScript::Inline(cmd.to_string());
    };
    if parse_marker(cmd).is_some() {
        if first.content.starts_with("#!") {
            return RunScript::File {
                name: first.name.clone(),
                data: first.content.clone(),
            };
        }
        return RunScript::Inline(first.content.clone());
    }
    let mut script = cmd.to_string();
    for h in heredocs {
        script.push('\n');
        script.push_str(&h.raw);
        script.push_str(&h.name);
    }
    RunScript::Inline(script)
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

    /// RUN's script (and so its history, `RUN /bin/sh -c <script> #
    /// buildkit`) for heredocs, byte for byte what BuildKit's dispatchRun
    /// (frontend/dockerfile/dockerfile2llb/convert.go) makes of the parsed
    /// command: `parser.MustParseHeredoc(args[0])` decides whether the
    /// command is just the heredoc (then `args = [data]`, chomped for
    /// `<<-`), else `args[0]` plus `"\n" + file.Data + file.Name` per heredoc,
    /// Data unchomped. Docker 20.10's frontend has no heredocs, so this
    /// follows the source rather than a live build.
    #[test]
    fn run_scripts_as_buildkit() {
        let parse = |df: &str| {
            let ins = crate::dockerfile::first_instruction_after_scratch(df);
            match ins {
                crate::dockerfile::Instruction::Run(r) => match r.command {
                    crate::dockerfile::CommandForm::Shell(s) => match run_script(&s, &r.heredocs) {
                        RunScript::Inline(script) => script,
                        RunScript::File { name, data } => format!("FILE {name}: {data}"),
                    },
                    other => panic!("{other:?}"),
                },
                other => panic!("{other:?}"),
            }
        };
        // `RUN <<EOF`: the body is the script.
        assert_eq!(
            parse("RUN <<EOF\necho a\necho b\nEOF\n"),
            "echo a\necho b\n"
        );
        // `<<-` with more on the line: the body as written, tabs included,
        // the delimiter, no trailing newline.
        assert_eq!(
            parse("RUN <<-EOT bash\n\techo x\n\tEOT\n"),
            "<<-EOT bash\n\techo x\nEOT"
        );
        // Alone, `<<-` strips the tabs itself.
        assert_eq!(parse("RUN <<-EOT\n\techo x\n\tEOT\n"), "echo x\n");
        // Two heredocs, in order.
        assert_eq!(
            parse("RUN cat <<A <<B\na1\nA\nb1\nb2\nB\n"),
            "cat <<A <<B\na1\nA\nb1\nb2\nB"
        );
        // A body with a shebang: a file the shell runs as
        // /dev/pipes/<name> (history `RUN /bin/sh -c /dev/pipes/EOF`).
        assert_eq!(
            parse("RUN <<EOF\n#!/usr/bin/env python3\nprint(1)\nEOF\n"),
            "FILE EOF: #!/usr/bin/env python3\nprint(1)\n"
        );
        // Only when the command is the heredoc alone.
        assert_eq!(
            parse("RUN python3 <<EOF\n#!x\nEOF\n"),
            "python3 <<EOF\n#!x\nEOF"
        );
        // One marker with blanks or a quoted delimiter is still the script.
        assert_eq!(parse("RUN << 'EOF'\necho $x\nEOF\n"), "echo $x\n");
        assert_eq!(
            parse("RUN 3<<EOF cat /proc/self/fd/3\nhi\nEOF\n"),
            "3<<EOF cat /proc/self/fd/3\nhi\nEOF"
        );
    }

    #[test]
    fn chomp_strips_leading_tabs() {
        assert_eq!(chomp("\t\ta\n b\n\tc\n"), "a\n b\nc\n");
    }
}
