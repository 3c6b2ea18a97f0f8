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
            match ch {
                '\'' | '"' | '$' => {
                    let tmp = match ch {
                        '\'' => self.single_quote()?,
                        '"' => self.double_quote()?,
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
                match self.peek() {
                    // An escape right before the end is ignored; the missing
                    // quote is reported on the next iteration.
                    None => continue,
                    Some(c) if c == '"' || c == '$' || c == self.lx.escape => {
                        if self.lx.raw_escapes {
                            result.push(ch);
                        }
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
        let Some(ch) = self.next() else {
            return Err("syntax error: missing '}'".to_string());
        };
        match ch {
            '}' => Ok(match self.lookup(&name) {
                Some(v) => v,
                None if self.lx.skip_unset => format!("${{{name}}}"),
                None => String::new(),
            }),
            '?' | '+' | '-' => {
                let word = self.modifier_word()?;
                let value = self.lookup(&name);
                if value.is_none() && self.lx.skip_unset {
                    return Ok(format!("${{{name}{ch}{word}}}"));
                }
                match (ch, value) {
                    ('+', Some(_)) => Ok(word),
                    ('+', None) => Ok(String::new()),
                    ('-', Some(v)) => Ok(v),
                    ('-', None) => Ok(word),
                    (_, Some(v)) => Ok(v),
                    (_, None) => Err(format!(
                        "{name}: {}",
                        if word.is_empty() {
                            "is not allowed to be unset"
                        } else {
                            &word
                        }
                    )),
                }
            }
            ':' => {
                let Some(modifier) = self.next() else {
                    return Err("syntax error: missing '}'".to_string());
                };
                let word = self.modifier_word()?;
                let value = self.lookup(&name);
                if value.is_none() && self.lx.skip_unset {
                    return Ok(format!("${{{name}:{modifier}{word}}}"));
                }
                let value_str = value.clone().unwrap_or_default();
                match modifier {
                    '+' => Ok(if value_str.is_empty() {
                        String::new()
                    } else {
                        word
                    }),
                    '-' => Ok(if value_str.is_empty() {
                        word
                    } else {
                        value_str
                    }),
                    '?' => {
                        if value.is_none() {
                            let msg = if word.is_empty() {
                                "is not allowed to be unset"
                            } else {
                                &word
                            };
                            Err(format!("{name}: {msg}"))
                        } else if value_str.is_empty() {
                            let msg = if word.is_empty() {
                                "is not allowed to be empty"
                            } else {
                                &word
                            };
                            Err(format!("{name}: {msg}"))
                        } else {
                            Ok(value_str)
                        }
                    }
                    m => Err(format!("unsupported modifier ({m}) in substitution")),
                }
            }
            other => Err(format!("unsupported modifier ({other}) in substitution")),
        }
    }

    /// The word after a modifier, up to the closing brace; it may itself
    /// contain expansions.
    fn modifier_word(&mut self) -> Result<String, String> {
        let raw = self.lx.raw_escapes;
        match self.process_stop_on(Some('}'), raw) {
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
