//! /etc/hosts and /etc/resolv.conf of a RUN container, as BuildKit's
//! executor gives them (executor/oci/hosts.go, executor/oci/resolvconf.go):
//! generated files bind-mounted read-only over the image's, whatever the
//! network mode. Because the runtime has to create a mount point for each
//! when the image lacks the file, they are also the mount stubs BuildKit
//! removes again after the step (executor/stubs.go), which is why a RUN
//! layer holds the `etc` directory the stub was created in.
use anyhow::{Context, Result};
use serde_json::{json, Value};
use std::path::Path;

/// The container paths, in the order BuildKit's MountStubsCleaner lists them.
pub const TARGETS: [&str; 2] = ["/etc/resolv.conf", "/etc/hosts"];

/// BuildKit's hosts file (initHostsFile): localhost plus the sandbox's
/// hostname, and the IPv6 loopback names.
pub fn hosts(hostname: &str) -> String {
    format!("127.0.0.1\tlocalhost {hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n")
}

/// The host's resolver configuration as BuildKit passes it on: unless the
/// step shares the host's network (and the file names a nameserver),
/// localhost nameservers are dropped — they mean nothing in another network
/// namespace — and when none is left, the public defaults are appended
/// (libnetwork's FilterResolvDNS with IPv6 enabled).
pub fn resolv_conf(host: &str, network_host: bool) -> String {
    if network_host && !nameservers(host).is_empty() {
        return host.to_string();
    }
    let mut kept = String::with_capacity(host.len());
    for line in host.split_inclusive('\n') {
        if !is_localhost_nameserver(line) {
            kept.push_str(line);
        }
    }
    if nameservers(&kept).is_empty() {
        kept.push_str(
            "\nnameserver 8.8.8.8\nnameserver 8.8.4.4\n\
             nameserver 2001:4860:4860::8888\nnameserver 2001:4860:4860::8844",
        );
    }
    kept
}

fn nameservers(conf: &str) -> Vec<&str> {
    conf.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("nameserver")).then(|| w.next()).flatten()
        })
        .collect()
}

fn is_localhost_nameserver(line: &str) -> bool {
    let mut w = line.split_whitespace();
    if w.next() != Some("nameserver") {
        return false;
    }
    let Some(addr) = w.next() else {
        return false;
    };
    addr == "::1"
        || addr
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|a| a.octets()[0] == 127)
}

/// The host file BuildKit reads: systemd-resolved's upstream list when
/// /etc/resolv.conf only points at its local stub (libnetwork's Path()).
fn host_resolv_conf() -> String {
    let etc = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let ns = nameservers(&etc);
    if !ns.is_empty() && ns.iter().all(|n| *n == "127.0.0.53") {
        if let Ok(s) = std::fs::read_to_string("/run/systemd/resolve/resolv.conf") {
            return s;
        }
    }
    etc
}

/// Writes both files into `dir` (the step's private bundle directory, which
/// no container can reach) and returns their read-only bind mounts.
pub fn mounts(dir: &Path, hostname: &str, network_host: bool) -> Result<Vec<Value>> {
    let files = [
        (
            "resolv.conf",
            resolv_conf(&host_resolv_conf(), network_host),
        ),
        ("hosts", hosts(hostname)),
    ];
    let mut out = Vec::new();
    for ((name, content), target) in files.iter().zip(TARGETS) {
        let src = dir.join(name);
        std::fs::write(&src, content).with_context(|| format!("writing {}", src.display()))?;
        out.push(json!({
            "destination": target,
            "type": "bind",
            "source": src,
            "options": ["rbind", "ro", "nosuid", "nodev", "noexec"],
        }));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_as_buildkit() {
        assert_eq!(
            hosts("buildkitsandbox"),
            "127.0.0.1\tlocalhost buildkitsandbox\n::1\tlocalhost ip6-localhost ip6-loopback\n"
        );
    }

    #[test]
    fn resolv_conf_drops_localhost_nameservers() {
        let host = "search lan\nnameserver 127.0.0.53\nnameserver 10.0.0.1\noptions edns0\n";
        assert_eq!(
            resolv_conf(host, false),
            "search lan\nnameserver 10.0.0.1\noptions edns0\n"
        );
        // Host network: the file as it is.
        assert_eq!(resolv_conf(host, true), host);
        // Nothing left: the public defaults, as libnetwork appends them.
        assert_eq!(
            resolv_conf("nameserver 127.0.0.1\nnameserver ::1\n", false),
            "\nnameserver 8.8.8.8\nnameserver 8.8.4.4\n\
             nameserver 2001:4860:4860::8888\nnameserver 2001:4860:4860::8844"
        );
    }
}
