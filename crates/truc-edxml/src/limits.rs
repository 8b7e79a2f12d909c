//! Bounds on what one package may contain.

/// Bounds the parser enforces, so that no package can exhaust memory or time.
///
/// Packages come from dozens of independently written systems; every dimension a hostile or
/// broken producer could blow up is bounded here. The defaults accept every realistic package
/// (scanned documents of hundreds of megabytes, circulars to every ministry and province)
/// while refusing the pathological ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest package, in bytes (default 512 MiB).
    pub max_package_bytes: u64,
    /// Deepest element nesting (default 64; edXML itself needs about 10).
    pub max_depth: usize,
    /// Most attributes on one element (default 64).
    pub max_attributes: usize,
    /// Most `To` recipients of one document (default 1,000).
    pub max_recipients: usize,
    /// Most attachments of one document (default 256).
    pub max_attachments: usize,
    /// Largest decoded attachment, in bytes (default 512 MiB).
    pub max_attachment_bytes: u64,
    /// Longest text of one element the relay reads, such as `Subject` (default 1 MiB).
    pub max_field_bytes: usize,
    /// Longest single tag, comment-free markup or processing instruction (default 64 KiB).
    pub max_markup_bytes: usize,
    /// Most `TraceHeader`, `ResponseFor`, `ToPlaces/Place` and similar repeated entries, each
    /// (default 1,000).
    pub max_list_entries: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_package_bytes: 512 * 1024 * 1024,
            max_depth: 64,
            max_attributes: 64,
            max_recipients: 1_000,
            max_attachments: 256,
            max_attachment_bytes: 512 * 1024 * 1024,
            max_field_bytes: 1024 * 1024,
            max_markup_bytes: 64 * 1024,
            max_list_entries: 1_000,
        }
    }
}
