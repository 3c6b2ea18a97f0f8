//! `login` and `logout`: credentials in the user's Docker config.json,
//! checked against the registry before they are saved.
use super::RegistryAccess;
use crate::registry::auth::{normalize_host, DockerConfig};
use crate::registry::Credential;
use anyhow::{bail, Context, Result};
use std::io::{BufRead, IsTerminal, Write};

/// `https://host:port/v2/` or `host:port` → `host:port`.
fn registry_host(arg: &str) -> Result<String> {
    let a = arg
        .strip_prefix("https://")
        .or_else(|| arg.strip_prefix("http://"))
        .unwrap_or(arg);
    let host = a.split('/').next().unwrap_or(a);
    // Checked with the reference grammar's domain rule.
    crate::store::parse_reference(&format!("{host}/x"))
        .ok()
        .and_then(|r| r.domain)
        .filter(|d| d.eq_ignore_ascii_case(host))
        .or_else(|| (host == "docker.io").then(|| host.to_string()))
        .with_context(|| format!("{arg:?} is not a registry host[:port]"))
        .map(|h| normalize_host(&h))
}

/// Reads one line from the terminal, without echo when `secret`.
fn prompt(label: &str, secret: bool) -> Result<String> {
    let tty = std::fs::File::options()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .context("no terminal to ask on: use -u USER and --password-stdin")?;
    let mut out = tty.try_clone()?;
    write!(out, "{label}")?;
    out.flush()?;
    let saved = if secret {
        use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
        let t = tcgetattr(&tty).context("reading terminal settings")?;
        let mut quiet = t.clone();
        quiet.local_flags.remove(LocalFlags::ECHO);
        tcsetattr(&tty, SetArg::TCSANOW, &quiet).context("turning echo off")?;
        Some(t)
    } else {
        None
    };
    let mut line = String::new();
    let r = std::io::BufReader::new(&tty).read_line(&mut line);
    if let Some(t) = saved {
        let _ = nix::sys::termios::tcsetattr(&tty, nix::sys::termios::SetArg::TCSANOW, &t);
        let _ = writeln!(out);
    }
    r.context("reading from the terminal")?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

pub fn login(
    access: &RegistryAccess,
    username: Option<&str>,
    password_stdin: bool,
    registry: &str,
) -> Result<()> {
    let host = registry_host(registry)?;
    let username = match username {
        Some(u) => u.to_string(),
        None if password_stdin => bail!("--password-stdin needs -u USER"),
        None => prompt("Username: ", false)?,
    };
    if username.is_empty() {
        bail!("empty user name");
    }
    let secret = if password_stdin {
        let mut s = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut s)
            .context("reading the password from stdin")?;
        s.trim_end_matches(['\n', '\r']).to_string()
    } else if std::io::stdin().is_terminal() || std::path::Path::new("/dev/tty").exists() {
        prompt("Password: ", true)?
    } else {
        bail!("no password: use --password-stdin")
    };
    if secret.is_empty() {
        bail!("empty password");
    }
    let cred = Credential { username, secret };
    let reg = access.registry()?;
    crate::registry::check_login(&reg, &host, &cred)
        .with_context(|| format!("logging in to {host}"))?;
    let mut cfg = DockerConfig::load(&access.docker_config)?;
    cfg.store(&host, &cred)?;
    eprintln!(
        "Login Succeeded (credentials for {host} in {})",
        access.docker_config.join("config.json").display()
    );
    Ok(())
}

pub fn logout(access: &RegistryAccess, registry: &str) -> Result<()> {
    let host = registry_host(registry)?;
    let mut cfg = DockerConfig::load(&access.docker_config)?;
    if cfg.erase(&host)? {
        eprintln!("Removed login credentials for {host}");
        Ok(())
    } else {
        bail!("not logged in to {host}")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn registry_hosts() {
        assert_eq!(
            super::registry_host("localhost:5000").unwrap(),
            "localhost:5000"
        );
        assert_eq!(
            super::registry_host("https://Reg.Example.com/v2/").unwrap(),
            "reg.example.com"
        );
        assert_eq!(super::registry_host("docker.io").unwrap(), "docker.io");
        assert_eq!(
            super::registry_host("https://index.docker.io/v1/").unwrap(),
            "docker.io"
        );
        for bad in ["", "a b", "host:port", "../x"] {
            assert!(super::registry_host(bad).is_err(), "{bad}");
        }
    }
}
