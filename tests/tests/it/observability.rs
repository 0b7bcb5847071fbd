//! Monitoring as code, proven: the alert rules pass promtool's checks and unit tests, and a
//! real Prometheus scraping a running `driftwood up` fed with the corpus returns data for every
//! Grafana panel's query and evaluates every rule without error.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ingest::source::{self, Outgoing};
use tests::{
    Killed, TestEnv, corpus_dir, driftwood_bin, env_for, free_addr, free_port, outgoing, publish, read_all,
    shuffle,
};

fn monitoring() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../monitoring")
}

fn promtool(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("promtool").args(args).current_dir(monitoring()).output()?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    anyhow::ensure!(out.status.success(), "promtool {args:?} failed:\n{text}");
    Ok(text)
}

/// Every `expr` of the dashboards, with the panel title.
fn panel_queries() -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(monitoring().join("grafana/dashboards"))? {
        let path = entry?.path();
        let dashboard: serde_json::Value = serde_json::from_slice(&std::fs::read(&path)?)?;
        for panel in dashboard["panels"].as_array().into_iter().flatten() {
            for target in panel["targets"].as_array().into_iter().flatten() {
                let expr = target["expr"].as_str().unwrap_or_default().to_string();
                out.push((format!("{} / {}", dashboard["title"], panel["title"]), expr));
            }
        }
    }
    Ok(out)
}

/// `driftwood_*` metric names mentioned in `text`, without histogram suffixes.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("driftwood_") {
        let start = i + at;
        let boundary = start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let end = start
            + text[start..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(text.len() - start);
        if boundary {
            let name = &text[start..end];
            let base =
                ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(name);
            names.insert(base.to_string());
        }
        i = end;
    }
    names
}

/// Alerting and recording rules in `monitoring/alerts.yml`.
fn rule_count() -> anyhow::Result<usize> {
    let rules = std::fs::read_to_string(monitoring().join("alerts.yml"))?;
    Ok(rules
        .lines()
        .filter(|l| l.trim_start().starts_with("- alert: ") || l.trim_start().starts_with("- record: "))
        .count())
}

#[test]
fn alert_rules_pass_promtool_checks_and_unit_tests() -> anyhow::Result<()> {
    let checked = promtool(&["check", "rules", "alerts.yml"])?;
    assert!(checked.contains(&format!("SUCCESS: {} rules found", rule_count()?)), "{checked}");
    let tested = promtool(&["test", "rules", "alerts_test.yml"])?;
    assert!(tested.contains("SUCCESS"), "{tested}");
    promtool(&["check", "config", "prometheus.yml"])?;
    // Every alert has at least one unit test.
    let rules = std::fs::read_to_string(monitoring().join("alerts.yml"))?;
    let tests = std::fs::read_to_string(monitoring().join("alerts_test.yml"))?;
    for line in rules.lines().filter_map(|l| l.trim().strip_prefix("- alert: ")) {
        assert!(tests.contains(&format!("alertname: {line}")), "alert {line} has no promtool test");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_panel_and_rule_works_against_a_live_prometheus() -> anyhow::Result<()> {
    let env = TestEnv::start("obs")?;
    let mut config = env.config();
    config.snapshot.commit_interval_secs = 1;
    config.drift.window = 500;
    config.serve.listen = free_addr()?;
    let topics = config.topics();
    ingest::kafka::ensure_topics(&config.kafka, &topics.all()).await?;
    let bin = driftwood_bin()?;

    // A model to serve, then `driftwood up` on period 1 plus a few bad records.
    let mut period1 = source::corpus(&corpus_dir()?, source::CORPUS_PERIOD_1)?;
    shuffle(&mut period1, 31);
    let (first, rest) = period1.split_at(1000);
    publish(&config, &topics.raw, outgoing(first)).await?;
    for args in [&["snapshot"][..], &["train", "--alias", "production"][..]] {
        let out = Command::new(&bin).args(args).envs(env_for(&config)).output()?;
        anyhow::ensure!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let _up = tests::spawn_driftwood(&config, &["up"], "up.log")?;
    let mut more = outgoing(rest);
    more.extend(
        [b"\xff\xfe".to_vec(), b"[1]".to_vec()].into_iter().map(|value| Outgoing { key: None, value }),
    );
    publish(&config, &topics.raw, more).await?;

    let base = format!("http://{}", config.serve.listen);
    let http = reqwest::Client::new();
    tests::wait_ready(&base).await?;

    // Prometheus scrapes every second and evaluates the rules.
    let prom_dir = tempfile::tempdir()?;
    let prom_port = free_port()?;
    let prom_config = prom_dir.path().join("prometheus.yml");
    std::fs::write(
        &prom_config,
        format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nrule_files: [{rules}]\n\
             scrape_configs:\n  - job_name: driftwood\n    static_configs:\n      - targets: [\"{target}\"]\n",
            rules = monitoring().join("alerts.yml").display(),
            target = config.serve.listen
        ),
    )?;
    let prom_log = std::fs::File::create(prom_dir.path().join("prometheus.log"))?;
    let _prometheus = Killed(
        Command::new("prometheus")
            .arg(format!("--config.file={}", prom_config.display()))
            .arg(format!("--storage.tsdb.path={}", prom_dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .stdout(Stdio::null())
            .stderr(prom_log)
            .spawn()?,
    );
    let prom = format!("http://127.0.0.1:{prom_port}");

    // Traffic: predictions, a bad request, and the scorer working through period 1.
    for i in 0..40 {
        let body = serde_json::json!({"text": format!("win a free prize number {i}, click now")});
        http.post(format!("{base}/v1/predict")).json(&body).send().await?.error_for_status()?;
    }
    assert_eq!(http.post(format!("{base}/v1/predict")).body("{").send().await?.status(), 400);
    let deadline = Instant::now() + Duration::from_secs(120);
    while read_all(&config, &topics.scored).await?.len() < period1.len() {
        anyhow::ensure!(Instant::now() < deadline, "period 1 was not scored in time");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    tokio::time::sleep(Duration::from_secs(8)).await; // a few more scrapes

    let query = async |expr: &str| -> anyhow::Result<serde_json::Value> {
        let v: serde_json::Value =
            http.get(format!("{prom}/api/v1/query")).query(&[("query", expr)]).send().await?.json().await?;
        anyhow::ensure!(v["status"] == "success", "{expr}: {v}");
        Ok(v["data"]["result"].clone())
    };
    let up = query("up{job=\"driftwood\"}").await?;
    assert_eq!(up[0]["value"][1], "1", "Prometheus scrapes driftwood: {up}");

    // Every panel returns data.
    let panels = panel_queries()?;
    assert!(panels.len() >= 20, "{} panel queries", panels.len());
    let mut empty = Vec::new();
    for (title, expr) in &panels {
        let result = query(expr).await?;
        if result.as_array().is_none_or(|r| r.is_empty()) {
            empty.push(format!("{title}: {expr}"));
        }
    }
    assert!(empty.is_empty(), "panels without data:\n{}", empty.join("\n"));

    // Every rule is evaluated without error.
    let rules: serde_json::Value = http.get(format!("{prom}/api/v1/rules")).send().await?.json().await?;
    let mut evaluated = 0;
    for group in rules["data"]["groups"].as_array().into_iter().flatten() {
        for rule in group["rules"].as_array().into_iter().flatten() {
            assert_eq!(rule["health"], "ok", "{rule}");
            evaluated += 1;
        }
    }
    assert_eq!(evaluated, rule_count()?);

    // Every metric the dashboards and rules name is exported, and the exposition lints clean.
    let exposition = http.get(format!("{base}/metrics")).send().await?.text().await?;
    let exported: BTreeSet<String> = exposition
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect();
    let mut named = BTreeSet::new();
    for file in [
        "alerts.yml",
        "grafana/provisioning/alerting/driftwood.yml",
        "grafana/dashboards/pipeline.json",
        "grafana/dashboards/serving.json",
        "grafana/dashboards/drift.json",
    ] {
        named.extend(metric_names(&std::fs::read_to_string(monitoring().join(file))?));
    }
    let missing: Vec<&String> = named.difference(&exported).collect();
    assert!(missing.is_empty(), "named but not exported: {missing:?}");
    let lint =
        Command::new("promtool").args(["check", "metrics"]).stdin(Stdio::piped()).output_with(exposition)?;
    let problems = String::from_utf8_lossy(&lint.stdout).to_string() + &String::from_utf8_lossy(&lint.stderr);
    assert!(
        lint.status.success() && problems.trim().is_empty(),
        "promtool check metrics reports:\n{problems}"
    );

    // Commands without the REST API serve /metrics on serve.metrics_listen.
    let mut standalone = config.clone();
    standalone.serve.metrics_listen = Some(free_addr()?);
    let _retrainer = Killed(
        Command::new(&bin)
            .arg("retrainer")
            .envs(env_for(&standalone))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    let url = format!("http://{}/metrics", standalone.serve.metrics_listen.expect("set above"));
    let deadline = Instant::now() + Duration::from_secs(30);
    let text = loop {
        if let Ok(r) = http.get(&url).send().await {
            break r.text().await?;
        }
        anyhow::ensure!(Instant::now() < deadline, "the retrainer never served /metrics");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(text.contains(r#"driftwood_retrain_total{outcome="promoted"} 0"#), "{text}");
    Ok(())
}

trait OutputWith {
    fn output_with(&mut self, input: String) -> std::io::Result<std::process::Output>;
}

impl OutputWith for Command {
    /// Runs the command with `input` on stdin.
    fn output_with(&mut self, input: String) -> std::io::Result<std::process::Output> {
        use std::io::Write;
        let mut child = self.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
        child.stdin.take().expect("piped stdin").write_all(input.as_bytes())?;
        child.wait_with_output()
    }
}
