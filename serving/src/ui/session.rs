//! Browser sessions: the login form checks the users file as `POST /oauth/token` does and
//! stores the issued JWT in a cookie (HttpOnly, SameSite=Strict, `Path=/ui`, Secure under TLS,
//! lifetime = the token's). Only `/ui` reads the cookie; `/v1` stays bearer-only.
//!
//! State-changing requests (`POST` under `/ui`) pass two checks: the Fetch-Metadata / Origin
//! check ([`same_origin`], in [`gate`] and on the login form) and a CSRF token in the form
//! ([`Viewer::check_csrf`]) derived from the session: a hash of the session token, which a
//! cross-site page can neither read nor compute. With `auth.enabled = false` the token is
//! derived from a secret of the process instead.

use std::sync::{Arc, LazyLock};

use axum::extract::{Form, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use schemas::auth::{AuthError, Authenticator, Principal, Role};
use serde::Deserialize;

use super::page::{Chrome, UiError, render};
use crate::api::AppState;

pub(crate) const COOKIE: &str = "driftwood_session";

/// Who is looking at a page, and the CSRF token their forms carry.
#[derive(Debug, Clone)]
pub(crate) struct Viewer {
    pub(crate) principal: Principal,
    pub(crate) csrf: String,
    pub(crate) auth_enabled: bool,
}

impl Viewer {
    pub(crate) fn is_admin(&self) -> bool {
        self.principal.has(Role::Admin)
    }

    /// 403 unless `token` is this session's CSRF token.
    pub(crate) fn check_csrf(&self, token: &str) -> Result<(), UiError> {
        if constant_time_eq(token.as_bytes(), self.csrf.as_bytes()) {
            Ok(())
        } else {
            Err(UiError::forbidden(
                "the form's CSRF token is missing or stale: reload the page and try again",
            ))
        }
    }

    /// 403 unless the viewer holds `role` (pages hide what a role may not do; this is the
    /// server's word on it).
    pub(crate) fn require(&self, role: Role) -> Result<(), UiError> {
        if self.principal.has(role) {
            Ok(())
        } else {
            Err(UiError::forbidden(&format!("`{}` lacks the `{role}` role", self.principal.subject)))
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The process's secret for CSRF tokens when there is no session token (auth disabled).
static PROCESS_SECRET: LazyLock<String> = LazyLock::new(|| {
    let mut bytes = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .expect("the system random source is available");
    hex_string(&bytes)
});

fn hex_string(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn csrf_token(session: Option<&str>) -> String {
    let secret = session.unwrap_or(PROCESS_SECRET.as_str());
    schemas::sha256_hex(format!("driftwood-ui-csrf\0{secret}").as_bytes())[..32].to_string()
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Whether a request comes from a page of this server: `Sec-Fetch-Site` (sent by every current
/// browser) must be `same-origin` or `none` (typed or bookmarked), and an `Origin` header must
/// name this host. Requests with neither header (curl, scripts) are left to the CSRF token.
pub(crate) fn same_origin(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site")
        && !matches!(site.as_bytes(), b"same-origin" | b"none")
    {
        return false;
    }
    match headers.get(header::ORIGIN).map(HeaderValue::to_str) {
        None => true,
        Some(Ok(origin)) => {
            let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
            let authority = origin.strip_prefix("https://").or_else(|| origin.strip_prefix("http://"));
            authority.is_some() && authority == host
        }
        Some(Err(_)) => false,
    }
}

/// In front of every page: finds the session, sends a browser without one to the login form,
/// refuses cross-site state changes, and hands the page its [`Viewer`].
pub(crate) async fn gate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    if req.method() != Method::GET && req.method() != Method::HEAD && !same_origin(req.headers()) {
        return UiError::forbidden("cross-site request refused").into_response();
    }
    let token = cookie(req.headers(), COOKIE).map(str::to_string);
    match state.auth.authorize(token.as_deref(), Role::Viewer) {
        Ok(principal) => {
            let viewer =
                Viewer { principal, csrf: csrf_token(token.as_deref()), auth_enabled: state.auth.enabled() };
            req.extensions_mut().insert(viewer);
            next.run(req).await
        }
        Err(AuthError::Forbidden(m)) => UiError::forbidden(&m).into_response(),
        Err(_) if req.method() == Method::GET || req.method() == Method::HEAD => {
            let target = req.uri().path_and_query().map_or("/ui", |p| p.as_str());
            let to = format!("/ui/login?next={}", urlencode(target));
            // A stale cookie is cleared on the way.
            let mut r = Redirect::to(&to).into_response();
            if token.is_some() {
                r.headers_mut().append(header::SET_COOKIE, clear_cookie(state.secure_cookies));
            }
            r
        }
        Err(e) => UiError { status: StatusCode::UNAUTHORIZED, message: e.to_string() }.into_response(),
    }
}

fn urlencode(s: &str) -> String {
    serde_urlencoded::to_string([("", s)]).map(|q| q[1..].to_string()).unwrap_or_default()
}

/// `next` when it is a page of the UI, else the overview (never an open redirect).
fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(n) if (n == "/ui" || n.starts_with("/ui/") || n.starts_with("/ui?")) && !n.contains("//") => n,
        _ => "/ui",
    }
}

fn session_cookie(token: &str, max_age: u64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{COOKIE}={token}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
    ))
    .expect("a JWT is a valid cookie value")
}

fn clear_cookie(secure: bool) -> HeaderValue {
    session_cookie("", 0, secure)
}

#[derive(askama::Template)]
#[template(path = "ui/login.html")]
struct LoginPage<'a> {
    chrome: Chrome,
    next: &'a str,
    user: &'a str,
    error: Option<String>,
}

#[derive(Deserialize)]
pub(crate) struct LoginQuery {
    next: Option<String>,
}

/// `GET /ui/login`.
pub(crate) async fn login_form(State(state): State<AppState>, Query(q): Query<LoginQuery>) -> Response {
    if !state.auth.enabled() {
        return Redirect::to(safe_next(q.next.as_deref())).into_response();
    }
    let next = safe_next(q.next.as_deref());
    render(&LoginPage { chrome: Chrome::anonymous("Sign in"), next, user: "", error: None })
}

#[derive(Deserialize)]
pub(crate) struct LoginForm {
    username: String,
    password: String,
    next: Option<String>,
}

/// `POST /ui/login`: a session cookie and a redirect to `next`, or the form again with the
/// reason (401).
pub(crate) async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    if !same_origin(&headers) {
        return UiError::forbidden("cross-site login refused").into_response();
    }
    let auth: Arc<crate::auth::JwtAuth> = state.auth.clone();
    let (user, password) = (form.username.clone(), form.password);
    let issued = tokio::task::spawn_blocking(move || auth.login(&user, &password)).await;
    let next = safe_next(form.next.as_deref());
    match issued {
        Ok(Ok(issued)) => {
            let mut r = Redirect::to(next).into_response();
            r.headers_mut().insert(
                header::SET_COOKIE,
                session_cookie(&issued.token, issued.expires_in_secs, state.secure_cookies),
            );
            r
        }
        Ok(Err(e)) => {
            let page = LoginPage {
                chrome: Chrome::anonymous("Sign in"),
                next,
                user: &form.username,
                error: Some(e.to_string()),
            };
            let mut r = render(&page);
            *r.status_mut() = StatusCode::UNAUTHORIZED;
            r
        }
        Err(e) => UiError::internal(&format!("login task failed: {e}")).into_response(),
    }
}

#[derive(Deserialize)]
pub(crate) struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

/// `POST /ui/logout`: clears the cookie (the token itself stays valid until it expires, as a
/// bearer token does).
pub(crate) async fn logout(
    State(state): State<AppState>,
    axum::Extension(viewer): axum::Extension<Viewer>,
    Form(form): Form<CsrfForm>,
) -> Result<Response, UiError> {
    viewer.check_csrf(&form.csrf)?;
    let mut r = Redirect::to("/ui/login").into_response();
    r.headers_mut().insert(header::SET_COOKIE, clear_cookie(state.secure_cookies));
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn cross_site_requests_are_told_apart_from_the_servers_own_pages() {
        assert!(same_origin(&headers(&[
            ("sec-fetch-site", "same-origin"),
            ("origin", "http://a:8080"),
            ("host", "a:8080")
        ])));
        assert!(same_origin(&headers(&[])), "no browser headers: left to the CSRF token");
        assert!(!same_origin(&headers(&[("sec-fetch-site", "cross-site")])));
        assert!(!same_origin(&headers(&[("sec-fetch-site", "same-site")])));
        assert!(!same_origin(&headers(&[("origin", "http://evil.example"), ("host", "a:8080")])));
        assert!(!same_origin(&headers(&[("origin", "null"), ("host", "a:8080")])));
    }

    #[test]
    fn csrf_tokens_belong_to_their_session_and_redirects_stay_in_the_ui() {
        assert_eq!(csrf_token(Some("t1")), csrf_token(Some("t1")));
        assert_ne!(csrf_token(Some("t1")), csrf_token(Some("t2")));
        assert_ne!(csrf_token(None), csrf_token(Some("")));
        let viewer = Viewer {
            principal: Principal::anonymous_admin(),
            csrf: csrf_token(Some("t1")),
            auth_enabled: true,
        };
        assert!(viewer.check_csrf(&csrf_token(Some("t1"))).is_ok());
        assert!(viewer.check_csrf(&csrf_token(Some("t2"))).is_err() && viewer.check_csrf("").is_err());
        assert_eq!(safe_next(Some("/ui/runs?sort=metrics.f1")), "/ui/runs?sort=metrics.f1");
        for evil in ["https://evil.example/", "//evil.example/ui", "/uix", "/ui//evil.example", "/v1/models"]
        {
            assert_eq!(safe_next(Some(evil)), "/ui", "{evil}");
        }
        let h = headers(&[("cookie", "a=1; driftwood_session=tok.en; b=2")]);
        assert_eq!(cookie(&h, COOKIE), Some("tok.en"));
        assert_eq!(urlencode("/ui/runs?a=1&b=2"), "%2Fui%2Fruns%3Fa%3D1%26b%3D2");
    }
}
