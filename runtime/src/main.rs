#[allow(dead_code)]
mod seccomp;
#[allow(dead_code)]
mod features;
#[allow(dead_code)]
mod spec_template;
fn main() {}
