//! cgroup management for berth (filled in by the cgroups work).
