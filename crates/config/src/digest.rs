//! The key behind every digest a snapshot carries.
//!
//! A plain SHA-256 of a client key, or of a configuration that holds provider
//! credentials, can be checked offline against guesses by anyone who sees it
//! (the AIGateway status shows the configuration hash). Keyed with HMAC, it
//! cannot be checked without this key. The controller keeps the key in its TLS
//! Secret, so every replica and every restart digests alike; a standalone
//! gateway generates one, or reads it from a file.

use std::fmt;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::Sha256;

/// Bytes in a key: HMAC-SHA256's block-size guidance is met by any length of
/// at least the output size.
pub const KEY_LEN: usize = 32;

#[derive(Clone, PartialEq, Eq)]
pub struct DigestKey([u8; KEY_LEN]);

#[derive(Debug, thiserror::Error)]
#[error("a digest key is {KEY_LEN} bytes written as {} hex digits", KEY_LEN * 2)]
pub struct InvalidDigestKey;

impl DigestKey {
    /// A fresh key from the operating system's random source.
    pub fn generate() -> Self {
        use rand::RngCore;
        let mut bytes = [0u8; KEY_LEN];
        rand::rng().fill_bytes(&mut bytes);
        Self(bytes)
    }

    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(bytes)
    }

    /// Parses the hex form [`DigestKey::to_hex`] writes; surrounding
    /// whitespace (a trailing newline in a file) is ignored.
    pub fn from_hex(text: &str) -> Result<Self, InvalidDigestKey> {
        let mut bytes = [0u8; KEY_LEN];
        hex::decode_to_slice(text.trim(), &mut bytes).map_err(|_| InvalidDigestKey)?;
        Ok(Self(bytes))
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// HMAC-SHA256 of `message` under this key.
    pub fn mac(&self, message: &[u8]) -> [u8; 32] {
        let mut mac = self.hmac();
        mac.update(message);
        mac.finalize().into_bytes().into()
    }

    /// [`DigestKey::mac`] as lowercase hex.
    pub fn mac_hex(&self, message: &[u8]) -> String {
        hex::encode(self.mac(message))
    }

    /// The MAC with this key's blocks already hashed, for digesting many
    /// messages (each client key a request presents) without redoing them.
    pub fn prepared(&self) -> PreparedMac {
        PreparedMac(self.hmac())
    }

    fn hmac(&self) -> Hmac<Sha256> {
        // HMAC accepts keys of any length; a fixed 32-byte key cannot fail.
        <Hmac<Sha256> as Mac>::new_from_slice(&self.0).unwrap_or_else(|_| unreachable!())
    }
}

/// The key in `path`, or a new one written there (owner-only) when the file
/// does not exist, so a standalone gateway keeps its hashes across restarts
/// and replicas sharing the file agree.
pub fn load_or_create(path: &std::path::Path) -> Result<DigestKey, DigestKeyFileError> {
    let error = |source| DigestKeyFileError::Io {
        path: path.to_path_buf(),
        source,
    };
    match std::fs::read_to_string(path) {
        Ok(text) => {
            DigestKey::from_hex(&text).map_err(|_| DigestKeyFileError::Invalid(path.to_path_buf()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            use std::io::Write;
            let key = DigestKey::generate();
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            match options.open(path) {
                Ok(mut file) => {
                    writeln!(file, "{}", key.to_hex()).map_err(error)?;
                    Ok(key)
                }
                // Another process created it first: use theirs.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => load_or_create(path),
                Err(e) => Err(error(e)),
            }
        }
        Err(e) => Err(error(e)),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DigestKeyFileError {
    #[error("digest key file {}: {source}", path.display())]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("digest key file {}: {InvalidDigestKey}", .0.display())]
    Invalid(std::path::PathBuf),
}

/// [`DigestKey::prepared`]: cloning it skips the per-key setup.
#[derive(Clone)]
pub struct PreparedMac(Hmac<Sha256>);

impl PreparedMac {
    /// HMAC-SHA256 of `message`, as [`DigestKey::mac`] gives it.
    pub fn mac(&self, message: &[u8]) -> [u8; 32] {
        let mut mac = self.0.clone();
        mac.update(message);
        mac.finalize().into_bytes().into()
    }
}

impl fmt::Debug for PreparedMac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PreparedMac(..)")
    }
}

/// Never prints the key.
impl fmt::Debug for DigestKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DigestKey(..)")
    }
}

/// Hex on the wire: the controller hands its key to gateways inside the
/// snapshot (over TLS, next to the provider credentials) so they can digest
/// the keys clients present.
impl Serialize for DigestKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for DigestKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::from_hex(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_hmac_sha256() {
        // Expected value from Python's `hmac.new(b"\x0b" * 32, b"Hi There",
        // hashlib.sha256)`: RFC 4231 case 1's message under a 32-byte key.
        let key = DigestKey::from_bytes([0x0b; 32]);
        assert_eq!(
            key.mac_hex(b"Hi There"),
            "198a607eb44bfbc69903a0f1cf2bbdc5ba0aa3f3d9ae3c1c7a3b1696a0b68cf7"
        );
    }

    #[test]
    fn a_prepared_mac_gives_the_same_digests() {
        let key = DigestKey::from_bytes([9; 32]);
        let prepared = key.prepared();
        for message in [
            &b"tg-a"[..],
            b"",
            b"a longer key with more than one block of text, 64 bytes or so....",
        ] {
            assert_eq!(prepared.mac(message), key.mac(message));
        }
    }

    #[test]
    fn different_keys_give_different_digests_and_neither_is_plain_sha256() {
        use sha2::Digest;
        let a = DigestKey::from_bytes([1; 32]);
        let b = DigestKey::from_bytes([2; 32]);
        let plain = hex::encode(sha2::Sha256::digest(b"tg-secret"));
        assert_ne!(a.mac_hex(b"tg-secret"), b.mac_hex(b"tg-secret"));
        assert_ne!(a.mac_hex(b"tg-secret"), plain);
        assert_eq!(a.mac_hex(b"tg-secret"), a.mac_hex(b"tg-secret"));
    }

    #[test]
    fn a_key_file_is_created_once_and_then_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("digest.key");
        let first = load_or_create(&path).unwrap();
        assert_eq!(load_or_create(&path).unwrap(), first);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(&path, "not a key").unwrap();
        let error = load_or_create(&path).unwrap_err().to_string();
        assert!(error.contains("64 hex digits"), "{error}");
    }

    #[test]
    fn hex_round_trips_and_bad_text_is_refused() {
        let key = DigestKey::generate();
        assert_eq!(
            DigestKey::from_hex(&format!("{}\n", key.to_hex())).unwrap(),
            key
        );
        assert!(DigestKey::from_hex("abc").is_err());
        assert!(DigestKey::from_hex(&"zz".repeat(32)).is_err());
        assert_ne!(DigestKey::generate(), DigestKey::generate());
        assert_eq!(format!("{key:?}"), "DigestKey(..)");
    }
}
