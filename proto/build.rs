// Generates the Rust protocol types without a system `protoc`: protox is a
// pure-Rust protobuf compiler, so a fresh machine needs nothing but cargo.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/proto");
    let files = [
        "grpc_service.proto",
        "model_config.proto",
        "switchboard.proto",
        "jobs.proto",
    ];
    for f in files {
        println!("cargo:rerun-if-changed={dir}/{f}");
    }
    let fds = protox::compile(files, [dir])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Tensor payloads stay `Bytes`: decoding slices the request buffer
        // instead of copying it.
        .bytes(".")
        .compile_fds(fds)?;
    Ok(())
}
