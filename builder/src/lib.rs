//! berth's image builder: Dockerfile frontend, build engine, image store.
pub mod dockerfile;
