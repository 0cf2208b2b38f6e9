//! What `deploy/` ships: every example config in `deploy/examples/` is accepted by
//! `qunbridge check` (exit 0), with a placeholder value for each `${ENV}` it uses, and there is
//! one example per platform; the example word lists in `deploy/examples/moderation/` are
//! headed as examples and compile through the WeChat example's commented-out moderation block; the Prometheus config and alert rules pass `promtool check` and
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

/// The `qunbridge check` output for `text` written as a config file in a fresh directory,
/// with a placeholder for each `${ENV}`; panics unless check accepts it.
fn check_ok(text: &str) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("qunbridge.toml");
    std::fs::write(&path, text).expect("write config");
    let mut check = Command::new(env!("CARGO_BIN_EXE_qunbridge"));
    check.arg("check").arg("-c").arg(&path);
    for name in env_vars(text) {
        check.env(name, "SEC-example-value");
    }
    let output = check.output().expect("check runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "rejected:\n{text}\n{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[test]
fn example_word_lists_are_headed_as_examples_and_compile_from_the_wechat_example() {
    let lists_dir = examples_dir().join("moderation");
    let mut lists = Vec::new();
    for entry in std::fs::read_dir(&lists_dir).expect("deploy/examples/moderation exists") {
        let path = entry.expect("dir entry").path();
        let text = std::fs::read_to_string(&path).expect("readable");
        let header: String = text
            .lines()
            .take_while(|line| line.starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n");
        assert!(
            header.contains("EXAMPLE") && header.contains("not a legal list"),
            "{} is not headed as an example, not a legal list:\n{header}",
            path.display()
        );
        let entries = text
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .count();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .expect("file name")
            .to_owned();
        lists.push((name, entries));
    }
    assert!(
        lists.len() >= 3,
        "contact, share bait and scam lists: {lists:?}"
    );

    // The commented-out block of wechat.toml, uncommented (its config lines, not its prose),
    // with the list files found where the example says.
    let example = std::fs::read_to_string(examples_dir().join("wechat.toml")).expect("wechat.toml");
    let block = example
        .split("# --- moderation (uncomment to use) ---")
        .nth(1)
        .and_then(|rest| rest.split("# --- end moderation ---").next())
        .expect("wechat.toml has a commented-out moderation block");
    let is_config = |line: &str| {
        line.starts_with('[')
            || line.starts_with(']')
            || line.starts_with("  ")
            || line
                .split_once(" = ")
                .is_some_and(|(key, _)| key.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
    };
    let uncommented: Vec<&str> = block
        .lines()
        .filter_map(|line| line.strip_prefix("# "))
        .filter(|line| is_config(line))
        .collect();
    for (name, _) in &lists {
        assert!(
            uncommented
                .iter()
                .any(|line| line.contains(&format!("moderation/{name}"))),
            "wechat.toml does not reference moderation/{name}"
        );
    }
    let text = format!("{example}\n{}\n", uncommented.join("\n"))
        .replace("\"moderation/", &format!("\"{}/", lists_dir.display()));
    let stdout = check_ok(&text);
    let size = |files: &[&str]| -> usize {
        files
            .iter()
            .map(|file| {
                lists
                    .iter()
                    .find(|(name, _)| name == file)
                    .map_or(0, |(_, entries)| *entries)
            })
            .sum()
    };
    let contact = size(&["contact.txt"]);
    let scams = size(&["scams.txt", "share_bait.txt"]);
    for expected in [
        format!("  contact: {contact} entries"),
        format!("  scams: {scams} entries"),
        format!(
            "word rules: contact ({contact} entries) -> drop, scams ({scams} entries) -> drop, notify"
        ),
        format!("word rules: scams ({scams} entries) -> mask"),
        "spam waves: 3 groups, 3 senders or 3 repeats within 10m (texts of 8+ characters) -> drop"
            .to_owned(),
        "admin notification: to qq-main:735021900 (qq), at most 10 lines a minute plus a summary"
            .to_owned(),
    ] {
        assert!(
            stdout.contains(&expected),
            "missing {expected:?} in:\n{stdout}"
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
