#![forbid(unsafe_code)]
//! Cross-crate, black-box tests of the relay: they start real processes (`trucd`, adapters,
//! the national-axis simulator) over real sockets. Shared helpers live here; the tests
//! themselves are in `tests/tests/`.

use std::path::PathBuf;

/// The sample packages: `../shared/samples` when it sits beside the checkout, else the copy
/// kept in `tests/fixtures/samples` so a lone clone still passes.
pub fn samples_dir() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let shared = root.join("../shared/samples");
    if shared.join("expect.json").is_file() {
        shared
    } else {
        root.join("tests/fixtures/samples")
    }
}
