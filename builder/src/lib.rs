//! berth's image builder: Dockerfile frontend, build engine, image store.
pub mod digest;
pub mod dockerfile;
pub mod fsutil;
pub mod image;
pub mod layer;
pub mod snapshot;
pub mod store;
