//! The web UI under `/ui`: server-rendered pages (askama templates, auto-escaped and checked
//! at compile time), htmx for the live parts, uPlot charts drawn from the tables beside them.
//! Assets are compiled in ([`assets`]); nothing is fetched at run time and every page works
//! without JavaScript.
//!
//! Every page is a function of the same data the `/v1` routes serve (its handler calls theirs),
//! so what a person sees a script can fetch. Browsers authenticate with the session cookie of
//! [`session`]; the cookie is read only here. Every response carries the headers of
//! [`page::headers`] (a CSP allowing only this server's scripts and styles).

use axum::Router;
use axum::middleware;
use axum::routing::{get, post};

use crate::api::AppState;

mod assets;
mod page;
mod pages;
mod session;

/// The UI's routes, for [`crate::api::router`] to merge.
pub(crate) fn router(state: AppState) -> Router<AppState> {
    use pages::{audit, data, dead, drift, models, overview, predictions, runs};
    let gated = Router::new()
        .route("/ui", get(overview::page))
        .route("/ui/", get(overview::page))
        .route("/ui/runs", get(runs::list))
        .route("/ui/runs/compare", get(runs::compare))
        .route("/ui/runs/{run_id}", get(runs::show))
        .route("/ui/models", get(models::list))
        .route("/ui/models/{name}", get(models::show))
        .route("/ui/models/{name}/promote", post(models::promote))
        .route("/ui/models/{name}/rollback", post(models::rollback))
        .route("/ui/models/{name}/{version}", get(models::version))
        .route("/ui/data", get(data::list))
        .route("/ui/data/{dataset}", get(data::dataset))
        .route("/ui/data/{dataset}/diff", get(data::diff))
        .route("/ui/data/{dataset}/{version}", get(data::version))
        .route("/ui/drift", get(drift::page))
        .route("/ui/predictions", get(predictions::list))
        .route("/ui/predictions/{id}", get(predictions::show))
        .route("/ui/dead-letters", get(dead::page))
        .route("/ui/audit", get(audit::page))
        .route("/ui/logout", post(session::logout))
        .route_layer(middleware::from_fn_with_state(state, session::gate));
    Router::new()
        .route("/ui/login", get(session::login_form).post(session::login))
        .route("/ui/assets/{file}", get(assets::serve))
        .merge(gated)
        .layer(middleware::from_fn(page::headers))
}
