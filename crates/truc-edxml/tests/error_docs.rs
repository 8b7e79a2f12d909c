//! `docs/errors.md` documents every error code the crate can return.

use truc_edxml::EdxmlError;

#[test]
fn every_code_is_documented() {
    let docs =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/errors.md"))
            .expect("docs/errors.md");
    for code in EdxmlError::ALL_CODES {
        assert!(
            docs.contains(&format!("`{code}`")),
            "{code} is missing from docs/errors.md"
        );
    }
    let unique: std::collections::BTreeSet<_> = EdxmlError::ALL_CODES.iter().collect();
    assert_eq!(unique.len(), EdxmlError::ALL_CODES.len(), "duplicate codes");
}
