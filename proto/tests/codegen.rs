//! The generated gRPC code in `src/gen/` is committed so that building needs no protoc.
//! This test regenerates it from the `.proto` files with tonic-build and compares
//! ([`ferrocast_tests::codegen::check_generated`]).

use std::path::Path;

#[test]
fn committed_generated_code_is_current() {
    ferrocast_tests::codegen::check_generated(
        "ferrocast-proto",
        Path::new(env!("CARGO_MANIFEST_DIR")),
        |out| {
            tonic_build::configure()
                .build_client(true)
                .build_server(true)
                .out_dir(out)
                .file_descriptor_set_path(out.join("controller_descriptor.bin"))
                .compile_protos(&["controller.proto"], &["."])
                .expect("compile controller.proto");
        },
    );
}
