//! The container every scdd file uses:
//!
//! ```text
//! offset  size  field
//! 0       8     magic            b"SCDDCODE" (latent codes) | b"SCDDGENB" (generator bundle)
//! 8       4     format version   u32 LE
//! 12      4     flags            u32 LE, reserved (0)
//! 16      8     payload length   u64 LE
//! 24      32    SHA-256 of the payload
//! 56      n     payload          bincode 2 (standard config) of the serde value
//! ```
//! A reader checks, in this order: length ≥ header, magic, version, payload length, checksum,
//! decode — each failure is its own [`CoreError`] variant.
use crate::error::{CoreError, Result};
use serde::{de::DeserializeOwned, Serialize};
use sha2::{Digest, Sha256};

pub const HEADER_LEN: usize = 56;

/// What distinguishes one kind of file from another.
pub struct FileKind {
    pub name: &'static str,
    pub magic: [u8; 8],
    /// The newest version this build writes and reads.
    pub version: u32,
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn bincode_config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// Serialises a value to bincode (the payload encoding, also used for content hashes).
pub fn to_payload<T: Serialize>(value: &T) -> Vec<u8> {
    bincode::serde::encode_to_vec(value, bincode_config()).expect("in-memory bincode encoding cannot fail")
}

/// Header + payload.
pub fn encode<T: Serialize>(kind: &FileKind, value: &T) -> Vec<u8> {
    let payload = to_payload(value);
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&kind.magic);
    out.extend_from_slice(&kind.version.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&Sha256::digest(&payload));
    out.extend_from_slice(&payload);
    out
}

/// Checks the header and checksum and decodes the payload. Never panics on bad bytes.
pub fn decode<T: DeserializeOwned>(kind: &FileKind, bytes: &[u8]) -> Result<T> {
    if bytes.len() < 8 || bytes[..8] != kind.magic {
        let found = String::from_utf8_lossy(&bytes[..bytes.len().min(8)]).into_owned();
        return Err(CoreError::BadMagic { expected: kind.name, found });
    }
    if bytes.len() < HEADER_LEN {
        return Err(CoreError::Truncated { kind: kind.name, expected: HEADER_LEN as u64, found: bytes.len() as u64 });
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().unwrap());
    if version > kind.version {
        return Err(CoreError::UnsupportedVersion { kind: kind.name, found: version, supported: kind.version });
    }
    let len = u64::from_le_bytes(bytes[16..24].try_into().unwrap());
    let payload = &bytes[HEADER_LEN..];
    if (payload.len() as u64) < len {
        return Err(CoreError::Truncated { kind: kind.name, expected: len, found: payload.len() as u64 });
    }
    if (payload.len() as u64) > len {
        return Err(CoreError::Decode {
            kind: kind.name,
            msg: format!("{} trailing bytes after the declared payload", payload.len() as u64 - len),
        });
    }
    let computed = Sha256::digest(payload);
    if computed[..] != bytes[24..56] {
        return Err(CoreError::Checksum { kind: kind.name, expected: hex(&bytes[24..56]), computed: hex(&computed) });
    }
    let (value, used) = bincode::serde::decode_from_slice(payload, bincode_config())
        .map_err(|e| CoreError::Decode { kind: kind.name, msg: e.to_string() })?;
    if used != payload.len() {
        return Err(CoreError::Decode { kind: kind.name, msg: format!("{} unread payload bytes", payload.len() - used) });
    }
    Ok(value)
}
