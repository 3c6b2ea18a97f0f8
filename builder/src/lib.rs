//! berth's image builder: Dockerfile frontend, build engine, image store.
pub mod digest;
pub mod bundle;
pub mod client;
pub mod daemon;
pub mod engine;
pub mod dockerfile;
pub mod exec;
pub mod export;
pub mod fsutil;
pub mod image;
pub mod layer;
pub mod progress;
pub mod snapshot;
pub mod store;
pub mod ui;
