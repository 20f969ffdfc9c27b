//! `include/omk.h` must be exactly what cbindgen renders from this crate.
//! Regenerate with `make header` after changing the C ABI.

use std::path::Path;

fn render() -> String {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml")).unwrap();
    let mut out = Vec::new();
    cbindgen::Builder::new()
        .with_crate(crate_dir)
        .with_config(config)
        .generate()
        .expect("cbindgen renders the header")
        .write(&mut out);
    String::from_utf8(out).unwrap()
}

#[test]
fn committed_header_matches_the_code() {
    let header = Path::new(env!("CARGO_MANIFEST_DIR")).join("../include/omk.h");
    let rendered = render();
    if std::env::var_os("OMK_WRITE_HEADER").is_some() {
        std::fs::write(&header, &rendered).unwrap();
    }
    let committed = std::fs::read_to_string(&header).unwrap_or_default();
    assert!(
        committed == rendered,
        "include/omk.h is out of date: run `make header` and commit it"
    );
}
