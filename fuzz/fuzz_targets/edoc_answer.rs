//! Fuzz the reader of `getEdoc` answers (the package in base64 inside JSON, read as it
//! arrives): any bytes, cut into pieces of any size, must never panic, must read the same
//! in every cutting, and whatever it accepts must be what a whole-answer JSON parser reads:
//! an object whose `data` string, once its white space is dropped, decodes to exactly the
//! bytes the reader handed on. The first byte chooses the piece size.
#![no_main]

use libfuzzer_sys::fuzz_target;
use truc_vdxp::EdocAnswerReader;

/// The reader's verdict on `answer` cut into `piece`-byte pieces: the bytes handed on, the
/// error code, and whether the answer carried `data`.
fn read(answer: &[u8], piece: usize) -> Result<(Vec<u8>, String, bool), String> {
    let mut reader = EdocAnswerReader::new();
    let mut out = Vec::new();
    for chunk in answer.chunks(piece) {
        reader.feed(chunk, &mut out).map_err(|e| e.to_string())?;
    }
    assert_eq!(reader.decoded(), out.len() as u64);
    let (envelope, had_data) = reader.finish().map_err(|e| e.to_string())?;
    Ok((out, envelope.error_code, had_data))
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, answer)) = data.split_first() else {
        return;
    };
    let piece = usize::from(first % 64) + 1;
    let cut = read(answer, piece);
    let whole = read(answer, answer.len().max(1));
    assert_eq!(cut.is_ok(), whole.is_ok(), "{cut:?} / {whole:?}");
    let Ok((bytes, error_code, had_data)) = cut else {
        return;
    };
    assert_eq!(Ok((bytes.clone(), error_code.clone(), had_data)), whole);
    // What was accepted is what the whole answer says.
    let value: serde_json::Value =
        serde_json::from_slice(answer).expect("an accepted answer is JSON");
    let object = value.as_object().expect("an accepted answer is an object");
    assert_eq!(
        object.get("ErrorCode").and_then(|c| c.as_str()),
        Some(error_code.as_str())
    );
    match object.get("data").and_then(|d| d.as_str()) {
        Some(text) => {
            assert!(had_data);
            let base64: Vec<u8> = text
                .bytes()
                .filter(|b| !b.is_ascii_whitespace())
                .collect();
            let reference = base64_simd::STANDARD
                .decode_to_vec(&base64)
                .expect("accepted data is base64");
            assert_eq!(bytes, reference);
        }
        None => {
            assert!(!had_data);
            assert!(bytes.is_empty());
        }
    }
});
