//! Word processing and variable substitution with the semantics of
//! BuildKit's `frontend/dockerfile/shell/lex.go`:
//!
//! * `$name`, `${name}`, `${name:-word}`, `${name-word}`, `${name:+word}`,
//!   `${name+word}`, `${name:?msg}`, `${name?msg}`; an unset variable expands
//!   to the empty string;
//! * single quotes: everything literal, no escapes; double quotes: `$` is
//!   expanded and the escape character only escapes `"`, `$` and itself;
//! * outside quotes the escape character makes the next character literal;
//! * quotes and escapes are removed from the result;
//! * in "words" mode, unquoted whitespace (including whitespace produced by an
//!   unquoted expansion) separates words.

/// Lexer configuration. `Lexer::new('\\')` is what the Dockerfile uses unless
/// `# escape=`` ` was given.
#[derive(Debug, Clone, Copy)]
pub struct Lexer {
    escape: char,
    /// Keep quote characters in the output (used to detect quoted heredoc
    /// delimiters).
    pub raw_quotes: bool,
    /// Keep escape characters in the output.
    pub raw_escapes: bool,
    /// Leave references to unset variables as written instead of expanding
    /// them to "".
    pub skip_unset: bool,
    /// Treat quotes as ordinary characters (heredoc bodies).
    pub skip_quotes: bool,
}

/// Looks a variable up; `None` means unset.
pub type Lookup<'a> = dyn Fn(&str) -> Option<String> + 'a;

impl Lexer {
    pub fn new(escape: char) -> Self {
        Lexer {
            escape,
            raw_quotes: false,
            raw_escapes: false,
            skip_unset: false,
            skip_quotes: false,
        }
    }

    /// Expands `word` into a single string (spaces kept).
    pub fn process_word(&self, word: &str, env: &Lookup<'_>) -> Result<String, String> {
        self.process(word, env).map(|(w, _)| w)
    }

    /// Expands `word` and splits the result into words on unquoted whitespace.
    pub fn process_words(&self, word: &str, env: &Lookup<'_>) -> Result<Vec<String>, String> {
        self.process(word, env).map(|(_, ws)| ws)
    }

    fn process(&self, source: &str, env: &Lookup<'_>) -> Result<(String, Vec<String>), String> {
        let mut sw = ShellWord {
            lx: *self,
            chars: source.chars().collect(),
            pos: 0,
            env,
        };
        sw.process_stop_on(None, self.raw_escapes)
            .map_err(|e| format!("failed to process {source:?}: {e}"))
    }
}

/// Expands a single word with the default escape character `\`.
pub fn expand(word: &str, env: &Lookup<'_>) -> Result<String, String> {
    Lexer::new('\\').process_word(word, env)
}

/// Accumulates words while tracking whether whitespace came from quoted text.
#[derive(Default)]
struct Words {
    words: Vec<String>,
    cur: String,
    in_word: bool,
}

impl Words {
    fn add_char(&mut self, ch: char) {
        if ch.is_whitespace() {
            if self.in_word && !self.cur.is_empty() {
                self.words.push(std::mem::take(&mut self.cur));
                self.in_word = false;
            }
        } else {
            self.add_raw_char(ch);
        }
    }
    fn add_raw_char(&mut self, ch: char) {
        self.cur.push(ch);
        self.in_word = true;
    }
    fn add_string(&mut self, s: &str) {
        s.chars().for_each(|c| self.add_char(c));
    }
    fn add_raw_string(&mut self, s: &str) {
        self.cur.push_str(s);
        self.in_word = true;
    }
    fn finish(mut self) -> Vec<String> {
        if !self.cur.is_empty() {
            self.words.push(self.cur);
        }
        self.words
    }
}

struct ShellWord<'a, 'e> {
    lx: Lexer,
    chars: Vec<char>,
    pos: usize,
    env: &'a Lookup<'e>,
}

impl ShellWord<'_, '_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }
    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        if c.is_some() {
            self.pos += 1;
        }
        c
    }

    fn process_stop_on(
        &mut self,
        stop: Option<char>,
        raw_escapes: bool,
    ) -> Result<(String, Vec<String>), String> {
        let mut result = String::new();
        let mut words = Words::default();
        while let Some(ch) = self.peek() {
            if Some(ch) == stop {
                self.next();
                return Ok((result, words.finish()));
            }
            let quote = (ch == '\'' || ch == '"') && !self.lx.skip_quotes;
            match ch {
                _ if quote || ch == '$' || ch == '<' => {
                    let tmp = match ch {
                        '\'' => self.single_quote()?,
                        '"' => self.double_quote()?,
                        '<' => self.possible_heredoc(),
                        _ => self.dollar()?,
                    };
                    result.push_str(&tmp);
                    if ch == '$' {
                        words.add_string(&tmp);
                    } else {
                        words.add_raw_string(&tmp);
                    }
                }
                _ => {
                    self.next();
                    let mut ch = ch;
                    if ch == self.lx.escape {
                        if raw_escapes {
                            words.add_raw_char(ch);
                            result.push(ch);
                        }
                        // The escape character at the very end is dropped.
                        match self.next() {
                            Some(c) => ch = c,
                            None => break,
                        }
                        words.add_raw_char(ch);
                    } else {
                        words.add_char(ch);
                    }
                    result.push(ch);
                }
            }
        }
        if let Some(stop) = stop {
            return Err(format!(
                "unexpected end of statement while looking for matching {stop}"
            ));
        }
        Ok((result, words.finish()))
    }

    /// `<<` keeps the blanks after it in the same word so that `<< EOF` is
    /// one heredoc marker (BuildKit's processPossibleHeredoc).
    fn possible_heredoc(&mut self) -> String {
        self.next();
        if self.peek() != Some('<') {
            return "<".to_string();
        }
        self.next();
        let mut out = "<<".to_string();
        while let Some(c) = self.peek().filter(|c| matches!(c, ' ' | '\t' | '\r')) {
            out.push(c);
            self.next();
        }
        out
    }

    fn single_quote(&mut self) -> Result<String, String> {
        let mut result = String::new();
        self.next();
        if self.lx.raw_quotes {
            result.push('\'');
        }
        loop {
            match self.next() {
                None => {
                    return Err(
                        "unexpected end of statement while looking for matching single-quote"
                            .to_string(),
                    )
                }
                Some('\'') => {
                    if self.lx.raw_quotes {
                        result.push('\'');
                    }
                    return Ok(result);
                }
                Some(c) => result.push(c),
            }
        }
    }

    fn double_quote(&mut self) -> Result<String, String> {
        let mut result = String::new();
        self.next();
        if self.lx.raw_quotes {
            result.push('"');
        }
        loop {
            let Some(ch) = self.peek() else {
                return Err(
                    "unexpected end of statement while looking for matching double-quote"
                        .to_string(),
                );
            };
            if ch == '"' {
                self.next();
                if self.lx.raw_quotes {
                    result.push('"');
                }
                return Ok(result);
            }
            if ch == '$' {
                let v = self.dollar()?;
                result.push_str(&v);
                continue;
            }
            self.next();
            let mut ch = ch;
            if ch == self.lx.escape {
                if self.lx.raw_escapes {
                    result.push(ch);
                }
                match self.peek() {
                    // An escape right before the end is ignored; the missing
                    // quote is reported on the next iteration.
                    None => continue,
                    Some(c) if c == '"' || c == '$' || c == self.lx.escape => {
                        ch = c;
                        self.next();
                    }
                    // Any other escape is kept as-is.
                    Some(_) => {}
                }
            }
            result.push(ch);
        }
    }

    fn lookup(&self, name: &str) -> Option<String> {
        (self.env)(name)
    }

    fn dollar(&mut self) -> Result<String, String> {
        self.next(); // '$'
        if self.peek() != Some('{') {
            let name = self.name();
            if name.is_empty() {
                return Ok("$".to_string());
            }
            return Ok(match self.lookup(&name) {
                Some(v) => v,
                None if self.lx.skip_unset => format!("${name}"),
                None => String::new(),
            });
        }
        self.next(); // '{'
        match self.peek() {
            None => return Err("syntax error: missing '}'".to_string()),
            Some('{') | Some('}') | Some(':') => {
                return Err("syntax error: bad substitution".to_string())
            }
            _ => {}
        }
        let name = self.name();
        let Some(mut ch) = self.next() else {
            return Err("syntax error: missing '}'".to_string());
        };
        let mut chs = ch.to_string();
        let mut null_is_unset = false;
        match ch {
            '}' => {
                return Ok(match self.lookup(&name) {
                    Some(v) => v,
                    None if self.lx.skip_unset => format!("${{{name}}}"),
                    None => String::new(),
                })
            }
            '/' => return self.replace(&name),
            ':' => {
                null_is_unset = true;
                let Some(m) = self.next() else {
                    return Err("syntax error: missing '}'".to_string());
                };
                ch = m;
                chs.push(m);
            }
            '+' | '-' | '?' | '#' | '%' => {}
            _ => return Err(format!("unsupported modifier ({chs}) in substitution")),
        }
        // Patterns of `#`/`%` keep their escapes so `\*` stays a literal star.
        let word = self.modifier_word('}', ch == '#' || ch == '%')?;
        let value = self.lookup(&name);
        if value.is_none() && self.lx.skip_unset {
            return Ok(format!("${{{name}{chs}{word}}}"));
        }
        let empty = value.is_none() || (null_is_unset && value.as_deref() == Some(""));
        match ch {
            '-' => Ok(if empty {
                word
            } else {
                value.unwrap_or_default()
            }),
            '+' => Ok(if empty { String::new() } else { word }),
            '?' => match value {
                None => Err(format!(
                    "{name}: {}",
                    if word.is_empty() {
                        "is not allowed to be unset"
                    } else {
                        &word
                    }
                )),
                Some(v) if null_is_unset && v.is_empty() => Err(format!(
                    "{name}: {}",
                    if word.is_empty() {
                        "is not allowed to be empty"
                    } else {
                        &word
                    }
                )),
                Some(v) => Ok(v),
            },
            '#' | '%' => {
                let value = value.unwrap_or_default();
                let (greedy, pat) = match word.strip_prefix(ch) {
                    Some(p) => (true, p.to_string()),
                    None => (false, word),
                };
                let pat = compile_pattern(&pat)?;
                Ok(trim_match(&value, &pat, ch == '#', greedy))
            }
            _ => Err(format!("unsupported modifier ({chs}) in substitution")),
        }
    }

    /// `${name/pattern/replacement}` and `${name//pattern/replacement}`.
    fn replace(&mut self, name: &str) -> Result<String, String> {
        let all = self.peek() == Some('/');
        if all {
            self.next();
        }
        let pattern = match self.process_stop_on(Some('/'), true) {
            Ok((w, _)) => w,
            Err(_) if self.peek().is_none() => {
                return Err("syntax error: missing '/' in ${}".to_string())
            }
            Err(e) => return Err(e),
        };
        let replacement = self.modifier_word('}', true)?;
        let value = self.lookup(name);
        if value.is_none() && self.lx.skip_unset {
            return Ok(format!("${{{name}/{pattern}/{replacement}}}"));
        }
        let value = value.unwrap_or_default();
        let pat = compile_pattern(&pattern)?;
        Ok(replace_matches(&value, &pat, &replacement, all))
    }

    /// The word after a modifier, up to the closing brace; it may itself
    /// contain expansions.
    fn modifier_word(&mut self, stop: char, raw_escapes: bool) -> Result<String, String> {
        match self.process_stop_on(Some(stop), raw_escapes) {
            Ok((w, _)) => Ok(w),
            Err(e) => {
                if self.peek().is_none() {
                    Err("syntax error: missing '}'".to_string())
                } else {
                    Err(e)
                }
            }
        }
    }

    /// A variable name: letters, digits and `_`; a leading digit run or a
    /// single special parameter character also form a name.
    fn name(&mut self) -> String {
        let mut name = String::new();
        while let Some(ch) = self.peek() {
            if name.is_empty() && ch.is_ascii_digit() {
                while let Some(d) = self.peek().filter(|c| c.is_ascii_digit()) {
                    name.push(d);
                    self.next();
                }
                return name;
            }
            if name.is_empty() && matches!(ch, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0') {
                self.next();
                return ch.to_string();
            }
            if !ch.is_alphanumeric() && ch != '_' {
                break;
            }
            name.push(ch);
            self.next();
        }
        name
    }
}

/// One element of a shell pattern (`*`, `?`, literal).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Pat {
    Star,
    Any,
    Lit(char),
}

/// Parses a `${var#pattern}` style pattern: `*`, `?`, and `\` escaping
/// `*`, `?` or `\`; `\}` and `\/` stand for the plain character.
fn compile_pattern(p: &str) -> Result<Vec<Pat>, String> {
    let mut out = Vec::new();
    let mut chars = p.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '*' => out.push(Pat::Star),
            '?' => out.push(Pat::Any),
            '\\' => match chars.next() {
                Some(n @ ('*' | '?' | '\\' | '}' | '/')) => out.push(Pat::Lit(n)),
                Some(n) => {
                    return Err(format!(
                        "invalid pattern ({p}) in substitution: invalid escape '\\{n}'"
                    ))
                }
                None => {
                    return Err(format!(
                        "invalid pattern ({p}) in substitution: trailing escape"
                    ))
                }
            },
            _ => out.push(Pat::Lit(c)),
        }
    }
    Ok(out)
}

/// Whether `pat` matches all of `s` (`*` and `?` match any character,
/// `/` included, as in BuildKit's regexp translation). Dynamic programming
/// over prefixes, so it stays O(pattern × value).
fn matches_all(pat: &[Pat], s: &[char]) -> bool {
    // reach[j]: the pattern so far matches s[..j].
    let mut reach = vec![false; s.len() + 1];
    reach[0] = true;
    for p in pat {
        let mut next = vec![false; s.len() + 1];
        match p {
            Pat::Star => {
                let mut any = false;
                for j in 0..=s.len() {
                    any |= reach[j];
                    next[j] = any;
                }
            }
            Pat::Any => next[1..].copy_from_slice(&reach[..s.len()]),
            Pat::Lit(c) => {
                for j in 1..=s.len() {
                    next[j] = reach[j - 1] && s[j - 1] == *c;
                }
            }
        }
        reach = next;
    }
    reach[s.len()]
}

/// Removes the shortest (or longest when `greedy`) prefix (`#`) or suffix
/// (`%`) of `value` that matches `pat`.
fn trim_match(value: &str, pat: &[Pat], prefix: bool, greedy: bool) -> String {
    let chars: Vec<char> = value.chars().collect();
    let n = chars.len();
    let mut lens: Vec<usize> = (0..=n).collect();
    if greedy {
        lens.reverse();
    }
    for len in lens {
        let (part, keep) = if prefix {
            (&chars[..len], &chars[len..])
        } else {
            (&chars[n - len..], &chars[..n - len])
        };
        if matches_all(pat, part) {
            return keep.iter().collect();
        }
    }
    value.to_string()
}

/// Replaces the first (or every) leftmost-longest match of `pat`.
fn replace_matches(value: &str, pat: &[Pat], replacement: &str, all: bool) -> String {
    let chars: Vec<char> = value.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    let mut replaced = false;
    while i <= chars.len() {
        let found = if replaced && !all {
            None
        } else {
            (i..=chars.len())
                .rev()
                .find(|&end| matches_all(pat, &chars[i..end]))
        };
        match found {
            Some(end) => {
                out.push_str(replacement);
                replaced = true;
                if end == i {
                    // Empty match: keep the character and move on.
                    if let Some(&c) = chars.get(i) {
                        out.push(c);
                    }
                    i += 1;
                } else {
                    i = end;
                }
            }
            None => {
                if let Some(&c) = chars.get(i) {
                    out.push(c);
                }
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "PWD" => Some("/home".into()),
            "SHELL" => Some("bash".into()),
            "NULL" => Some(String::new()),
            "WORDS" => Some("a  b c".into()),
            "PATHV" => Some("/usr/local/bin/tool.tar.gz".into()),
            _ => None,
        }
    }

    /// Cases from BuildKit's shell lexer test table (`envVarTest`) and the
    /// Dockerfile reference ("Environment replacement").
    #[test]
    fn process_word_table() {
        let cases: &[(&str, Option<&str>)] = &[
            ("hello", Some("hello")),
            ("he'll'o", Some("hello")),
            ("he'llo", None),
            (r"he\'llo", Some("he'llo")),
            (r"he\\'llo", None),
            (r"abc\tdef", Some("abctdef")),
            (r#""abc\tdef""#, Some(r"abc\tdef")),
            (r#""abc\\tdef""#, Some(r"abc\tdef")),
            (r"'abc\tdef'", Some(r"abc\tdef")),
            (r"hello\", Some("hello")),
            (r"hello\\", Some(r"hello\")),
            (r#""hello"#, None),
            (r#""hello\""#, None),
            (r#""hel'lo""#, Some("hel'lo")),
            ("'hello", None),
            (r"'hello\'", Some(r"hello\")),
            (r"'hello\there'", Some(r"hello\there")),
            (r#""''""#, Some("''")),
            ("$.", Some("$.")),
            ("he$1x", Some("hex")),
            ("he$.x", Some("he$.x")),
            ("he$pwd.", Some("he.")),
            ("he$PWD", Some("he/home")),
            (r"he\$PWD", Some("he$PWD")),
            (r"he\\$PWD", Some(r"he\/home")),
            (r#""he\$PWD""#, Some("he$PWD")),
            (r#""he\\$PWD""#, Some(r"he\/home")),
            (r"\${}", Some("${}")),
            (r"\${}aaa", Some("${}aaa")),
            (r"he\${}xx", Some("he${}xx")),
            ("${}", None),
            ("he${}xx", None),
            ("he${hi}xx", Some("hexx")),
            ("he${PWD}", Some("he/home")),
            ("he${.}", None),
            ("he${XXX:-000}xx", Some("he000xx")),
            ("he${PWD:-000}xx", Some("he/homexx")),
            ("he${XXX:-$PWD}xx", Some("he/homexx")),
            ("he${XXX:-${PWD:-yyy}}xx", Some("he/homexx")),
            ("he${XXX:-${YYY:-yyy}}xx", Some("heyyyxx")),
            ("he${XXX:YYY}", None),
            ("he${XXX?}", None),
            ("he${XXX:?}", None),
            ("he${PWD?}", Some("he/home")),
            ("he${PWD:?}", Some("he/home")),
            ("he${NULL?}", Some("he")),
            ("he${NULL:?}", None),
            ("he${XXX:+${PWD}}xx", Some("hexx")),
            ("he${PWD:+${XXX}}xx", Some("hexx")),
            ("he${PWD:+${SHELL}}xx", Some("hebashxx")),
            ("he${XXX:+000}xx", Some("hexx")),
            ("he${PWD:+000}xx", Some("he000xx")),
            ("'he${XX}'", Some("he${XX}")),
            (r#""he${PWD}""#, Some("he/home")),
            (r#""he'$PWD'""#, Some("he'/home'")),
            (r#""$PWD""#, Some("/home")),
            ("'$PWD'", Some("$PWD")),
            (r"'\$PWD'", Some(r"\$PWD")),
            (r#"'"hello"'"#, Some(r#""hello""#)),
            ("he${PWD", None),
            ("he${PWD:=000}xx", None),
            ("he${PWD:+${PWD}:}xx", Some("he/home:xx")),
            (r"he${XXX:-\$PWD:}xx", Some("he$PWD:xx")),
            (r"he${XXX:-\${PWD}z}xx", Some("he${PWDz}xx")),
            ("안녕하세요", Some("안녕하세요")),
            ("안'녕'하세요", Some("안녕하세요")),
            ("안'녕하세요", None),
            (r"안녕\'하세요", Some("안녕'하세요")),
            ("${NULL-x}", Some("")),
            ("${NULL:-x}", Some("x")),
            ("${XXX-x}", Some("x")),
            ("${NULL+x}", Some("x")),
            ("${NULL:+x}", Some("")),
            ("${XXX+x}", Some("")),
            // Pattern operators.
            ("${PATHV#*/}", Some("usr/local/bin/tool.tar.gz")),
            ("${PATHV##*/}", Some("tool.tar.gz")),
            ("${PATHV%.*}", Some("/usr/local/bin/tool.tar")),
            ("${PATHV%%.*}", Some("/usr/local/bin/tool")),
            ("${PATHV/local/opt}", Some("/usr/opt/bin/tool.tar.gz")),
            ("${PATHV//\\//:}", Some(":usr:local:bin:tool.tar.gz")),
            ("${PATHV#nomatch}", Some("/usr/local/bin/tool.tar.gz")),
            ("${PWD/?/x}", Some("xhome")),
            (r"${PWD#\x}", None),
            ("${PWD/x", None),
        ];
        let lx = Lexer::new('\\');
        for (input, want) in cases {
            let got = lx.process_word(input, &env);
            match want {
                Some(w) => assert_eq!(got.as_deref(), Ok(*w), "input {input:?}"),
                None => assert!(got.is_err(), "input {input:?} gave {got:?}"),
            }
        }
    }

    /// Vectors from BuildKit's `TestProcessWithMatches` and
    /// `TestShellParserMandatoryEnvVars`.
    #[test]
    fn buildkit_match_vectors() {
        type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], Option<&'a str>);
        let cases: &[Case] = &[
            ("x ${UNUSED}", &[], Some("x ")),
            ("${FOO-aaa} ${BAR-bbb} ${BAZ-ccc}", &[("FOO", "xxx"), ("BAR", "")], Some("xxx  ccc")),
            ("${FOO:-aaa} ${BAR:-bbb} ${BAZ:-ccc}", &[("FOO", "xxx"), ("BAR", "")], Some("xxx bbb ccc")),
            ("${FOO:-}", &[("FOO", "xxx")], Some("xxx")),
            ("${FOO:-}", &[], Some("")),
            ("${FOO+aaa} ${BAR+bbb} ${BAZ+ccc}", &[("FOO", "xxx"), ("BAR", "")], Some("aaa bbb ")),
            ("${FOO:+aaa} ${BAR:+bbb} ${BAZ:+ccc}", &[("FOO", "xxx"), ("BAR", "")], Some("aaa  ")),
            ("${FOO?aaa}", &[("FOO", "xxx")], Some("xxx")),
            ("${BAR?bbb}", &[("BAR", "")], Some("")),
            ("${BAZ?ccc}", &[], None),
            ("${FOO:?aaa}", &[("FOO", "xxx")], Some("xxx")),
            ("${BAR:?bbb}", &[("BAR", "")], None),
            ("${BAZ:?}", &[], None),
            ("${FOO=aaa}", &[("FOO", "xxx")], None),
            ("${FOO=:aaa}", &[("FOO", "xxx")], None),
            ("${FOO=}", &[], None),
            ("${FOO#()[]{\\}^$.\\*\\?|\\\\}", &[("FOO", "()[]{}^$.*?|\\x")], Some("x")),
            ("${FOO%%\\**}", &[("FOO", "xx**")], Some("xx")),
            ("${FOO#*x*y}", &[("FOO", "xxyy")], Some("y")),
            ("${FOO#*}", &[("FOO", "xxyy")], Some("xxyy")),
            ("${FOO#$BAR}", &[("FOO", "xxyy"), ("BAR", "x")], Some("xyy")),
            ("${FOO#$BAR}", &[("FOO", "xxyy"), ("BAR", "")], Some("xxyy")),
            ("${FOO#}", &[("FOO", "xxyy")], Some("xxyy")),
            ("${FOO##*x}", &[("FOO", "xxyy")], Some("yy")),
            ("${FOO##}", &[("FOO", "xxyy")], Some("xxyy")),
            ("${FOO#?\\?}", &[("FOO", "???y")], Some("?y")),
            ("${ABC:-.}${FOO%x}${ABC:-.}", &[("FOO", "xxyy")], Some(".xxyy.")),
            ("${FOO%%\\**\\*}", &[("FOO", "a***yy*")], Some("a")),
            ("${FOO%}", &[("FOO", "xxyy")], Some("xxyy")),
            ("${FOO%%$BAR}", &[("FOO", "xxyy"), ("BAR", "")], Some("xxyy")),
            (
                "${FOO/$NEEDLE/.} - ${FOO//$NEEDLE/.}",
                &[("FOO", "/foo*/*/*.txt"), ("NEEDLE", "\\*/")],
                Some("/foo.*/*.txt - /foo..*.txt"),
            ),
            (
                "${FOO/$NEEDLE/} - ${FOO//$NEEDLE/}",
                &[("FOO", "/tmp/tmp/bar.txt"), ("NEEDLE", "/tmp")],
                Some("/tmp/bar.txt - /bar.txt"),
            ),
            (
                "${FOO/$NEEDLE/$REPLACEMENT} - ${FOO//$NEEDLE/$REPLACEMENT}",
                &[("FOO", "/a/foo/b/c.txt"), ("NEEDLE", "/?/"), ("REPLACEMENT", "/")],
                Some("/foo/b/c.txt - /foo/c.txt"),
            ),
            (
                "${FOO/$NEEDLE/$REPLACEMENT}",
                &[("FOO", "http://google.de"), ("NEEDLE", "http://"), ("REPLACEMENT", "https://")],
                Some("https://google.de"),
            ),
            ("${FOO//\\//\\/}", &[("FOO", "/tmp/foo.txt")], Some("\\/tmp\\/foo.txt")),
            ("${FOO/$BAR/ww}", &[("FOO", "xxyy"), ("BAR", "")], Some("wwxxyy")),
            ("${FOO//ww}", &[("FOO", "xxyy")], None),
            ("${FOO//}", &[("FOO", "xxyy")], None),
            ("${FOO///}", &[("FOO", "xxyy")], Some("xxyy")),
            ("${FOO///}", &[], Some("")),
            (
                "something-${VERSION}.${TARGETOS}-${TARGETARCH}${TARGETVARIANT:+-${TARGETVARIANT}}.tar.gz",
                &[("VERSION", "v1.2.3"), ("TARGETOS", "linux"), ("TARGETARCH", "arm"), ("TARGETVARIANT", "v7")],
                Some("something-v1.2.3.linux-arm-v7.tar.gz"),
            ),
            (
                "something-${VERSION}.${TARGETOS}-${TARGETARCH}${TARGETVARIANT:+-${TARGETVARIANT}}.tar.gz",
                &[("VERSION", "v1.2.3"), ("TARGETOS", "linux"), ("TARGETARCH", "amd64"), ("TARGETVARIANT", "")],
                Some("something-v1.2.3.linux-amd64.tar.gz"),
            ),
        ];
        let lx = Lexer::new('\\');
        for (input, vars, want) in cases {
            let lookup = |k: &str| {
                vars.iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            };
            let got = lx.process_word(input, &lookup);
            match want {
                Some(w) => assert_eq!(got.as_deref(), Ok(*w), "input {input:?}"),
                None => assert!(got.is_err(), "input {input:?} gave {got:?}"),
            }
        }

        let word_set = |v: &str| Some(v.to_string());
        let vars = |var: Option<&'static str>| {
            move |k: &str| match k {
                "ARG" => word_set("x"),
                "VAR" => var.map(str::to_string),
                _ => None,
            }
        };
        let no_empty = "${VAR:?message here$ARG}";
        let no_unset = "${VAR?message here$ARG}";
        assert_eq!(
            lx.process_word(no_empty, &vars(Some("plain"))).unwrap(),
            "plain"
        );
        assert!(lx
            .process_word(no_empty, &vars(Some("")))
            .unwrap_err()
            .contains("message herex"));
        assert!(lx
            .process_word(no_empty, &vars(None))
            .unwrap_err()
            .contains("message herex"));
        assert_eq!(
            lx.process_word(no_unset, &vars(Some("plain"))).unwrap(),
            "plain"
        );
        assert_eq!(lx.process_word(no_unset, &vars(Some(""))).unwrap(), "");
        assert!(lx
            .process_word(no_unset, &vars(None))
            .unwrap_err()
            .contains("message herex"));
    }

    #[test]
    fn error_messages() {
        let lx = Lexer::new('\\');
        let e = lx.process_word("${XXX:?custom message}", &env).unwrap_err();
        assert_eq!(
            e,
            r#"failed to process "${XXX:?custom message}": XXX: custom message"#
        );
        let e = lx.process_word("${XXX?}", &env).unwrap_err();
        assert!(e.ends_with("XXX: is not allowed to be unset"), "{e}");
        let e = lx.process_word("${NULL:?}", &env).unwrap_err();
        assert!(e.ends_with("NULL: is not allowed to be empty"), "{e}");
        let e = lx.process_word("${PWD", &env).unwrap_err();
        assert!(e.ends_with("syntax error: missing '}'"), "{e}");
        let e = lx.process_word("${}", &env).unwrap_err();
        assert!(e.ends_with("syntax error: bad substitution"), "{e}");
        let e = lx.process_word("${PWD:=x}", &env).unwrap_err();
        assert!(
            e.ends_with("unsupported modifier (:=) in substitution"),
            "{e}"
        );
    }

    #[test]
    fn word_splitting() {
        let lx = Lexer::new('\\');
        let cases: &[(&str, &[&str])] = &[
            ("hello world", &["hello", "world"]),
            ("  spaced   out  ", &["spaced", "out"]),
            (r#""quoted words" x"#, &["quoted words", "x"]),
            ("'single q' y", &["single q", "y"]),
            (r"esc\ aped z", &["esc aped", "z"]),
            ("$WORDS", &["a", "b", "c"]),
            (r#""$WORDS""#, &["a  b c"]),
            ("x$WORDS", &["xa", "b", "c"]),
            ("${XXX:-80 443}", &["80", "443"]),
            ("cat <<  EOF > f", &["cat", "<<  EOF", ">", "f"]),
            ("a < b", &["a", "<", "b"]),
            (r#""""#, &[]),
            ("", &[]),
        ];
        for (input, want) in cases {
            assert_eq!(
                lx.process_words(input, &env).unwrap(),
                *want,
                "input {input:?}"
            );
        }
    }

    #[test]
    fn backtick_escape() {
        let lx = Lexer::new('`');
        assert_eq!(
            lx.process_word(r"C:\path\$PWD", &env).unwrap(),
            r"C:\path\/home"
        );
        assert_eq!(lx.process_word("`$PWD", &env).unwrap(), "$PWD");
        assert_eq!(lx.process_word(r#""a`"b""#, &env).unwrap(), r#"a"b"#);
    }

    #[test]
    fn raw_and_skip_modes() {
        let mut lx = Lexer::new('\\');
        lx.skip_unset = true;
        assert_eq!(
            lx.process_word("$X ${Y} ${Z:-d} $PWD", &env).unwrap(),
            "$X ${Y} ${Z:-d} /home"
        );
        let mut lx = Lexer::new('\\');
        lx.raw_quotes = true;
        assert_eq!(lx.process_word(r#"'a' "b""#, &env).unwrap(), r#"'a' "b""#);
        let mut lx = Lexer::new('\\');
        lx.skip_quotes = true;
        assert_eq!(
            lx.process_word("echo \"$PWD\" '$SHELL' \\$HOME\n", &env)
                .unwrap(),
            "echo \"/home\" 'bash' $HOME\n"
        );
    }

    #[test]
    fn docker_reference_examples() {
        // ENV FOO=/bar; WORKDIR ${FOO}; ADD . $FOO; COPY \$FOO /quux
        let foo = |n: &str| (n == "FOO").then(|| "/bar".to_string());
        assert_eq!(expand("${FOO}", &foo).unwrap(), "/bar");
        assert_eq!(expand("$FOO", &foo).unwrap(), "/bar");
        assert_eq!(expand(r"\$FOO", &foo).unwrap(), "$FOO");
        assert_eq!(expand(r"\${FOO}", &foo).unwrap(), "${FOO}");
        assert_eq!(expand("${FOO:-word}", &foo).unwrap(), "/bar");
        assert_eq!(expand("${BAR:-word}", &foo).unwrap(), "word");
        assert_eq!(expand("${FOO:+word}", &foo).unwrap(), "word");
        assert_eq!(expand("${BAR:+word}", &foo).unwrap(), "");
    }
}
