//! What every page shares: the frame around it ([`Chrome`]: navigation, the signed-in user, the
//! CSRF token, the auth-disabled banner), rendering a template into a response, the HTML error
//! page, and the security headers every `/ui` response carries.

use askama::Template;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};

use super::assets;
use super::session::Viewer;

/// Scripts and styles only from this server, no inline code, no framing, forms only to here.
pub(crate) const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The navigation, in order: (path, label).
pub(crate) const NAV: &[(&str, &str)] = &[
    ("/ui", "Overview"),
    ("/ui/runs", "Runs"),
    ("/ui/models", "Models"),
    ("/ui/data", "Data"),
    ("/ui/drift", "Drift"),
    ("/ui/predictions", "Predictions"),
    ("/ui/dead-letters", "Dead letters"),
    ("/ui/audit", "Audit"),
];

/// The frame of a page.
pub(crate) struct Chrome {
    pub(crate) title: String,
    /// The navigation entry this page belongs to.
    pub(crate) section: &'static str,
    /// Signed-in user (`None` on the login form).
    pub(crate) user: Option<String>,
    pub(crate) roles: String,
    pub(crate) admin: bool,
    pub(crate) csrf: String,
    pub(crate) auth_disabled: bool,
    pub(crate) css: String,
    pub(crate) uplot_css: String,
    pub(crate) htmx: String,
    pub(crate) uplot: String,
    pub(crate) js: String,
}

impl Chrome {
    pub(crate) fn new(viewer: &Viewer, section: &'static str, title: impl Into<String>) -> Chrome {
        let roles = viewer.principal.roles.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
        Chrome {
            user: Some(viewer.principal.subject.clone()),
            roles,
            admin: viewer.is_admin(),
            csrf: viewer.csrf.clone(),
            auth_disabled: !viewer.auth_enabled,
            ..Chrome::anonymous(title)
        }
        .in_section(section)
    }

    pub(crate) fn anonymous(title: impl Into<String>) -> Chrome {
        Chrome {
            title: title.into(),
            section: "",
            user: None,
            roles: String::new(),
            admin: false,
            csrf: String::new(),
            auth_disabled: false,
            css: assets::url("driftwood.css"),
            uplot_css: assets::url("uPlot.min.css"),
            htmx: assets::url("htmx.min.js"),
            uplot: assets::url("uPlot.iife.min.js"),
            js: assets::url("driftwood.js"),
        }
    }

    fn in_section(mut self, section: &'static str) -> Chrome {
        self.section = section;
        self
    }

    pub(crate) fn nav(&self) -> &'static [(&'static str, &'static str)] {
        NAV
    }

    /// Whether the navigation entry `path` is this page's section.
    pub(crate) fn current(&self, path: &str) -> bool {
        path == self.section
    }
}

/// A rendered page, or the error page when the template fails.
pub(crate) fn render(t: &impl Template) -> Response {
    match t.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => UiError::internal(&format!("rendering the page: {e}")).into_response(),
    }
}

/// A page that could not be shown: its status and a sentence saying why, as HTML.
#[derive(Debug)]
pub(crate) struct UiError {
    pub(crate) status: StatusCode,
    pub(crate) message: String,
}

impl UiError {
    pub(crate) fn forbidden(message: &str) -> UiError {
        UiError { status: StatusCode::FORBIDDEN, message: message.to_string() }
    }

    pub(crate) fn internal(message: &str) -> UiError {
        UiError { status: StatusCode::INTERNAL_SERVER_ERROR, message: message.to_string() }
    }
}

impl From<crate::Error> for UiError {
    fn from(e: crate::Error) -> UiError {
        UiError { status: e.status().0, message: e.to_string() }
    }
}

impl From<metastore::Error> for UiError {
    fn from(e: metastore::Error) -> UiError {
        crate::Error::from(e).into()
    }
}

#[derive(Template)]
#[template(path = "ui/error.html")]
struct ErrorPage<'a> {
    chrome: Chrome,
    status: u16,
    reason: &'a str,
    message: &'a str,
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        let reason = self.status.canonical_reason().unwrap_or("Error");
        let page = ErrorPage {
            chrome: Chrome::anonymous(reason),
            status: self.status.as_u16(),
            reason,
            message: &self.message,
        };
        let body = page.render().unwrap_or_else(|_| format!("{} {reason}", self.status.as_u16()));
        (self.status, Html(body)).into_response()
    }
}

/// The security headers of every `/ui` response; pages are never cached (they show live state
/// and carry the CSRF token), assets set their own caching.
pub(crate) async fn headers(req: Request, next: Next) -> Response {
    let is_asset = req.uri().path().starts_with("/ui/assets/");
    let mut r = next.run(req).await;
    let h = r.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !is_asset {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    r
}
