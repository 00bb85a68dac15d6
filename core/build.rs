//! Compiles `../proto` with protox (no system `protoc`) and generates the tonic code.
//! The encoded descriptor set is kept too: the servers' reflection service serves it.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "quaestor/load_reporting.proto",
    "quaestor/service_discovery.proto",
    "quaestor/process_admin.proto",
    "quaestor/push/load_push.proto",
    "quaestor/example/work.proto",
    "grpc/lb/v1/load_balancer.proto",
    "xds/service/orca/v3/orca.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../proto");
    println!("cargo:rerun-if-changed={}", proto_dir.display());

    let mut compiler = protox::Compiler::new([&proto_dir])?;
    compiler.include_source_info(true).include_imports(true);
    compiler.open_files(PROTOS)?;
    let descriptors = compiler.file_descriptor_set();

    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("quaestor_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
