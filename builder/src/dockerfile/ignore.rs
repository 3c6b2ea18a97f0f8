//! `.dockerignore` handling with the semantics of moby's `dockerignore` and
//! `patternmatcher` packages:
//!
//! * one pattern per line; lines starting with `#` are comments; blank lines
//!   ignored; surrounding whitespace trimmed;
//! * patterns are cleaned like Go's `filepath.Clean` (`./a//b/` → `a/b`,
//!   `a/../b` → `b`) and a leading `/` is dropped (paths are relative to the
//!   context root);
//! * `*` matches any run of non-`/` characters, `?` one non-`/` character,
//!   `[a-z]`/`[^a-z]` a character class, `\` escapes the next character,
//!   `**` any number of directories (including none);
//! * a pattern also matches everything below a matching directory;
//! * `!pattern` re-includes; the last matching pattern wins.

use std::path::{Path, PathBuf};

/// A compiled `.dockerignore`.
#[derive(Debug, Clone, Default)]
pub struct IgnoreMatcher {
    patterns: Vec<Pattern>,
}

#[derive(Debug, Clone)]
struct Pattern {
    exclusion: bool,
    tokens: Vec<Tok>,
    /// BuildKit's "suffix match" shortcut: `**` followed by plain text.
    suffix: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Lit(char),
    /// `*`: any run of non-`/`.
    Star,
    /// `?`: one non-`/`.
    Any,
    /// `**/` or `**` followed by more pattern: `(.*/)?`.
    AnyDirs,
    /// `**` at the end: `.*`.
    AnyRest,
    Class {
        negated: bool,
        items: Vec<(char, char)>,
    },
}

/// Reads `.dockerignore` contents into cleaned patterns (`!` kept).
pub fn read_patterns(contents: &str) -> Vec<String> {
    let contents = contents.strip_prefix('\u{feff}').unwrap_or(contents);
    let mut out = Vec::new();
    for line in contents.lines() {
        if line.starts_with('#') {
            continue;
        }
        let mut p = line.trim();
        if p.is_empty() {
            continue;
        }
        let invert = p.starts_with('!');
        if invert {
            p = p[1..].trim();
        }
        let mut cleaned = String::new();
        if !p.is_empty() {
            cleaned = clean(p);
            if cleaned.len() > 1 && cleaned.starts_with('/') {
                cleaned.remove(0);
            }
        }
        out.push(if invert {
            format!("!{cleaned}")
        } else {
            cleaned
        });
    }
    out
}

/// The ignore file for a build: `<Dockerfile name>.dockerignore` next to the
/// Dockerfile if it exists, else `.dockerignore` at the context root.
pub fn find_ignore_file(context_dir: &Path, dockerfile: &Path) -> Option<PathBuf> {
    if let Some(name) = dockerfile.file_name() {
        let mut specific = name.to_os_string();
        specific.push(".dockerignore");
        let candidate = dockerfile.with_file_name(specific);
        if candidate.is_file() {
            return Some(candidate);
        }
    }
    let default = context_dir.join(".dockerignore");
    default.is_file().then_some(default)
}

impl IgnoreMatcher {
    /// Compiles patterns as returned by [`read_patterns`] (or given directly).
    pub fn new<I, S>(patterns: I) -> Result<Self, String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut out = Vec::new();
        for p in patterns {
            let p = p.as_ref().trim();
            if p.is_empty() {
                continue;
            }
            let (exclusion, raw) = match p.strip_prefix('!') {
                Some(rest) if rest.trim().is_empty() => {
                    return Err("illegal exclusion pattern: \"!\"".to_string())
                }
                Some(rest) => (true, rest.trim()),
                None => (false, p),
            };
            // Patterns are relative to the context root (read_patterns already
            // drops a leading `/`; accept it from direct callers too).
            let cleaned = clean(raw);
            let text = match cleaned.strip_prefix('/') {
                Some(rest) if !rest.is_empty() => rest.to_string(),
                _ => cleaned,
            };
            let tokens = compile(&text)?;
            let suffix = suffix_shortcut(&text);
            out.push(Pattern {
                exclusion,
                tokens,
                suffix,
            });
        }
        Ok(IgnoreMatcher { patterns: out })
    }

    /// Parses `.dockerignore` file contents.
    pub fn from_dockerignore(contents: &str) -> Result<Self, String> {
        Self::new(read_patterns(contents))
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether any `!` pattern exists.
    pub fn has_exceptions(&self) -> bool {
        self.patterns.iter().any(|p| p.exclusion)
    }

    /// Whether `rel_path` (relative to the context, `/`-separated) is
    /// excluded. Docker patterns have no directory-only form, so `is_dir`
    /// does not change the answer; it is accepted for callers walking trees.
    pub fn is_excluded(&self, rel_path: &str, is_dir: bool) -> bool {
        let _ = is_dir;
        let path = clean(rel_path.trim_start_matches('/'));
        if path == "." || path.is_empty() {
            return false;
        }
        let chars: Vec<char> = path.chars().collect();
        // Parent directories: "a", "a/b", ... for "a/b/c".
        let parents: Vec<usize> = chars
            .iter()
            .enumerate()
            .filter(|(_, c)| **c == '/')
            .map(|(i, _)| i)
            .collect();
        let mut matched = false;
        for p in &self.patterns {
            // An exclusion can only flip a match, an inclusion a non-match.
            if p.exclusion != matched {
                continue;
            }
            let hit = p.matches(&chars) || parents.iter().any(|&end| p.matches(&chars[..end]));
            if hit {
                matched = !p.exclusion;
            }
        }
        matched
    }

    /// True when the directory is excluded and no `!` pattern could
    /// re-include anything below it, so a context walk can skip it whole.
    pub fn can_skip_dir(&self, rel_dir: &str) -> bool {
        if !self.is_excluded(rel_dir, true) {
            return false;
        }
        let dir = clean(rel_dir.trim_start_matches('/'));
        let prefix: Vec<char> = format!("{dir}/").chars().collect();
        !self
            .patterns
            .iter()
            .any(|p| p.exclusion && p.could_match_under(&prefix))
    }
}

impl Pattern {
    fn matches(&self, path: &[char]) -> bool {
        if let Some(suffix) = &self.suffix {
            let s: String = path.iter().collect();
            return s.ends_with(suffix.as_str())
                || suffix.strip_prefix('/').is_some_and(|rest| s == rest);
        }
        match_tokens(&self.tokens, path, false)
    }

    /// Whether some path starting with `prefix` (which ends in `/`) can match.
    fn could_match_under(&self, prefix: &[char]) -> bool {
        if self.suffix.is_some() {
            return true;
        }
        match_tokens(&self.tokens, prefix, true)
    }
}

/// Matches `toks` against all of `s`. With `partial`, running out of input
/// while tokens remain also counts (the rest of the path is still unknown).
fn match_tokens(toks: &[Tok], s: &[char], partial: bool) -> bool {
    let mut m = Matcher {
        toks,
        s,
        partial,
        // Failed (token, char) states: keeps `*a*a*a...` patterns linear-ish.
        failed: vec![false; (toks.len() + 1) * (s.len() + 1)],
    };
    m.at(0, 0)
}

struct Matcher<'a> {
    toks: &'a [Tok],
    s: &'a [char],
    partial: bool,
    failed: Vec<bool>,
}

impl Matcher<'_> {
    fn at(&mut self, ti: usize, si: usize) -> bool {
        let slot = ti * (self.s.len() + 1) + si;
        if self.failed[slot] {
            return false;
        }
        let ok = self.step(ti, si);
        if !ok {
            self.failed[slot] = true;
        }
        ok
    }

    fn step(&mut self, ti: usize, si: usize) -> bool {
        let Some(tok) = self.toks.get(ti) else {
            return si == self.s.len();
        };
        let cur = self.s.get(si).copied();
        if cur.is_none() && self.partial {
            return true;
        }
        match tok {
            Tok::Lit(c) => cur == Some(*c) && self.at(ti + 1, si + 1),
            Tok::Any => cur.is_some_and(|c| c != '/') && self.at(ti + 1, si + 1),
            Tok::Class { negated, items } => {
                cur.is_some_and(|c| {
                    let inside = items.iter().any(|(lo, hi)| *lo <= c && c <= *hi);
                    inside != *negated
                }) && self.at(ti + 1, si + 1)
            }
            Tok::Star => {
                let run = self.s[si..].iter().take_while(|c| **c != '/').count();
                (0..=run).any(|n| self.at(ti + 1, si + n))
            }
            Tok::AnyRest => true,
            Tok::AnyDirs => {
                if self.at(ti + 1, si) {
                    return true;
                }
                let slashes: Vec<usize> =
                    (si..self.s.len()).filter(|&i| self.s[i] == '/').collect();
                slashes.into_iter().any(|i| self.at(ti + 1, i + 1))
            }
        }
    }
}

/// Pattern text → tokens, following patternmatcher's regexp translation.
fn compile(p: &str) -> Result<Vec<Tok>, String> {
    let chars: Vec<char> = p.chars().collect();
    let mut toks = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        i += 1;
        match c {
            '*' if chars.get(i) == Some(&'*') => {
                i += 1;
                if chars.get(i) == Some(&'/') {
                    i += 1;
                }
                toks.push(if i >= chars.len() {
                    Tok::AnyRest
                } else {
                    Tok::AnyDirs
                });
            }
            '*' => toks.push(Tok::Star),
            '?' => toks.push(Tok::Any),
            '\\' => match chars.get(i) {
                Some(&n) => {
                    toks.push(Tok::Lit(n));
                    i += 1;
                }
                // Go's filepath.Match refuses a trailing escape.
                None => return Err(format!("syntax error in pattern {p:?}")),
            },
            '[' => {
                let (tok, next) =
                    class(&chars, i).ok_or_else(|| format!("syntax error in pattern {p:?}"))?;
                toks.push(tok);
                i = next;
            }
            ']' => return Err(format!("syntax error in pattern {p:?}")),
            _ => toks.push(Tok::Lit(c)),
        }
    }
    Ok(toks)
}

/// Parses a character class starting after `[`; returns it and the index
/// after `]`. Syntax as Go's `filepath.Match`: `-` and `]` must be escaped
/// where a character is expected, ranges must not be reversed.
fn class(chars: &[char], mut i: usize) -> Option<(Tok, usize)> {
    let negated = chars.get(i) == Some(&'^');
    if negated {
        i += 1;
    }
    // One possibly escaped class character (Go's getEsc).
    let esc = |i: &mut usize| -> Option<char> {
        let mut c = *chars.get(*i)?;
        if c == '-' || c == ']' {
            return None;
        }
        if c == '\\' {
            *i += 1;
            c = *chars.get(*i)?;
        }
        *i += 1;
        // A class must be closed later on.
        chars.get(*i)?;
        Some(c)
    };
    let mut items = Vec::new();
    loop {
        if chars.get(i) == Some(&']') && !items.is_empty() {
            return Some((Tok::Class { negated, items }, i + 1));
        }
        let lo = esc(&mut i)?;
        let mut hi = lo;
        if chars.get(i) == Some(&'-') {
            i += 1;
            hi = esc(&mut i)?;
            if hi < lo {
                return None;
            }
        }
        items.push((lo, hi));
    }
}

/// patternmatcher treats a pattern that starts with `**` and has no other
/// wildcard as "path ends with the rest" (so `**.go` matches `a/b.go`).
fn suffix_shortcut(p: &str) -> Option<String> {
    let rest = p.strip_prefix("**")?;
    if rest.is_empty() || rest.contains(['*', '?', '[', ']', '\\']) {
        return None;
    }
    Some(rest.to_string())
}

/// Go's `path.Clean`.
fn clean(p: &str) -> String {
    if p.is_empty() {
        return ".".to_string();
    }
    let rooted = p.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => match parts.last() {
                Some(&last) if last != ".." => {
                    parts.pop();
                }
                _ if rooted => {}
                _ => parts.push(".."),
            },
            s => parts.push(s),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_string(),
        (false, false) => joined,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_clean() {
        for (i, o) in [
            ("", "."),
            ("./a", "a"),
            ("a//b/", "a/b"),
            ("a/../b", "b"),
            ("../a", "../a"),
            ("/../a", "/a"),
            ("/", "/"),
            ("a/./b/.", "a/b"),
        ] {
            assert_eq!(clean(i), o, "{i}");
        }
    }

    #[test]
    fn reading_the_file() {
        let f = "\u{feff}# comment\n\n  *.md  \n!README.md\n/abs/path\n./rel/../x/\n#!not-an-exception\n! spaced\n";
        assert_eq!(
            read_patterns(f),
            vec!["*.md", "!README.md", "abs/path", "x", "!spaced"]
        );
    }

    /// Docker's documented `.dockerignore` example plus edge cases.
    #[test]
    fn documented_examples() {
        let m = IgnoreMatcher::from_dockerignore("# comment\n*/temp*\n*/*/temp*\ntemp?\n").unwrap();
        let cases = [
            ("somedir/temporary.txt", true),
            ("somedir/temp", true),
            ("somedir/subdir/temporary.txt", true),
            ("temp", false),
            ("tempa", true),
            ("tempab", false),
            ("temporary.txt", false),
            ("a/b/c/temp", false),
        ];
        for (p, want) in cases {
            assert_eq!(m.is_excluded(p, false), want, "{p}");
        }
    }

    #[test]
    fn exceptions_last_match_wins() {
        let m = IgnoreMatcher::from_dockerignore("*.md\n!README*.md\nREADME-secret.md\n").unwrap();
        assert!(m.is_excluded("CHANGES.md", false));
        assert!(!m.is_excluded("README.md", false));
        assert!(!m.is_excluded("README-public.md", false));
        assert!(m.is_excluded("README-secret.md", false));
        // `*` doesn't cross directories.
        assert!(!m.is_excluded("docs/CHANGES.md", false));

        let m = IgnoreMatcher::from_dockerignore("*.md\nREADME-secret.md\n!README*.md\n").unwrap();
        assert!(!m.is_excluded("README-secret.md", false));
    }

    #[test]
    fn double_star_and_parents() {
        let m =
            IgnoreMatcher::from_dockerignore("**/*.go\nnode_modules\nbuild/**\n**.log\n").unwrap();
        assert!(m.is_excluded("main.go", false));
        assert!(m.is_excluded("a/b/c.go", false));
        assert!(!m.is_excluded("a/b/c.gox", false));
        assert!(m.is_excluded("node_modules", true));
        assert!(
            m.is_excluded("node_modules/x/y.js", false),
            "children of an excluded dir"
        );
        assert!(
            !m.is_excluded("src/node_modules", true),
            "not anchored anywhere but the root"
        );
        assert!(m.is_excluded("build/out/a.o", false));
        assert!(
            !m.is_excluded("build", true),
            "build/** matches contents, not the dir itself"
        );
        assert!(m.is_excluded("deep/dir/x.log", false));
        assert!(m.is_excluded("x.log", false));

        let m = IgnoreMatcher::new(["a/**/b"]).unwrap();
        assert!(m.is_excluded("a/b", false));
        assert!(m.is_excluded("a/x/y/b", false));
        assert!(m.is_excluded("a/x/b/file", false));
        assert!(!m.is_excluded("a/xb", false));
        let m = IgnoreMatcher::new(["**"]).unwrap();
        assert!(m.is_excluded("anything/at/all", false));
    }

    #[test]
    fn classes_escapes_and_leading_slash() {
        let m = IgnoreMatcher::new(["/file[0-9].txt", "x[^a]y", "lit\\*star", "./dir/"]).unwrap();
        assert!(m.is_excluded("file3.txt", false));
        assert!(!m.is_excluded("filea.txt", false));
        assert!(m.is_excluded("xby", false));
        assert!(!m.is_excluded("xay", false));
        assert!(m.is_excluded("lit*star", false));
        assert!(!m.is_excluded("litXstar", false));
        assert!(m.is_excluded("dir/a", false));
        assert!(m.is_excluded("./dir/a", false), "paths are cleaned too");
        assert!(IgnoreMatcher::new(["a[b"]).is_err());
        assert!(IgnoreMatcher::new(["!"]).is_err());
        let m = IgnoreMatcher::new(["*", "!./keep/"]).unwrap();
        assert!(!m.is_excluded("keep/x", false));
        assert!(IgnoreMatcher::new(["[z-a]"]).is_err());
    }

    /// Vectors from moby/patternmatcher's tests (MatchesOrParentMatches
    /// semantics) and Go's filepath.Match tests.
    #[test]
    fn patternmatcher_vectors() {
        let single: &[(&str, &str, bool)] = &[
            ("**", "file", true),
            ("**", "file/", true),
            ("**/", "file", true),
            ("**/", "file/", true),
            ("**", "dir/file", true),
            ("**/", "dir/file", true),
            ("**/**", "dir/file", true),
            ("dir/**", "dir/file", true),
            ("dir/**", "dir/dir2/file/", true),
            ("**/dir", "dir", true),
            ("**/dir", "dir/file", true),
            ("**/dir2/*", "dir/dir2/file", true),
            ("**/dir2/*", "dir/dir2/file/", true),
            ("**/dir2/**", "dir/dir2/dir3/file", true),
            ("**file", "file", true),
            ("**file", "dir/dir/file", true),
            ("**/file", "dir/dir/file", true),
            ("**/file*", "dir/dir/file.txt", true),
            ("**/file*txt", "dir/dir/file.txt", true),
            ("**/file*.txt*", "dir/dir/file.txt", true),
            ("**/**/*.txt", "dir/dir/file.txt", true),
            ("**/**/*.txt2", "dir/dir/file.txt", false),
            ("**/*.txt", "file.txt", true),
            ("**/**/*.txt", "file.txt", true),
            ("a**/*.txt", "a/file.txt", true),
            ("a**/*.txt", "a/dir/dir/file.txt", true),
            ("a/*.txt", "a/dir/file.txt", false),
            ("a/*.txt", "a/file.txt", true),
            ("a/*.txt**", "a/file.txt", true),
            ("a[b-d]e", "ae", false),
            ("a[b-d]e", "ace", true),
            ("a[b-d]e", "aae", false),
            ("a[^b-d]e", "aze", true),
            (".*", ".foo", true),
            (".*", "foo", false),
            ("abc.def", "abcdef", false),
            ("abc.def", "abc.def", true),
            ("abc?def", "abcZdef", true),
            ("abc?def", "abcdef", false),
            ("**/foo/bar", "foo/bar", true),
            ("**/foo/bar", "dir/dir2/foo/bar", true),
            ("abc/**", "abc", false),
            ("abc/**", "abc/def/ghi", true),
            ("**/.foo", ".foo", true),
            ("**/.foo", "bar.foo", false),
            ("a(b)c/def", "a(b)c/def", true),
            ("a(b)c/def", "a(b)c/xyz", false),
            ("a.|)$(}+{bc", "a.|)$(}+{bc", true),
            (
                "dist/*.whl",
                "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
                true,
            ),
            ("a\\\\", "a\\", true),
            ("a\\*b", "a*b", true),
            // Go filepath.Match vectors.
            ("abc", "abc", true),
            ("*", "abc", true),
            ("*c", "abc", true),
            ("a*", "a", true),
            ("a*", "ab/c", true),
            ("a*/b", "abc/b", true),
            ("a*/b", "a/c/b", false),
            ("a*b*c*d*e*/f", "axbxcxdxe/f", true),
            ("a*b*c*d*e*/f", "axbxcxdxexxx/f", true),
            ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", false),
            ("a*b*c*d*e*/f", "axbxcxdxexxx/fff", false),
            ("a*b?c*x", "abxbbxdbxebxczzx", true),
            ("a*b?c*x", "abxbbxdbxebxczzy", false),
            ("ab[c]", "abc", true),
            ("ab[b-d]", "abc", true),
            ("ab[e-g]", "abc", false),
            ("ab[^c]", "abc", false),
            ("ab[^e-g]", "abc", true),
            ("a\\*b", "ab", false),
            ("a?b", "a☺b", true),
            ("a[^a]b", "a☺b", true),
            ("a???b", "a☺b", false),
            ("[a-ζ]*", "α", true),
            ("*[a-ζ]", "A", false),
            ("a?b", "a/b", false),
            ("a*b", "a/b", false),
            ("[\\]a]", "]", true),
            ("[\\-]", "-", true),
            ("[x\\-]", "x", true),
            ("[x\\-]", "-", true),
            ("[x\\-]", "z", false),
            ("[\\-x]", "-", true),
            ("[\\-x]", "a", false),
            ("*x", "xxx", true),
        ];
        for (pattern, path, want) in single {
            let m = IgnoreMatcher::new([pattern]).unwrap_or_else(|e| panic!("{pattern}: {e}"));
            assert_eq!(
                m.is_excluded(path, false),
                *want,
                "pattern {pattern:?} path {path:?}"
            );
        }
        for bad in [
            "[]a]", "[-]", "[x-]", "[-x]", "\\", "[a-b-c]", "[", "[^", "[^bc", "a[", "[",
        ] {
            assert!(
                IgnoreMatcher::new([bad]).is_err(),
                "{bad:?} should be refused"
            );
        }
        let multi: &[(&[&str], &str, bool)] = &[
            (&["**", "!util/docker/web"], "util/docker/web/foo", false),
            (
                &["**", "!util/docker/web", "util/docker/web/foo"],
                "util/docker/web/foo",
                true,
            ),
            (
                &["**", "!dist/*.whl"],
                "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
                false,
            ),
            (&["docs", "!docs/README.md"], "docs/README.md", false),
            (&["docs/", "!docs/README.md"], "docs/README.md", false),
            (&["docs/*", "!docs/README.md"], "docs/README.md", false),
            (&["!fileutils.go", "*.go"], "fileutils.go", true),
            (&["*.go", "!fileutils.go"], "fileutils.go", false),
        ];
        for (patterns, path, want) in multi {
            let m = IgnoreMatcher::new(patterns.iter()).unwrap();
            assert_eq!(
                m.is_excluded(path, false),
                *want,
                "patterns {patterns:?} path {path:?}"
            );
        }
    }

    #[test]
    fn pathological_patterns_stay_fast() {
        let m = IgnoreMatcher::new(["*a*a*a*a*a*a*a*a*a*a*b", "**/**/**/**/**/**/x"]).unwrap();
        let long = "a".repeat(200);
        let start = std::time::Instant::now();
        assert!(!m.is_excluded(&long, false));
        let deep = vec!["d"; 60].join("/");
        assert!(!m.is_excluded(&deep, false));
        assert!(start.elapsed() < std::time::Duration::from_secs(2));
    }

    #[test]
    fn skipping_directories() {
        let m = IgnoreMatcher::from_dockerignore("node_modules\nvendor\n!vendor/keep/**\n.git\n")
            .unwrap();
        assert!(m.can_skip_dir("node_modules"));
        assert!(m.can_skip_dir(".git"));
        assert!(
            !m.can_skip_dir("vendor"),
            "an exception re-includes vendor/keep/..."
        );
        assert!(m.is_excluded("vendor/other.go", false));
        assert!(!m.is_excluded("vendor/keep/a.go", false));
        assert!(!m.can_skip_dir("src"), "not excluded at all");

        let m = IgnoreMatcher::from_dockerignore("*\n!**/*.go\n").unwrap();
        assert!(
            !m.can_skip_dir("pkg"),
            "a wildcard exception could match inside"
        );
        assert!(!m.is_excluded("pkg/x/main.go", false));
        assert!(m.is_excluded("pkg/x/README", false));

        let m = IgnoreMatcher::from_dockerignore("*\n!src\n").unwrap();
        assert!(m.can_skip_dir("docs"));
        assert!(!m.is_excluded("src/main.rs", false));
        assert!(m.has_exceptions() && m.can_skip_dir("target"));
    }

    #[test]
    fn dockerfile_specific_ignore_file_wins() {
        let dir = std::env::temp_dir().join(format!("berth-ignore-test-{}", std::process::id()));
        struct Cleanup(PathBuf);
        impl Drop for Cleanup {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
        let _guard = Cleanup(dir.clone());
        std::fs::create_dir_all(dir.join("build")).unwrap();
        let dockerfile = dir.join("build/app.Dockerfile");
        assert_eq!(find_ignore_file(&dir, &dockerfile), None);
        std::fs::write(dir.join(".dockerignore"), "a\n").unwrap();
        assert_eq!(
            find_ignore_file(&dir, &dockerfile),
            Some(dir.join(".dockerignore"))
        );
        std::fs::write(dir.join("build/app.Dockerfile.dockerignore"), "b\n").unwrap();
        assert_eq!(
            find_ignore_file(&dir, &dockerfile),
            Some(dir.join("build/app.Dockerfile.dockerignore"))
        );
    }
}
