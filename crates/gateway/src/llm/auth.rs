//! Authentication: a client API key (`Authorization: Bearer` or `x-api-key`)
//! maps to a [`Principal`]. Keys are compared by their keyed digest (HMAC-SHA256
//! under the snapshot's digest key), as stored.

use std::collections::HashMap;
use std::sync::Arc;

use http::HeaderMap;
use tollgate_config::DigestKey;
use tollgate_config::digest::PreparedMac;
use tollgate_config::snapshot::{ApiKey, JwtIssuer, Principal};

use super::jwt;
use crate::error::ApiError;
use crate::runtime::{Gateway, Runtime};

#[derive(Debug)]
pub struct KeyIndex {
    /// The snapshot's digest key, set up once: a request only hashes its key.
    mac: PreparedMac,
    keys: HashMap<[u8; 32], Entry>,
}

#[derive(Debug)]
struct Entry {
    principal: Arc<Principal>,
    /// Unix seconds after which the key is refused.
    expires_at: Option<u64>,
}

/// A snapshot carried a key digest that is not 64 hex digits. Refused, so a
/// corrupt snapshot can never turn into an open gateway.
#[derive(Debug, thiserror::Error)]
#[error("API key digest for user {user:?} is not an HMAC-SHA256 hex digest")]
pub struct InvalidKeyDigest {
    pub user: String,
}

impl KeyIndex {
    pub fn new(keys: &[ApiKey], digest_key: &DigestKey) -> Result<Self, InvalidKeyDigest> {
        let keys = keys
            .iter()
            .map(|k| {
                let mut digest = [0u8; 32];
                decode_hex(&k.digest, &mut digest).ok_or_else(|| InvalidKeyDigest {
                    user: k.principal.user.clone(),
                })?;
                let entry = Entry {
                    principal: Arc::new(k.principal.clone()),
                    expires_at: k.expires_at,
                };
                Ok((digest, entry))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            mac: digest_key.prepared(),
            keys,
        })
    }

    /// `Ok(None)` when the gateway has no keys (open); otherwise the
    /// principal of a valid key, or 401.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Option<Arc<Principal>>, ApiError> {
        if self.keys.is_empty() {
            return Ok(None);
        }
        let presented = presented_key(headers).ok_or_else(|| {
            ApiError::unauthorized("You didn't provide an API key. Send it as 'Authorization: Bearer YOUR_KEY' or 'x-api-key: YOUR_KEY'.")
        })?;
        let digest = self.mac.mac(presented.as_bytes());
        let entry = self
            .keys
            .get(&digest)
            .ok_or_else(|| ApiError::unauthorized("Incorrect API key provided."))?;
        // The clock is read only for keys that expire.
        if let Some(expires_at) = entry.expires_at
            && unix_now() >= expires_at
        {
            return Err(ApiError::unauthorized("This API key has expired."));
        }
        Ok(Some(entry.principal.clone()))
    }
}

impl KeyIndex {
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// An API key or, where the gateway accepts token issuers, a JWT →
/// principal; `Ok(None)` only on an open gateway (no keys, no issuers).
pub async fn authenticate(
    runtime: &Runtime,
    gateway: &Gateway,
    headers: &HeaderMap,
) -> Result<Option<Arc<Principal>>, ApiError> {
    let issuers = &runtime.snapshot.config.jwt;
    if issuers.is_empty() {
        return runtime.keys.authenticate(headers);
    }
    if let Some(token) = presented_key(headers)
        && jwt::looks_like_jwt(token)
    {
        return verify_token(issuers, gateway, token).await.map(Some);
    }
    if runtime.keys.is_empty() {
        return Err(ApiError::unauthorized(
            "This gateway needs a bearer token from an accepted issuer: send 'Authorization: Bearer <JWT>'.",
        ));
    }
    runtime.keys.authenticate(headers)
}

async fn verify_token(
    issuers: &[JwtIssuer],
    gateway: &Gateway,
    token: &str,
) -> Result<Arc<Principal>, ApiError> {
    let refuse = |error: jwt::JwtError| ApiError::unauthorized(format!("Invalid token: {error}."));
    let iss = jwt::unverified_issuer(token).ok_or_else(|| refuse(jwt::JwtError::Malformed))?;
    let issuer = issuers
        .iter()
        .find(|i| i.issuer == iss)
        .ok_or_else(|| refuse(jwt::JwtError::Issuer))?;
    let now = i64::try_from(unix_now()).unwrap_or(i64::MAX);
    let keys = gateway
        .jwks
        .keys(&issuer.jwks, &gateway.clients, false)
        .await
        .map_err(refuse)?;
    match jwt::verify(token, issuer, &keys, now) {
        // A key the cached set lacks: the issuer may have rotated.
        Err(jwt::JwtError::UnknownKey) => {
            let keys = gateway
                .jwks
                .keys(&issuer.jwks, &gateway.clients, true)
                .await
                .map_err(refuse)?;
            jwt::verify(token, issuer, &keys, now)
                .map(Arc::new)
                .map_err(refuse)
        }
        verified => verified.map(Arc::new).map_err(refuse),
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn presented_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(value) = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let (scheme, key) = value.split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| key.trim())
            .filter(|k| !k.is_empty());
    }
    headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|k| !k.is_empty())
}

fn decode_hex(text: &str, out: &mut [u8; 32]) -> Option<()> {
    if text.len() != 64 {
        return None;
    }
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_config::snapshot::api_key_digest;

    fn key() -> DigestKey {
        DigestKey::from_bytes([3; 32])
    }

    fn index() -> KeyIndex {
        let api_key_digest = |k| api_key_digest(&key(), k);
        KeyIndex::new(
            &[
                ApiKey {
                    digest: api_key_digest("tg-good"),
                    principal: Principal {
                        user: "ann".into(),
                        ..Default::default()
                    },
                    expires_at: None,
                },
                ApiKey {
                    digest: api_key_digest("tg-expired"),
                    principal: Principal::default(),
                    expires_at: Some(unix_now() - 1),
                },
                ApiKey {
                    digest: api_key_digest("tg-later"),
                    principal: Principal {
                        user: "bo".into(),
                        ..Default::default()
                    },
                    expires_at: Some(unix_now() + 3600),
                },
            ],
            &key(),
        )
        .unwrap()
    }

    #[test]
    fn a_digest_under_another_key_does_not_match() {
        let other = KeyIndex::new(
            &[ApiKey {
                digest: api_key_digest(&DigestKey::from_bytes([4; 32]), "tg-good"),
                principal: Principal::default(),
                expires_at: None,
            }],
            &key(),
        )
        .unwrap();
        let err = other
            .authenticate(&headers("x-api-key", "tg-good"))
            .unwrap_err();
        assert_eq!(err.status, 401);
    }

    #[test]
    fn an_expired_key_is_refused_and_one_not_yet_expired_accepted() {
        let idx = index();
        let err = idx
            .authenticate(&headers("authorization", "Bearer tg-expired"))
            .unwrap_err();
        assert_eq!(err.status, 401);
        assert!(err.message.contains("expired"), "{}", err.message);
        let later = idx.authenticate(&headers("x-api-key", "tg-later"));
        assert_eq!(later.unwrap().unwrap().user, "bo");
    }

    fn headers(name: &'static str, value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, value.parse().unwrap());
        h
    }

    #[test]
    fn accepts_bearer_and_x_api_key() {
        let idx = index();
        assert_eq!(
            idx.authenticate(&headers("authorization", "Bearer tg-good"))
                .unwrap()
                .unwrap()
                .user,
            "ann"
        );
        assert_eq!(
            idx.authenticate(&headers("authorization", "bearer tg-good"))
                .unwrap()
                .unwrap()
                .user,
            "ann"
        );
        assert_eq!(
            idx.authenticate(&headers("x-api-key", "tg-good"))
                .unwrap()
                .unwrap()
                .user,
            "ann"
        );
    }

    #[test]
    fn rejects_missing_wrong_and_malformed_keys() {
        let idx = index();
        for h in [
            HeaderMap::new(),
            headers("authorization", "Bearer nope"),
            headers("authorization", "Basic tg-good"),
            headers("authorization", "Bearer "),
        ] {
            let err = idx.authenticate(&h).unwrap_err();
            assert_eq!(err.status, 401);
            assert_eq!(err.code, "invalid_api_key");
        }
    }

    #[test]
    fn a_corrupt_digest_is_refused_rather_than_opening_the_gateway() {
        let bad = ApiKey {
            digest: "not-hex".into(),
            principal: Principal::default(),
            expires_at: None,
        };
        assert!(KeyIndex::new(&[bad], &key()).is_err());
    }

    #[test]
    fn open_gateway_needs_no_key() {
        assert!(
            KeyIndex::new(&[], &key())
                .unwrap()
                .authenticate(&HeaderMap::new())
                .unwrap()
                .is_none()
        );
    }
}
