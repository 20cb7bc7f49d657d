//! The device's Ed25519 key: what lets the bridge renew a Plex JWT without the user.
//!
//! plex.tv registers the public half (a JWK) once, at `login`; afterwards every renewal is a short client JWT
//! signed with the private half. The key file holds the private key (PKCS#8, base64url), its key id and the
//! `X-Plex-Client-Identifier` it was registered with (plex.tv ties the key to that identifier, so renewals must
//! send the same one whatever the bridge's own `plex.client_identifier` is). It is written with mode 0600, like
//! the token, and checked on every load: a file whose key, key id or fields do not agree is refused with a
//! clear error instead of producing signatures plex.tv would reject.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair as _};
use serde::{Deserialize, Serialize};

use super::PlexTvError;

/// How long a client JWT is valid: plex.tv only needs it for the one exchange it is made for.
const CLIENT_JWT_LIFETIME: Duration = Duration::from_secs(300);
/// The scope asked for: what Plex's own clients ask for (docs/plex-protocol.md, "plex.tv: getting and renewing a token").
const SCOPE: &str = "username,email,friendly_name";

/// A loaded, checked device key.
pub struct DeviceKey {
    pair: Ed25519KeyPair,
    pkcs8: Vec<u8>,
    kid: String,
    client_identifier: String,
}

impl std::fmt::Debug for DeviceKey {
    /// Never the private key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceKey").field("kid", &self.kid).field("client_identifier", &self.client_identifier).finish()
    }
}

/// The file's shape.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    kty: String,
    crv: String,
    kid: String,
    client_identifier: String,
    /// PKCS#8 v2 document of the key pair, base64url without padding.
    private_key: String,
}

/// The public key as plex.tv registers it (`POST /api/v2/auth/jwk`, or the `jwk` of a PIN).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicJwk {
    pub kty: String,
    pub crv: String,
    pub x: String,
    #[serde(rename = "use")]
    pub use_: String,
    pub alg: String,
    pub kid: String,
}

/// The claims of a client JWT (docs/plex-protocol.md, "The device key": nonce, scope, aud, iss, iat, exp).
#[derive(Debug, Serialize, Deserialize)]
pub struct ClientClaims {
    pub nonce: String,
    pub scope: String,
    pub aud: String,
    pub iss: String,
    pub iat: u64,
    pub exp: u64,
}

impl DeviceKey {
    /// A new random key for `client_identifier`.
    pub fn generate(client_identifier: &str) -> Result<DeviceKey, PlexTvError> {
        let document = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
            .map_err(|_| PlexTvError::Key("the system random generator failed".into()))?;
        let pkcs8 = document.as_ref().to_vec();
        let pair = Ed25519KeyPair::from_pkcs8(&pkcs8).map_err(|_| PlexTvError::Key("generated key unusable".into()))?;
        let kid = key_id(pair.public_key().as_ref());
        Ok(DeviceKey { pair, pkcs8, kid, client_identifier: client_identifier.to_owned() })
    }

    /// Reads and checks a key file.
    pub fn load(path: &Path) -> Result<DeviceKey, PlexTvError> {
        let bad = |what: &str| {
            PlexTvError::Key(format!(
                "the device key file {} {what}; run `plex-mqtt-bridge login` again to make a new one",
                path.display()
            ))
        };
        let text = std::fs::read_to_string(path).map_err(|e| bad(&format!("cannot be read ({e})")))?;
        let file: KeyFile = serde_json::from_str(&text).map_err(|_| bad("is not a device key file of this bridge"))?;
        if file.kty != "OKP" || file.crv != "Ed25519" {
            return Err(bad("holds a key that is not Ed25519"));
        }
        if file.client_identifier.trim().is_empty() {
            return Err(bad("has no client identifier"));
        }
        let pkcs8 = URL_SAFE_NO_PAD.decode(file.private_key.trim()).map_err(|_| bad("holds a damaged key"))?;
        // `from_pkcs8` checks that the embedded public key belongs to the private key.
        let pair = Ed25519KeyPair::from_pkcs8(&pkcs8).map_err(|_| bad("holds a damaged key"))?;
        let kid = key_id(pair.public_key().as_ref());
        if kid != file.kid {
            return Err(bad("was changed (its key id does not match its key)"));
        }
        Ok(DeviceKey { pair, pkcs8, kid, client_identifier: file.client_identifier })
    }

    /// Writes the key file atomically with mode 0600.
    pub fn save(&self, path: &Path) -> Result<(), PlexTvError> {
        let file = KeyFile {
            kty: "OKP".into(),
            crv: "Ed25519".into(),
            kid: self.kid.clone(),
            client_identifier: self.client_identifier.clone(),
            private_key: URL_SAFE_NO_PAD.encode(&self.pkcs8),
        };
        let text = serde_json::to_string_pretty(&file).map_err(|e| PlexTvError::Key(e.to_string()))? + "\n";
        crate::atomic_file::write_private(path, text.as_bytes())
            .map_err(|e| PlexTvError::Key(format!("cannot write the device key file {}: {e}", path.display())))
    }

    /// The key id (`kid`): the first 16 bytes of the public key's SHA-256, base64url.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The `X-Plex-Client-Identifier` the key belongs to.
    pub fn client_identifier(&self) -> &str {
        &self.client_identifier
    }

    /// The public JWK to register.
    pub fn public_jwk(&self) -> PublicJwk {
        PublicJwk {
            kty: "OKP".into(),
            crv: "Ed25519".into(),
            x: URL_SAFE_NO_PAD.encode(self.pair.public_key().as_ref()),
            use_: "sig".into(),
            alg: "EdDSA".into(),
            kid: self.kid.clone(),
        }
    }

    /// A client JWT over plex.tv's `nonce`, valid for a few minutes.
    pub fn client_jwt(&self, nonce: &str) -> Result<String, PlexTvError> {
        super::crypto::install();
        let iat = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let claims = ClientClaims {
            nonce: nonce.to_owned(),
            scope: SCOPE.to_owned(),
            aud: "plex.tv".to_owned(),
            iss: self.client_identifier.clone(),
            iat,
            exp: iat + CLIENT_JWT_LIFETIME.as_secs(),
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.typ = Some("JWT".to_owned());
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, &claims, &EncodingKey::from_ed_der(&self.pkcs8))
            .map_err(|e| PlexTvError::Key(format!("cannot sign the client JWT: {e}")))
    }
}

fn key_id(public_key: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, public_key);
    URL_SAFE_NO_PAD.encode(&digest.as_ref()[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_key_loads_and_signs_verifiable_client_jwts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.json");
        let key = DeviceKey::generate("client-1").unwrap();
        key.save(&path).unwrap();
        let loaded = DeviceKey::load(&path).unwrap();
        assert_eq!(loaded.kid(), key.kid());
        assert_eq!(loaded.public_jwk(), key.public_jwk());
        let jwt = loaded.client_jwt("n-1").unwrap();
        super::super::crypto::install();
        let decoding = jsonwebtoken::DecodingKey::from_ed_components(&key.public_jwk().x).unwrap();
        let mut validation = jsonwebtoken::Validation::new(Algorithm::EdDSA);
        validation.set_audience(&["plex.tv"]);
        validation.set_issuer(&["client-1"]);
        let data = jsonwebtoken::decode::<ClientClaims>(&jwt, &decoding, &validation).unwrap();
        assert_eq!(data.claims.nonce, "n-1");
        assert_eq!(data.header.kid.as_deref(), Some(key.kid()));
        // Another key's public half does not verify it.
        let other = DeviceKey::generate("client-1").unwrap();
        let wrong = jsonwebtoken::DecodingKey::from_ed_components(&other.public_jwk().x).unwrap();
        assert!(jsonwebtoken::decode::<ClientClaims>(&jwt, &wrong, &validation).is_err());
        assert!(!format!("{loaded:?}").contains(&URL_SAFE_NO_PAD.encode(&key.pkcs8)));
    }

    #[test]
    fn a_tampered_key_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.json");
        DeviceKey::generate("c").unwrap().save(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let mut file: serde_json::Value = serde_json::from_str(&text).unwrap();
        // Another valid key under the old kid.
        let other = DeviceKey::generate("c").unwrap();
        file["private_key"] = URL_SAFE_NO_PAD.encode(&other.pkcs8).into();
        std::fs::write(&path, file.to_string()).unwrap();
        let error = DeviceKey::load(&path).unwrap_err().to_string();
        assert!(error.contains("was changed"), "{error}");
        // A flipped byte.
        let mut bytes = other.pkcs8.clone();
        bytes[20] ^= 0xff;
        file["private_key"] = URL_SAFE_NO_PAD.encode(&bytes).into();
        std::fs::write(&path, file.to_string()).unwrap();
        let error = DeviceKey::load(&path).unwrap_err().to_string();
        assert!(error.contains("damaged") || error.contains("was changed"), "{error}");
        std::fs::write(&path, "garbage").unwrap();
        assert!(DeviceKey::load(&path).unwrap_err().to_string().contains("login"));
    }
}
