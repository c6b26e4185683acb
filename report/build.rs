//! Generates the report messages and the `Collector` service from `proto/` with protoc
//! (Debian `protobuf-compiler`; `scripts/install-prereqs.sh` installs it).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/p2psensor/report/v1/report.proto";
    println!("cargo:rerun-if-changed={proto}");
    tonic_prost_build::configure().build_client(true).build_server(true).compile_protos(&[proto], &["proto"])?;
    Ok(())
}
