//! One error type for the core. Every variant names what was wrong and where.
use thiserror::Error;

pub type Result<T, E = CoreError> = std::result::Result<T, E>;

#[derive(Debug, Error)]
pub enum CoreError {
    /// A value or structure that violates the data model (inconsistent CSR arrays, NaN, ...).
    #[error("invalid data in {field}: {msg}")]
    InvalidData { field: String, msg: String },
    /// A caller-supplied parameter is out of its valid range.
    #[error("invalid parameter {name} = {value}: {msg}")]
    InvalidParam { name: String, value: String, msg: String },
    /// A file does not start with the expected magic bytes.
    #[error("not a {expected} file: magic bytes are \"{found}\"")]
    BadMagic { expected: &'static str, found: String },
    /// A format version this build cannot read: written by a newer scdd (or version 0, which
    /// no scdd writes).
    #[error("{kind} format version {found} is not supported: this scdd reads versions 1 to {supported}; a file from a newer scdd needs an upgraded scdd")]
    UnsupportedVersion { kind: &'static str, found: u32, supported: u32 },
    /// The file ends before its header does, or before the payload length the header declares.
    /// `expected` and `found` are whole-file sizes in bytes.
    #[error("{kind} file is truncated: expected {expected} bytes, found {found}")]
    Truncated { kind: &'static str, expected: u64, found: u64 },
    /// The payload checksum does not match: the file is corrupted.
    #[error("{kind} file is corrupted: payload checksum mismatch (expected {expected}, computed {computed})")]
    Checksum { kind: &'static str, expected: String, computed: String },
    /// The payload could not be decoded although its checksum matched.
    #[error("{kind} payload could not be decoded: {msg}")]
    Decode { kind: &'static str, msg: String },
    /// Two artefacts that must belong together don't (codes for another generator, ...).
    #[error("{0}")]
    Mismatch(String),
}

impl CoreError {
    pub fn data(field: impl Into<String>, msg: impl Into<String>) -> Self {
        CoreError::InvalidData { field: field.into(), msg: msg.into() }
    }
    pub fn param(name: impl Into<String>, value: impl ToString, msg: impl Into<String>) -> Self {
        CoreError::InvalidParam { name: name.into(), value: value.to_string(), msg: msg.into() }
    }
}
