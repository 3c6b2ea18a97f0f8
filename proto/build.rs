//! Generates the tonic client/server for proto/builder.proto with protoc.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/builder.proto");
    tonic_build::compile_protos("proto/builder.proto")?;
    Ok(())
}
