//! Device access rules: v1 devices.allow/deny files; v2 an eBPF cgroup-device program.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;

use anyhow::{anyhow, Result};
use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};

use crate::fsutil::describe;
use crate::{bpf, Cgroup};

/// A rule normalized from the OCI form: None means wildcard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rule {
    pub allow: bool,
    /// 'a' (all), 'c' or 'b'.
    pub kind: char,
    pub major: Option<i64>,
    pub minor: Option<i64>,
    /// Subset of "rwm".
    pub access: String,
}

impl Rule {
    fn from_oci(d: &LinuxDeviceCgroup) -> Rule {
        let kind = match d.typ().unwrap_or(LinuxDeviceType::A) {
            LinuxDeviceType::B => 'b',
            LinuxDeviceType::C | LinuxDeviceType::U => 'c',
            LinuxDeviceType::A | LinuxDeviceType::P => 'a',
        };
        let access: String = d
            .access()
            .as_deref()
            .unwrap_or("")
            .chars()
            .filter(|c| matches!(c, 'r' | 'w' | 'm'))
            .collect();
        Rule {
            allow: d.allow(),
            kind,
            // Negative numbers are how some tools spell the wildcard.
            major: d.major().filter(|m| *m >= 0),
            minor: d.minor().filter(|m| *m >= 0),
            access: if access.is_empty() {
                "rwm".to_string()
            } else {
                access
            },
        }
    }

    /// The v1 devices.allow/deny line, e.g. "c 1:3 rwm".
    fn v1_line(&self) -> String {
        let num = |n: Option<i64>| n.map_or("*".to_string(), |n| n.to_string());
        format!(
            "{} {}:{} {}",
            self.kind,
            num(self.major),
            num(self.minor),
            self.access
        )
    }
}

/// A v1 devices.allow or devices.deny file, opened on first use.
struct RuleFile {
    path: PathBuf,
    file: Option<File>,
}

impl RuleFile {
    fn new(path: PathBuf) -> RuleFile {
        RuleFile { path, file: None }
    }

    fn write(&mut self, rule: &str) -> Result<()> {
        let fail = |e: std::io::Error| {
            anyhow!(
                "write {:?} to {}: {}",
                rule,
                self.path.display(),
                describe(&e)
            )
        };
        if self.file.is_none() {
            self.file = Some(
                OpenOptions::new()
                    .write(true)
                    .open(&self.path)
                    .map_err(fail)?,
            );
        }
        match &mut self.file {
            Some(f) => f.write_all(rule.as_bytes()).map_err(fail),
            None => Ok(()),
        }
    }
}

pub(crate) fn apply(cg: &Cgroup, devices: &[LinuxDeviceCgroup]) -> Result<()> {
    let rules: Vec<Rule> = devices.iter().map(Rule::from_oci).collect();
    match cg.v1_dir("devices") {
        Some(dir) => {
            // Start from "nothing allowed", then replay the rules in order (runc's model:
            // later rules override earlier ones). The kernel takes one rule per write(2),
            // so each file is opened once and written rule by rule.
            let mut allow = RuleFile::new(dir.join("devices.allow"));
            let mut deny = RuleFile::new(dir.join("devices.deny"));
            deny.write("a")?;
            for r in &rules {
                let file = if r.allow { &mut allow } else { &mut deny };
                file.write(&r.v1_line())?;
            }
            Ok(())
        }
        None => match &cg.unified_dir() {
            Some(dir) => bpf::replace_device_filter(dir, &rules),
            None => Err(cg.unavailable("devices")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::LinuxDeviceCgroupBuilder;

    #[test]
    fn v1_lines() {
        let d = LinuxDeviceCgroupBuilder::default()
            .allow(true)
            .typ(LinuxDeviceType::C)
            .major(1)
            .minor(3)
            .access("rwm")
            .build()
            .unwrap();
        assert_eq!(Rule::from_oci(&d).v1_line(), "c 1:3 rwm");
        let all = LinuxDeviceCgroupBuilder::default()
            .allow(false)
            .build()
            .unwrap();
        let r = Rule::from_oci(&all);
        assert_eq!(r.v1_line(), "a *:* rwm");
        assert!(!r.allow);
    }
}
