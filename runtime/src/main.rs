#[allow(dead_code)]
mod seccomp;
fn main() {}
