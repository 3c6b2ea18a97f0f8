pub mod containerd;
pub mod containerd_cri;
pub mod harness;
pub mod image;
