//! `docs/configuration.md` stays true to the config loader: every key its tables list is
//! accepted where the table says, every key the loader accepts is listed, and its complete
//! example loads. The loader's keys are taken from the loader itself (the valid keys of an
//! unknown-key error), so a key added to the code but not to the doc fails here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use quaestor_core::config::{Problem, QuaestorConfig, ShutdownAction};

/// The sections of the doc (`<!-- section: NAME -->`) and a file that puts `{KEY}` in each.
const SECTIONS: &[(&str, &str)] = &[
    ("top", "{KEY}: 1\n"),
    ("clusterConfig", "clusterConfig:\n  {KEY}: 1\n"),
    ("loadBalancerConfig", "loadBalancerConfig:\n  {KEY}: 1\n"),
    ("agent", "agents:\n  - agentType: Worker\n    {KEY}: 1\n"),
    (
        "healthCheck",
        "agents:\n  - agentType: Worker\n    healthCheck:\n      {KEY}: 1\n",
    ),
    (
        "restartBackoff",
        "agents:\n  - agentType: Worker\n    restartBackoff:\n      {KEY}: 1\n",
    ),
    (
        "etcdOptions",
        "clusterConfig:\n  etcdOptions:\n    {KEY}: 1\n",
    ),
];

/// A key no section has.
const UNKNOWN: &str = "qqNotAKeyZz";

fn doc() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/configuration.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The keys of each section's table: the first cell of each row, in backticks.
fn documented_keys(doc: &str) -> BTreeMap<String, Vec<String>> {
    let mut keys: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut section: Option<String> = None;
    for line in doc.lines() {
        let line = line.trim();
        if let Some(name) = line
            .strip_prefix("<!-- section:")
            .and_then(|rest| rest.strip_suffix("-->"))
        {
            let name = name.trim();
            section = (name != "none").then(|| name.to_owned());
            continue;
        }
        let (Some(section), Some(row)) = (&section, line.strip_prefix("| `")) else {
            continue;
        };
        let key = row.split('`').next().unwrap_or_default();
        keys.entry(section.clone())
            .or_default()
            .push(key.to_owned());
    }
    keys
}

/// The YAML block after `<!-- example: complete -->`.
fn complete_example(doc: &str) -> String {
    let after = doc
        .split_once("<!-- example: complete -->")
        .expect("the doc has a complete example")
        .1;
    let block = after
        .split_once("```yaml\n")
        .expect("a yaml block follows the marker")
        .1;
    block
        .split_once("```")
        .expect("the yaml block ends")
        .0
        .to_owned()
}

fn file_with(template: &str, key: &str) -> String {
    template.replace("{KEY}", key)
}

/// The keys the loader accepts in a section: those its unknown-key error lists as valid.
fn loader_keys(template: &str) -> Vec<&'static str> {
    let text = file_with(template, UNKNOWN);
    let error = QuaestorConfig::parse(&text, "reference.yml").expect_err("an unknown key");
    let shown = error.to_string();
    assert!(
        shown.starts_with("reference.yml:") && shown.contains(UNKNOWN),
        "an unknown key's error names the file, line and key: {shown}"
    );
    match error.problem() {
        Some(Problem::UnknownKey { valid, .. }) => valid.to_vec(),
        other => panic!("expected an unknown-key error, got {other:?}: {shown}"),
    }
}

#[test]
fn every_section_of_the_loader_is_in_the_doc() {
    let documented = documented_keys(&doc());
    let sections: BTreeSet<&str> = SECTIONS.iter().map(|(name, _)| *name).collect();
    let in_doc: BTreeSet<&str> = documented.keys().map(String::as_str).collect();
    assert_eq!(in_doc, sections, "the doc's sections");
}

#[test]
fn the_doc_lists_exactly_the_keys_the_loader_accepts() {
    let documented = documented_keys(&doc());
    for (section, template) in SECTIONS {
        let in_doc: BTreeSet<&str> = documented
            .get(*section)
            .map(|keys| keys.iter().map(String::as_str).collect())
            .unwrap_or_default();
        let accepted: BTreeSet<&str> = loader_keys(template).into_iter().collect();
        let missing: Vec<&&str> = accepted.difference(&in_doc).collect();
        assert!(
            missing.is_empty(),
            "keys the loader accepts in {section} but docs/configuration.md does not list: {missing:?}"
        );
        // Keys the doc lists beyond the loader's table (older names) must still load there.
        for key in in_doc.difference(&accepted) {
            let text = file_with(template, key).replace(": 1\n", ":\n");
            if let Err(error) = QuaestorConfig::parse(&text, "reference.yml") {
                panic!("docs/configuration.md lists `{key}` in {section}, but: {error}");
            }
        }
    }
    // The same options are valid on a KeyValueStore agent.
    assert_eq!(
        loader_keys("agents:\n  - agentType: KeyValueStore\n    etcdOptions:\n      {KEY}: 1\n"),
        loader_keys("clusterConfig:\n  etcdOptions:\n    {KEY}: 1\n"),
    );
}

#[test]
fn keys_match_without_regard_to_case() {
    // The doc says so; the C# samples write `useTLS`.
    let config = QuaestorConfig::parse(
        "AGENTS:\n  - AGENTTYPE: Worker\n    usetls: TRUE\n    PORTS: [ 5161 ]\n",
        "reference.yml",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(config.agents[0].use_tls);
}

#[test]
fn the_complete_example_loads_and_uses_every_key() {
    let doc = doc();
    let example = complete_example(&doc);
    let dir = tempfile::tempdir().expect("a temporary folder");
    std::fs::write(dir.path().join("etcd-password.txt"), "from-file\n").expect("write");
    let path = dir.path().join("quaestor.config.yml");
    std::fs::write(&path, &example).expect("write");
    // SAFETY: no other test of this binary reads or writes the environment.
    unsafe { std::env::set_var("QUAESTOR_ETCD_PASSWORD", "from-env") };
    let config = QuaestorConfig::load(&path).unwrap_or_else(|e| panic!("the example: {e}"));

    let cluster = config.cluster.as_ref().expect("clusterConfig");
    assert_eq!(cluster.etcd, ["https://127.0.0.1:2379"]);
    assert_eq!(
        cluster.etcd_options.password.as_ref().map(|p| p.0.as_str()),
        Some("from-env")
    );
    let store = config
        .agents
        .iter()
        .find(|a| a.is_key_value_store())
        .expect("a KeyValueStore agent");
    assert_eq!(
        store.etcd_options.password.as_ref().map(|p| p.0.as_str()),
        Some("from-file")
    );
    assert!(
        config
            .agents
            .iter()
            .all(|a| a.cluster_shutdown_action == ShutdownAction::Kill)
    );
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);

    // Every documented key but the older top-level names appears in the example.
    let lowered = example.to_lowercase();
    for (section, keys) in documented_keys(&doc) {
        for key in keys {
            if section == "top" && (key == "serverConfig" || key == "bootstrapCluster") {
                continue;
            }
            assert!(
                lowered.contains(&format!("{}:", key.to_lowercase())),
                "the complete example lacks `{key}` ({section})"
            );
        }
    }
}

#[test]
fn the_documented_shutdown_default_is_the_loaders() {
    // docs/configuration.md says, prominently, that the default is None (left running).
    let doc = doc();
    assert!(doc.contains("`clusterShutdownAction` defaults to `None`"));
    let config = QuaestorConfig::parse("agents:\n  - agentType: Worker\n", "reference.yml")
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        config.agents[0].cluster_shutdown_action,
        ShutdownAction::None
    );
}
