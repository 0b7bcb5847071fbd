//! The deployment artefacts, validated offline with tools nobody here wrote (no Docker engine
//! or cluster runs here): the Dockerfile with hadolint, docker-compose.yml against the Compose
//! Specification schema (check-jsonschema's vendored copy), the kustomize base and production
//! overlay rendered by kubectl and validated by kubernetes-validate against the Kubernetes 1.37
//! schemas. `tests/py/check_deploy.py` then checks what schemas cannot (non-root, probes,
//! resources, no secrets in git, scorer replicas <= partitions, selectors that select), and
//! the real binary accepts every ConfigMap's configuration and every container's command.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;
use tests::{driftwood_bin, python, run_ok};

/// A tool installed into the venv by `scripts/setup`.
fn venv_tool(name: &str) -> anyhow::Result<PathBuf> {
    let bin = python()?.parent().context("venv bin dir")?.join(name);
    anyhow::ensure!(bin.is_file(), "{} is missing: run scripts/setup", bin.display());
    Ok(bin)
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace root").to_path_buf()
}

#[tokio::test]
async fn dockerfile_compose_and_kubernetes_manifests_validate() -> anyhow::Result<()> {
    let root = root();
    let out = tempfile::tempdir()?;
    run_ok(Command::new(venv_tool("hadolint")?).arg(root.join("Dockerfile")))?;
    let compose = run_ok(
        Command::new(venv_tool("check-jsonschema")?)
            .args(["--builtin-schema", "vendor.compose-spec"])
            .arg(root.join("docker-compose.yml")),
    )?;
    assert!(compose.contains("ok"), "{compose}");

    let mut rendered = Vec::new();
    for (name, dir) in [("base", "k8s/base"), ("production", "k8s/overlays/production")] {
        let yaml = run_ok(Command::new(venv_tool("kubectl")?).arg("kustomize").arg(root.join(dir)))?;
        let path = out.path().join(format!("{name}.yaml"));
        std::fs::write(&path, &yaml)?;
        let report = Command::new(venv_tool("kubernetes-validate")?).arg("--strict").arg(&path).output()?;
        let text =
            format!("{}{}", String::from_utf8_lossy(&report.stdout), String::from_utf8_lossy(&report.stderr));
        assert!(report.status.success() && !text.contains("ERROR"), "{name}: {text}");
        // Everything but the Prometheus Operator's CRD was checked against a schema.
        let checked = text.matches(" passed for resource ").count();
        let kinds = yaml.matches("\nkind: ").count() + usize::from(yaml.starts_with("kind: "));
        let unchecked = text.matches("Couldn't find schema for kind ServiceMonitor").count();
        assert_eq!(checked + unchecked, kinds, "{name}: {text}");
        rendered.push(path);
    }

    let report = run_ok(
        Command::new(python()?).arg(root.join("tests/py/check_deploy.py")).arg(&root).args(&rendered),
    )?;
    let report: serde_json::Value = serde_json::from_str(&report)?;

    // The binary accepts every ConfigMap and connects to its metadata store (the key and
    // password files replaced by real ones, the ScyllaDB address by a Cassandra node on loopback
    // with one replica, and a ConfigMap naming no store user logs in as the node's superuser;
    // nothing else is read by `data list` and `models list`), and every command the manifests
    // and compose run.
    let keys = out.path().join("keys.toml");
    std::fs::write(&keys, stream::crypto::Keyring::generate("k1")?.to_toml())?;
    let password = out.path().join("scylla-password");
    std::fs::write(&password, "not-a-real-password\n")?;
    let superuser_password = out.path().join("superuser-password");
    std::fs::write(&superuser_password, tests::cassandra::PASSWORD)?;
    let node = tests::cassandra::Cassandra::shared()?;
    for name in ["base", "production"] {
        let config: BTreeMap<String, String> = serde_json::from_value(report[name]["config"].clone())?;
        assert_eq!(config.get("DRIFTWOOD_STORE_BACKEND").map(String::as_str), Some("scylla"), "{name}");
        let data = out.path().join(format!("data-{name}"));
        for args in [["data", "list"], ["models", "list"]] {
            let mut cmd = Command::new(driftwood_bin()?);
            cmd.args(args)
                .envs(&config)
                .env("DRIFTWOOD_DATA_DIR", &data)
                .env("DRIFTWOOD_ENCRYPTION_KEY_FILE", &keys)
                .env("DRIFTWOOD_STORE_NODES", &node.addr)
                .env("DRIFTWOOD_STORE_REPLICATION", "{'class': 'SimpleStrategy', 'replication_factor': 1}");
            match config.get("DRIFTWOOD_STORE_USERNAME") {
                Some(user) => {
                    node.create_role(user, "not-a-real-password").await?;
                    cmd.env("DRIFTWOOD_STORE_PASSWORD_FILE", &password);
                }
                None => {
                    cmd.env("DRIFTWOOD_STORE_USERNAME", tests::cassandra::USER)
                        .env("DRIFTWOOD_STORE_PASSWORD_FILE", &superuser_password);
                }
            }
            run_ok(&mut cmd).with_context(|| format!("the {name} ConfigMap: {args:?}"))?;
        }
    }
    let mut commands: Vec<Vec<String>> = serde_json::from_value(report["compose_commands"].clone())?;
    for name in ["base", "production"] {
        commands.extend(serde_json::from_value::<Vec<Vec<String>>>(report[name]["commands"].clone())?);
    }
    commands.sort();
    commands.dedup();
    assert!(commands.len() >= 6, "{commands:?}");
    for args in &commands {
        run_ok(Command::new(driftwood_bin()?).args(args).arg("--help"))
            .with_context(|| format!("{args:?}"))?;
    }
    // And a command that does not exist is refused the same way (the check can fail).
    assert!(run_ok(Command::new(driftwood_bin()?).args(["snapshot", "--no-such-flag", "--help"])).is_err());
    Ok(())
}
