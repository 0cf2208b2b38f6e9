//! What `deploy/` ships: every example config in `deploy/examples/` is accepted by
//! `qunbridge check` (exit 0), with a placeholder value for each `${ENV}` it uses, and there is
//! one example per platform; the Prometheus config and alert rules pass `promtool check` and
//! the rules' unit tests pass `promtool test rules` (skipped, with a note, without promtool);
//! the Grafana dashboard is JSON and, like the alerts, uses only metrics that docs/operations.md
//! lists.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository root.
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// `deploy/examples` of the repository.
fn examples_dir() -> PathBuf {
    repo().join("deploy/examples")
}

/// The `qunbridge_…` metric names in a text (histogram series suffixes removed).
fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    for (index, _) in text.match_indices("qunbridge_") {
        let name: String = text[index..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let name = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .map_or(name.clone(), str::to_owned);
        names.insert(name);
    }
    names
}

/// The `${NAME}` variables a config uses (`$$` is a literal `$`).
fn env_vars(text: &str) -> Vec<String> {
    let text = text.replace("$$", "");
    text.split("${")
        .skip(1)
        .filter_map(|rest| rest.split_once('}').map(|(name, _)| name.to_owned()))
        .collect()
}

#[test]
fn every_example_config_passes_check() {
    let mut checked = Vec::new();
    let entries = std::fs::read_dir(examples_dir()).expect("deploy/examples exists");
    for entry in entries {
        let path = entry.expect("dir entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("readable");
        let mut check = Command::new(env!("CARGO_BIN_EXE_qunbridge"));
        check.arg("check").arg("-c").arg(&path);
        for name in env_vars(&text) {
            // Starts with SEC so that it also passes as a DingTalk robot signing secret.
            check.env(name, "SEC-example-value");
        }
        let output = check.output().expect("check runs");
        assert!(
            output.status.success(),
            "{} rejected:\n{}{}",
            path.display(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        checked.push(
            path.file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default()
                .to_owned(),
        );
    }
    for platform in ["quickstart", "qq", "wechat", "dingtalk", "wecom"] {
        assert!(
            checked.iter().any(|c| c == platform),
            "no deploy/examples/{platform}.toml (checked {checked:?})"
        );
    }
}

#[test]
fn env_vars_are_found() {
    assert_eq!(
        env_vars("a = \"${ONE}\"\nb = \"x${TWO}y $${NOT}\""),
        vec!["ONE".to_owned(), "TWO".to_owned()]
    );
}

#[test]
fn prometheus_config_and_alert_rules_pass_promtool() {
    let dir = repo().join("deploy/prometheus");
    for args in [
        ["check", "config", "prometheus.yml"],
        ["check", "rules", "alerts.yml"],
        ["test", "rules", "alerts_test.yml"],
    ] {
        let output = match Command::new("promtool")
            .args(args)
            .current_dir(&dir)
            .output()
        {
            Ok(output) => output,
            Err(_) => {
                eprintln!("note: promtool not installed; deploy/prometheus not checked (apt-get install prometheus)");
                return;
            }
        };
        assert!(
            output.status.success(),
            "promtool {}:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[test]
fn dashboard_and_alerts_use_only_documented_metrics() {
    let operations =
        std::fs::read_to_string(repo().join("docs/operations.md")).expect("docs/operations.md");
    let metrics_section = operations
        .split("## Metrics")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("docs/operations.md has a Metrics section");
    let documented = metric_names(metrics_section);
    let dashboard =
        std::fs::read_to_string(repo().join("deploy/grafana/qunbridge.json")).expect("dashboard");
    let parsed: serde_json::Value = serde_json::from_str(&dashboard).expect("dashboard is JSON");
    assert!(
        parsed["panels"].as_array().is_some_and(|p| p.len() >= 8),
        "dashboard has its panels"
    );
    let alerts =
        std::fs::read_to_string(repo().join("deploy/prometheus/alerts.yml")).expect("alerts");
    for (file, text) in [("dashboard", &dashboard), ("alerts", &alerts)] {
        let used = metric_names(text);
        let unknown: Vec<_> = used.difference(&documented).collect();
        assert!(unknown.is_empty(), "{file} uses undocumented {unknown:?}");
    }
    // Every documented metric has a panel.
    let shown = metric_names(&dashboard);
    let missing: Vec<_> = documented.difference(&shown).collect();
    assert!(missing.is_empty(), "no panel for {missing:?}");
}
