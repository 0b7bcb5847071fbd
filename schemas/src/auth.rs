//! Who may do what: the roles every API checks, the identity a verified token carries, and the
//! one authentication interface the REST API and the Flight SQL server share.
//!
//! The implementation (RS256 JWTs, argon2 password hashes, the users file) lives in
//! `serving::auth`; servers in other crates take an `Arc<dyn Authenticator>`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Roles, ordered: each grants everything the ones before it grant.
///
/// `viewer` reads (data versions, runs, metrics, models); `predictor` also calls predict;
/// `trainer` also trains and registers; `admin` also promotes, rolls back and manages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Predictor,
    Trainer,
    Admin,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Viewer, Role::Predictor, Role::Trainer, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Predictor => "predictor",
            Role::Trainer => "trainer",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Role, String> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown role `{s}` (roles: viewer, predictor, trainer, admin)"))
    }
}

/// The verified identity behind a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// User name or client id (the token's `sub`).
    pub subject: String,
    pub roles: Vec<Role>,
}

impl Principal {
    /// Whether any of the principal's roles grants `required`.
    pub fn has(&self, required: Role) -> bool {
        self.roles.iter().any(|r| *r >= required)
    }

    /// The identity used when authentication is disabled (local development only).
    pub fn anonymous_admin() -> Principal {
        Principal { subject: "anonymous".into(), roles: vec![Role::Admin] }
    }
}

/// Why a request was refused. `Unauthenticated` maps to HTTP 401 / gRPC UNAUTHENTICATED,
/// `Forbidden` to 403 / PERMISSION_DENIED, `Unavailable` to 503 / UNAVAILABLE.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No credentials, bad credentials, or a token that is malformed, expired, not ours
    /// (issuer, audience, key id, signature) or of another algorithm.
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// A valid identity lacking the role the operation needs.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// The authenticator cannot decide now (e.g. no signing key loaded).
    #[error("authentication unavailable: {0}")]
    Unavailable(String),
}

/// A signed access token and how long it lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedToken {
    pub token: String,
    pub expires_in_secs: u64,
}

/// Checks credentials and tokens. One implementation serves every API, so a token from the
/// REST API's `/oauth/token` works against Flight SQL and vice versa.
pub trait Authenticator: Send + Sync + fmt::Debug {
    /// Whether requests must carry credentials at all (false only for local development).
    fn enabled(&self) -> bool;

    /// Verifies a user's password and issues a token (OAuth2 password grant, Flight handshake).
    fn login(&self, user: &str, password: &str) -> Result<IssuedToken, AuthError>;

    /// Verifies a bearer token.
    fn verify(&self, token: &str) -> Result<Principal, AuthError>;

    /// Verifies a token and requires `role`.
    fn authorize(&self, token: Option<&str>, role: Role) -> Result<Principal, AuthError> {
        if !self.enabled() {
            return Ok(Principal::anonymous_admin());
        }
        let token = token.ok_or_else(|| AuthError::Unauthenticated("no bearer token".into()))?;
        let principal = self.verify(token)?;
        if principal.has(role) {
            Ok(principal)
        } else {
            Err(AuthError::Forbidden(format!("`{}` lacks the `{role}` role", principal.subject)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered_and_parse_back() {
        let p = Principal { subject: "ana".into(), roles: vec![Role::Trainer] };
        assert!(p.has(Role::Viewer) && p.has(Role::Predictor) && p.has(Role::Trainer));
        assert!(!p.has(Role::Admin));
        assert!(!Principal { subject: "x".into(), roles: vec![] }.has(Role::Viewer));
        for r in Role::ALL {
            assert_eq!(r.as_str().parse::<Role>(), Ok(r));
        }
        assert!("root".parse::<Role>().unwrap_err().contains("unknown role `root`"));
    }
}
