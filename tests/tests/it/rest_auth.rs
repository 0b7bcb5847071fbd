//! The REST API's OAuth2 token endpoint, JWKS and per-route roles, over real HTTP: every role
//! against every route, and tokens that must be refused.

use std::sync::Arc;
use std::time::Duration;

use schemas::auth::{Authenticator, Role};
use schemas::config::AuthConfig;
use serving::auth::{JwtAuth, hash_password};

fn key(n: usize) -> String {
    format!("{}/../serving/tests/fixtures/jwt-key-{n}.pem", env!("CARGO_MANIFEST_DIR"))
}

fn auth_config(dir: &std::path::Path, audience: &str, key_file: String) -> anyhow::Result<AuthConfig> {
    let mut users = String::new();
    for (name, roles) in [
        ("viewer", "\"viewer\""),
        ("predictor", "\"predictor\""),
        ("trainer", "\"trainer\""),
        ("admin", "\"admin\""),
        ("none", ""),
    ] {
        users.push_str(&format!(
            "[[user]]\nname = \"{name}\"\npassword_hash = \"{}\"\nroles = [{roles}]\n\n",
            hash_password(&format!("{name}-pw"))?
        ));
    }
    users.push_str(&format!(
        "[[client]]\nid = \"svc\"\nsecret_hash = \"{}\"\nroles = [\"predictor\"]\n",
        hash_password("svc-secret")?
    ));
    let users_file = dir.join(format!("users-{audience}.toml"));
    std::fs::write(&users_file, users)?;
    Ok(AuthConfig {
        enabled: true,
        audience: audience.into(),
        signing_keys: vec![key_file],
        users_file: users_file.display().to_string(),
        ..AuthConfig::default()
    })
}

/// A registered model `spam` (v1 at production, v2), a run `r1` with a `loss` history and a
/// dataset `text` with one version: every read route has something to return.
async fn seed(state: &serving::api::AppState) -> anyhow::Result<()> {
    use metastore::{ModelVersion, Run, RunStatus};
    let now = chrono::Utc::now();
    state
        .store
        .create_run(&Run {
            run_id: "r1".into(),
            experiment: "spam".into(),
            parent_run_id: None,
            status: RunStatus::Running,
            started_at: now,
            ended_at: None,
            params: Default::default(),
            metrics: Default::default(),
            tags: Default::default(),
            data_version: None,
            artifact_dir: None,
        })
        .await?;
    for (step, loss) in [(0, 0.9), (1, 0.4)] {
        state.store.log_metrics("r1", step, &[("loss".to_string(), loss)].into()).await?;
    }
    for _ in 0..2 {
        state
            .store
            .register_model(ModelVersion {
                name: "spam".into(),
                version: 0,
                run_id: "r1".into(),
                family: "logreg".into(),
                data_version: "d".repeat(64),
                spec_hash: "h".into(),
                metrics: Default::default(),
                artifact_dir: "/nonexistent".into(),
                artifact_sha256: String::new(),
                created_at: now,
            })
            .await?;
    }
    state.store.set_alias("spam", "production", 1, "seed", "first").await?;
    let committed = tests::commit_texts(&state.snapshots, "text", &["a", "b", "c"])?;
    state.snapshots.tag("text", "golden", &committed.id)?;
    Ok(())
}

/// The API over [`seed`]ed stores with auth on (users from [`auth_config`]), on a free port.
struct Seeded {
    dir: tempfile::TempDir,
    auth: Arc<JwtAuth>,
    store: Arc<dyn metastore::MetadataStore>,
    base: String,
    stop: tokio_util::sync::CancellationToken,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn seeded() -> anyhow::Result<Seeded> {
    let dir = tempfile::tempdir()?;
    let auth = Arc::new(JwtAuth::from_config(&auth_config(dir.path(), "driftwood", key(1))?)?);
    let state = tests::app_state(dir.path(), auth.clone())?;
    seed(&state).await?;
    let store = state.store.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let stop = tokio_util::sync::CancellationToken::new();
    let s = stop.clone();
    let server = tokio::spawn(serving::api::serve(listener, serving::api::router(state), async move {
        s.cancelled().await
    }));
    Ok(Seeded { dir, auth, store, base, stop, server })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_role_against_every_route_and_refused_tokens() -> anyhow::Result<()> {
    // No model loaded: a request that passes authorization gets 503 not_ready from predict.
    let Seeded { dir, auth, base, stop, server, .. } = seeded().await?;
    let http = reqwest::Client::new();

    // OAuth2 password grant per user.
    let mut tokens = Vec::new();
    for user in ["viewer", "predictor", "trainer", "admin", "none"] {
        let r = http
            .post(format!("{base}/oauth/token"))
            .form(&[("grant_type", "password"), ("username", user), ("password", &format!("{user}-pw"))])
            .send()
            .await?;
        assert_eq!(r.status(), 200, "{user}");
        assert_eq!(r.headers()["cache-control"], "no-store");
        let body: serde_json::Value = r.json().await?;
        assert_eq!(body["token_type"], "Bearer");
        assert_eq!(body["expires_in"], 3600);
        tokens.push((user, body["access_token"].as_str().expect("token").to_string()));
    }
    // client_credentials, with HTTP Basic client authentication.
    let r = http
        .post(format!("{base}/oauth/token"))
        .basic_auth("svc", Some("svc-secret"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await?;
    assert_eq!(r.status(), 200);
    let svc: serde_json::Value = r.json().await?;
    assert_eq!(auth.verify(svc["access_token"].as_str().expect("token"))?.roles, vec![Role::Predictor]);

    // Bad token requests: 401 / 400 with the JSON error shape.
    for (form, status, error_type) in [
        (
            vec![("grant_type", "password"), ("username", "admin"), ("password", "wrong")],
            401,
            "unauthenticated",
        ),
        (vec![("grant_type", "password"), ("username", "ghost"), ("password", "x")], 401, "unauthenticated"),
        (
            vec![("grant_type", "client_credentials"), ("client_id", "svc"), ("client_secret", "no")],
            401,
            "unauthenticated",
        ),
        (vec![("grant_type", "implicit")], 400, "bad_request"),
        (vec![("grant_type", "password"), ("username", "admin")], 400, "bad_request"),
    ] {
        let r = http.post(format!("{base}/oauth/token")).form(&form).send().await?;
        assert_eq!(r.status(), status, "{form:?}");
        let body: serde_json::Value = r.json().await?;
        assert_eq!(body["error_type"], error_type, "{form:?}: {body}");
    }

    // The matrix: each role × each route of the generated OpenAPI document, whose security
    // scope names the role the router must enforce.
    let doc: serde_json::Value = http.get(format!("{base}/openapi.json")).send().await?.json().await?;
    assert_eq!(
        doc["components"]["securitySchemes"]["oauth2"]["flows"]["password"]["tokenUrl"],
        "/oauth/token"
    );
    let mut checked = 0;
    for (template, operations) in doc["paths"].as_object().expect("paths") {
        for (method, operation) in operations.as_object().expect("operations") {
            if template == "/oauth/token" {
                continue; // its own cases above
            }
            let required = operation["security"][0]["oauth2"][0]
                .as_str()
                .map(|r| r.parse::<Role>())
                .transpose()
                .map_err(anyhow::Error::msg)?;
            let path = template
                .replace("{name}", "spam")
                .replace("{version}", "latest")
                .replace("{run_id}", "r1")
                .replace("{key}", "loss")
                .replace("{dataset}", "text");
            let call = |token: Option<&str>| {
                let req = match method.as_str() {
                    "post" => http.post(format!("{base}{path}")).json(&match template.as_str() {
                        "/v1/predict" => serde_json::json!({"text": "win money now"}),
                        "/v1/models/{name}/promote" => serde_json::json!({"version": 1}),
                        _ => serde_json::json!({}),
                    }),
                    _ => http.get(format!("{base}{path}")),
                };
                match token {
                    Some(t) => req.bearer_auth(t),
                    None => req,
                }
            };
            // What an authorized caller gets: 503 without a model; nothing to roll back to (v1
            // is the only version production has pointed at).
            let authorized = match template.as_str() {
                "/v1/predict" | "/v1/models/current" | "/readyz" => 503,
                "/v1/models/{name}/rollback" => 409,
                // No scored dataset in this store: authorized, then not found.
                "/v1/lineage/predictions/{id}" => 404,
                // Nothing is served: the query must name a model.
                "/v1/drift/windows" | "/v1/predictions" => 404,
                // This server reads no broker.
                "/v1/dead-letters" => 503,
                // `from` and `to` are required.
                "/v1/datasets/{dataset}/diff" => 400,
                _ => 200,
            };
            let r = call(None).send().await?;
            match required {
                Some(_) => {
                    assert_eq!(r.status(), 401, "{method} {path} without a token");
                    assert_eq!(r.headers()["www-authenticate"], "Bearer");
                }
                None => assert_eq!(r.status(), authorized, "{method} {path}"),
            }
            for (user, token) in &tokens {
                let r = call(Some(token)).send().await?;
                let expected = match required {
                    Some(req) if !user.parse::<Role>().is_ok_and(|r| r >= req) => 403,
                    _ => authorized,
                };
                assert_eq!(r.status(), expected, "{user} on {method} {path}");
                if expected == 403 {
                    let body: serde_json::Value = r.json().await?;
                    assert_eq!(body["error_type"], "forbidden");
                }
            }
            checked += 1;
        }
    }
    // Every route of the router but the token endpoint.
    assert_eq!(checked, 27, "operations in the OpenAPI document");

    // Tokens that must be refused on a protected route.
    let admin = tokens.iter().find(|(u, _)| *u == "admin").map(|(_, t)| t.clone()).expect("admin");
    let parts: Vec<&str> = admin.split('.').collect();
    let mut tampered_sig = parts[2].to_string();
    let flipped = if tampered_sig.ends_with('A') { 'B' } else { 'A' };
    tampered_sig.pop();
    tampered_sig.push(flipped);
    let other_audience = JwtAuth::from_config(&auth_config(dir.path(), "someone-else", key(1))?)?
        .login("admin", "admin-pw")?
        .token;
    let foreign_key = JwtAuth::from_config(&auth_config(dir.path(), "driftwood", key(2))?)?
        .login("admin", "admin-pw")?
        .token;
    // {"alg":"none","typ":"JWT"} with the admin's claims and no signature.
    let alg_none = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.", parts[1]);
    for (what, token) in [
        ("tampered signature", format!("{}.{}.{tampered_sig}", parts[0], parts[1])),
        ("wrong audience", other_audience),
        ("unknown signing key", foreign_key),
        ("alg none", alg_none),
        ("not a JWT", "hello".to_string()),
    ] {
        let r = http.get(format!("{base}/v1/models/current")).bearer_auth(&token).send().await?;
        assert_eq!(r.status(), 401, "{what}");
    }
    let r = http
        .get(format!("{base}/v1/models/current"))
        .header("authorization", format!("Token {admin}"))
        .send()
        .await?;
    assert_eq!(r.status(), 401, "non-Bearer scheme");

    // JWKS: the signing key's public half, with the key id tokens carry.
    let jwks: serde_json::Value =
        http.get(format!("{base}/.well-known/jwks.json")).send().await?.json().await?;
    assert_eq!(jwks["keys"][0]["kid"].as_str(), auth.signing_kid());
    assert_eq!(jwks["keys"][0]["kty"], "RSA");
    assert!(jwks["keys"][0].get("d").is_none(), "private key material in the JWKS: {jwks}");

    stop.cancel();
    server.await??;
    Ok(())
}

/// `curl` and `openssl s_client` against the REST API over TLS (blocking: run off the runtime).
async fn tool(program: &str, args: Vec<String>) -> anyhow::Result<std::process::Output> {
    let program = program.to_string();
    Ok(tokio::task::spawn_blocking(move || {
        std::process::Command::new(program).args(args).stdin(std::process::Stdio::null()).output()
    })
    .await??)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_1_2_and_1_3_only_checked_with_curl_and_openssl() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    tests::make_tls(dir.path())?;
    let path = |f: &str| dir.path().join(f).display().to_string();
    let tls = schemas::config::TlsConfig { cert_file: path("server.pem"), key_file: path("server.key") };
    let state = tests::app_state(dir.path(), Arc::new(JwtAuth::from_config(&AuthConfig::default())?))?;
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = tcp.local_addr()?.port();
    let listener =
        serving::tls::TlsListener::new(tcp, serving::tls::server_config(&tls).map_err(anyhow::Error::msg)?)?;
    let stop = tokio_util::sync::CancellationToken::new();
    let s = stop.clone();
    let server = tokio::spawn(serving::api::serve(listener, serving::api::router(state), async move {
        s.cancelled().await
    }));
    let url = format!("https://127.0.0.1:{port}/healthz");
    let ca = path("ca.pem");

    // curl trusting the dev CA gets an answer.
    let ok = tool("curl", vec!["-sS".into(), "--cacert".into(), ca.clone(), url.clone()]).await?;
    assert!(ok.status.success(), "curl: {}", String::from_utf8_lossy(&ok.stderr));
    assert_eq!(String::from_utf8_lossy(&ok.stdout), "ok");
    // Not without trusting it, not over plain HTTP, not with TLS 1.1.
    let untrusted = tool("curl", vec!["-sS".into(), url.clone()]).await?;
    assert!(!untrusted.status.success());
    let plain = tool(
        "curl",
        vec!["-sS".into(), "--max-time".into(), "5".into(), format!("http://127.0.0.1:{port}/healthz")],
    )
    .await?;
    assert!(!plain.status.success() || plain.stdout != b"ok", "plain HTTP was served");
    let old = tool(
        "curl",
        vec![
            "-sS".into(),
            "--cacert".into(),
            ca.clone(),
            "--tlsv1.1".into(),
            "--tls-max".into(),
            "1.1".into(),
            url.clone(),
        ],
    )
    .await?;
    assert!(!old.status.success(), "TLS 1.1 was accepted by the server");

    // openssl s_client: 1.2 and 1.3 negotiate; 1.1 (with the client's own floor lowered) does not.
    let connect = format!("127.0.0.1:{port}");
    for (flag, protocol) in [("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")] {
        let out = tool(
            "openssl",
            vec![
                "s_client".into(),
                "-connect".into(),
                connect.clone(),
                flag.into(),
                "-CAfile".into(),
                ca.clone(),
            ],
        )
        .await?;
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains(&format!("Protocol: {protocol}"))
                || text.contains(&format!("Protocol  : {protocol}"))
                || text.contains(&format!(", {protocol},")),
            "{flag}: {text}"
        );
        assert!(text.contains("Verify return code: 0 (ok)"), "{flag}: {text}");
    }
    let out = tool(
        "openssl",
        vec![
            "s_client".into(),
            "-connect".into(),
            connect,
            "-tls1_1".into(),
            "-cipher".into(),
            "DEFAULT@SECLEVEL=0".into(),
        ],
    )
    .await?;
    let (text, err) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success() && !text.contains("TLSv1.1,"), "TLS 1.1 negotiated: {text}");
    // Refused by the server (an alert came back), not by the client's own configuration.
    assert!(err.contains("alert"), "{err}");

    stop.cancel();
    server.await??;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_is_429_at_once_and_a_slow_request_is_503_timeout() -> anyhow::Result<()> {
    use axum::middleware::from_fn_with_state;
    use axum::routing::get;
    use serving::api::{Limits, limit};
    // The API's limit middleware in front of a handler that takes 400 ms.
    let slow = || async {
        tokio::time::sleep(Duration::from_millis(400)).await;
        "done"
    };
    let serve = |limits: Limits| async move {
        let router =
            axum::Router::new().route("/slow", get(slow)).route_layer(from_fn_with_state(limits, limit));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}/slow", listener.local_addr()?);
        tokio::spawn(serving::api::serve(listener, router, std::future::pending()));
        anyhow::Ok(base)
    };
    let http = reqwest::Client::new();

    // One permit: of two concurrent requests one is served, the other refused without waiting.
    let url = serve(Limits::new(1, Duration::from_secs(5))).await?;
    // (A queue would answer the second one 200 once the first is done; a refusal is 429.)
    let (a, b) = tokio::join!(http.get(&url).send(), async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        http.get(&url).send().await
    });
    let (a, b) = (a?, b?);
    // Whichever got the permit first (the 100 ms head start is not a guarantee under load).
    let refused = match (a.status().as_u16(), b.status().as_u16()) {
        (200, 429) => b,
        (429, 200) => a,
        other => panic!("expected one 200 and one 429, got {other:?}"),
    };
    let body: serde_json::Value = refused.json().await?;
    assert_eq!(body["error_type"], "overloaded");
    // The permit comes back: the next request is served.
    assert_eq!(http.get(&url).send().await?.status(), 200);

    // A 100 ms deadline: the 400 ms handler is cut off with 503 `timeout`.
    let url = serve(Limits::new(8, Duration::from_millis(100))).await?;
    let r = http.get(&url).send().await?;
    assert_eq!(r.status(), 503);
    let body: serde_json::Value = r.json().await?;
    assert_eq!(body["error_type"], "timeout");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_names_what_is_missing_including_an_unreachable_broker() -> anyhow::Result<()> {
    let cancel = tokio_util::sync::CancellationToken::new();
    let readyz = |kafka: schemas::config::KafkaConfig| {
        let cancel = cancel.clone();
        async move {
            let dir = tempfile::tempdir()?;
            let state = serving::api::AppState {
                broker: Some(serving::api::BrokerHealth::probe(&kafka, cancel.clone())?),
                ..tests::app_state(dir.path(), Arc::new(JwtAuth::from_config(&AuthConfig::default())?))?
            };
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let url = format!("http://{}/readyz", listener.local_addr()?);
            tokio::spawn(serving::api::serve(listener, serving::api::router(state), std::future::pending()));
            // The first probe runs at once; give it time to answer or fail.
            tokio::time::sleep(Duration::from_secs(3)).await;
            let r = reqwest::get(&url).await?;
            anyhow::Ok((r.status().as_u16(), r.json::<serde_json::Value>().await?))
        }
    };
    // Nothing listens on this port: the broker is named as missing, next to the model.
    let down = schemas::config::KafkaConfig {
        brokers: format!("127.0.0.1:{}", tests::free_port()?),
        ..Default::default()
    };
    let (status, body) = readyz(down).await?;
    assert_eq!(status, 503);
    assert_eq!(body["error_type"], "not_ready");
    let message = body["error"].as_str().unwrap_or_default();
    assert!(message.contains("broker is unreachable") && message.contains("no model"), "{body}");
    // A real broker: only the model is missing.
    let broker = tests::Tansu::start()?;
    let up = schemas::config::KafkaConfig { brokers: broker.brokers.clone(), ..Default::default() };
    let (status, body) = readyz(up).await?;
    assert_eq!(status, 503);
    let message = body["error"].as_str().unwrap_or_default();
    assert!(message.contains("no model") && !message.contains("broker"), "{body}");
    cancel.cancel();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_rollback_runs_and_data_versions_over_rest() -> anyhow::Result<()> {
    let Seeded { dir: _dir, auth, base, store, .. } = seeded().await?;
    let http = reqwest::Client::new();
    let admin = auth.login("admin", "admin-pw")?.token;
    let call = |method: &str, path: &str, body: Option<serde_json::Value>| {
        let req = match method {
            "POST" => http.post(format!("{base}{path}")),
            _ => http.get(format!("{base}{path}")),
        }
        .bearer_auth(&admin);
        let req = match body {
            Some(b) => req.json(&b),
            None => req,
        };
        async move {
            let r = req.send().await?;
            anyhow::Ok((r.status().as_u16(), r.json::<serde_json::Value>().await?))
        }
    };

    // Promote v2, audited with the caller as the actor.
    let (status, body) =
        call("POST", "/v1/models/spam/promote", Some(serde_json::json!({"version": 2, "reason": "better"})))
            .await?;
    assert_eq!(
        (status, body["version"].as_u64(), body["previous"].as_u64()),
        (200, Some(2), Some(1)),
        "{body}"
    );
    let (_, model) = call("GET", "/v1/models/spam", None).await?;
    assert_eq!(model["aliases"]["production"], 2);
    assert_eq!(model["versions"].as_array().map(Vec::len), Some(2));
    let audit = store.audit_log(1).await?;
    assert_eq!((audit[0].actor.as_str(), audit[0].details["reason"].as_str()), ("admin", Some("better")));
    // A version resolved by alias, with its aliases; a missing card is reported, not fatal.
    let (status, v) = call("GET", "/v1/models/spam/versions/production", None).await?;
    assert_eq!((status, v["version"]["version"].as_u64()), (200, Some(2)));
    assert_eq!(v["aliases"], serde_json::json!(["production"]));
    assert!(v["card"]["error"].as_str().is_some_and(|e| e.contains("nonexistent")), "{v}");

    // Rollback steps back to v1, then there is nothing left to roll back to.
    let (status, body) = call("POST", "/v1/models/spam/rollback", None).await?;
    assert_eq!(
        (status, body["version"].as_u64(), body["previous"].as_u64()),
        (200, Some(1), Some(2)),
        "{body}"
    );
    assert_eq!(store.get_alias("spam", "production").await?, Some(1));
    assert_eq!(store.audit_log(1).await?[0].action, "rollback_alias");
    let (status, body) = call("POST", "/v1/models/spam/rollback", Some(serde_json::json!({}))).await?;
    assert_eq!((status, body["error_type"].as_str()), (409, Some("conflict")), "{body}");

    // Bad requests: 4xx with the JSON error shape, and the alias untouched.
    for (path, body, expected) in [
        ("/v1/models/spam/promote", serde_json::json!({"version": 9}), 404),
        ("/v1/models/ghost/promote", serde_json::json!({"version": 1}), 404),
        ("/v1/models/spam/promote", serde_json::json!({"version": "two"}), 400),
        ("/v1/models/spam/promote", serde_json::json!({"version": 2, "alias": "Not Valid"}), 400),
        ("/v1/models/spam/rollback", serde_json::json!({"alias": "canary"}), 404),
    ] {
        let (status, b) = call("POST", path, Some(body.clone())).await?;
        assert_eq!(status, expected, "{path} {body}: {b}");
        assert!(b["error"].is_string() && b["error_type"].is_string(), "{b}");
    }
    assert_eq!(store.get_alias("spam", "production").await?, Some(1));

    // The audit log, newest first, paged: the seed's move, the promote, the rollback.
    let (status, page) = call("GET", "/v1/audit?limit=2", None).await?;
    let actions = |p: &serde_json::Value| -> Vec<String> {
        p["records"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["action"].as_str().map(String::from))
            .collect()
    };
    assert_eq!((status, page["more"].as_bool()), (200, Some(true)), "{page}");
    assert_eq!(actions(&page), ["rollback_alias", "set_alias"]);
    assert_eq!(page["records"][1]["details"]["reason"], "better");
    let (_, rest) = call("GET", "/v1/audit?limit=2&offset=2", None).await?;
    assert_eq!((actions(&rest).len(), rest["more"].as_bool()), (1, Some(false)), "{rest}");
    assert_eq!(rest["records"][0]["actor"], "seed");
    for bad in ["limit=0", "limit=501", "offset=-1", "limit=two", "offset=10001", "offset=1&offset=2"] {
        let (status, b) = call("GET", &format!("/v1/audit?{bad}"), None).await?;
        assert_eq!((status, b["error_type"].as_str()), (400, Some("bad_request")), "{bad}: {b}");
    }

    // Runs and metric history.
    let (_, runs) = call("GET", "/v1/runs?experiment=spam", None).await?;
    assert_eq!(runs.as_array().map(Vec::len), Some(1));
    let (_, none) = call("GET", "/v1/runs?experiment=other", None).await?;
    assert_eq!(none, serde_json::json!([]));
    let (_, history) = call("GET", "/v1/runs/r1/metrics/loss", None).await?;
    assert_eq!(history["history"], serde_json::json!([{"step": 0, "value": 0.9}, {"step": 1, "value": 0.4}]));
    assert_eq!(call("GET", "/v1/runs/r1/metrics/nope", None).await?.0, 404);
    assert_eq!(call("GET", "/v1/runs/r9", None).await?.0, 404);

    // Data versions by list, `latest`, tag and id prefix; a path-traversal name is refused.
    let (_, datasets) = call("GET", "/v1/datasets", None).await?;
    assert_eq!((datasets[0]["name"].as_str(), datasets[0]["rows"].as_u64()), (Some("text"), Some(3)));
    assert_eq!(datasets[0]["tags"]["golden"], datasets[0]["latest"]);
    let id = datasets[0]["latest"].as_str().unwrap_or_default().to_string();
    for reference in ["latest", "golden", "v1", &id[..8]] {
        let (status, m) = call("GET", &format!("/v1/datasets/text/versions/{reference}"), None).await?;
        assert_eq!((status, m["id"].as_str()), (200, Some(id.as_str())), "{reference}");
    }
    // A version's rows, paged, as JSON objects.
    let (status, page) = call("GET", "/v1/datasets/text/versions/golden/rows?limit=2", None).await?;
    assert_eq!(
        (status, page["total"].as_u64(), page["more"].as_bool()),
        (200, Some(3), Some(true)),
        "{page}"
    );
    assert_eq!(page["rows"], serde_json::json!([{"text": "a"}, {"text": "b"}]));
    let (_, last) = call("GET", "/v1/datasets/text/versions/v1/rows?offset=2&limit=5", None).await?;
    assert_eq!(
        (last["rows"].clone(), last["more"].as_bool()),
        (serde_json::json!([{"text": "c"}]), Some(false))
    );
    let (_, past) = call("GET", "/v1/datasets/text/versions/latest/rows?offset=9", None).await?;
    assert_eq!(past["rows"], serde_json::json!([]));
    for bad in ["limit=0", "limit=501", "offset=x", "limit=1&limit=2"] {
        let (status, b) = call("GET", &format!("/v1/datasets/text/versions/latest/rows?{bad}"), None).await?;
        assert_eq!((status, b["error_type"].as_str()), (400, Some("bad_request")), "{bad}: {b}");
    }
    assert_eq!(call("GET", "/v1/datasets/text/versions/v9/rows", None).await?.0, 404);
    assert_eq!(call("GET", "/v1/datasets/text/versions/v2", None).await?.0, 404);
    assert_eq!(call("GET", "/v1/datasets/nope/versions", None).await?.0, 404);
    assert_eq!(call("GET", "/v1/datasets/..%2F..%2Fetc/versions", None).await?.0, 400);
    Ok(())
}
