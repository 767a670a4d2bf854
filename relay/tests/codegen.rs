//! The relay's messages in `src/gen/` are generated from `relay.proto` and committed, so
//! that building needs no protoc (the same arrangement as `proto/`'s controller API).
//! This test regenerates them with tonic-build (messages only: the relay is not gRPC)
//! and compares ([`ferrocast_tests::codegen::check_generated`]).

use std::path::Path;

#[test]
fn committed_generated_code_is_current() {
    ferrocast_tests::codegen::check_generated(
        "ferrocast-relay",
        Path::new(env!("CARGO_MANIFEST_DIR")),
        |out| {
            tonic_build::configure()
                .build_client(false)
                .build_server(false)
                .out_dir(out)
                .compile_protos(&["relay.proto"], &["."])
                .expect("compile relay.proto");
        },
    );
}
