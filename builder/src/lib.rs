//! berth's image builder: Dockerfile frontend, build engine, image store.
//!
//! * [`dockerfile`]: the frontend (parser, word expansion, `.dockerignore`).
//! * [`engine`]: runs a parsed Dockerfile: stages in parallel threads, RUN
//!   steps in OCI containers ([`exec::run`]), COPY/ADD ([`exec::copy`]),
//!   content-addressed cache with miss reasons, commit to the [`store`].
//! * [`store`]: OCI image layout + snapshots + build cache, crash-consistent.
//! * [`layer`]: deterministic layer tars from overlay upper dirs; safe unpack.
//! * [`snapshot`]: overlay mounts over unpacked layers.
//! * [`export`]: oci / docker-archive / local outputs and imports;
//!   [`bundle`]: OCI runtime bundles from images.
//! * [`registry`]: pull from and push to OCI registries (auth, TLS, mirrors).
//! * [`daemon`] (berth-buildd) and [`client`] (berth-build) over the gRPC
//!   API of the `berth-proto` crate; [`ui`] renders progress.
pub mod bundle;
pub mod chunked;
pub mod client;
pub mod daemon;
pub mod digest;
pub mod dockerfile;
pub mod engine;
pub mod exec;
pub mod export;
pub mod fsutil;
pub mod image;
pub mod layer;
pub mod progress;
pub mod registry;
pub mod snapshot;
pub mod store;
pub mod ui;
pub mod workctr;
