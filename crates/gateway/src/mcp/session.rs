//! Sealed session ids: what a 2025-11-25 client gets as `Mcp-Session-Id`.
//!
//! The id carries the backend's own session id, the principal and the
//! MCPServer it was opened for, encrypted and authenticated
//! (ChaCha20-Poly1305) under a key every replica derives from the snapshot's
//! digest key. So a request may land on any replica and still reach its
//! backend session, with no shared store; and an id presented by another
//! principal or on another server's path is refused, not re-used.
//!
//! The keys come from the AIGateway's `spec.mcp.sessionKeys` Secrets (the
//! first seals, all open, so keys rotate without ending sessions), else one
//! derived from the digest key; derived once per snapshot, never per
//! request. A sealed id names its key (`tg1.<key id>.<sealed>`).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::aead::{self, Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use tollgate_config::DigestKey;
use tollgate_config::snapshot::{Credential, Principal};

/// Prefix of every sealed id, so a version change can be told apart.
const PREFIX: &str = "tg1.";
/// Sessions older than this are refused (the client re-initializes).
pub const MAX_AGE_MS: i64 = 24 * 3600 * 1000;
/// Longest state sealed: a backend's session id, or (for `/mcp`) every
/// aggregated backend's.
const MAX_BACKEND_ID: usize = 16 * 1024;

pub struct Sealer {
    /// Newest first: the first seals; each opens what it sealed, found by
    /// the id sealed ids carry.
    keys: Vec<(String, LessSafeKey)>,
    random: SystemRandom,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(..)")
    }
}

/// What a sealed id holds.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct Sealed {
    /// The backend's session id.
    s: String,
    /// Who opened it ([`caller_id`]).
    p: String,
    /// `namespace/name` of the MCPServer.
    r: String,
    /// When (Unix ms).
    t: i64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SessionError {
    #[error("the session id is not one this gateway issued")]
    Invalid,
    #[error("the session belongs to another caller or server")]
    Foreign,
    #[error("the session has expired")]
    Expired,
    #[error("the backend's session id is unusable")]
    Unsealable,
}

impl Sealer {
    /// Keys from `spec.mcp.sessionKeys` (newest first), else one derived
    /// from the digest key. Derived once per snapshot, never per request.
    pub fn new(digest_key: &DigestKey, session_keys: &[Credential]) -> Self {
        let derive = |material: &[u8]| -> [u8; 32] {
            let mut key = [0u8; 32];
            key.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, material).as_ref());
            key
        };
        let raw: Vec<[u8; 32]> = if session_keys.is_empty() {
            vec![digest_key.mac(b"tollgate/mcp-session/v1")]
        } else {
            session_keys
                .iter()
                .map(|k| derive(format!("tollgate/mcp-session/v1|{}", k.0).as_bytes()))
                .collect()
        };
        let keys = raw
            .iter()
            .map(|bytes| {
                // A short public id, so opening needs no trial decryption.
                let id = URL_SAFE_NO_PAD.encode(&derive(bytes)[..6]);
                let key = UnboundKey::new(&CHACHA20_POLY1305, bytes)
                    .map(LessSafeKey::new)
                    .unwrap_or_else(|_| unreachable!("a 32-byte key suits ChaCha20-Poly1305"));
                (id, key)
            })
            .collect();
        Self {
            keys,
            random: SystemRandom::new(),
        }
    }

    /// The id to hand the client for `backend_id`, opened by `principal` on `server`.
    pub fn seal(
        &self,
        backend_id: &str,
        principal: Option<&Principal>,
        server: &str,
        now_ms: i64,
    ) -> Result<String, SessionError> {
        if backend_id.is_empty() || backend_id.len() > MAX_BACKEND_ID {
            return Err(SessionError::Unsealable);
        }
        let sealed = Sealed {
            s: backend_id.to_string(),
            p: caller_id(principal),
            r: server.to_string(),
            t: now_ms,
        };
        let mut buffer = serde_json::to_vec(&sealed).map_err(|_| SessionError::Unsealable)?;
        let mut nonce = [0u8; aead::NONCE_LEN];
        self.random
            .fill(&mut nonce)
            .map_err(|_| SessionError::Unsealable)?;
        let (id, key) = self.keys.first().ok_or(SessionError::Unsealable)?;
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(PREFIX),
            &mut buffer,
        )
        .map_err(|_| SessionError::Unsealable)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buffer);
        Ok(format!("{PREFIX}{id}.{}", URL_SAFE_NO_PAD.encode(out)))
    }

    /// The backend's session id, if `id` was sealed here for this
    /// principal and server and is not too old.
    pub fn open(
        &self,
        id: &str,
        principal: Option<&Principal>,
        server: &str,
        now_ms: i64,
    ) -> Result<String, SessionError> {
        let (key_id, encoded) = id
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split_once('.'))
            .ok_or(SessionError::Invalid)?;
        let key = self
            .keys
            .iter()
            .find(|(id, _)| id == key_id)
            .map(|(_, key)| key)
            // Sealed under a key since removed: like an unknown session.
            .ok_or(SessionError::Invalid)?;
        let mut bytes = URL_SAFE_NO_PAD
            .decode(encoded)
            .map_err(|_| SessionError::Invalid)?;
        if bytes.len() < aead::NONCE_LEN + CHACHA20_POLY1305.tag_len() {
            return Err(SessionError::Invalid);
        }
        let mut ciphertext = bytes.split_off(aead::NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(&bytes).map_err(|_| SessionError::Invalid)?;
        let plain = key
            .open_in_place(nonce, Aad::from(PREFIX), &mut ciphertext)
            .map_err(|_| SessionError::Invalid)?;
        let sealed: Sealed = serde_json::from_slice(plain).map_err(|_| SessionError::Invalid)?;
        if sealed.p != caller_id(principal) || sealed.r != server {
            return Err(SessionError::Foreign);
        }
        if now_ms - sealed.t > MAX_AGE_MS {
            return Err(SessionError::Expired);
        }
        Ok(sealed.s)
    }
}

/// A backend session as sealed for pass-through: its id, prefixed by the
/// endpoint (of a server with failover URLs) that holds it when that is not
/// the first. Backend ids are visible ASCII, so the space cannot be part of
/// one; ids sealed before failover existed open as endpoint 0.
pub fn pin(endpoint: usize, backend_id: &str) -> String {
    if endpoint == 0 {
        backend_id.to_string()
    } else {
        format!("{endpoint} {backend_id}")
    }
}

/// The endpoint and backend id [`pin`] sealed.
pub fn unpin(pinned: &str) -> (usize, &str) {
    pinned
        .split_once(' ')
        .and_then(|(endpoint, id)| Some((endpoint.parse().ok()?, id)))
        .unwrap_or((0, pinned))
}

/// Who a caller is, for session binding and per-caller rate limits: the
/// key (or token issuer) and the user; empty on an open gateway.
pub fn caller_id(principal: Option<&Principal>) -> String {
    principal.map_or_else(String::new, |p| format!("{}\u{1f}{}", p.key, p.user))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(user: &str) -> Principal {
        Principal {
            user: user.into(),
            key: format!("keys/{user}"),
            ..Principal::default()
        }
    }

    #[test]
    fn a_backend_session_names_its_endpoint() {
        assert_eq!(pin(0, "abc"), "abc");
        assert_eq!(unpin("abc"), (0, "abc"));
        assert_eq!(unpin(&pin(2, "a-b_c.9")), (2, "a-b_c.9"));
    }

    #[test]
    fn a_sealed_id_opens_only_for_its_principal_server_and_key() {
        let key = DigestKey::from_bytes([1; 32]);
        let sealer = Sealer::new(&key, &[]);
        let ann = principal("ann");
        let id = sealer
            .seal("backend-42", Some(&ann), "default/tools", 1_000)
            .unwrap();
        assert!(id.starts_with(PREFIX));
        assert!(
            id.bytes().all(|b| (0x21..=0x7e).contains(&b)),
            "visible ASCII"
        );
        assert!(!id.contains("backend-42"), "the backend id is not readable");
        // Another replica with the same key opens it.
        let replica = Sealer::new(&key, &[]);
        assert_eq!(
            replica.open(&id, Some(&ann), "default/tools", 2_000),
            Ok("backend-42".to_string())
        );
        assert_eq!(
            replica.open(&id, Some(&principal("bob")), "default/tools", 2_000),
            Err(SessionError::Foreign)
        );
        assert_eq!(
            replica.open(&id, Some(&ann), "default/other", 2_000),
            Err(SessionError::Foreign)
        );
        assert_eq!(
            replica.open(&id, Some(&ann), "default/tools", 1_000 + MAX_AGE_MS + 1),
            Err(SessionError::Expired)
        );
        let stranger = Sealer::new(&DigestKey::from_bytes([2; 32]), &[]);
        assert_eq!(
            stranger.open(&id, Some(&ann), "default/tools", 2_000),
            Err(SessionError::Invalid)
        );
        // Tampering anywhere breaks it.
        let mut tampered = id.clone().into_bytes();
        let last = tampered.len() - 1;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).unwrap();
        assert_eq!(
            replica.open(&tampered, Some(&ann), "default/tools", 2_000),
            Err(SessionError::Invalid)
        );
        for junk in [
            "",
            "tg1.",
            "tg1.!!!",
            "backend-42",
            "tg1.AAAA",
            "tg1.AAAA.AAAA",
        ] {
            assert_eq!(
                replica.open(junk, Some(&ann), "default/tools", 2_000),
                Err(SessionError::Invalid),
                "{junk:?}"
            );
        }
        // Each seal differs (random nonce).
        assert_ne!(
            sealer
                .seal("backend-42", Some(&ann), "default/tools", 1_000)
                .unwrap(),
            id
        );
    }

    #[test]
    fn keys_rotate_without_ending_sessions() {
        let digest = DigestKey::from_bytes([1; 32]);
        let old = Credential("o".repeat(32));
        let new = Credential("n".repeat(32));
        let ann = principal("ann");
        let before = Sealer::new(&digest, std::slice::from_ref(&old));
        let sealed_old = before
            .seal("b-1", Some(&ann), "default/tools", 1_000)
            .unwrap();
        // Rotated: the new key first, the old one still listed.
        let during = Sealer::new(&digest, &[new.clone(), old]);
        assert_eq!(
            during.open(&sealed_old, Some(&ann), "default/tools", 2_000),
            Ok("b-1".to_string())
        );
        let sealed_new = during
            .seal("b-2", Some(&ann), "default/tools", 2_000)
            .unwrap();
        assert_ne!(
            sealed_new.split('.').nth(1),
            sealed_old.split('.').nth(1),
            "new sessions name the new key"
        );
        // The old key removed: its sessions end, the new ones go on.
        let after = Sealer::new(&digest, &[new]);
        assert_eq!(
            after.open(&sealed_old, Some(&ann), "default/tools", 3_000),
            Err(SessionError::Invalid)
        );
        assert_eq!(
            after.open(&sealed_new, Some(&ann), "default/tools", 3_000),
            Ok("b-2".to_string())
        );
        // Configured keys differ from the derived one.
        assert_eq!(
            Sealer::new(&digest, &[]).open(&sealed_new, Some(&ann), "default/tools", 3_000),
            Err(SessionError::Invalid)
        );
    }
}
