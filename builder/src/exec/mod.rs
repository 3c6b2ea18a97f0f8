//! Executing build steps: user resolution, RUN containers, file copies.
pub mod copy;
pub mod glob;
pub mod mounts;
pub mod netfiles;
pub mod run;
pub mod seccomp;
pub mod user;
