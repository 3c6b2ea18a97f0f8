//! `--flag[=value]` options of an instruction (BuildKit's `BFlags`).

/// The flags given on one instruction. Accessors consume flags; [`Flags::finish`]
/// reports any flag the instruction does not know.
pub struct Flags {
    items: Vec<(String, Option<String>)>,
}

impl Flags {
    /// `words` are the unquoted flag words, each starting with `--`.
    pub fn new(words: &[String]) -> Self {
        let items = words
            .iter()
            .map(|w| {
                let w = w.strip_prefix("--").unwrap_or(w);
                match w.split_once('=') {
                    Some((k, v)) => (k.to_string(), Some(v.to_string())),
                    None => (w.to_string(), None),
                }
            })
            .collect();
        Flags { items }
    }

    fn take_all(&mut self, name: &str) -> Vec<Option<String>> {
        let mut out = Vec::new();
        self.items.retain(|(k, v)| {
            if k == name {
                out.push(v.clone());
                false
            } else {
                true
            }
        });
        out
    }

    /// A string flag given at most once; a value is required.
    pub fn string(&mut self, name: &str) -> Result<Option<String>, String> {
        let mut all = self.take_all(name);
        if all.len() > 1 {
            return Err(format!("duplicate flag specified: {name}"));
        }
        match all.pop() {
            None => Ok(None),
            Some(None) => Err(format!("missing a value on flag: {name}")),
            Some(Some(v)) => Ok(Some(v)),
        }
    }

    /// A repeatable string flag.
    pub fn strings(&mut self, name: &str) -> Result<Vec<String>, String> {
        self.take_all(name)
            .into_iter()
            .map(|v| v.ok_or_else(|| format!("missing a value on flag: {name}")))
            .collect()
    }

    /// A boolean flag: absent → false; `--x` or `--x=true` → true; `--x=false`.
    pub fn boolean(&mut self, name: &str) -> Result<bool, String> {
        let mut all = self.take_all(name);
        if all.len() > 1 {
            return Err(format!("duplicate flag specified: {name}"));
        }
        match all.pop() {
            None => Ok(false),
            Some(None) => Ok(true),
            Some(Some(v)) => match v.to_ascii_lowercase().as_str() {
                "true" => Ok(true),
                "false" => Ok(false),
                "" => Err(format!("missing a value on flag: {name}")),
                _ => Err(format!("expecting boolean value for flag {name}, not: {v}")),
            },
        }
    }

    /// Errors on the first flag nobody asked for.
    pub fn finish(self) -> Result<(), String> {
        match self.items.first() {
            Some((k, _)) => Err(format!("unknown flag: {k}")),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(words: &[&str]) -> Flags {
        Flags::new(&words.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn typed_access() {
        let mut f = flags(&[
            "--from=a",
            "--link",
            "--exclude=x",
            "--exclude=y",
            "--parents=false",
        ]);
        assert_eq!(f.string("from").unwrap().as_deref(), Some("a"));
        assert_eq!(f.string("chown").unwrap(), None);
        assert!(f.boolean("link").unwrap());
        assert!(!f.boolean("parents").unwrap());
        assert!(!f.boolean("keep-git-dir").unwrap());
        assert_eq!(f.strings("exclude").unwrap(), vec!["x", "y"]);
        assert!(f.finish().is_ok());
    }

    #[test]
    fn errors() {
        assert_eq!(
            flags(&["--bogus=1"]).finish().unwrap_err(),
            "unknown flag: bogus"
        );
        assert_eq!(
            flags(&["--from"]).string("from").unwrap_err(),
            "missing a value on flag: from"
        );
        assert!(flags(&["--from=a", "--from=b"])
            .string("from")
            .unwrap_err()
            .contains("duplicate"));
        assert!(flags(&["--link=maybe"])
            .boolean("link")
            .unwrap_err()
            .contains("expecting boolean"));
        assert_eq!(
            flags(&["--from="]).string("from").unwrap().as_deref(),
            Some("")
        );
    }
}
