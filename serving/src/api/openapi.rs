//! `GET /openapi.json`: the OpenAPI 3.1 document of the REST API, generated from the handlers'
//! `#[utoipa::path]` annotations and the request/response types' `ToSchema` derives.
//!
//! Each protected operation names its role as the scope of the `oauth2` security scheme (password
//! and client-credentials flows at `/oauth/token`); the integration tests drive the role matrix
//! from this document, so a route whose annotation disagrees with its router role fails them.

use axum::Json;
use axum::extract::State;
use utoipa::OpenApi;
use utoipa::openapi::security::{ClientCredentials, Flow, OAuth2, Password, Scopes, SecurityScheme};

use super::state::AppState;
use super::{dead, drift, manage, ops, predict, predictions, search, token};

#[derive(OpenApi)]
#[openapi(
    info(title = "Driftwood", description = "Text classification: predictions, the model registry, runs and data versions."),
    paths(
        predict::predict,
        predict::current_model,
        token::token,
        token::jwks,
        ops::healthz,
        ops::ready,
        ops::render_metrics,
        document,
        manage::list_models,
        manage::get_model,
        manage::get_version,
        manage::promote,
        manage::rollback,
        manage::audit,
        manage::list_runs,
        manage::get_run,
        manage::metric_history,
        search::search_runs,
        drift::windows,
        predictions::recent,
        dead::dead_letters,
        manage::list_datasets,
        manage::list_data_versions,
        manage::get_data_version,
        manage::version_rows,
        manage::data_diff,
        manage::model_lineage,
        manage::prediction_lineage,
    ),
    modifiers(&OAuth2Roles),
    tags(
        (name = "predict", description = "Predictions and the served model"),
        (name = "registry", description = "Model versions and aliases (MLflow-style)"),
        (name = "tracking", description = "Training runs and their metrics"),
        (name = "data", description = "Versioned snapshots"),
        (name = "lineage", description = "Prediction → model version → run → data → raw data → spec"),
        (name = "auth", description = "OAuth2 tokens and signing keys"),
        (name = "ops", description = "Health, readiness, metrics, this document"),
    )
)]
pub struct ApiDoc;

/// The `oauth2` security scheme; its scopes are the roles.
struct OAuth2Roles;

impl utoipa::Modify for OAuth2Roles {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let scopes = || {
            Scopes::from_iter([
                ("viewer", "read the registry, runs, data versions and the served model"),
                ("predictor", "predict (and everything viewer may)"),
                ("trainer", "train (and everything predictor may)"),
                ("admin", "promote and roll back models (and everything else)"),
            ])
        };
        let scheme = SecurityScheme::OAuth2(OAuth2::with_description(
            [
                Flow::Password(Password::new("/oauth/token", scopes())),
                Flow::ClientCredentials(ClientCredentials::new("/oauth/token", scopes())),
            ],
            "RS256 JWT bearer tokens; roles are ordered viewer < predictor < trainer < admin",
        ));
        openapi.components.get_or_insert_with(Default::default).add_security_scheme("oauth2", scheme);
    }
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "ops",
    responses((status = 200, description = "OpenAPI 3.1", body = serde_json::Value)))]
pub async fn document(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(document_for(state.max_texts))
}

/// The document for a server that takes at most `max_texts` texts per predict request (the
/// batch shapes' `maxItems` is that setting, so a generated client never sends a batch the
/// server answers 413).
pub fn document_for(max_texts: usize) -> serde_json::Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).expect("the OpenAPI document serializes");
    for batch in ["TextBatch", "ItemBatch"] {
        let properties = &mut doc["components"]["schemas"][batch]["properties"];
        for field in ["texts", "items"] {
            if let Some(array) = properties.get_mut(field) {
                array["maxItems"] = max_texts.into();
            }
        }
    }
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_api_route_is_documented_with_its_schemas() {
        let doc = serde_json::to_value(ApiDoc::openapi()).expect("serializes");
        let paths = doc["paths"].as_object().expect("paths");
        for (path, method) in [
            ("/v1/predict", "post"),
            ("/v1/models/{name}/promote", "post"),
            ("/v1/datasets/{dataset}/versions/{version}", "get"),
            ("/oauth/token", "post"),
        ] {
            assert!(paths.get(path).and_then(|p| p.get(method)).is_some(), "{method} {path} missing");
        }
        assert_eq!(doc["paths"]["/v1/models/{name}/promote"]["post"]["security"][0]["oauth2"][0], "admin");
        let schemas = doc["components"]["schemas"].as_object().expect("schemas");
        for name in ["PredictRequest", "PredictResponse", "ErrorBody", "ModelVersion", "Manifest", "Run"] {
            assert!(schemas.contains_key(name), "schema {name} missing");
        }
        assert_eq!(
            doc["components"]["securitySchemes"]["oauth2"]["flows"]["password"]["tokenUrl"],
            "/oauth/token"
        );
    }

    #[test]
    fn the_batch_limit_is_the_servers_setting() {
        let doc = document_for(16);
        let schemas = &doc["components"]["schemas"];
        assert_eq!(schemas["TextBatch"]["properties"]["texts"]["maxItems"], 16, "{}", schemas["TextBatch"]);
        assert_eq!(schemas["ItemBatch"]["properties"]["items"]["maxItems"], 16, "{}", schemas["ItemBatch"]);
        assert_eq!(schemas["TextBatch"]["additionalProperties"], false);
        let shapes = schemas["PredictRequest"]["oneOf"].as_array().expect("oneOf");
        assert_eq!(shapes.len(), 3, "{}", schemas["PredictRequest"]);
        let grants = schemas["TokenRequest"]["oneOf"].as_array().expect("oneOf");
        assert_eq!(grants.len(), 2, "{}", schemas["TokenRequest"]);
    }
}
