//! What kind of token a token file holds, when it expires, and whether a Plex JWT really comes from plex.tv.
//!
//! A legacy account token is an opaque string of about 20 characters; a Plex JWT is three base64url parts, the
//! middle one JSON claims with `exp`. Only the latter can (and must) be renewed.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use super::device_key::PublicJwk;
use super::PlexTvError;

/// What a token is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// A long-lived account token: nothing to renew.
    Legacy,
    /// A Plex JWT; `expires_at` from its `exp` claim (None when it has none).
    Jwt { expires_at: Option<SystemTime> },
}

#[derive(Deserialize)]
struct Expiry {
    #[serde(default)]
    exp: Option<u64>,
}

/// Claims plex.tv puts in a Plex JWT that the bridge checks.
#[derive(Debug, Deserialize)]
pub struct PlexClaims {
    pub iss: String,
    pub exp: u64,
}

impl TokenKind {
    /// Tells the kind of `token` without trusting it (no signature check: this only decides whether and when
    /// to renew; the token's power is checked by PMS itself).
    pub fn of(token: &str) -> TokenKind {
        if token.split('.').count() != 3 {
            return TokenKind::Legacy;
        }
        match jsonwebtoken::dangerous::insecure_decode::<Expiry>(token) {
            // `checked_add`: the claim is unverified input, and an absurd `exp` must not overflow.
            Ok(data) => TokenKind::Jwt {
                expires_at: data.claims.exp.and_then(|s| UNIX_EPOCH.checked_add(Duration::from_secs(s))),
            },
            Err(_) => TokenKind::Legacy,
        }
    }

    /// A word for logs and `check`: `legacy` or `jwt`.
    pub fn name(self) -> &'static str {
        match self {
            TokenKind::Legacy => "legacy",
            TokenKind::Jwt { .. } => "jwt",
        }
    }
}

/// Checks that `token` is a Plex JWT signed by one of plex.tv's `keys` (matched by `kid`), issued by `plex.tv`
/// and not expired. A token that fails is never written over a working one.
pub fn verify_plex_jwt(token: &str, keys: &[PublicJwk]) -> Result<PlexClaims, PlexTvError> {
    super::crypto::install();
    let fail = |why: String| PlexTvError::BadToken(why);
    let header = jsonwebtoken::decode_header(token).map_err(|e| fail(format!("not a JWT ({e})")))?;
    if header.alg != Algorithm::EdDSA {
        return Err(fail(format!("signed with {:?}, not EdDSA", header.alg)));
    }
    let key = keys
        .iter()
        .find(|k| header.kid.is_none() || header.kid.as_deref() == Some(k.kid.as_str()))
        .ok_or_else(|| fail("signed with a key plex.tv does not list".into()))?;
    let decoding = DecodingKey::from_ed_components(&key.x).map_err(|e| fail(format!("plex.tv key unusable ({e})")))?;
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.set_issuer(&["plex.tv"]);
    validation.validate_aud = false;
    validation.set_required_spec_claims(&["exp", "iss"]);
    jsonwebtoken::decode::<PlexClaims>(token, &decoding, &validation)
        .map(|data| data.claims)
        .map_err(|e| fail(format!("failed verification ({e})")))
}

/// Seconds since the Unix epoch, for claims.
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds() {
        assert_eq!(TokenKind::of("abcdefghij0123456789"), TokenKind::Legacy);
        assert_eq!(TokenKind::of("a.b.c"), TokenKind::Legacy, "not base64 JSON");
        // {"alg":"EdDSA"} . {"exp":2000000000} . sig
        let jwt = "eyJhbGciOiJFZERTQSJ9.eyJleHAiOjIwMDAwMDAwMDB9.c2ln";
        // {"exp": 2^63}: no overflow panic, just no usable expiry.
        let absurd = "eyJhbGciOiJFZERTQSJ9.eyJleHAiOjkyMjMzNzIwMzY4NTQ3NzU4MDh9.c2ln";
        assert_eq!(TokenKind::of(absurd), TokenKind::Jwt { expires_at: None });
        assert_eq!(
            TokenKind::of(jwt),
            TokenKind::Jwt { expires_at: Some(UNIX_EPOCH + Duration::from_secs(2_000_000_000)) }
        );
    }
}
