//! `include/quaestor.h` is what cbindgen makes of the crate now: regenerated and compared
//! (run with `QUAESTOR_BLESS=1` to rewrite it after a change of the C API).

use std::path::Path;

#[test]
fn the_committed_header_is_current() {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config =
        cbindgen::Config::from_file(crate_dir.join("cbindgen.toml")).expect("cbindgen.toml");
    let mut generated = Vec::new();
    cbindgen::Builder::new()
        .with_crate(crate_dir)
        .with_config(config)
        .generate()
        .expect("cbindgen generates the header")
        .write(&mut generated);
    let generated = String::from_utf8(generated).expect("UTF-8");
    let path = crate_dir.join("include/quaestor.h");
    if std::env::var_os("QUAESTOR_BLESS").is_some() {
        std::fs::write(&path, &generated).expect("write the header");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "{} is out of date: run `QUAESTOR_BLESS=1 cargo test -p quaestor-ffi --test header` \
         and commit the result",
        path.display()
    );
}
