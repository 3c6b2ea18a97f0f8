pub mod containerd;
pub mod harness;
pub mod image;
