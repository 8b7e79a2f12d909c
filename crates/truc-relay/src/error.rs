//! Relay errors, with stable codes.

use thiserror::Error;
use truc_edxml::EdxmlError;
use truc_store::StoreError;

/// Why the relay refused or failed an operation.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum RelayError {
    /// The package is invalid.
    #[error(transparent)]
    Package(#[from] EdxmlError),

    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),

    /// A recipient code inside the ministry's code space that is not registered.
    #[error("unknown unit {0}: it is not in this ministry's registry")]
    UnknownUnit(String),

    /// A code outside the ministry that the national directory does not list.
    #[error(
        "unknown unit {0}: it is neither a unit of this ministry nor in the national directory"
    )]
    UnknownRemote(String),

    /// A package from the national axis claims a sender of this ministry: the ministry's
    /// units send through this relay, never from the axis.
    #[error("a package from the national axis (docId {doc_id}) claims to come from {from}, a unit of this ministry: its units send through this relay, not from the axis")]
    ForgedFromAxis {
        /// The `From` of the package.
        from: String,
        /// The axis's transport id.
        doc_id: String,
    },

    /// The adapter sent as a unit it does not serve.
    #[error("the adapter of {adapter} (certificate {certificate}) may not send as {from}: only as {adapter} or its level-3 units")]
    ForgedSender {
        /// The adapter's unit.
        adapter: String,
        /// The `From` of the package.
        from: String,
        /// The certificate fingerprint.
        certificate: String,
    },

    /// The client certificate maps to no registered unit.
    #[error("no unit is registered for the client certificate {0}; ask the ministry's IT staff to register it")]
    UnknownCertificate(String),

    /// The adapter's unit is suspended.
    #[error("unit {0} is suspended; ask the ministry's IT staff")]
    Suspended(String),

    /// A certificate fingerprint or DNS name given to a unit is already another unit's: an
    /// adapter's identity must name one unit.
    #[error("{credential} is already registered for unit {unit}; remove it there first")]
    CredentialInUse {
        /// The fingerprint or name.
        credential: String,
        /// The unit that has it.
        unit: String,
    },
    /// A status package answers a document the relay does not know.
    #[error("the status answers document {0}, which this relay never carried")]
    UnknownDocument(String),

    /// A configuration or registry problem.
    #[error("configuration: {0}")]
    Config(String),
}

impl RelayError {
    /// The stable code (see `docs/errors.md`).
    pub fn code(&self) -> &'static str {
        match self {
            RelayError::Package(e) => e.code(),
            RelayError::Store(e) => e.code(),
            RelayError::UnknownUnit(_) => "ROUTE_UNKNOWN_UNIT",
            RelayError::UnknownRemote(_) => "ROUTE_UNKNOWN_REMOTE",
            RelayError::ForgedSender { .. } | RelayError::ForgedFromAxis { .. } => {
                "AUTH_FORGED_SENDER"
            }
            RelayError::UnknownCertificate(_) => "AUTH_UNKNOWN_CERTIFICATE",
            RelayError::Suspended(_) => "AUTH_UNIT_SUSPENDED",
            RelayError::CredentialInUse { .. } => "AUTH_CREDENTIAL_IN_USE",
            RelayError::UnknownDocument(_) => "ROUTE_UNKNOWN_DOCUMENT",
            RelayError::Config(_) => "RELAY_CONFIG",
        }
    }
}
