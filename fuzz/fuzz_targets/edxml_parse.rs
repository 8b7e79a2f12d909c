//! Fuzz the edXML reader: any bytes, fed whole and in chunks, must give the same result and
//! never panic. The first byte chooses the chunk size so chunk boundaries are explored too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use truc_edxml::{parse, Limits, PackageReader};

fuzz_target!(|data: &[u8]| {
    let Some((&first, package)) = data.split_first() else {
        return;
    };
    let whole = parse(package);
    let chunk = usize::from(first % 64) + 1;
    let mut reader = PackageReader::new(Limits::default());
    let mut chunked = Ok(());
    for piece in package.chunks(chunk) {
        chunked = reader.feed(piece);
        if chunked.is_err() {
            break;
        }
    }
    let chunked = chunked.and_then(|()| reader.finish());
    assert_eq!(whole, chunked);
});
