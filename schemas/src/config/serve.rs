//! The `serve`, `flight`, `auth` and `tls` sections: the servers, who may call them, and how.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::{Result, invalid, positive};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServeConfig {
    /// Address of the REST API.
    pub listen: SocketAddr,
    /// Registered model to serve and the alias to follow.
    pub model: String,
    pub alias: String,
    /// Dynamic batching: largest batch, and longest wait for one to fill. A batch closes
    /// earlier when the queue is empty and no request is being cleaned.
    pub max_batch: usize,
    pub max_wait_ms: u64,
    /// Largest number of texts in one predict request.
    pub max_request_texts: usize,
    /// Requests handled at once; more are answered 429 at once instead of queueing.
    pub max_concurrent_requests: usize,
    /// A request taking longer is answered 503 (`timeout`).
    pub request_timeout_ms: u64,
    /// Where `snapshot --follow`, `drift` and `retrainer` (which have no REST API) serve
    /// `/metrics`, e.g. `127.0.0.1:9101`; unset: not served.
    #[serde(with = "super::optional")]
    pub metrics_listen: Option<SocketAddr>,
    /// Run the Kafka scorer next to the API.
    pub scorer: bool,
    /// Exactly-once scorer: scored records and the consumed offsets are committed in one Kafka
    /// transaction. Needs a broker with transactions (Apache Kafka ≥ 2.5); tansu 0.6 refuses
    /// them. Off: at-least-once (offsets committed after the records are acknowledged).
    pub scorer_transactions: bool,
    /// `transactional.id` of this scorer instance; unique per instance (e.g. the pod name).
    /// Unset: `<kafka.group_id>.scorer.<$HOSTNAME or "local">`.
    #[serde(with = "super::optional")]
    pub scorer_transactional_id: Option<String>,
}

/// The Arrow Flight SQL server over data versions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FlightConfig {
    /// Address of the Flight SQL (gRPC) endpoint.
    pub listen: SocketAddr,
    /// Open prepared statements kept per server; creating one more closes the oldest.
    pub max_prepared: usize,
    /// Memory for decoded versions (MiB of Arrow buffers): a version is loaded in the
    /// background when first queried, and later queries of it skip Parquet decoding. Least
    /// recently used versions leave first; 0 turns the cache off.
    pub cache_mb: usize,
}

/// Authentication and authorization of every API (REST and Flight SQL).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Off: every request is treated as an anonymous admin (local development only; a warning
    /// is logged). On: every request needs a valid bearer token with the route's role.
    pub enabled: bool,
    /// `iss` and `aud` of issued tokens; tokens with other values are refused.
    pub issuer: String,
    pub audience: String,
    /// Lifetime of issued tokens.
    pub token_ttl_secs: u64,
    /// RS256 private keys (PEM files, PKCS#8 or PKCS#1, at least 2048 bits). The last one signs
    /// new tokens; all of them verify, so appending a key rotates without logging anyone out.
    pub signing_keys: Vec<String>,
    /// TOML file of users and service clients with argon2 password hashes and roles (see the
    /// README); a file because it holds secrets' hashes.
    pub users_file: String,
}

/// TLS of the servers (REST API, Flight SQL). Both files empty: plaintext.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain and private key.
    pub cert_file: String,
    pub key_file: String,
}

impl TlsConfig {
    pub fn enabled(&self) -> bool {
        !self.cert_file.is_empty()
    }
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            model: "spam".into(),
            alias: "production".into(),
            max_batch: 64,
            max_wait_ms: 2,
            max_request_texts: 256,
            max_concurrent_requests: 512,
            request_timeout_ms: 60_000,
            metrics_listen: None,
            scorer: true,
            scorer_transactions: false,
            scorer_transactional_id: None,
        }
    }
}

impl Default for FlightConfig {
    fn default() -> Self {
        FlightConfig { listen: SocketAddr::from(([127, 0, 0, 1], 50051)), max_prepared: 1024, cache_mb: 1024 }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            enabled: false,
            issuer: "driftwood".into(),
            audience: "driftwood".into(),
            token_ttl_secs: 3600,
            signing_keys: Vec::new(),
            users_file: String::new(),
        }
    }
}

impl ServeConfig {
    pub(crate) fn validate(&self) -> Result<()> {
        positive("serve.max_batch", self.max_batch)?;
        positive("serve.max_request_texts", self.max_request_texts)?;
        positive("serve.max_concurrent_requests", self.max_concurrent_requests)?;
        if self.request_timeout_ms == 0 {
            return Err(invalid("serve.request_timeout_ms", "must be greater than 0"));
        }
        Ok(())
    }
}

impl FlightConfig {
    pub(crate) fn validate(&self) -> Result<()> {
        positive("flight.max_prepared", self.max_prepared)
    }
}

impl AuthConfig {
    pub(crate) fn validate(&self) -> Result<()> {
        if self.enabled && (self.signing_keys.is_empty() || self.users_file.is_empty()) {
            return Err(invalid("auth.enabled", "needs auth.signing_keys and auth.users_file"));
        }
        if self.token_ttl_secs == 0 {
            return Err(invalid("auth.token_ttl_secs", "must be greater than 0"));
        }
        Ok(())
    }
}

impl TlsConfig {
    pub(crate) fn validate(&self) -> Result<()> {
        if self.cert_file.is_empty() != self.key_file.is_empty() {
            return Err(invalid("tls.cert_file", "set both tls.cert_file and tls.key_file, or neither"));
        }
        Ok(())
    }
}
