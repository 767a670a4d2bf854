//! The check behind every committed generated-code directory (`proto/src/gen`,
//! `relay/src/gen`): regenerate into a temporary directory and compare, so that building
//! needs no protoc while the committed files cannot drift from their `.proto`.

use std::path::Path;
use std::process::Command;
use std::{env, fs};

/// Regenerates `MANIFEST_DIR/src/gen` with `generate` (which writes into the directory
/// it is given) and fails when a committed file differs, is missing or is no longer
/// generated; `FERROCAST_REGENERATE=1` writes the fresh files instead. Without protoc
/// (neither `$PROTOC` nor `protoc` on the PATH) it says so and passes, unless
/// `FERROCAST_REQUIRE_PROTOC=1`.
pub fn check_generated(package: &str, manifest_dir: &Path, generate: impl FnOnce(&Path)) {
    let protoc = env::var_os("PROTOC").unwrap_or_else(|| "protoc".into());
    let available = Command::new(protoc)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !available {
        assert!(
            env::var_os("FERROCAST_REQUIRE_PROTOC").is_none(),
            "protoc not found and FERROCAST_REQUIRE_PROTOC is set"
        );
        eprintln!("protoc not found: not checking src/gen (apt-get install protobuf-compiler)");
        return;
    }
    let out = env::temp_dir().join(format!("{package}-gen-{}", std::process::id()));
    let _ = fs::remove_dir_all(&out);
    fs::create_dir_all(&out).unwrap();
    generate(&out);

    let committed = manifest_dir.join("src/gen");
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
        "src/gen is stale: {stale:?}; run FERROCAST_REGENERATE=1 cargo test -p {package} --test codegen"
    );
}
