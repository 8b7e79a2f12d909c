//! `trucctl store`: offline operations on a store directory (the relay must be stopped).

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use truc_store::{SledStore, Store, StoreConfig};

use crate::Outcome;

/// `trucctl store ...`
#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Build a new store directory from a backup, checking every checksum. Then point the
    /// relay at the new directory.
    Restore {
        /// The backup directory (made by the relay's backup).
        backup: PathBuf,
        /// The new store directory (must be empty or absent).
        target: PathBuf,
    },
    /// Open a store directory (relay stopped) and verify its audit chain.
    Check {
        /// The store directory.
        dir: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Runs a `store` command.
pub fn run(cmd: StoreCommand) -> Outcome {
    let result = match cmd {
        StoreCommand::Restore { backup, target } => restore(backup, target),
        StoreCommand::Check { dir, json } => check(dir, json),
    };
    match result {
        Ok(true) => Outcome::Success,
        Ok(false) => Outcome::Refused,
        Err(e) => Outcome::Failed(e),
    }
}

fn restore(backup: PathBuf, target: PathBuf) -> anyhow::Result<bool> {
    let report = SledStore::restore(&backup, &target)
        .with_context(|| format!("restoring {} into {}", backup.display(), target.display()))?;
    println!(
        "restored {} records, {} blob files and {} payload segments into {}",
        report.records,
        report.blobs,
        report.segments,
        target.display()
    );
    Ok(true)
}

fn check(dir: PathBuf, json: bool) -> anyhow::Result<bool> {
    let store = SledStore::open(&dir, StoreConfig::default())
        .with_context(|| format!("opening the store {}", dir.display()))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .context("starting a runtime")?;
    let audit = runtime.block_on(store.verify_audit())?;
    let size = store.size_on_disk()?;
    if json {
        println!(
            "{}",
            serde_json::json!({
                "dir": dir,
                "size_bytes": size,
                "audit_entries": audit.entries,
                "audit_first_bad": audit.first_bad,
            })
        );
    } else {
        println!(
            "store {}: opens, {} MiB on disk",
            dir.display(),
            size / (1 << 20)
        );
        match audit.first_bad {
            None => println!("audit log: {} entries, chain intact", audit.entries),
            Some(seq) => println!(
                "audit log: BROKEN at entry {seq} of {}: entries were altered or removed",
                audit.entries
            ),
        }
    }
    Ok(audit.first_bad.is_none())
}
