//! The UI's scripts and styles, compiled into the binary from `serving/ui/assets` (listed with
//! name, version, licence and SHA-256 in its `MANIFEST.toml`): nothing is fetched at run time.
//! Pages link each file as `/ui/assets/<file>?h=<hash prefix>`, so a browser may cache it for a
//! year and still sees a new file the moment a build changes it.

use std::sync::LazyLock;

use axum::extract::{Path, Query};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

struct Asset {
    file: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

macro_rules! asset {
    ($file:literal, $type:expr) => {
        Asset { file: $file, content_type: $type, bytes: include_bytes!(concat!("../../ui/assets/", $file)) }
    };
}

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

static ASSETS: &[Asset] = &[
    asset!("htmx.min.js", JS),
    asset!("uPlot.iife.min.js", JS),
    asset!("uPlot.min.css", CSS),
    asset!("driftwood.css", CSS),
    asset!("driftwood.js", JS),
];

/// Each asset's hash prefix, computed once.
static HASHES: LazyLock<Vec<String>> =
    LazyLock::new(|| ASSETS.iter().map(|a| schemas::sha256_hex(a.bytes)[..12].to_string()).collect());

/// The URL a page links `file` by (its content hash in the query).
pub(crate) fn url(file: &str) -> String {
    let i = ASSETS.iter().position(|a| a.file == file).unwrap_or_else(|| panic!("no UI asset `{file}`"));
    format!("/ui/assets/{file}?h={}", HASHES[i])
}

#[derive(serde::Deserialize)]
pub(crate) struct AssetQuery {
    h: Option<String>,
}

/// `GET /ui/assets/{file}`.
pub(crate) async fn serve(Path(file): Path<String>, Query(q): Query<AssetQuery>) -> Response {
    let Some(i) = ASSETS.iter().position(|a| a.file == file) else {
        return (StatusCode::NOT_FOUND, "no such asset").into_response();
    };
    let asset = &ASSETS[i];
    // Immutable only under the URL of these very bytes; any other is revalidated.
    let cache = if q.h.as_deref() == Some(HASHES[i].as_str()) {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    (
        [
            (header::CONTENT_TYPE, asset.content_type),
            (header::CACHE_CONTROL, cache),
            (header::ETAG, &format!("\"{}\"", HASHES[i])),
        ],
        asset.bytes,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Manifest {
        asset: Vec<Entry>,
    }

    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Entry {
        file: String,
        name: String,
        version: String,
        licence: String,
        source: String,
        sha256: String,
    }

    #[test]
    fn every_served_asset_is_in_the_manifest_with_its_hash_and_nothing_else_is_shipped() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("ui/assets");
        let manifest: Manifest =
            toml::from_str(&std::fs::read_to_string(dir.join("MANIFEST.toml")).unwrap()).unwrap();
        let mut wrong = Vec::new();
        for a in ASSETS {
            match manifest.asset.iter().find(|e| e.file == a.file) {
                None => wrong.push(format!("{} is served but not in MANIFEST.toml", a.file)),
                Some(e) => {
                    let actual = schemas::sha256_hex(a.bytes);
                    if e.sha256 != actual {
                        wrong.push(format!(
                            "{}: MANIFEST.toml says {}, the file is {actual}",
                            a.file, e.sha256
                        ));
                    }
                    assert!(!e.licence.is_empty() && !e.version.is_empty() && !e.name.is_empty());
                }
            }
        }
        for e in &manifest.asset {
            if !ASSETS.iter().any(|a| a.file == e.file) {
                wrong.push(format!("{} is in MANIFEST.toml but not served", e.file));
            }
        }
        // Every file in the folder is either served or a licence or the manifest itself.
        for f in std::fs::read_dir(&dir).unwrap() {
            let name = f.unwrap().file_name().into_string().unwrap();
            if name != "MANIFEST.toml" && name != "licenses" && !ASSETS.iter().any(|a| a.file == name) {
                wrong.push(format!("{name} is in ui/assets but neither served nor listed"));
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
        for third_party in ["htmx.org", "uplot"] {
            assert!(dir.join(format!("licenses/{third_party}.txt")).is_file(), "{third_party}'s licence");
        }
    }

    #[test]
    fn asset_urls_carry_the_content_hash() {
        let u = url("driftwood.js");
        assert!(
            u.starts_with("/ui/assets/driftwood.js?h=") && u.len() == "/ui/assets/driftwood.js?h=".len() + 12
        );
    }
}
