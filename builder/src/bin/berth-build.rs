//! berth-build: build and manage OCI images (see `berth_builder::client`).
fn main() {
    std::process::exit(berth_builder::client::main());
}
