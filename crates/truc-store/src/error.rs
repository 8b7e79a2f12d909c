//! Store errors, with stable codes.

use std::path::PathBuf;

use thiserror::Error;

/// Why a store operation failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The disk (or the process's file size limit) is full: nothing was acknowledged.
    #[error("the store is out of space ({0}); free disk space under the store directory, nothing was acknowledged")]
    Full(std::io::Error),

    /// Another I/O failure.
    #[error("store I/O error: {0}")]
    Io(#[from] std::io::Error),

    /// The store cannot be opened: its data is damaged or missing.
    #[error("the store at {path} cannot be opened: {reason}. Do not delete it: {hint}")]
    Corrupt {
        /// The store directory.
        path: PathBuf,
        /// What failed.
        reason: String,
        /// What to do (restore from the last good backup, with its path when known).
        hint: String,
    },

    /// The directory holds something that is not a truc store.
    #[error("{path} is not empty and is not a truc store; refusing to use it")]
    NotAStore {
        /// The directory.
        path: PathBuf,
    },

    /// A record could not be encoded or decoded.
    #[error("store record {what}: {reason}")]
    Codec {
        /// Which record.
        what: &'static str,
        /// Why.
        reason: String,
    },

    /// No such message, delivery or payload.
    #[error("{0} not found")]
    NotFound(String),

    /// The claim's lease ran out and the delivery was offered again (or finished).
    #[error("the claim on {0} is no longer valid (its lease expired or it was completed)")]
    LeaseLost(String),

    /// The operation does not apply to the delivery's state.
    #[error("delivery {key} is {state}: {action} does not apply")]
    WrongState {
        /// The delivery.
        key: String,
        /// Its state.
        state: &'static str,
        /// The refused action.
        action: &'static str,
    },

    /// The payload of the message was removed by retention.
    #[error("the payload of {0} was purged by retention")]
    Purged(String),

    /// The store is shutting down.
    #[error("the store is closed")]
    Closed,

    /// sled reported an internal error.
    #[error("storage engine error: {0}")]
    Engine(String),

    /// Backup or restore could not proceed.
    #[error("backup: {0}")]
    Backup(String),
}

impl StoreError {
    /// The stable code (see `docs/errors.md`).
    pub fn code(&self) -> &'static str {
        match self {
            StoreError::Full(_) => "STORE_FULL",
            StoreError::Io(_) => "STORE_IO",
            StoreError::Corrupt { .. } => "STORE_CORRUPT",
            StoreError::NotAStore { .. } => "STORE_NOT_A_STORE",
            StoreError::Codec { .. } => "STORE_CODEC",
            StoreError::NotFound(_) => "STORE_NOT_FOUND",
            StoreError::LeaseLost(_) => "STORE_LEASE_LOST",
            StoreError::WrongState { .. } => "STORE_WRONG_STATE",
            StoreError::Purged(_) => "STORE_PURGED",
            StoreError::Closed => "STORE_CLOSED",
            StoreError::Engine(_) => "STORE_ENGINE",
            StoreError::Backup(_) => "STORE_BACKUP",
        }
    }

    /// Every code, for documentation tests.
    pub const ALL_CODES: &'static [&'static str] = &[
        "STORE_FULL",
        "STORE_IO",
        "STORE_CORRUPT",
        "STORE_NOT_A_STORE",
        "STORE_CODEC",
        "STORE_NOT_FOUND",
        "STORE_LEASE_LOST",
        "STORE_WRONG_STATE",
        "STORE_PURGED",
        "STORE_CLOSED",
        "STORE_ENGINE",
        "STORE_BACKUP",
    ];

    /// Classifies an I/O error: out-of-space conditions become [`StoreError::Full`].
    pub fn from_io(e: std::io::Error) -> Self {
        if is_full(&e) {
            StoreError::Full(e)
        } else {
            StoreError::Io(e)
        }
    }
}

/// ENOSPC, EDQUOT and EFBIG (a file size limit) all mean "no room".
pub(crate) fn is_full(e: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    matches!(
        e.kind(),
        ErrorKind::StorageFull | ErrorKind::QuotaExceeded | ErrorKind::FileTooLarge
    ) || matches!(e.raw_os_error(), Some(28 | 27 | 122))
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        match e {
            sled::Error::Io(io) => StoreError::from_io(io),
            other => StoreError::Engine(other.to_string()),
        }
    }
}

impl From<sled::transaction::TransactionError<StoreError>> for StoreError {
    fn from(e: sled::transaction::TransactionError<StoreError>) -> Self {
        match e {
            sled::transaction::TransactionError::Abort(inner) => inner,
            sled::transaction::TransactionError::Storage(e) => e.into(),
        }
    }
}
