//! containerd-shim-berth-v2: containerd's runtime v2 shim for the berth OCI runtime
//! (`ctr run --runtime io.containerd.berth.v2`).

mod berth;
mod container;
mod events;
mod metrics;
mod service;
mod shim;
mod stdio;

fn main() {
    containerd_shim::run::<shim::BerthShim>("io.containerd.berth.v2", None);
}
