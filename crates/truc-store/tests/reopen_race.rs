//! Closing a store releases its files at once, so the same process can reopen it.

mod common;

use common::*;
use truc_store::{SledStore, Store};

#[tokio::test]
async fn a_closed_store_can_be_reopened_immediately() {
    let dir = tempfile::tempdir().expect("tempdir");
    for n in 0..30u32 {
        let store =
            SledStore::open(dir.path(), fast_config()).unwrap_or_else(|e| panic!("open #{n}: {e}"));
        store
            .submit(document(
                "000.00.05.G04",
                &[("000.00.07.G04", inbox("000.00.07.G04"))],
                n,
                &n.to_be_bytes(),
            ))
            .await
            .expect("submit");
    }
}
