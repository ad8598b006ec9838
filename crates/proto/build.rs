//! Generates the gRPC code from `proto/` with a vendored `protoc`, so no system protoc is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read at run time: the build script binary may be reused from a clone at another path
    // that shares the target directory.
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR")?;
    let root = std::path::Path::new(&manifest_dir).join("../../proto");
    let files = [
        root.join("mxraft/v1/admin.proto"),
        root.join("mxraft/v1/cluster.proto"),
    ];
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure()
        // Bodies and Raft payloads are large: share buffers instead of copying them.
        .bytes(".")
        .compile_with_config(config, &files, std::slice::from_ref(&root))?;
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    Ok(())
}
