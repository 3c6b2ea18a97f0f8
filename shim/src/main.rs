//! containerd-shim-berth-v2: containerd's runtime v2 shim for the berth OCI runtime
//! (`ctr run --runtime io.containerd.berth.v2`).

mod berth;
mod cgroup;
mod container;
mod events;
mod metrics;
mod reaper;
mod rootfs;
mod service;
mod shim;
mod stdio;

fn main() {
    // One malloc arena instead of one per thread: the shim's threads are idle most of the
    // time and per-thread arenas would dominate its resident memory.
    // SAFETY: mallopt only tunes the allocator; called before any other thread exists.
    #[cfg(target_env = "gnu")]
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
    // Our own reaper (see reaper.rs), except for `start`, which only
    // spawns the serving shim and returns (it must not reap that child).
    let starting = std::env::args().next_back().as_deref() == Some("start");
    if !starting {
        if let Err(e) = reaper::start() {
            eprintln!("containerd-shim-berth-v2: start the reaper: {e}");
            std::process::exit(1);
        }
    }
    let config = containerd_shim::Config {
        no_reaper: true,
        ..Default::default()
    };
    containerd_shim::run::<shim::BerthShim>("io.containerd.berth.v2", Some(config));
}
