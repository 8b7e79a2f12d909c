//! Inputs the fuzzer (`fuzz/`, target `edxml_parse`) once found a problem with. The fuzz
//! target's first byte picks the chunk size; here every chunk size is tried.

use truc_edxml::{parse, Limits, PackageReader};

fn check(name: &str, input: &[u8]) {
    let package = &input[1..];
    let whole = parse(package);
    for chunk in 1..=64 {
        let mut reader = PackageReader::new(Limits::default());
        let mut result = Ok(());
        for piece in package.chunks(chunk) {
            result = reader.feed(piece);
            if result.is_err() {
                break;
            }
        }
        let chunked = result.and_then(|()| reader.finish());
        assert_eq!(chunked, whole, "{name}, chunk size {chunk}");
    }
}

#[test]
fn every_regression_input_gives_the_same_answer_whatever_the_chunking() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fuzz-regressions");
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).expect("regressions dir") {
        let path = entry.expect("entry").path();
        let bytes = std::fs::read(&path).expect("read");
        check(&path.display().to_string(), &bytes);
        seen += 1;
    }
    assert!(seen >= 1);
}
