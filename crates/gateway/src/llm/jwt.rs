//! JWT/OIDC bearer tokens: verify a token against its issuer's key set and
//! map its claims to a [`Principal`]. The verification is pure ([`verify`]);
//! [`JwksCache`] is the IO edge that fetches key sets by URL.
//!
//! Accepted: RS256/384/512, PS256/384/512, ES256/384 and EdDSA (Ed25519),
//! checked with `ring`, the crypto the rest of the gateway uses. The
//! algorithm must match the key's type (and the key's own `alg`, if it names
//! one); `none` and HMAC algorithms are refused. `exp` is required, `nbf`
//! honoured, with 60 s of leeway for clock skew.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use serde::Deserialize;
use serde_json::Value;
use tollgate_config::egress::EgressPolicy;
use tollgate_config::snapshot::{JwksSource, JwtIssuer, Principal};

use crate::providers::http::Clients;

/// Clock skew allowed on `exp` and `nbf`, seconds.
const LEEWAY_S: i64 = 60;
/// How long a fetched key set is used before it is fetched again.
const JWKS_TTL: Duration = Duration::from_secs(300);
/// Least time between two fetches of one URL (for unknown key ids).
const JWKS_MIN_REFETCH: Duration = Duration::from_secs(5);
const JWKS_TIMEOUT: Duration = Duration::from_secs(5);
const JWKS_MAX_BYTES: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwtError {
    #[error("the token is not a well-formed JWT")]
    Malformed,
    #[error("the token's algorithm {0:?} is not accepted")]
    Algorithm(String),
    #[error("no key of the issuer matches the token")]
    UnknownKey,
    #[error("the token's signature does not verify")]
    Signature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token has no expiry (exp)")]
    NoExpiry,
    #[error("the token's issuer is not accepted here")]
    Issuer,
    #[error("the token's audience is not accepted here")]
    Audience,
    #[error("the token has no {0:?} claim to name the caller")]
    MissingClaim(String),
    #[error("the issuer's keys could not be fetched: {0}")]
    Keys(String),
}

/// A verification key from a JWKS.
#[derive(Debug, Clone)]
pub struct Key {
    kid: Option<String>,
    /// The `alg` the key names, if any.
    alg: Option<String>,
    material: Material,
}

#[derive(Debug, Clone)]
enum Material {
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    /// Uncompressed point 0x04 || x || y.
    Ec {
        curve: String,
        point: Vec<u8>,
    },
    Ed25519(Vec<u8>),
}

#[derive(Deserialize)]
struct JwkSet {
    keys: Vec<Value>,
}

/// The usable keys of a JWKS document; keys of other types, or for
/// encryption (`use: enc`), are skipped.
pub fn parse_jwks(text: &str) -> Result<Vec<Key>, JwtError> {
    let set: JwkSet = serde_json::from_str(text).map_err(|e| JwtError::Keys(e.to_string()))?;
    let b64 = |v: &Value, field: &str| -> Option<Vec<u8>> {
        URL_SAFE_NO_PAD.decode(v.get(field)?.as_str()?).ok()
    };
    let keys = set
        .keys
        .iter()
        .filter(|k| k.get("use").and_then(Value::as_str) != Some("enc"))
        .filter_map(|k| {
            let material = match k.get("kty")?.as_str()? {
                "RSA" => Material::Rsa {
                    n: b64(k, "n")?,
                    e: b64(k, "e")?,
                },
                "EC" => {
                    let (x, y) = (b64(k, "x")?, b64(k, "y")?);
                    let mut point = vec![0x04];
                    point.extend(x);
                    point.extend(y);
                    Material::Ec {
                        curve: k.get("crv")?.as_str()?.to_string(),
                        point,
                    }
                }
                "OKP" if k.get("crv")?.as_str()? == "Ed25519" => Material::Ed25519(b64(k, "x")?),
                _ => return None,
            };
            Some(Key {
                kid: k.get("kid").and_then(Value::as_str).map(str::to_string),
                alg: k.get("alg").and_then(Value::as_str).map(str::to_string),
                material,
            })
        })
        .collect();
    Ok(keys)
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

/// The token's parts, decoded: header, claims, signed bytes, signature.
struct Parts<'t> {
    header: Header,
    claims: serde_json::Map<String, Value>,
    signed: &'t [u8],
    signature: Vec<u8>,
}

fn split(token: &str) -> Result<Parts<'_>, JwtError> {
    let mut pieces = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (pieces.next(), pieces.next(), pieces.next(), pieces.next())
    else {
        return Err(JwtError::Malformed);
    };
    let decode = |part: &str| {
        URL_SAFE_NO_PAD
            .decode(part)
            .map_err(|_| JwtError::Malformed)
    };
    let header: Header = serde_json::from_slice(&decode(h)?).map_err(|_| JwtError::Malformed)?;
    let claims = serde_json::from_slice(&decode(p)?).map_err(|_| JwtError::Malformed)?;
    Ok(Parts {
        header,
        claims,
        signed: &token.as_bytes()[..h.len() + 1 + p.len()],
        signature: decode(s)?,
    })
}

/// Whether a bearer credential looks like a JWT (rather than an API key).
pub fn looks_like_jwt(token: &str) -> bool {
    token.starts_with("eyJ") && token.bytes().filter(|b| *b == b'.').count() == 2
}

/// The `iss` of a token, unverified: which issuer's keys to use.
pub fn unverified_issuer(token: &str) -> Option<String> {
    let parts = split(token).ok()?;
    parts.claims.get("iss")?.as_str().map(str::to_string)
}

/// The `kid` of a token, unverified.
pub fn unverified_kid(token: &str) -> Option<String> {
    split(token).ok()?.header.kid
}

/// Verifies `token` as issued by `issuer` with one of `keys`, at `now_s`
/// (Unix seconds), and maps its claims to a principal.
pub fn verify(
    token: &str,
    issuer: &JwtIssuer,
    keys: &[Key],
    now_s: i64,
) -> Result<Principal, JwtError> {
    let parts = split(token)?;
    let alg = parts.header.alg.as_str();
    let candidates = keys
        .iter()
        .filter(|k| parts.header.kid.is_none() || k.kid.is_none() || k.kid == parts.header.kid);
    let mut matched = false;
    let mut verified = false;
    for key in candidates {
        if key.alg.as_deref().is_some_and(|a| a != alg) {
            continue;
        }
        let Some(ok) = check_signature(alg, &key.material, parts.signed, &parts.signature)? else {
            continue;
        };
        matched = true;
        if ok {
            verified = true;
            break;
        }
    }
    if !matched {
        return Err(JwtError::UnknownKey);
    }
    if !verified {
        return Err(JwtError::Signature);
    }
    let claims = &parts.claims;
    if claims.get("iss").and_then(Value::as_str) != Some(issuer.issuer.as_str()) {
        return Err(JwtError::Issuer);
    }
    if !issuer.audiences.is_empty() {
        let audience_ok = match claims.get("aud") {
            Some(Value::String(a)) => issuer.audiences.contains(a),
            Some(Value::Array(list)) => list
                .iter()
                .filter_map(Value::as_str)
                .any(|a| issuer.audiences.iter().any(|w| w == a)),
            _ => false,
        };
        if !audience_ok {
            return Err(JwtError::Audience);
        }
    }
    let exp = claims
        .get("exp")
        .and_then(Value::as_i64)
        .ok_or(JwtError::NoExpiry)?;
    if now_s > exp + LEEWAY_S {
        return Err(JwtError::Expired);
    }
    if let Some(nbf) = claims.get("nbf").and_then(Value::as_i64)
        && now_s + LEEWAY_S < nbf
    {
        return Err(JwtError::NotYetValid);
    }
    let user = claim(claims, &issuer.user_claim)
        .ok_or_else(|| JwtError::MissingClaim(issuer.user_claim.clone()))?;
    let optional = |name: &Option<String>| name.as_deref().and_then(|n| claim(claims, n));
    Ok(Principal {
        user,
        team: optional(&issuer.team_claim),
        app: optional(&issuer.app_claim),
        key: format!("jwt:{}", issuer.issuer),
        labels: issuer
            .label_claims
            .iter()
            .filter_map(|(label, name)| Some((label.clone(), claim(claims, name)?)))
            .collect(),
    })
}

/// A claim by dotted path, as text: strings as they are, numbers and
/// booleans printed, the first element of an array.
fn claim(claims: &serde_json::Map<String, Value>, path: &str) -> Option<String> {
    let mut parts = path.split('.');
    let mut value = claims.get(parts.next()?)?;
    for part in parts {
        value = value.get(part)?;
    }
    if let Value::Array(items) = value {
        value = items.first()?;
    }
    match value {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// `Ok(None)`: this key cannot check this algorithm. `Err`: the algorithm is
/// never accepted.
fn check_signature(
    alg: &str,
    key: &Material,
    signed: &[u8],
    signature: &[u8],
) -> Result<Option<bool>, JwtError> {
    let rsa = |params: &'static signature::RsaParameters| match key {
        Material::Rsa { n, e } => Some(
            RsaPublicKeyComponents { n, e }
                .verify(params, signed, signature)
                .is_ok(),
        ),
        _ => None,
    };
    let ec = |curve: &str, params: &'static signature::EcdsaVerificationAlgorithm| match key {
        Material::Ec { curve: c, point } if c == curve => Some(
            UnparsedPublicKey::new(params, point)
                .verify(signed, signature)
                .is_ok(),
        ),
        _ => None,
    };
    Ok(match alg {
        "RS256" => rsa(&signature::RSA_PKCS1_2048_8192_SHA256),
        "RS384" => rsa(&signature::RSA_PKCS1_2048_8192_SHA384),
        "RS512" => rsa(&signature::RSA_PKCS1_2048_8192_SHA512),
        "PS256" => rsa(&signature::RSA_PSS_2048_8192_SHA256),
        "PS384" => rsa(&signature::RSA_PSS_2048_8192_SHA384),
        "PS512" => rsa(&signature::RSA_PSS_2048_8192_SHA512),
        "ES256" => ec("P-256", &signature::ECDSA_P256_SHA256_FIXED),
        "ES384" => ec("P-384", &signature::ECDSA_P384_SHA384_FIXED),
        "EdDSA" => match key {
            Material::Ed25519(x) => Some(
                UnparsedPublicKey::new(&signature::ED25519, x)
                    .verify(signed, signature)
                    .is_ok(),
            ),
            _ => None,
        },
        other => return Err(JwtError::Algorithm(other.to_string())),
    })
}

/// Key sets by URL, shared by every request and kept across reloads.
#[derive(Default)]
pub struct JwksCache {
    sets: Mutex<HashMap<String, Fetched>>,
}

struct Fetched {
    keys: Arc<Vec<Key>>,
    at: tokio::time::Instant,
}

impl JwksCache {
    /// The keys of `source`: inline ones parsed, fetched ones from the cache
    /// unless stale, or `refresh` asks for a new copy (an unknown key id)
    /// and the last fetch is old enough.
    pub async fn keys(
        &self,
        source: &JwksSource,
        clients: &Clients,
        refresh: bool,
    ) -> Result<Arc<Vec<Key>>, JwtError> {
        let url = match source {
            JwksSource::Inline(text) => return parse_jwks(text).map(Arc::new),
            JwksSource::Url(url) => url,
        };
        let cached = {
            let sets = self.sets.lock().unwrap_or_else(PoisonError::into_inner);
            sets.get(url).map(|f| (f.keys.clone(), f.at.elapsed()))
        };
        if let Some((keys, age)) = &cached {
            let fresh = *age < JWKS_TTL && !(refresh && *age >= JWKS_MIN_REFETCH);
            if fresh {
                return Ok(keys.clone());
            }
        }
        match fetch(url, clients).await {
            Ok(keys) => {
                let keys = Arc::new(keys);
                let mut sets = self.sets.lock().unwrap_or_else(PoisonError::into_inner);
                sets.insert(
                    url.clone(),
                    Fetched {
                        keys: keys.clone(),
                        at: tokio::time::Instant::now(),
                    },
                );
                Ok(keys)
            }
            // An unreachable issuer: the last keys still serve.
            Err(error) => match cached {
                Some((keys, _)) => {
                    tracing::warn!(%url, %error, "JWKS fetch failed; using the cached keys");
                    Ok(keys)
                }
                None => Err(error),
            },
        }
    }
}

async fn fetch(url: &str, clients: &Clients) -> Result<Vec<Key>, JwtError> {
    let fail = |e: String| JwtError::Keys(e);
    let policy = EgressPolicy {
        allow_loopback: true,
        allow_link_local: false,
    };
    let uri = crate::providers::http::reachable_uri(url, policy).map_err(fail)?;
    let client = clients.pooled(JWKS_TIMEOUT.as_millis() as u64, policy);
    let request = http::Request::get(uri)
        .header(http::header::ACCEPT, "application/json")
        .body(http_body_util::Full::new(Bytes::new()))
        .map_err(|e| fail(e.to_string()))?;
    let deadline = tokio::time::Instant::now() + JWKS_TIMEOUT;
    let response = crate::providers::http::send(client, request, deadline)
        .await
        .map_err(|e| fail(e.to_string()))?;
    if !response.status().is_success() {
        return Err(fail(format!("status {}", response.status())));
    }
    let body = tokio::time::timeout_at(
        deadline,
        Limited::new(response.into_body(), JWKS_MAX_BYTES).collect(),
    )
    .await
    .map_err(|_| fail("timed out".into()))?
    .map_err(|e| fail(e.to_string()))?
    .to_bytes();
    let text = std::str::from_utf8(&body).map_err(|_| fail("not UTF-8".into()))?;
    parse_jwks(text)
}

/// Signing for tests (ring signs ES256 and EdDSA; the gateway only verifies).
#[cfg(any(test, feature = "test-support"))]
pub mod testing {
    use super::*;
    use ring::rand::SystemRandom;
    use ring::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair};

    pub enum Signer {
        Es256(EcdsaKeyPair),
        Ed(Ed25519KeyPair),
    }

    impl Signer {
        pub fn es256() -> Self {
            let rng = SystemRandom::new();
            let pkcs8 =
                EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                    .unwrap();
            Signer::Es256(
                EcdsaKeyPair::from_pkcs8(
                    &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                    pkcs8.as_ref(),
                    &rng,
                )
                .unwrap(),
            )
        }

        pub fn ed25519() -> Self {
            let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
            Signer::Ed(Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap())
        }

        /// The public key as a JWK with this `kid`.
        pub fn jwk(&self, kid: &str) -> Value {
            let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
            match self {
                Signer::Es256(pair) => {
                    let point = pair.public_key().as_ref();
                    serde_json::json!({"kty": "EC", "crv": "P-256", "kid": kid, "use": "sig",
                        "x": b64(&point[1..33]), "y": b64(&point[33..65])})
                }
                Signer::Ed(pair) => serde_json::json!({"kty": "OKP", "crv": "Ed25519", "kid": kid,
                    "x": b64(pair.public_key().as_ref())}),
            }
        }

        pub fn alg(&self) -> &'static str {
            match self {
                Signer::Es256(_) => "ES256",
                Signer::Ed(_) => "EdDSA",
            }
        }

        /// A signed token with this header `kid` and these claims.
        pub fn token(&self, kid: &str, claims: &Value) -> String {
            let b64 = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
            let header = serde_json::json!({"alg": self.alg(), "typ": "JWT", "kid": kid});
            let signed = format!("{}.{}", b64(&header), b64(claims));
            let signature = match self {
                Signer::Es256(pair) => pair
                    .sign(&SystemRandom::new(), signed.as_bytes())
                    .unwrap()
                    .as_ref()
                    .to_vec(),
                Signer::Ed(pair) => pair.sign(signed.as_bytes()).as_ref().to_vec(),
            };
            format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::Signer;
    use super::*;

    const NOW: i64 = 1_796_603_400;

    fn issuer() -> JwtIssuer {
        JwtIssuer {
            issuer: "https://idp.example".into(),
            audiences: vec!["tollgate".into()],
            jwks: JwksSource::Inline(String::new()),
            user_claim: "sub".into(),
            team_claim: Some("groups".into()),
            app_claim: Some("azp".into()),
            label_claims: [("tier".to_string(), "org.tier".to_string())].into(),
        }
    }

    fn claims() -> Value {
        serde_json::json!({"iss": "https://idp.example", "aud": ["other", "tollgate"], "sub": "ann",
            "groups": ["search", "all"], "azp": "ranker", "org": {"tier": "gold"}, "exp": NOW + 600})
    }

    fn keys(signer: &Signer, kid: &str) -> Vec<Key> {
        parse_jwks(&serde_json::json!({"keys": [signer.jwk(kid)]}).to_string()).unwrap()
    }

    #[test]
    fn a_valid_token_maps_its_claims_to_a_principal() {
        for signer in [Signer::es256(), Signer::ed25519()] {
            let token = signer.token("k1", &claims());
            assert!(looks_like_jwt(&token));
            let principal = verify(&token, &issuer(), &keys(&signer, "k1"), NOW).unwrap();
            assert_eq!(principal.user, "ann");
            assert_eq!(principal.team.as_deref(), Some("search"));
            assert_eq!(principal.app.as_deref(), Some("ranker"));
            assert_eq!(principal.labels["tier"], "gold");
            assert_eq!(principal.key, "jwt:https://idp.example");
        }
    }

    #[test]
    fn every_check_refuses_what_it_should() {
        let signer = Signer::es256();
        let keys = keys(&signer, "k1");
        let with = |patch: Value| {
            let mut c = claims();
            for (k, v) in patch.as_object().unwrap() {
                if v.is_null() {
                    c.as_object_mut().unwrap().remove(k);
                } else {
                    c[k] = v.clone();
                }
            }
            verify(&signer.token("k1", &c), &issuer(), &keys, NOW)
        };
        assert_eq!(
            with(serde_json::json!({"exp": NOW - 61})),
            Err(JwtError::Expired)
        );
        assert!(with(serde_json::json!({"exp": NOW - 59})).is_ok(), "leeway");
        assert_eq!(
            with(serde_json::json!({"exp": null})),
            Err(JwtError::NoExpiry)
        );
        assert_eq!(
            with(serde_json::json!({"nbf": NOW + 120})),
            Err(JwtError::NotYetValid)
        );
        assert_eq!(
            with(serde_json::json!({"iss": "https://evil"})),
            Err(JwtError::Issuer)
        );
        assert_eq!(
            with(serde_json::json!({"aud": "other"})),
            Err(JwtError::Audience)
        );
        assert_eq!(
            with(serde_json::json!({"sub": null})),
            Err(JwtError::MissingClaim("sub".into()))
        );

        // A tampered payload, another key, another kid.
        let token = signer.token("k1", &claims());
        let (head, rest) = token.split_once('.').unwrap();
        let (_, sig) = rest.split_once('.').unwrap();
        let forged_claims = serde_json::json!({"iss": "https://idp.example", "aud": "tollgate", "sub": "admin", "exp": NOW + 600});
        let forged = format!(
            "{head}.{}.{sig}",
            URL_SAFE_NO_PAD.encode(forged_claims.to_string())
        );
        assert_eq!(
            verify(&forged, &issuer(), &keys, NOW),
            Err(JwtError::Signature)
        );
        let other = Signer::es256();
        assert_eq!(
            verify(&other.token("k1", &claims()), &issuer(), &keys, NOW),
            Err(JwtError::Signature)
        );
        assert_eq!(
            verify(&signer.token("k2", &claims()), &issuer(), &keys, NOW),
            Err(JwtError::UnknownKey)
        );
        // An EdDSA token against an EC key: no key can check it.
        let ed = Signer::ed25519();
        assert_eq!(
            verify(&ed.token("k1", &claims()), &issuer(), &keys, NOW),
            Err(JwtError::UnknownKey)
        );
    }

    #[test]
    fn none_and_hmac_algorithms_are_refused() {
        let b64 = |v: Value| URL_SAFE_NO_PAD.encode(v.to_string());
        let signer = Signer::es256();
        for alg in ["none", "HS256"] {
            let token = format!(
                "{}.{}.{}",
                b64(serde_json::json!({"alg": alg, "kid": "k1"})),
                b64(claims()),
                URL_SAFE_NO_PAD.encode(b"sig")
            );
            assert_eq!(
                verify(&token, &issuer(), &keys(&signer, "k1"), NOW),
                Err(JwtError::Algorithm(alg.into()))
            );
        }
        assert_eq!(
            verify("not.a-token", &issuer(), &[], NOW),
            Err(JwtError::Malformed)
        );
    }
}
