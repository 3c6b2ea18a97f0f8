//! Generated gRPC types for berth-buildd (server) and berth-build (client).
#![allow(clippy::all, clippy::pedantic)]

/// Messages and service definitions of `berth.builder.v1`.
pub mod v1 {
    tonic::include_proto!("berth.builder.v1");
}
