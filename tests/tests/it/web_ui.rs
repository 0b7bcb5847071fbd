//! The web UI over real HTTP, as a browser speaks it: the login form and its session cookie,
//! the cookie refused on `/v1`, roles enforced on the server whatever a page shows, CSRF
//! (Fetch-Metadata, Origin and the form token), the security headers, escaping of user data,
//! and pages showing the numbers of the `/v1` routes.

use std::sync::Arc;

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, LOCATION, SET_COOKIE};
use schemas::config::AuthConfig;
use serving::auth::{JwtAuth, hash_password};

const XSS: [&str; 3] = [
    "<script>alert('xss')</script>",
    "\"><img src=x onerror=alert(1)>",
    "javascript:alert(1)//<svg onload=alert(1)>",
];

fn auth_config(dir: &std::path::Path) -> anyhow::Result<AuthConfig> {
    let mut users = String::new();
    for (name, roles) in [("viewer", "\"viewer\""), ("admin", "\"admin\""), ("none", "")] {
        users.push_str(&format!(
            "[[user]]\nname = \"{name}\"\npassword_hash = \"{}\"\nroles = [{roles}]\n\n",
            hash_password(&format!("{name}-pw"))?
        ));
    }
    let users_file = dir.join("users.toml");
    std::fs::write(&users_file, users)?;
    Ok(AuthConfig {
        enabled: true,
        signing_keys: vec![format!("{}/../serving/tests/fixtures/jwt-key-1.pem", env!("CARGO_MANIFEST_DIR"))],
        users_file: users_file.display().to_string(),
        ..AuthConfig::default()
    })
}

/// Runs whose params, tags and metrics carry the XSS strings, a `spam` model with v1 at
/// production and v2, and a dataset whose rows are the XSS strings.
async fn seed(state: &serving::api::AppState) -> anyhow::Result<()> {
    use metastore::{ModelVersion, Run, RunStatus};
    let now = chrono::Utc::now();
    for i in 0..30u32 {
        let mut run = Run::started("spam", None, Default::default(), Default::default(), "v1");
        run.run_id = format!("run{i:02}");
        run.started_at = now - chrono::Duration::seconds(i64::from(100 - i));
        run.status = if i % 3 == 0 { RunStatus::Failed } else { RunStatus::Finished };
        run.params.insert("lr".into(), format!("{}", 0.01 * f64::from(i + 1)));
        run.params.insert("note".into(), XSS[i as usize % 3].into());
        run.tags.insert("team".into(), if i < 10 { "search" } else { XSS[1] }.into());
        state.store.create_run(&run).await?;
        for step in 0..50u64 {
            let acc = f64::from(i) / 100.0 + step as f64 / 1000.0;
            state.store.log_metrics(&run.run_id, step, &[("accuracy".to_string(), acc)].into()).await?;
        }
    }
    for _ in 0..2 {
        state
            .store
            .register_model(ModelVersion {
                name: "spam".into(),
                version: 0,
                run_id: "run01".into(),
                family: "logreg".into(),
                data_version: "d".repeat(64),
                spec_hash: "h".into(),
                metrics: [("test_accuracy".to_string(), 0.97)].into(),
                artifact_dir: "/nonexistent".into(),
                artifact_sha256: String::new(),
                created_at: now,
            })
            .await?;
    }
    state.store.set_alias("spam", "production", 1, "seed", XSS[0]).await?;
    // Logged predictions, some doubtful, one with markup for an id and a label.
    let predictions: Vec<metastore::PredictionLogEntry> = (0..20)
        .map(|i| metastore::PredictionLogEntry {
            at: now - chrono::Duration::seconds(100 - i),
            id: Some(if i == 19 { XSS[1].to_string() } else { format!("rec-{i}") }),
            channel: if i % 2 == 0 { "stream".into() } else { "rest".into() },
            model: "spam".into(),
            version: 1,
            label: if i == 18 { XSS[0].into() } else { "ham".into() },
            confidence: 0.5 + i as f32 / 40.0,
            latency_us: 90,
        })
        .collect();
    state.store.log_predictions(&predictions).await?;
    // Three kept drift windows of v1, the last one drifting.
    for i in 0..3u64 {
        let psi = 0.05 + 0.1 * i as f64;
        let report = serde_json::json!({
            "psi": {"chars": psi, XSS[1]: 0.01},
            "ks": {"chars": {"d": 0.02 * i as f64, "p": 0.5, "error_bound": 0.0}},
            "chi_square": {"statistic": 1.0, "p": 0.4},
            "accuracy": null,
            "signals": if psi > 0.2 { serde_json::json!([{"feature": "chars", "statistic": "psi", "value": psi, "threshold": 0.2}]) } else { serde_json::json!([]) },
            "thresholds": {"psi": 0.2, "ks_d": 0.1, "ks_p_value": 0.01, "chi_square_p_value": 0.01, "accuracy_floor": 0.92},
            "drift_confirmed": psi > 0.2,
            "retrain_requested": false,
        });
        let w = metastore::DriftWindowRecord {
            model: "spam".into(),
            version: 1,
            closed_at: now - chrono::Duration::seconds(60 - 10 * i as i64),
            index: i,
            records: 500,
            report,
        };
        state.store.record_drift_window(&w, 0).await?;
    }
    tests::commit_texts(&state.snapshots, "text", &XSS)?;
    Ok(())
}

struct Ui {
    _dir: tempfile::TempDir,
    base: String,
    host: String,
    store: Arc<dyn metastore::MetadataStore>,
    http: reqwest::Client,
}

async fn start(auth: Option<AuthConfig>) -> anyhow::Result<Ui> {
    let dir = tempfile::tempdir()?;
    let config = match auth {
        Some(a) => a,
        None => auth_config(dir.path())?,
    };
    let state = tests::app_state(dir.path(), Arc::new(JwtAuth::from_config(&config)?))?;
    seed(&state).await?;
    let store = state.store.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let host = listener.local_addr()?.to_string();
    tokio::spawn(serving::api::serve(listener, serving::api::router(state), std::future::pending()));
    // A browser follows redirects itself; here each one is looked at.
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build()?;
    Ok(Ui { _dir: dir, base: format!("http://{host}"), host, store, http })
}

fn session_of(headers: &HeaderMap) -> String {
    let cookie = headers[SET_COOKIE].to_str().expect("text");
    cookie.split(';').next().expect("a pair").to_string()
}

impl Ui {
    async fn login(&self, user: &str) -> anyhow::Result<String> {
        let r = self
            .http
            .post(format!("{}/ui/login", self.base))
            .header("origin", format!("http://{}", self.host))
            .header("sec-fetch-site", "same-origin")
            .form(&[("username", user), ("password", &format!("{user}-pw")), ("next", "/ui/models/spam")])
            .send()
            .await?;
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "{user} logs in");
        assert_eq!(r.headers()[LOCATION], "/ui/models/spam", "back to the page asked for");
        Ok(session_of(r.headers()))
    }

    async fn page(&self, cookie: &str, path: &str) -> anyhow::Result<(StatusCode, String)> {
        let r = self.http.get(format!("{}{path}", self.base)).header("cookie", cookie).send().await?;
        Ok((r.status(), r.text().await?))
    }

    /// A form post as the browser sends it from one of the server's pages.
    async fn post(
        &self,
        cookie: &str,
        path: &str,
        form: &[(&str, &str)],
        site: &str,
    ) -> anyhow::Result<reqwest::Response> {
        let origin = if site == "cross-site" {
            "http://evil.example".to_string()
        } else {
            format!("http://{}", self.host)
        };
        Ok(self
            .http
            .post(format!("{}{path}", self.base))
            .header("cookie", cookie)
            .header("origin", origin)
            .header("sec-fetch-site", site)
            .form(form)
            .send()
            .await?)
    }
}

/// The CSRF token a page's forms carry.
fn csrf_of(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("a form with the CSRF token")
        + "name=\"csrf\" value=\"".len();
    html[at..at + 32].to_string()
}

fn assert_inert(html: &str, page: &str) {
    for raw in ["<script>alert", "<img src=x", "<svg onload", "onerror=alert(1)>"] {
        assert!(!html.contains(raw), "{page} renders `{raw}` as markup");
    }
    // Our own scripts are the only script elements, all external.
    assert!(
        html.matches("<script").count() == html.matches("<script src=\"/ui/assets/").count(),
        "{page}: an inline script"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_roles_csrf_headers_and_escaping() -> anyhow::Result<()> {
    let ui = start(None).await?;

    // No session: every page sends the browser to the login form, remembering where it was.
    let r = ui.http.get(format!("{}/ui/runs?sort=metrics.accuracy", ui.base)).send().await?;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()[LOCATION], "/ui/login?next=%2Fui%2Fruns%3Fsort%3Dmetrics.accuracy");
    let r = ui.http.get(format!("{}/ui/login", ui.base)).send().await?;
    assert_eq!(r.status(), 200);
    let h = r.headers();
    assert!(h["content-security-policy"].to_str()?.contains("script-src 'self'"));
    assert!(!h["content-security-policy"].to_str()?.contains("unsafe-inline"));
    assert_eq!(
        (&h["x-content-type-options"], &h["referrer-policy"]),
        (&"nosniff".parse()?, &"same-origin".parse()?)
    );
    assert_eq!(h["cache-control"], "no-store");

    // A wrong password: the form again, 401, the reason shown; no cookie.
    let r = ui
        .http
        .post(format!("{}/ui/login", ui.base))
        .form(&[("username", "viewer"), ("password", "nope")])
        .send()
        .await?;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.headers().get(SET_COOKIE).is_none());
    assert!(r.text().await?.contains("invalid user name or password"));
    // A login posted from another site is refused before the password is looked at.
    let r = ui
        .http
        .post(format!("{}/ui/login", ui.base))
        .header("sec-fetch-site", "cross-site")
        .form(&[("username", "viewer"), ("password", "viewer-pw")])
        .send()
        .await?;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);

    // The cookie: HttpOnly, SameSite=Strict, only under /ui, the token's lifetime.
    let r = ui
        .http
        .post(format!("{}/ui/login", ui.base))
        .form(&[("username", "viewer"), ("password", "viewer-pw"), ("next", "https://evil.example/")])
        .send()
        .await?;
    assert_eq!(r.headers()[LOCATION], "/ui", "never an open redirect");
    let set = r.headers()[SET_COOKIE].to_str()?.to_string();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/ui", "Max-Age=3600"] {
        assert!(set.contains(attr), "{set} lacks {attr}");
    }
    assert!(!set.contains("Secure"), "plain HTTP: not Secure");
    let viewer = ui.login("viewer").await?;
    // /v1 stays bearer-only: the session cookie opens nothing there.
    let r = ui.http.get(format!("{}/v1/models", ui.base)).header("cookie", &viewer).send().await?;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // A viewer sees no promote form, and a forged one is refused by the server.
    let (status, html) = ui.page(&viewer, "/ui/models/spam").await?;
    assert_eq!(status, 200);
    assert!(
        !html.contains("/ui/models/spam/promote") && !html.contains("Roll back"),
        "no admin forms for a viewer"
    );
    let token = csrf_of(&html);
    let r = ui
        .post(&viewer, "/ui/models/spam/promote", &[("csrf", &token), ("version", "2")], "same-origin")
        .await?;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(r.text().await?.contains("lacks the `admin` role"));
    assert_eq!(ui.store.get_alias("spam", "production").await?, Some(1));

    // An admin promotes through the form; without the token, or from another site, nothing moves.
    let admin = ui.login("admin").await?;
    let (_, html) = ui.page(&admin, "/ui/models/spam").await?;
    assert!(html.contains("action=\"/ui/models/spam/promote\""));
    let token = csrf_of(&html);
    assert_ne!(token, csrf_of(&ui.page(&viewer, "/ui/models/spam").await?.1), "a token per session");
    let promote = [("csrf", token.as_str()), ("version", "2"), ("reason", "better recall")];
    for (form, site) in [
        (&[("version", "2")][..], "same-origin"),
        (&[("csrf", "0".repeat(32).as_str()), ("version", "2")][..], "same-origin"),
        (&promote[..], "cross-site"),
        (&promote[..], "same-site"),
    ] {
        let r = ui.post(&admin, "/ui/models/spam/promote", form, site).await?;
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{form:?} from {site}");
    }
    assert_eq!(ui.store.get_alias("spam", "production").await?, Some(1));
    let r = ui.post(&admin, "/ui/models/spam/promote", &promote, "same-origin").await?;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(ui.store.get_alias("spam", "production").await?, Some(2));
    let (_, html) = ui.page(&admin, "/ui/models/spam").await?;
    assert!(
        html.contains("set_alias</strong> by admin") && html.contains("better recall"),
        "the timeline shows it"
    );
    let r = ui.post(&admin, "/ui/models/spam/rollback", &[("csrf", &token)], "same-origin").await?;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(ui.store.get_alias("spam", "production").await?, Some(1));
    let audit = ui.store.audit_log(10).await?;
    assert_eq!((audit[0].actor.as_str(), audit[0].action.as_str()), ("admin", "rollback_alias"));
    // A user without the viewer role signs in and gets no page.
    let r = ui
        .http
        .post(format!("{}/ui/login", ui.base))
        .form(&[("username", "none"), ("password", "none-pw")])
        .send()
        .await?;
    let nobody = session_of(r.headers());
    let (status, html) = ui.page(&nobody, "/ui").await?;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(html.contains("lacks the `viewer` role"), "{html}");

    // Every page: 200, user data inert.
    for path in [
        "/ui",
        "/ui/runs",
        "/ui/runs?tag=team:search&sort=params.lr&order=asc",
        "/ui/runs/run03",
        "/ui/runs/compare?run=run01&run=run02&run=run03",
        "/ui/models",
        "/ui/models/spam",
        "/ui/models/spam/1",
        "/ui/data",
        "/ui/data/text",
        "/ui/data/text/latest",
        "/ui/audit",
        "/ui/drift?model=spam&version=1",
        "/ui/drift?model=spam&version=2",
        "/ui/predictions?model=spam",
        "/ui/predictions?model=spam&channel=stream&doubtful=on",
    ] {
        let (status, html) = ui.page(&viewer, path).await?;
        assert_eq!(status, 200, "{path}: {html}");
        assert_inert(&html, path);
    }
    let (_, rows) = ui.page(&viewer, "/ui/data/text/latest").await?;
    // Shown, escaped (askama writes numeric entities).
    assert!(rows.contains("&#60;script&#62;alert(&#39;xss&#39;)&#60;/script&#62;"), "{rows}");
    assert!(rows.contains("&#34;&#62;&#60;img src=x onerror=alert(1)&#62;"), "{rows}");
    // The drift page: every kept window in the table, the drifting one among the events, the
    // threshold line on the PSI chart.
    let (_, html) = ui.page(&viewer, "/ui/drift?model=spam&version=1").await?;
    assert!(html.contains("Every window (3, newest first)") && html.contains("drift confirmed"), "{html}");
    assert!(html.contains("data-threshold=\"0.2000\""), "the PSI threshold line");
    assert!(html.contains("<td class=\"num\">0.2500</td>"), "window 2's PSI as the route has it");
    // Doubtful predictions (confidence ≤ 0.6): i = 0..4, newest first.
    let (_, html) = ui.page(&viewer, "/ui/predictions?model=spam&doubtful=on").await?;
    let listed: Vec<&str> =
        html.match_indices("href=\"/ui/predictions/rec-").map(|(at, _)| &html[at + 22..at + 27]).collect();
    assert_eq!(listed, ["rec-4", "rec-3", "rec-2", "rec-1", "rec-0"], "{html}");
    // An id with markup is escaped as text and encoded in its link.
    let (_, html) = ui.page(&viewer, "/ui/predictions?model=spam").await?;
    assert!(html.contains("/ui/predictions/%22%3E%3Cimg"), "the id is URL-encoded in the link");
    // A missing run is a 404 page, not a redirect or a JSON error.
    let (status, html) = ui.page(&viewer, "/ui/runs/nope").await?;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(html.contains("<h1>404 Not Found</h1>"));

    // The runs page shows what GET /v1/search/runs answers: same total, same first page order.
    let token = ui
        .http
        .post(format!("{}/oauth/token", ui.base))
        .form(&[("grant_type", "password"), ("username", "viewer"), ("password", "viewer-pw")])
        .send()
        .await?
        .json::<serde_json::Value>()
        .await?["access_token"]
        .as_str()
        .expect("a token")
        .to_string();
    let query = "status=finished&sort=metrics.accuracy&order=desc&limit=5";
    let api: serde_json::Value = ui
        .http
        .get(format!("{}/v1/search/runs?{query}", ui.base))
        .bearer_auth(&token)
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(api["total"], 20, "30 runs, every third failed");
    let ids: Vec<&str> =
        api["runs"].as_array().expect("runs").iter().map(|r| r["run_id"].as_str().unwrap_or("")).collect();
    assert_eq!(ids, ["run29", "run28", "run26", "run25", "run23"]);
    let (_, html) = ui.page(&viewer, &format!("/ui/runs?{query}")).await?;
    assert!(html.contains("1–5 of 20"), "the pager counts what the route counts");
    let positions: Vec<usize> =
        ids.iter().map(|id| html.find(&format!("/ui/runs/{id}\"")).expect("each run listed")).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "in the route's order");
    // A curve thinned on the server: 50 steps asked as at most 10 points, the ends kept.
    let thin: serde_json::Value = ui
        .http
        .get(format!("{}/v1/runs/run05/metrics/accuracy?max_points=10", ui.base))
        .bearer_auth(&token)
        .send()
        .await?
        .json()
        .await?;
    let points = thin["history"].as_array().expect("points");
    assert!(points.len() <= 10 && points[0]["step"] == 0 && points[points.len() - 1]["step"] == 49, "{thin}");

    // Assets: compiled in, cached for a year under their hash URL.
    let (_, html) = ui.page(&viewer, "/ui").await?;
    let at = html.find("/ui/assets/htmx.min.js?h=").expect("htmx linked");
    let url = &html[at..html[at..].find('"').expect("end") + at];
    let r = ui.http.get(format!("{}{url}", ui.base)).send().await?;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "public, max-age=31536000, immutable");
    assert!(r.headers()["content-type"].to_str()?.starts_with("text/javascript"));

    // Signing out clears the cookie.
    let token = csrf_of(&ui.page(&viewer, "/ui").await?.1);
    let r = ui.post(&viewer, "/ui/logout", &[("csrf", &token)], "same-origin").await?;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(r.headers()[SET_COOKIE].to_str()?.contains("Max-Age=0"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_auth_disabled_every_page_says_so() -> anyhow::Result<()> {
    let ui = start(Some(AuthConfig::default())).await?;
    let (status, html) = ui.page("", "/ui/models/spam").await?;
    assert_eq!(status, 200);
    assert!(html.contains("Authentication is disabled"));
    // Everyone is admin then, and the forms are still CSRF-checked.
    assert!(html.contains("action=\"/ui/models/spam/promote\""));
    let r = ui.post("", "/ui/models/spam/promote", &[("version", "2")], "same-origin").await?;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let token = csrf_of(&html);
    let r =
        ui.post("", "/ui/models/spam/promote", &[("csrf", &token), ("version", "2")], "same-origin").await?;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(ui.store.get_alias("spam", "production").await?, Some(2));
    assert_eq!(ui.http.get(format!("{}/ui/login", ui.base)).send().await?.status(), StatusCode::SEE_OTHER);
    Ok(())
}

/// The UI in Chromium on a store filled by the real loop: period 1 trained and promoted,
/// period 2 streamed through `driftwood up` (auth on) until drift is confirmed and a retrain
/// promoted. tests/py/browser_ui.py then signs in as viewer and admin and checks every page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_loop_seen_in_chromium() -> anyhow::Result<()> {
    use ingest::source;
    use metastore::MetadataStore;
    use tests::{TestEnv, corpus_dir, outgoing, publish, shuffle};
    let env = TestEnv::on(tests::On::Tansu, "webui")?;
    let mut config = tests::closed_loop_config(&env)?;
    config.auth = auth_config(env.dir())?;
    // Small enough that publish_bad.py's oversized record still fits the broker's limit.
    config.ingest.max_record_bytes = 64 * 1024;
    ingest::kafka::ensure_topics(&config.kafka, &config.topics().all()).await?;
    let mut history = config.clone();
    history.kafka.topic_prefix = "webui-history".into();
    ingest::kafka::ensure_topics(&history.kafka, &history.topics().all()).await?;
    let mut period1 = source::corpus(&corpus_dir()?, source::CORPUS_PERIOD_1)?;
    shuffle(&mut period1, 11);
    // User data that must render as text: the raw version's first rows.
    for (i, x) in XSS.iter().enumerate().rev() {
        let mut r = period1[i].clone();
        (r.id, r.text) = (format!("xss-{i}"), format!("{x} {}", r.text));
        period1.insert(0, r);
    }
    publish(&history, &history.topics().raw, outgoing(&period1)).await?;
    tests::driftwood(&history, &["snapshot"])?;
    tests::driftwood(&history, &["train", "--alias", "production"])?;

    let up = tests::spawn_driftwood(&config, &["up"], "up.log")?;
    let base = format!("http://{}", config.serve.listen);
    tests::wait_ready(&base).await?;
    let mut period2 = source::corpus(&corpus_dir()?, source::CORPUS_PERIOD_2)?;
    shuffle(&mut period2, 12);
    publish(&config, &config.topics().raw, outgoing(&period2)).await?;
    // Bad records too (confluent-kafka), for the dead-letter page.
    let bad = tokio::process::Command::new(tests::python()?)
        .args([
            &format!("{}/py/publish_bad.py", env!("CARGO_MANIFEST_DIR")),
            &config.kafka.brokers,
            &config.topics().raw,
            &config.ingest.max_record_bytes.to_string(),
        ])
        .output()
        .await?;
    anyhow::ensure!(bad.status.success(), "publish_bad.py: {}", String::from_utf8_lossy(&bad.stderr));
    let meta = metastore::SqliteStore::in_data_dir(env.dir())?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    while meta.get_alias("spam", "production").await?.is_none_or(|v| v <= 1) {
        anyhow::ensure!(std::time::Instant::now() < deadline, "no retrained model was promoted in time");
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }

    let out = std::path::PathBuf::from(std::env::var("DRIFTWOOD_CACHE").unwrap_or_else(|_| "/tmp".into()))
        .join("ui-screenshots");
    let script = format!("{}/py/browser_ui.py", env!("CARGO_MANIFEST_DIR"));
    let output = tokio::process::Command::new(tests::python()?)
        .args([script.as_str(), base.as_str(), &out.display().to_string(), "spam"])
        .env(
            "DRIFTWOOD_CHROMIUM",
            std::env::var("DRIFTWOOD_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()),
        )
        .env("UI_VIEWER_PASSWORD", "viewer-pw")
        .env("UI_ADMIN_PASSWORD", "admin-pw")
        .output()
        .await?;
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    drop(up);
    anyhow::ensure!(output.status.success(), "the browser test failed:\n{stderr}\n{stdout}");
    let summary: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())?;
    eprintln!(
        "browser: {} pages, screenshots in {}",
        summary["pages"].as_array().map_or(0, Vec::len),
        out.display()
    );
    assert!(summary["pages"].as_array().is_some_and(|p| p.len() >= 11), "{summary}");
    for shot in [
        "overview",
        "runs",
        "compare",
        "run",
        "models",
        "model",
        "model_version",
        "data",
        "data_version",
        "audit",
        "model_admin",
    ] {
        assert!(out.join(format!("screenshots/{shot}.png")).is_file(), "no screenshot of {shot}");
    }
    Ok(())
}
