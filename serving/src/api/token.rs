//! Tokens: `POST /oauth/token`, `GET /.well-known/jwks.json`, and the bearer check every
//! protected route runs first ([`require`]).

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use schemas::auth::{Authenticator, Role};

use super::response::ErrorBody;
use super::state::AppState;
use crate::{Error, Result};

/// Lets the request through only with a bearer token granting `role`.
pub async fn require(
    State((auth, role)): State<(Arc<crate::auth::JwtAuth>, Role)>,
    mut req: Request,
    next: Next,
) -> Response {
    let token = match req.headers().get(header::AUTHORIZATION).map(|v| v.to_str()) {
        None => None,
        Some(Ok(v)) => match v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")) {
            Some(t) => Some(t.trim()),
            None => {
                return Error::Unauthenticated("expected `Authorization: Bearer <token>`".into())
                    .into_response();
            }
        },
        Some(Err(_)) => {
            return Error::Unauthenticated("the Authorization header is not text".into()).into_response();
        }
    };
    match auth.authorize(token, role) {
        Ok(principal) => {
            req.extensions_mut().insert(principal);
            next.run(req).await
        }
        Err(e) => Error::from(e).into_response(),
    }
}

/// A `POST /oauth/token` form as documented: the password grant (RFC 6749 §4.3) or the client
/// credentials grant (§4.4). Clients may instead send their credentials as HTTP Basic (§2.3.1).
/// The handler parses [`TokenForm`], whose errors say what a grant is missing.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(tag = "grant_type", rename_all = "snake_case")]
#[schema(as = TokenRequest)]
#[allow(dead_code)]
pub enum TokenGrant {
    Password {
        username: String,
        password: String,
        /// Accepted and ignored: roles come from the users file.
        scope: Option<String>,
    },
    ClientCredentials {
        client_id: String,
        client_secret: String,
        /// Accepted and ignored: roles come from the users file.
        scope: Option<String>,
    },
}

/// What the handler reads from the form.
#[derive(Debug, Deserialize)]
struct TokenForm {
    grant_type: String,
    username: Option<String>,
    password: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    /// Accepted and ignored: roles come from the users file.
    #[serde(rename = "scope")]
    _scope: Option<String>,
}

/// An issued bearer token.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TokenResponse {
    access_token: String,
    /// Always `Bearer`.
    token_type: &'static str,
    expires_in: u64,
}

/// OAuth2 token endpoint: `password` grant for users, `client_credentials` for services (client
/// credentials in the form or as HTTP Basic).
#[utoipa::path(post, path = "/oauth/token", tag = "auth",
    request_body(content = TokenGrant, content_type = "application/x-www-form-urlencoded"),
    responses((status = 200, body = TokenResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(super) async fn token(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Result<Response> {
    let form: TokenForm = serde_urlencoded::from_bytes(&body).map_err(|e| {
        Error::BadRequest(format!("expected an application/x-www-form-urlencoded token request: {e}"))
    })?;
    // Client credentials in the body or as HTTP Basic (RFC 6749 §2.3.1).
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b.trim()).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.split_once(':').map(|(u, p)| (u.to_string(), p.to_string())));
    let auth = state.auth.clone();
    let issued = match form.grant_type.as_str() {
        "password" => {
            let (Some(user), Some(password)) = (form.username, form.password) else {
                return Err(Error::BadRequest("the password grant needs username and password".into()));
            };
            tokio::task::spawn_blocking(move || auth.login(&user, &password)).await
        }
        "client_credentials" => {
            let (id, secret) = match (form.client_id, form.client_secret, basic) {
                (Some(id), Some(secret), _) => (id, secret),
                (_, _, Some(pair)) => pair,
                _ => {
                    return Err(Error::BadRequest(
                        "client_credentials needs client_id and client_secret".into(),
                    ));
                }
            };
            tokio::task::spawn_blocking(move || auth.client_credentials(&id, &secret)).await
        }
        other => {
            return Err(Error::BadRequest(format!(
                "unsupported grant_type `{other}` (password, client_credentials)"
            )));
        }
    }
    .map_err(|e| Error::Internal(format!("login task failed: {e}")))??;
    let body = TokenResponse {
        access_token: issued.token,
        token_type: "Bearer",
        expires_in: issued.expires_in_secs,
    };
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(body)).into_response())
}

/// The public keys tokens are signed with (RFC 7517), by key id.
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "auth",
    responses((status = 200, description = "a JWK set", body = serde_json::Value)))]
pub(super) async fn jwks(State(state): State<AppState>) -> Json<jsonwebtoken::jwk::JwkSet> {
    Json(state.auth.jwks().clone())
}
