//! The device cgroup rules a container actually gets: the spec's own
//! `linux.resources.devices` rules, then the devices every container needs
//! (runc's built-in allow list). Without the latter a spec that starts with
//! "deny all" (as `berth spec`/`runc spec` do) would leave /dev/null unusable.
//!
//! `linux.devices` only asks for device *nodes*: listing a device there
//! grants no access, exactly as with runc. Only `resources.devices` may
//! allow a device, so a config that denies /dev/kmsg keeps it denied even
//! when the node exists in the container.

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType, LinuxResources, Spec};

fn rule(
    typ: LinuxDeviceType,
    major: Option<i64>,
    minor: Option<i64>,
    access: &str,
) -> LinuxDeviceCgroup {
    let mut r = LinuxDeviceCgroup::default();
    r.set_allow(true);
    r.set_typ(Some(typ));
    r.set_major(major);
    r.set_minor(minor);
    r.set_access(Some(access.to_string()));
    r
}

/// runc's AllowedDevices: mknod of anything, the standard char devices,
/// ptys and tun.
pub fn builtin_allowed() -> Vec<LinuxDeviceCgroup> {
    use LinuxDeviceType::{B, C};
    vec![
        rule(C, None, None, "m"),
        rule(B, None, None, "m"),
        rule(C, Some(1), Some(3), "rwm"),    // null
        rule(C, Some(1), Some(8), "rwm"),    // random
        rule(C, Some(1), Some(7), "rwm"),    // full
        rule(C, Some(5), Some(0), "rwm"),    // tty
        rule(C, Some(1), Some(5), "rwm"),    // zero
        rule(C, Some(1), Some(9), "rwm"),    // urandom
        rule(C, Some(136), None, "rwm"),     // /dev/pts/*
        rule(C, Some(5), Some(2), "rwm"),    // ptmx
        rule(C, Some(10), Some(200), "rwm"), // net/tun
    ]
}

/// The spec's resources with the device rules completed.
pub fn effective_resources(spec: &Spec) -> LinuxResources {
    let linux = spec.linux().as_ref();
    let mut res = linux
        .and_then(|l| l.resources().clone())
        .unwrap_or_default();
    let mut devices = res.devices().clone().unwrap_or_default();
    devices.extend(builtin_allowed());
    res.set_devices(Some(devices));
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_rules_come_first_then_builtin() {
        let spec = Spec::default();
        let res = effective_resources(&spec);
        let devices = res.devices().clone().unwrap_or_default();
        assert_eq!(
            devices.len(),
            builtin_allowed().len()
                + spec
                    .linux()
                    .as_ref()
                    .unwrap()
                    .resources()
                    .as_ref()
                    .unwrap()
                    .devices()
                    .as_ref()
                    .map_or(0, |d| d.len())
        );
        assert!(devices
            .iter()
            .any(|d| d.major() == Some(1) && d.minor() == Some(3)));
    }

    #[test]
    fn linux_devices_grant_no_access() {
        let mut spec = Spec::default();
        let kmsg = oci_spec::runtime::LinuxDeviceBuilder::default()
            .path("/dev/kmsg")
            .typ(LinuxDeviceType::C)
            .major(1)
            .minor(11)
            .build()
            .unwrap();
        let mut linux = spec.linux().clone().unwrap();
        linux.set_devices(Some(vec![kmsg]));
        spec.set_linux(Some(linux));
        let devices = effective_resources(&spec).devices().clone().unwrap();
        assert!(
            !devices
                .iter()
                .any(|d| d.allow() && d.major() == Some(1) && d.minor() == Some(11)),
            "a node in linux.devices must not be allowed by the device cgroup: {devices:?}"
        );
    }
}
