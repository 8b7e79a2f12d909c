//! `docs/errors.md` documents every store error code.

use truc_store::StoreError;

#[test]
fn every_code_is_documented() {
    let docs =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/errors.md"))
            .expect("docs/errors.md");
    for code in StoreError::ALL_CODES {
        assert!(
            docs.contains(&format!("`{code}`")),
            "{code} is missing from docs/errors.md"
        );
    }
}
