//! Compiles `proto/truc/v1/*.proto` with protox (pure Rust: no system `protoc`), generates
//! the tonic client and server, and keeps the descriptor set for server reflection.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let file = proto_root.join("truc/v1/relay.proto");
    println!("cargo:rerun-if-changed={}", proto_root.display());
    let fds = protox::compile([&file], [&proto_root])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("truc_v1_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    // `bytes` fields as `Bytes`: a package's chunks are slices of the buffer tonic decoded
    // them from, and a delivery carries the stored payload without copying it first.
    tonic_prost_build::configure()
        .bytes(".")
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
