//! The REST API keeps the contract its OpenAPI document states: schemathesis (a client nobody
//! here wrote) generates requests from `/openapi.json` for every operation — schema-valid ones
//! that must be accepted, invalid ones that must be refused with 4xx — against `driftwood serve`
//! with auth on and a trained model, and checks every response against the document (status
//! codes, content types, bodies) and that nothing answers 5xx.

use std::process::Command;

use tests::{TestEnv, free_addr, python};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_errors_or_schema_mismatches() -> anyhow::Result<()> {
    let env = TestEnv::start("contract")?;
    let mut config = env.config();
    config.serve.listen = free_addr()?;
    config.serve.scorer = false;
    let users = env.dir().join("users.toml");
    std::fs::write(
        &users,
        format!(
            "[[user]]\nname = \"admin\"\npassword_hash = \"{}\"\nroles = [\"admin\"]\n\
             [[client]]\nid = \"svc\"\nsecret_hash = \"{}\"\nroles = [\"predictor\"]\n",
            tests::hash_password("admin-pw")?,
            tests::hash_password("svc-secret")?
        ),
    )?;
    config.auth.enabled = true;
    config.auth.signing_keys =
        vec![format!("{}/../serving/tests/fixtures/jwt-key-1.pem", env!("CARGO_MANIFEST_DIR"))];
    config.auth.users_file = users.display().to_string();
    ingest::kafka::ensure_topics(&config.kafka, &config.topics().all()).await?;
    tests::train_production(&config, 300).await?;
    let _server = tests::spawn_driftwood(&config, &["serve"], "serve.log")?;
    let base = format!("http://{}", config.serve.listen);
    tests::wait_ready(&base).await?;

    let http = reqwest::Client::new();
    let form = [("grant_type", "password"), ("username", "admin"), ("password", "admin-pw")];
    let token: serde_json::Value =
        http.post(format!("{base}/oauth/token")).form(&form).send().await?.error_for_status()?.json().await?;
    let token = token["access_token"].as_str().expect("a token");
    let doc: serde_json::Value = http.get(format!("{base}/openapi.json")).send().await?.json().await?;
    let operations: usize =
        doc["paths"].as_object().expect("paths").values().map(|p| p.as_object().map_or(0, |m| m.len())).sum();
    assert!(operations >= 18, "{operations} operations documented");

    let out = Command::new(python()?)
        .args([
            "-m",
            "schemathesis.cli",
            "--config-file",
            concat!(env!("CARGO_MANIFEST_DIR"), "/py/schemathesis.toml"),
        ])
        .args(["run", &format!("{base}/openapi.json")])
        .args(["--header", &format!("Authorization: Bearer {token}")])
        .args(["--checks", "all", "--max-examples", "60", "--seed", "20261204"])
        .args(["--generation-database", "none", "--no-color"])
        .current_dir(env.dir())
        .output()?;
    let report = String::from_utf8_lossy(&out.stdout);
    let serve_log = std::fs::read_to_string(env.dir().join("serve.log")).unwrap_or_default();
    assert!(
        out.status.success(),
        "schemathesis found failures:\n{report}\n{}\nserver log tail:\n{}",
        String::from_utf8_lossy(&out.stderr),
        serve_log.lines().rev().take(20).collect::<Vec<_>>().join("\n")
    );
    // Every documented operation was exercised (but `GET /openapi.json`, which schemathesis
    // loads as the specification instead), and many cases passed.
    assert!(report.contains(&format!("Tested: {}", operations - 1)), "{report}");
    let generated = report
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_suffix(" passed")?
                .split_once(" generated, ")
                .map(|(g, p)| (g.to_string(), p.to_string()))
        })
        .expect("a test-case summary");
    assert_eq!(generated.0, generated.1, "every generated case passed: {report}");
    assert!(generated.0.parse::<usize>()? > 500, "{report}");
    Ok(())
}
