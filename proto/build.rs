//! Compiles proto/ with protox (pure Rust), so no system `protoc` is needed, then generates
//! prost types, the tonic client and server of the control plane (from the same descriptor
//! set) and pbjson serde impls (the proto3 JSON mapping) for them.
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["proto/prism/signal.proto", "proto/prism/room_service.proto"];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptors = protox::compile(files, ["proto"])?;
    // Also embedded in the crate (FILE_DESCRIPTOR_SET) for gRPC server reflection.
    let descriptor_path = out.join("prism_descriptor.bin");
    std::fs::write(
        &descriptor_path,
        prost::Message::encode_to_vec(&descriptors),
    )?;

    // protoc never runs: prost reads the descriptor set protox wrote.
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // The client's `connect` needs tonic's transport; callers build a Channel themselves.
        .build_transport(false)
        .file_descriptor_set_path(&descriptor_path)
        .skip_protoc_run()
        .compile_protos(&files, &["proto"])?;

    let descriptor_bytes = std::fs::read(&descriptor_path)?;
    pbjson_build::Builder::new()
        .register_descriptors(&descriptor_bytes)?
        .build(&[".prism"])?;
    Ok(())
}
