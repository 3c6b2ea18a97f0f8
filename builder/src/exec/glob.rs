//! Path patterns for COPY sources and `--exclude`: `*`, `?`, `[...]` within
//! one component and `**` across components (Go `filepath.Match` plus `**`).

/// Matches one path component against a pattern component.
pub fn component_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    fn rec(p: &[char], n: &[char]) -> bool {
        match p.first() {
            None => n.is_empty(),
            Some('*') => (0..=n.len()).any(|i| rec(&p[1..], &n[i..])),
            Some('?') => !n.is_empty() && rec(&p[1..], &n[1..]),
            Some('[') => {
                let Some(close) = p.iter().position(|&c| c == ']') else {
                    return n.first() == Some(&'[') && rec(&p[1..], &n[1..]);
                };
                let Some(&c) = n.first() else { return false };
                let class = &p[1..close];
                let (negate, class) = match class.first() {
                    Some('^') | Some('!') => (true, &class[1..]),
                    _ => (false, class),
                };
                let mut hit = false;
                let mut i = 0;
                while i < class.len() {
                    if i + 2 < class.len() && class[i + 1] == '-' {
                        hit |= class[i] <= c && c <= class[i + 2];
                        i += 3;
                    } else {
                        hit |= class[i] == c;
                        i += 1;
                    }
                }
                hit != negate && rec(&p[close + 1..], &n[1..])
            }
            Some('\\') if p.len() > 1 => n.first() == Some(&p[1]) && rec(&p[2..], &n[1..]),
            Some(&c) => n.first() == Some(&c) && rec(&p[1..], &n[1..]),
        }
    }
    rec(&p, &n)
}

/// True when `pattern` has glob metacharacters.
pub fn has_meta(pattern: &str) -> bool {
    pattern.contains(['*', '?', '['])
}

fn split(p: &str) -> Vec<&str> {
    p.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect()
}

/// Matches a relative path against a pattern where `**` spans any number of
/// components. A pattern also matches everything below a matched directory.
pub fn path_match(pattern: &str, path: &str) -> bool {
    fn rec(p: &[&str], n: &[&str]) -> bool {
        match p.first() {
            None => true, // prefix matched: the path is inside a matched dir
            Some(&"**") => (0..=n.len()).any(|i| rec(&p[1..], &n[i..])),
            Some(pc) => !n.is_empty() && component_match(pc, n[0]) && rec(&p[1..], &n[1..]),
        }
    }
    let p = split(pattern);
    let n = split(path);
    if p.is_empty() {
        return false;
    }
    rec(&p, &n)
}

/// A `.dockerignore`-style list: later patterns win, `!` re-includes.
#[derive(Debug, Clone, Default)]
pub struct Excludes {
    patterns: Vec<(bool, String)>,
}

impl Excludes {
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Self {
        let patterns = patterns
            .iter()
            .map(|p| p.as_ref().trim())
            .filter(|p| !p.is_empty() && !p.starts_with('#'))
            .map(|p| match p.strip_prefix('!') {
                Some(rest) => (true, rest.trim_start_matches('/').to_string()),
                None => (false, p.trim_start_matches('/').to_string()),
            })
            .collect();
        Self { patterns }
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// True when `rel` (relative path) is excluded.
    pub fn excluded(&self, rel: &str) -> bool {
        let mut out = false;
        for (negate, p) in &self.patterns {
            if path_match(p, rel) {
                out = !negate;
            }
        }
        out
    }

    /// True when some re-include pattern could match below `dir`, so an
    /// excluded directory must still be walked.
    pub fn may_reinclude_below(&self, dir: &str) -> bool {
        self.patterns
            .iter()
            .any(|(neg, p)| *neg && (p.starts_with(dir) || p.contains("**")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components() {
        assert!(component_match("*.c", "main.c"));
        assert!(!component_match("*.c", "main.h"));
        assert!(component_match("a?c", "abc"));
        assert!(component_match("[a-c]x", "bx"));
        assert!(!component_match("[!a-c]x", "bx"));
    }

    #[test]
    fn paths_and_excludes() {
        assert!(path_match("src/*.c", "src/a.c"));
        assert!(path_match("**/*.o", "a/b/c.o"));
        assert!(path_match("build", "build/x/y"));
        assert!(!path_match("src/*.c", "src/sub/a.c"));
        let e = Excludes::new(&["*.log", "!keep.log", "tmp/"]);
        assert!(e.excluded("a.log"));
        assert!(!e.excluded("keep.log"));
        assert!(e.excluded("tmp/x"));
        assert!(!e.excluded("src/a.c"));
    }
}

/// The exclusion rules of one COPY source: `.dockerignore` patterns match paths
/// relative to the context root, `--exclude` patterns paths relative to the
/// selected source.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// `.dockerignore` of the context (moby semantics, from the frontend).
    pub ignore: crate::dockerfile::IgnoreMatcher,
    pub exclude: Excludes,
    /// Root-relative path of the selected source.
    pub base: String,
}

impl Filter {
    pub fn skip(&self, root_rel: &str) -> bool {
        if self.ignore.is_excluded(root_rel, false) {
            return true;
        }
        if self.exclude.is_empty() {
            return false;
        }
        let src_rel = if self.base.is_empty() {
            root_rel
        } else {
            root_rel
                .strip_prefix(&self.base)
                .map(|r| r.trim_start_matches('/'))
                .unwrap_or(root_rel)
        };
        self.exclude.excluded(src_rel)
    }
}
