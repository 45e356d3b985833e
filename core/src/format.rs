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
//! A reader checks, in this order: magic ([`CoreError::BadMagic`]; a file shorter than the
//! magic that matches it so far is [`CoreError::Truncated`]), length ≥ header (`Truncated`),
//! version 1..=supported ([`CoreError::UnsupportedVersion`]), flags = 0, payload length
//! (`Truncated` when short, [`CoreError::Decode`] when bytes trail), checksum
//! ([`CoreError::Checksum`]), decode (`Decode`). Every byte of the file is covered: a
//! changed byte anywhere is an error.
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

/// Bytes as text safe for a terminal: printable ASCII as is, anything else as `\xNN`.
pub fn printable(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| if (0x20..0x7f).contains(&b) { (b as char).to_string() } else { format!("\\x{b:02x}") }).collect()
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

/// Checks the header and checksum and decodes the payload. Never panics on bad bytes, and
/// never allocates much more than the payload's size, whatever length prefixes a crafted
/// payload holds.
pub fn decode<T: DeserializeOwned>(kind: &FileKind, bytes: &[u8]) -> Result<T> {
    let n = bytes.len();
    if n < 8 || bytes[..8] != kind.magic {
        // A prefix of the magic (also an empty file) is a truncated file of this kind.
        if n < 8 && bytes == &kind.magic[..n] {
            return Err(CoreError::Truncated { kind: kind.name, expected: HEADER_LEN as u64, found: n as u64 });
        }
        return Err(CoreError::BadMagic { expected: kind.name, found: printable(&bytes[..n.min(8)]) });
    }
    if n < HEADER_LEN {
        return Err(CoreError::Truncated { kind: kind.name, expected: HEADER_LEN as u64, found: n as u64 });
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().unwrap());
    if version == 0 || version > kind.version {
        return Err(CoreError::UnsupportedVersion { kind: kind.name, found: version, supported: kind.version });
    }
    let flags = u32::from_le_bytes(bytes[12..16].try_into().unwrap());
    if flags != 0 {
        return Err(CoreError::Decode {
            kind: kind.name,
            msg: format!("reserved header flags are {flags:#010x}, expected 0 (corrupted header or a newer scdd)"),
        });
    }
    let len = u64::from_le_bytes(bytes[16..24].try_into().unwrap());
    let payload = &bytes[HEADER_LEN..];
    if (payload.len() as u64) < len && len > (n as u64).saturating_mul(2).max(1 << 20) {
        // Far more than the file could ever have held: the length field itself is damaged.
        return Err(CoreError::Decode {
            kind: kind.name,
            msg: format!("the header declares {len} payload bytes but the file has {n} bytes in all (a damaged header, or a file cut to under half its size)"),
        });
    }
    if (payload.len() as u64) < len {
        return Err(CoreError::Truncated {
            kind: kind.name,
            expected: (HEADER_LEN as u64).saturating_add(len),
            found: n as u64,
        });
    }
    if (payload.len() as u64) > len {
        return Err(CoreError::Decode {
            kind: kind.name,
            msg: format!(
                "{} trailing bytes after the {len} payload bytes the header declares",
                payload.len() as u64 - len
            ),
        });
    }
    let computed = Sha256::digest(payload);
    if computed[..] != bytes[24..56] {
        return Err(CoreError::Checksum { kind: kind.name, expected: hex(&bytes[24..56]), computed: hex(&computed) });
    }
    let (value, used) =
        decode_bounded(payload).map_err(|e| CoreError::Decode { kind: kind.name, msg: e.to_string() })?;
    if used != payload.len() {
        return Err(CoreError::Decode { kind: kind.name, msg: format!("{} unread payload bytes", payload.len() - used) });
    }
    Ok(value)
}

/// bincode with a byte limit proportional to the payload. bincode allocates a byte vector or
/// string of the length its prefix declares before reading it; without a limit, a crafted
/// length (the checksum only proves the payload is the one that was written) makes it try
/// to allocate terabytes and abort. bincode counts the full width of every integer it
/// decodes (8 bytes for a one-byte varint length), so a well-formed payload claims at most
/// 8 bytes per payload byte. The limit is a const generic: pick the smallest of a few
/// power-of-two limits that fits.
fn decode_bounded<T: DeserializeOwned>(payload: &[u8]) -> Result<(T, usize), bincode::error::DecodeError> {
    let need = payload.len().saturating_mul(8).saturating_add(256);
    macro_rules! with_limits {
        ($($bits:literal),*) => {
            $(
                if need <= (1usize << $bits) {
                    return bincode::serde::decode_from_slice(
                        payload,
                        bincode_config().with_limit::<{ 1usize << $bits }>(),
                    );
                }
            )*
        };
    }
    with_limits!(12, 16, 20, 24, 28, 31);
    #[cfg(target_pointer_width = "64")]
    with_limits!(34, 37, 40, 44);
    // Beyond 16 TiB: nothing left to bound against.
    bincode::serde::decode_from_slice(payload, bincode_config())
}
