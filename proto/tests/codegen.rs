//! The generated gRPC code in `src/gen/` is committed so that building needs no protoc.
//! This test regenerates it from the `.proto` files with tonic-build and fails when the
//! committed files differ; `FERROCAST_REGENERATE=1` writes them instead. Without protoc
//! (neither `$PROTOC` nor `protoc` on the PATH) it says so and passes, unless
//! `FERROCAST_REQUIRE_PROTOC=1`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::{env, fs};

fn protoc_available() -> bool {
    let protoc = env::var_os("PROTOC").unwrap_or_else(|| "protoc".into());
    Command::new(protoc)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn generate(out: &Path) {
    tonic_build::configure()
        .build_client(true)
        .build_server(true)
        .out_dir(out)
        .file_descriptor_set_path(out.join("controller_descriptor.bin"))
        .compile_protos(&["controller.proto"], &["."])
        .expect("compile controller.proto");
}

#[test]
fn committed_generated_code_is_current() {
    if !protoc_available() {
        assert!(
            env::var_os("FERROCAST_REQUIRE_PROTOC").is_none(),
            "protoc not found and FERROCAST_REQUIRE_PROTOC is set"
        );
        eprintln!("protoc not found: not checking src/gen (apt-get install protobuf-compiler)");
        return;
    }
    let out = env::temp_dir().join(format!("ferrocast-proto-gen-{}", std::process::id()));
    let _ = fs::remove_dir_all(&out);
    fs::create_dir_all(&out).unwrap();
    generate(&out);

    let committed = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/gen");
    let regenerate = env::var_os("FERROCAST_REGENERATE").is_some();
    let mut stale = Vec::new();
    let mut names: Vec<_> = fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    for name in &names {
        let fresh = fs::read(out.join(name)).unwrap();
        let path = committed.join(name);
        if fs::read(&path).ok().as_deref() != Some(&fresh[..]) {
            if regenerate {
                fs::write(&path, &fresh).unwrap();
            } else {
                stale.push(name.to_string_lossy().into_owned());
            }
        }
    }
    // A committed file nothing generates any more is stale too.
    for entry in fs::read_dir(&committed).unwrap() {
        let name = entry.unwrap().file_name();
        if !names.contains(&name) {
            stale.push(format!("{} (no longer generated)", name.to_string_lossy()));
        }
    }
    fs::remove_dir_all(&out).unwrap();
    assert!(
        stale.is_empty(),
        "src/gen is stale: {stale:?}; run FERROCAST_REGENERATE=1 cargo test -p ferrocast-proto --test codegen"
    );
}
