//! Generates the tonic client/server for proto/*.proto with protoc.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/builder.proto");
    println!("cargo:rerun-if-changed=proto/working.proto");
    tonic_build::configure()
        .compile_protos(&["proto/builder.proto", "proto/working.proto"], &["proto"])?;
    Ok(())
}
