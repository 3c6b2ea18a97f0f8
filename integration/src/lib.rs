pub mod builder;
pub mod containerd;
pub mod containerd_cri;
pub mod cri_client;
pub mod dockerd;
pub mod harness;
pub mod image;
pub mod rootless;
