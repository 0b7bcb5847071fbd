//! Authentication for every API: RS256 JWTs with key ids and rotation, argon2 password
//! hashes, users and service clients with roles from a users file.
//!
//! Keys: `auth.signing_keys` lists PEM private keys; the last signs, all verify (so appending
//! a key rotates: old tokens stay valid until they expire). A key's id (`kid`) is derived from
//! its public key, so it is stable across restarts and replicas sharing the files.
//!
//! Users file (`auth.users_file`, TOML):
//!
//! ```toml
//! [[user]]
//! name = "ana"
//! password_hash = "$argon2id$v=19$m=19456,t=2,p=1$..."   # driftwood auth hash-password
//! roles = ["viewer"]
//!
//! [[client]]            # OAuth2 client_credentials
//! id = "scoring-service"
//! secret_hash = "$argon2id$..."
//! roles = ["predictor"]
//! ```

use std::collections::HashMap;
use std::sync::{PoisonError, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString, rand_core::OsRng};
use jsonwebtoken::jwk::{Jwk, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use schemas::auth::{AuthError, Authenticator, IssuedToken, Principal, Role};
use schemas::config::AuthConfig;
use serde::{Deserialize, Serialize};

/// A problem with the auth set-up (keys, users file): refused at start-up. The file and the
/// failing step are in the message; the library's error is kept as the source.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("auth set-up: cannot read {path}")]
    Read { path: String, source: std::io::Error },
    #[error("auth set-up: signing key {path}")]
    Key { path: String, source: KeyError },
    #[error("auth set-up: users file {path}")]
    Users { path: String, source: UsersError },
    #[error("auth set-up")]
    Hash(#[from] HashError),
}

/// Why a PEM file is not a usable RS256 signing key.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("not an RSA private key in PEM")]
    NotRsaPem(#[source] jsonwebtoken::errors::Error),
    #[error("cannot derive its public key (JWK) and key id")]
    Public(#[source] jsonwebtoken::errors::Error),
}

/// Why a users file is refused.
#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    #[error("not a valid users file")]
    Syntax(#[from] toml::de::Error),
    #[error("{kind} `{name}`: {field} is not a PHC hash string")]
    NotAHash { kind: &'static str, name: String, field: &'static str, source: argon2::password_hash::Error },
}

/// Hashing a password failed (argon2 refused its parameters or salt).
#[derive(Debug, thiserror::Error)]
#[error("cannot hash the password")]
pub struct HashError(#[source] argon2::password_hash::Error);

/// The claims of a Driftwood access token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub roles: Vec<Role>,
    pub iss: String,
    pub aud: String,
    pub iat: u64,
    pub exp: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersFile {
    #[serde(default)]
    user: Vec<UserEntry>,
    #[serde(default)]
    client: Vec<ClientEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserEntry {
    name: String,
    password_hash: String,
    roles: Vec<Role>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientEntry {
    id: String,
    secret_hash: String,
    roles: Vec<Role>,
}

#[derive(Debug, Clone)]
struct Account {
    hash: String,
    roles: Vec<Role>,
}

struct SigningKey {
    kid: String,
    key: EncodingKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey").field("kid", &self.kid).finish_non_exhaustive()
    }
}

/// The one [`Authenticator`] of a Driftwood process.
#[derive(Debug)]
pub struct JwtAuth {
    enabled: bool,
    issuer: String,
    audience: String,
    ttl_secs: u64,
    signer: Option<SigningKey>,
    verifiers: HashMap<String, DecodingKey>,
    jwks: JwkSet,
    users: HashMap<String, Account>,
    clients: HashMap<String, Account>,
    /// Verified against when the user is unknown, so both cases cost the same time.
    dummy_hash: String,
    verified: VerifiedTokens,
}

/// Tokens already verified, each with its principal and `exp`. A client sends the same token
/// with every request until it expires, and an RS256 verification costs ~100 µs of pure-Rust
/// RSA: more than the rest of a predict request. A token is answered from here only
/// before its `exp`; one that differs in any byte (tampered, re-signed) is another key and is
/// verified in full; only tokens that passed every check are kept.
#[derive(Default)]
struct VerifiedTokens(RwLock<HashMap<Box<str>, (Principal, u64)>>);

/// Most tokens kept; when full, the expired ones go, and if none had expired, all of them.
const VERIFIED_TOKENS: usize = 16_384;

impl VerifiedTokens {
    fn get(&self, token: &str, now: u64) -> Option<Principal> {
        let tokens = self.0.read().unwrap_or_else(PoisonError::into_inner);
        tokens.get(token).filter(|(_, exp)| now < *exp).map(|(p, _)| p.clone())
    }

    fn insert(&self, token: &str, principal: Principal, exp: u64, now: u64) {
        let mut tokens = self.0.write().unwrap_or_else(PoisonError::into_inner);
        if tokens.len() >= VERIFIED_TOKENS {
            tokens.retain(|_, (_, exp)| now < *exp);
            if tokens.len() >= VERIFIED_TOKENS {
                tokens.clear();
            }
        }
        tokens.insert(token.into(), (principal, exp));
    }

    fn len(&self) -> usize {
        self.0.read().unwrap_or_else(PoisonError::into_inner).len()
    }
}

/// Tokens are secrets: only their number is shown.
impl std::fmt::Debug for VerifiedTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VerifiedTokens({})", self.len())
    }
}

impl JwtAuth {
    /// Loads keys and the users file named by the configuration; with `auth.enabled = false`
    /// nothing is loaded and every request is an anonymous admin.
    pub fn from_config(config: &AuthConfig) -> Result<JwtAuth, SetupError> {
        let mut auth = JwtAuth {
            enabled: config.enabled,
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            ttl_secs: config.token_ttl_secs,
            signer: None,
            verifiers: HashMap::new(),
            jwks: JwkSet { keys: Vec::new() },
            users: HashMap::new(),
            clients: HashMap::new(),
            dummy_hash: hash_password("not a password")?,
            verified: VerifiedTokens::default(),
        };
        if !config.enabled {
            return Ok(auth);
        }
        for path in &config.signing_keys {
            let pem =
                std::fs::read(path).map_err(|source| SetupError::Read { path: path.clone(), source })?;
            auth.add_key(&pem).map_err(|source| SetupError::Key { path: path.clone(), source })?;
        }
        let path = &config.users_file;
        let text = std::fs::read_to_string(path)
            .map_err(|source| SetupError::Read { path: path.clone(), source })?;
        auth.load_users(&text).map_err(|source| SetupError::Users { path: path.clone(), source })?;
        Ok(auth)
    }

    /// Adds an RS256 private key; it becomes the signing key (the previous ones still verify).
    pub fn add_key(&mut self, pem: &[u8]) -> Result<String, KeyError> {
        let key = EncodingKey::from_rsa_pem(pem).map_err(KeyError::NotRsaPem)?;
        let mut jwk = Jwk::from_encoding_key(&key, Algorithm::RS256).map_err(KeyError::Public)?;
        let thumbprint =
            jwk.thumbprint(jsonwebtoken::jwk::ThumbprintHash::SHA256).map_err(KeyError::Public)?;
        let kid: String = thumbprint.chars().take(16).collect();
        jwk.common.key_id = Some(kid.clone());
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        jwk.common.key_algorithm = Some(KeyAlgorithm::RS256);
        let decoding = DecodingKey::from_jwk(&jwk).map_err(KeyError::Public)?;
        if !self.verifiers.contains_key(&kid) {
            self.jwks.keys.push(jwk);
        }
        self.verifiers.insert(kid.clone(), decoding);
        self.signer = Some(SigningKey { kid: kid.clone(), key });
        Ok(kid)
    }

    fn load_users(&mut self, text: &str) -> Result<(), UsersError> {
        let file: UsersFile = toml::from_str(text)?;
        for u in file.user {
            PasswordHash::new(&u.password_hash).map_err(|source| UsersError::NotAHash {
                kind: "user",
                name: u.name.clone(),
                field: "password_hash",
                source,
            })?;
            self.users.insert(u.name, Account { hash: u.password_hash, roles: u.roles });
        }
        for c in file.client {
            PasswordHash::new(&c.secret_hash).map_err(|source| UsersError::NotAHash {
                kind: "client",
                name: c.id.clone(),
                field: "secret_hash",
                source,
            })?;
            self.clients.insert(c.id, Account { hash: c.secret_hash, roles: c.roles });
        }
        Ok(())
    }

    /// The public keys as a JWKS document (`/.well-known/jwks.json`).
    pub fn jwks(&self) -> &JwkSet {
        &self.jwks
    }

    /// The id of the key new tokens are signed with.
    pub fn signing_kid(&self) -> Option<&str> {
        self.signer.as_ref().map(|s| s.kid.as_str())
    }

    /// OAuth2 client_credentials grant.
    pub fn client_credentials(&self, client_id: &str, secret: &str) -> Result<IssuedToken, AuthError> {
        let account = self.check(&self.clients, client_id, secret, "client id or secret")?;
        self.issue(client_id, &account.roles)
    }

    /// Signs a token for `subject` with `roles`.
    pub fn issue(&self, subject: &str, roles: &[Role]) -> Result<IssuedToken, AuthError> {
        let signer =
            self.signer.as_ref().ok_or_else(|| AuthError::Unavailable("no signing key loaded".into()))?;
        let now = now_secs();
        let claims = Claims {
            sub: subject.to_string(),
            roles: roles.to_vec(),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            iat: now,
            exp: now + self.ttl_secs,
        };
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(signer.kid.clone());
        let token = jsonwebtoken::encode(&header, &claims, &signer.key)
            .map_err(|e| AuthError::Unavailable(format!("cannot sign a token: {e}")))?;
        Ok(IssuedToken { token, expires_in_secs: self.ttl_secs })
    }

    fn check<'a>(
        &self,
        accounts: &'a HashMap<String, Account>,
        name: &str,
        secret: &str,
        what: &str,
    ) -> Result<&'a Account, AuthError> {
        let account = accounts.get(name);
        let hash = account.map_or(self.dummy_hash.as_str(), |a| a.hash.as_str());
        let parsed = PasswordHash::new(hash).map_err(|e| AuthError::Unavailable(e.to_string()))?;
        let ok = Argon2::default().verify_password(secret.as_bytes(), &parsed).is_ok();
        match account {
            Some(a) if ok => Ok(a),
            _ => Err(AuthError::Unauthenticated(format!("invalid {what}"))),
        }
    }
}

impl Authenticator for JwtAuth {
    fn enabled(&self) -> bool {
        self.enabled
    }

    fn login(&self, user: &str, password: &str) -> Result<IssuedToken, AuthError> {
        if !self.enabled {
            return Err(AuthError::Unavailable("authentication is disabled (auth.enabled = false)".into()));
        }
        let account = self.check(&self.users, user, password, "user name or password")?;
        self.issue(user, &account.roles)
    }

    fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let now = now_secs();
        if let Some(principal) = self.verified.get(token, now) {
            return Ok(principal);
        }
        let bad = |m: String| AuthError::Unauthenticated(m);
        let header = jsonwebtoken::decode_header(token).map_err(|e| bad(format!("malformed token: {e}")))?;
        if header.alg != Algorithm::RS256 {
            return Err(bad(format!("token algorithm {:?} is not accepted (RS256 only)", header.alg)));
        }
        let kid = header.kid.ok_or_else(|| bad("token has no key id".into()))?;
        let key = self.verifiers.get(&kid).ok_or_else(|| bad(format!("unknown key id `{kid}`")))?;
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = 5;
        let data = jsonwebtoken::decode::<Claims>(token, key, &validation)
            .map_err(|e| bad(format!("invalid token: {e}")))?;
        let principal = Principal { subject: data.claims.sub, roles: data.claims.roles };
        self.verified.insert(token, principal.clone(), data.claims.exp, now);
        Ok(principal)
    }
}

/// An argon2id PHC hash of `password` with a random salt (for the users file).
pub fn hash_password(password: &str) -> Result<String, HashError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default().hash_password(password.as_bytes(), &salt).map(|h| h.to_string()).map_err(HashError)
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two 2048-bit RSA keys generated once with `openssl genpkey -algorithm RSA`
    /// (test fixtures; never used outside tests).
    fn fixture_key(n: usize) -> Vec<u8> {
        let path = format!("{}/tests/fixtures/jwt-key-{n}.pem", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn auth_with_users() -> JwtAuth {
        let mut auth = JwtAuth::from_config(&AuthConfig::default()).unwrap();
        auth.enabled = true;
        auth.add_key(&fixture_key(1)).unwrap();
        let text = format!(
            "[[user]]\nname = \"ana\"\npassword_hash = \"{}\"\nroles = [\"viewer\"]\n\
             [[user]]\nname = \"nobody\"\npassword_hash = \"{}\"\nroles = []\n\
             [[client]]\nid = \"svc\"\nsecret_hash = \"{}\"\nroles = [\"predictor\"]\n",
            hash_password("s3cret").unwrap(),
            hash_password("x").unwrap(),
            hash_password("client-secret").unwrap()
        );
        auth.load_users(&text).unwrap();
        auth
    }

    /// The error's message and its sources, as `{:#}` of anyhow prints them.
    fn chain(e: &dyn std::error::Error) -> String {
        let mut out = e.to_string();
        let mut source = e.source();
        while let Some(s) = source {
            out.push_str(&format!(": {s}"));
            source = s.source();
        }
        out
    }

    #[test]
    fn set_up_errors_name_the_file_and_keep_the_cause() {
        let dir = std::env::temp_dir().join(format!("driftwood-auth-setup-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (key, users) = (dir.join("key.pem"), dir.join("users.toml"));
        std::fs::write(&key, "-----BEGIN PRIVATE KEY-----\nnot base64\n-----END PRIVATE KEY-----\n").unwrap();
        std::fs::write(&users, "[[user]]\nname = \"ana\"\npassword_hash = \"plain\"\nroles = []\n").unwrap();
        let config = |signing: &std::path::Path| AuthConfig {
            enabled: true,
            signing_keys: vec![signing.display().to_string()],
            users_file: users.display().to_string(),
            ..AuthConfig::default()
        };
        let err = JwtAuth::from_config(&config(&key)).unwrap_err();
        assert!(matches!(err, SetupError::Key { source: KeyError::NotRsaPem(_), .. }), "{err:?}");
        assert!(chain(&err).contains("key.pem: not an RSA private key in PEM: "), "{}", chain(&err));

        let missing = dir.join("absent.pem");
        let err = JwtAuth::from_config(&config(&missing)).unwrap_err();
        assert!(
            matches!(&err, SetupError::Read { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
        );

        std::fs::write(&key, fixture_key(1)).unwrap();
        let err = JwtAuth::from_config(&config(&key)).unwrap_err();
        let text = chain(&err);
        assert!(matches!(err, SetupError::Users { source: UsersError::NotAHash { .. }, .. }), "{text}");
        assert!(text.contains("users.toml: user `ana`: password_hash is not a PHC hash string: "), "{text}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn login_issues_a_token_that_verifies_with_the_roles() {
        let auth = auth_with_users();
        let t = auth.login("ana", "s3cret").unwrap();
        let p = auth.verify(&t.token).unwrap();
        assert_eq!(p, Principal { subject: "ana".into(), roles: vec![Role::Viewer] });
        assert!(auth.authorize(Some(&t.token), Role::Viewer).is_ok());
        assert!(matches!(auth.authorize(Some(&t.token), Role::Admin), Err(AuthError::Forbidden(_))));
        let none = auth.login("nobody", "x").unwrap();
        assert!(matches!(auth.authorize(Some(&none.token), Role::Viewer), Err(AuthError::Forbidden(_))));
        let c = auth.client_credentials("svc", "client-secret").unwrap();
        assert_eq!(auth.verify(&c.token).unwrap().roles, vec![Role::Predictor]);
    }

    #[test]
    fn bad_credentials_and_bad_tokens_are_refused() {
        let auth = auth_with_users();
        assert!(matches!(auth.login("ana", "wrong"), Err(AuthError::Unauthenticated(_))));
        assert!(matches!(auth.login("bob", "s3cret"), Err(AuthError::Unauthenticated(_))));
        assert!(matches!(auth.client_credentials("svc", "s3cret"), Err(AuthError::Unauthenticated(_))));
        assert!(matches!(auth.authorize(None, Role::Viewer), Err(AuthError::Unauthenticated(_))));
        let good = auth.login("ana", "s3cret").unwrap().token;
        // Tampered payload: same header and signature, other claims.
        let parts: Vec<&str> = good.split('.').collect();
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut claims: serde_json::Value = serde_json::from_slice(&b64.decode(parts[1]).unwrap()).unwrap();
        claims["roles"] = serde_json::json!(["admin"]);
        let tampered = format!("{}.{}.{}", parts[0], b64.encode(claims.to_string()), parts[2]);
        assert!(auth.verify(&tampered).unwrap_err().to_string().contains("invalid token"));
        // alg none.
        let none_header = b64.encode(r#"{"alg":"none","typ":"JWT"}"#);
        let unsigned = format!("{none_header}.{}.", parts[1]);
        assert!(matches!(auth.verify(&unsigned), Err(AuthError::Unauthenticated(_))));
        // HS256 "signed" with the public key (the classic key-confusion attack).
        let jwk = &auth.jwks().keys[0];
        let mut hs = Header::new(Algorithm::HS256);
        hs.kid = jwk.common.key_id.clone();
        let secret = serde_json::to_vec(jwk).unwrap();
        let confused =
            jsonwebtoken::encode(&hs, &claims, &EncodingKey::from_secret(&secret).unwrap()).unwrap();
        assert!(auth.verify(&confused).unwrap_err().to_string().contains("HS256"));
        // Wrong audience / issuer / expired, signed with our own key.
        for (field, value) in [
            ("aud", serde_json::json!("other")),
            ("iss", serde_json::json!("evil")),
            ("exp", serde_json::json!(1000)),
        ] {
            let mut c: serde_json::Value = serde_json::from_slice(&b64.decode(parts[1]).unwrap()).unwrap();
            c[field] = value;
            let mut header = Header::new(Algorithm::RS256);
            header.kid = auth.signing_kid().map(String::from);
            let token = jsonwebtoken::encode(&header, &c, &auth.signer.as_ref().unwrap().key).unwrap();
            assert!(auth.verify(&token).is_err(), "{field} must be checked");
        }
        // A token from another issuer's key with our claims.
        let mut other = auth_with_users();
        other.verifiers.clear();
        other.add_key(&fixture_key(2)).unwrap();
        let foreign = other.issue("ana", &[Role::Admin]).unwrap().token;
        assert!(auth.verify(&foreign).unwrap_err().to_string().contains("unknown key id"));
    }

    #[test]
    fn rotation_keeps_old_tokens_valid_and_signs_with_the_new_key() {
        let mut auth = auth_with_users();
        let old = auth.login("ana", "s3cret").unwrap().token;
        let old_kid = auth.signing_kid().unwrap().to_string();
        let new_kid = auth.add_key(&fixture_key(2)).unwrap();
        assert_ne!(old_kid, new_kid);
        let new = auth.login("ana", "s3cret").unwrap().token;
        assert_eq!(jsonwebtoken::decode_header(&new).unwrap().kid.as_deref(), Some(new_kid.as_str()));
        assert!(auth.verify(&old).is_ok() && auth.verify(&new).is_ok());
        assert_eq!(auth.jwks().keys.len(), 2);
    }

    #[test]
    fn verified_tokens_are_kept_until_they_expire_and_only_when_valid() {
        let auth = auth_with_users();
        let token = auth.login("ana", "s3cret").unwrap().token;
        assert_eq!(auth.verified.len(), 0, "issuing is not verifying");
        let first = auth.verify(&token).unwrap();
        assert_eq!(auth.verified.len(), 1);
        assert_eq!(auth.verify(&token).unwrap(), first, "the kept principal is the verified one");
        // A byte changed anywhere is another token, verified in full and refused.
        let mut tampered = token.clone().into_bytes();
        let last = tampered.len() - 2;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).unwrap();
        assert!(auth.verify(&tampered).unwrap_err().to_string().contains("invalid token"));
        assert!(auth.verify(&token[..token.len() - 1]).is_err());
        assert_eq!(auth.verified.len(), 1, "refused tokens are not kept");

        let tokens = VerifiedTokens::default();
        let ana = Principal { subject: "ana".into(), roles: vec![Role::Viewer] };
        tokens.insert("t", ana.clone(), 100, 50);
        assert_eq!(tokens.get("t", 99), Some(ana.clone()));
        assert_eq!(tokens.get("t", 100), None, "not at or after exp");
        assert_eq!(tokens.get("u", 50), None);
        // Full: the expired go first; the unexpired stay.
        for i in 1..VERIFIED_TOKENS {
            tokens.insert(&format!("old{i}"), ana.clone(), 60, 50);
        }
        assert_eq!(tokens.len(), VERIFIED_TOKENS);
        tokens.insert("new", ana.clone(), 200, 70);
        assert_eq!(tokens.len(), 2);
        assert_eq!(tokens.get("t", 70), Some(ana.clone()));
        // Full of unexpired tokens: all go, the memory stays bounded.
        for i in 0..VERIFIED_TOKENS {
            tokens.insert(&format!("live{i}"), ana.clone(), 300, 70);
        }
        assert!(tokens.len() <= VERIFIED_TOKENS);
        assert_eq!(tokens.get("live0", 71), None, "cleared when full");
    }

    #[test]
    fn a_malformed_users_file_names_the_entry() {
        let mut auth = auth_with_users();
        let err =
            auth.load_users("[[user]]\nname = \"x\"\npassword_hash = \"plain\"\nroles = []\n").unwrap_err();
        assert!(chain(&err).contains("user `x`"), "{err}");
        let err = auth
            .load_users("[[user]]\nname = \"x\"\npassword_hash = \"plain\"\nroles = [\"root\"]\n")
            .unwrap_err();
        assert!(matches!(err, UsersError::Syntax(_)) && chain(&err).contains("root"), "{err:?}");
    }
}
