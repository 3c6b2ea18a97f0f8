//! The Version and Info RPCs: what a client can ask before it builds.
use berth_proto::v1 as pb;

/// This package of the API, as clients name it.
pub const API_VERSION: &str = "berth.builder.v1";

pub fn version() -> pb::VersionResponse {
    pb::VersionResponse {
        version: env!("CARGO_PKG_VERSION").to_string(),
        api_version: API_VERSION.to_string(),
        // Set by packagers that build from a checkout; empty otherwise.
        git_commit: option_env!("BERTH_GIT_COMMIT").unwrap_or("").to_string(),
        os: std::env::consts::OS.to_string(),
        arch: std::env::consts::ARCH.to_string(),
    }
}

/// The defaults a build request inherits and where the daemon keeps things.
pub struct Facts<'a> {
    pub store_root: &'a std::path::Path,
    pub runtime: &'a std::path::Path,
    pub max_context_size: u64,
    pub images: u64,
}

pub fn info(f: Facts<'_>) -> pb::InfoResponse {
    let defaults = crate::engine::BuildOptions::new(
        std::path::PathBuf::new(),
        crate::exec::run::Runtime {
            binary: f.runtime.to_path_buf(),
            state_root: std::path::PathBuf::new(),
        },
    );
    pb::InfoResponse {
        store_root: f.store_root.display().to_string(),
        runtime: f.runtime.display().to_string(),
        platform: crate::registry::PlatformSpec::host().to_string(),
        default_compression: match defaults.compression {
            crate::layer::Compression::Gzip => "gzip",
            crate::layer::Compression::Zstd => "zstd",
        }
        .to_string(),
        default_network: if defaults.network_host {
            "host"
        } else {
            "none"
        }
        .to_string(),
        max_context_size: f.max_context_size,
        images: f.images,
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_default(),
    }
}
