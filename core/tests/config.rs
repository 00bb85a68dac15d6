//! `quaestor_core::config`: the C# Quaestor's own sample files load as they are, and every
//! mistake is reported with file, line, column and key.

use std::path::{Path, PathBuf};
use std::time::Duration;

use quaestor_core::config::{
    AgentConfig, CLUSTER_FILE, ConfigError, GENERAL_FILE, LOAD_BALANCER_FILE, Problem,
    QuaestorConfig, ShutdownAction, Signal, find_config,
};

/// The C# repository's sample files, copied unchanged (see `config/csharp/README.md`).
fn fixture_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/config/csharp")
        .join(name)
}

fn load_fixture(dir: &str, file: &str) -> QuaestorConfig {
    let path = fixture_dir(dir).join(file);
    QuaestorConfig::load(&path).unwrap_or_else(|error| panic!("{error}"))
}

fn parse(text: &str) -> QuaestorConfig {
    QuaestorConfig::parse(text, "test.yml").unwrap_or_else(|error| panic!("{error}"))
}

/// The error message for `text` (which must not load).
fn error(text: &str) -> String {
    match QuaestorConfig::parse(text, "test.yml") {
        Ok(config) => panic!("loaded, but should not have: {config:?}"),
        Err(error) => error.to_string(),
    }
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn names(names: &[&str]) -> Option<Vec<String>> {
    Some(names.iter().map(|n| n.to_string()).collect())
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// Uncomments the sample's commented-out KeyValueStore agent (`#  - agentType: ...` and the
/// lines after it), the way an operator would.
fn uncomment_tail(text: &str, from: &str) -> String {
    let start = text.find(from).expect("marker present");
    let (head, tail) = text.split_at(start);
    let tail: String = tail
        .lines()
        .map(|line| line.strip_prefix('#').unwrap_or(line))
        .map(|line| format!("{line}\n"))
        .collect();
    format!("{head}{tail}")
}

// ---- the C# samples ----------------------------------------------------------------------

#[test]
fn csharp_console_sample_loads() {
    let config = load_fixture("Quaestor.Console", GENERAL_FILE);
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);

    let lb = config.load_balancer.expect("loadBalancerConfig");
    assert_eq!(lb.host_name.as_deref(), Some("localhost"));
    assert_eq!(lb.port, Some(5150));
    assert_eq!(lb.certificate, None);
    assert_eq!(lb.private_key_file, None);
    assert!(!lb.enforce_mutual_tls);
    assert_eq!(lb.service_response_timeout, secs(2));
    assert_eq!(lb.recently_used_timeout, secs(5));
    assert_eq!(lb.probe_interval, Duration::from_millis(1000));

    let cluster = config.cluster.expect("clusterConfig");
    assert_eq!(cluster.name.as_deref(), Some("example_cluster"));
    assert_eq!(cluster.heartbeat_interval, secs(30));
    assert_eq!(cluster.member_response_timeout, secs(20));
    assert_eq!(cluster.member_max_shutdown_time, secs(0));
    assert_eq!(cluster.member_max_startup_retries, 25);

    // `agents` in the older mapping form: the key is the agent type.
    assert_eq!(config.agents.len(), 2);
    let worker = &config.agents[0];
    assert_eq!(worker.agent_type, "Worker");
    assert!(worker.is_worker() && !worker.is_key_value_store());
    assert_eq!(
        worker.executable_path.as_deref(),
        Some(
            r"..\..\..\..\..\examples\HelloWorld\WorkerProcess\bin\Debug\net8.0\WorkerProcess.exe"
        )
    );
    assert_eq!(worker.command_line_arguments.as_deref(), Some("{Port} 100"));
    assert_eq!(worker.process_count, 4);
    assert_eq!(worker.cluster_shutdown_action, ShutdownAction::Kill);
    assert_eq!(
        worker.environment_variables,
        env(&[("QUAESTOR_WORKER_EXIT_WHEN_UNHEALTHY", "false")])
    );
    assert_eq!(worker.host_name, "localhost");
    assert!(!worker.use_tls);
    assert_eq!(worker.ports, [5161, 5162, 5163, 5164]);
    assert_eq!(worker.service_names, names(&["Worker"]));
    assert_eq!(worker.startup_wait, secs(8));
    assert_eq!(worker.recycling_interval_hours, Some(24.0));

    let balancer = &config.agents[1];
    assert_eq!(balancer.agent_type, "LoadBalancer");
    assert_eq!(
        balancer.command_line_arguments.as_deref(),
        Some("load-balancer")
    );
    assert_eq!(
        balancer.environment_variables,
        env(&[
            ("QUAESTOR_LOGFILE_SUFFIX", "Load_Balancing"),
            ("TEMP", r"C:\Temp")
        ])
    );
    assert_eq!(balancer.ports, [5150]);
    assert_eq!(balancer.service_names, names(&["ServiceDiscoveryGrpc"]));
    assert_eq!(
        balancer.recycling_interval_hours, None,
        "0 means no recycling"
    );
}

#[test]
fn csharp_cluster_sample_loads() {
    let config = load_fixture("Quaestor.Cluster.Console", CLUSTER_FILE);
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    assert!(config.load_balancer.is_none());

    let cluster = config.cluster.expect("clusterConfig");
    assert_eq!(cluster.member_response_timeout, secs(20));
    assert_eq!(cluster.member_max_startup_retries, 25);

    // `agents` as a list with `agentType`.
    let types: Vec<&str> = config
        .agents
        .iter()
        .map(|a| a.agent_type.as_str())
        .collect();
    assert_eq!(types, ["Worker", "LoadBalancer"]);
    let worker = &config.agents[0];
    assert_eq!(worker.ports, [5161, 5162, 5163, 5164]);
    assert_eq!(worker.recycling_interval_hours, Some(24.0));
    assert!(!worker.exclude_from_service_registry);
    assert_eq!(
        worker.environment_variables,
        env(&[("QUAESTOR_WORKER_EXIT_WHEN_UNHEALTHY", "false")])
    );

    let balancer = &config.agents[1];
    assert_eq!(
        balancer.executable_path.as_deref(),
        Some("quaestor-loadbalancer.exe")
    );
    assert_eq!(
        balancer.command_line_arguments, None,
        "`commandLineArguments:` is none"
    );
    // `hostName: 127.0.0.1    # NOTE: ...`: the trailing comment is not part of the value.
    assert_eq!(balancer.host_name, "127.0.0.1");
    assert_eq!(balancer.process_count, 1);
    assert_eq!(balancer.startup_wait, secs(8), "not given: the C# default");
    assert_eq!(balancer.cluster_shutdown_action, ShutdownAction::Kill);
}

#[test]
fn csharp_load_balancer_sample_loads() {
    let config = load_fixture("Quaestor.LoadBalancer.Console", LOAD_BALANCER_FILE);
    assert!(config.cluster.is_none());
    let lb = config.load_balancer.expect("loadBalancerConfig");
    assert_eq!(lb.host_name.as_deref(), Some("127.0.0.1"));
    assert_eq!(lb.port, Some(5150));
    assert_eq!(lb.service_response_timeout, secs(2));

    let worker = &config.agents[0];
    assert!(worker.is_worker());
    assert_eq!(worker.executable_path, None);
    // No processCount in the balancer's file: one process per port.
    assert_eq!(worker.process_count, 4);
    assert_eq!(worker.ports, [5161, 5162, 5163, 5164]);

    let etcd = &config.agents[1];
    assert!(etcd.is_key_value_store());
    assert_eq!(etcd.host_name, "127.0.0.1");
    assert_eq!(etcd.ports, [2379]);
    assert_eq!(etcd.process_count, 1);
    assert_eq!(etcd.service_names, None);
    assert_eq!(etcd.cluster_shutdown_action, ShutdownAction::None);
}

#[test]
fn csharp_guardian_example_loads() {
    let config = load_fixture("ConfigurableCluster.Guardian", GENERAL_FILE);
    // `bootstrapCluster: false`: accepted, ignored, said so.
    assert_eq!(config.warnings.len(), 1);
    let warning = config.warnings[0].to_string();
    assert!(
        warning.ends_with("quaestor.config.yml:2:1: key `bootstrapCluster`: ignored: the C# Quaestor did not support it either"),
        "{warning}"
    );

    let cluster = config.cluster.expect("clusterConfig");
    assert_eq!(
        cluster.name.as_deref(),
        Some("Configurable Cluster of Local gRPC Processes")
    );
    assert_eq!(cluster.heartbeat_interval, secs(31));
    assert_eq!(cluster.member_response_timeout, secs(6));
    assert_eq!(cluster.member_max_shutdown_time, secs(44));

    let worker = &config.agents[0];
    assert_eq!(worker.agent_type, "Worker");
    assert_eq!(worker.process_count, 6);
    assert!(worker.ports.is_empty(), "`ports: [  ]`: ephemeral ports");
    assert_eq!(worker.command_line_arguments.as_deref(), Some("{Port} 75"));
    assert_eq!(worker.host_name, "127.0.0.1");
    let master = &config.agents[1];
    assert_eq!(master.agent_type, "Master");
    assert_eq!(master.ports, [9999]);
    assert_eq!(master.service_names, names(&["Worker"]));
}

#[test]
fn csharp_older_server_config_sample_loads() {
    let config = load_fixture("Quaestor.Console.serverConfig", GENERAL_FILE);
    let lb = config
        .load_balancer
        .expect("serverConfig read as loadBalancerConfig");
    assert_eq!(lb.host_name.as_deref(), Some("localhost"));
    assert_eq!(lb.port, Some(5150));
    assert_eq!(lb.service_response_timeout, secs(2), "not given: default");
    assert_eq!(config.warnings.len(), 1);
    assert!(
        config.warnings[0]
            .to_string()
            .contains(":7:1: key `serverConfig`: ")
    );

    // `environmentVariables:` followed only by a comment: none.
    assert!(config.agents[0].environment_variables.is_empty());
    assert_eq!(
        config
            .cluster
            .expect("clusterConfig")
            .member_response_timeout,
        secs(5)
    );
}

#[test]
fn commented_out_key_value_store_agents_load_when_uncommented() {
    let text = std::fs::read_to_string(fixture_dir("Quaestor.Cluster.Console").join(CLUSTER_FILE))
        .unwrap();
    let config = parse(&uncomment_tail(&text, "#  - agentType: KeyValueStore"));
    let etcd = &config.agents[2];
    assert!(etcd.is_key_value_store());
    assert_eq!(etcd.executable_path.as_deref(), Some("etcd.exe"));
    assert_eq!(etcd.command_line_arguments, None);
    assert_eq!(etcd.startup_wait, secs(120));
    assert_eq!(etcd.cluster_shutdown_action, ShutdownAction::None);
    assert_eq!(etcd.ports, [2379]);
    assert_eq!(
        etcd.service_names,
        Some(vec![]),
        "`serviceNames: []`: the empty service name"
    );

    // The same in the mapping form of the older file.
    let text = std::fs::read_to_string(fixture_dir("Quaestor.Console").join(GENERAL_FILE)).unwrap();
    let config = parse(&uncomment_tail(&text, "#  KeyValueStore:"));
    let etcd = &config.agents[2];
    assert_eq!(etcd.agent_type, "KeyValueStore");
    assert_eq!(etcd.service_names, Some(vec![]));
}

#[test]
fn windows_encodings_load_the_same() {
    let path = fixture_dir("Quaestor.Cluster.Console").join(CLUSTER_FILE);
    let text = std::fs::read_to_string(&path).unwrap();
    let expected = QuaestorConfig::parse(&text, &path).unwrap();

    let crlf_bom = [&b"\xEF\xBB\xBF"[..], text.replace('\n', "\r\n").as_bytes()].concat();
    assert_eq!(
        QuaestorConfig::from_bytes(&crlf_bom, &path).unwrap(),
        expected
    );

    let utf16: Vec<u8> = [0xFF, 0xFE]
        .into_iter()
        .chain(
            text.replace('\n', "\r\n")
                .encode_utf16()
                .flat_map(u16::to_le_bytes),
        )
        .collect();
    assert_eq!(QuaestorConfig::from_bytes(&utf16, &path).unwrap(), expected);

    // Positions stay right with CRLF line ends.
    let bad = "clusterConfig:\r\n  name: x\r\n  heartBeatIntervalSecs: 3\r\n";
    let error = QuaestorConfig::from_bytes(bad.as_bytes(), "w.yml").unwrap_err();
    assert!(error.to_string().starts_with("w.yml:3:3: "), "{error}");
}

// ---- what real files contain -------------------------------------------------------------

#[test]
fn keys_match_without_regard_to_case() {
    for spelling in ["useTLS", "UseTls", "usetls", "USETLS", "useTls"] {
        let config = parse(&format!(
            "agents:\n- agentType: Worker\n  {spelling}: true\n"
        ));
        assert!(config.agents[0].use_tls, "{spelling}");
    }
    let config = parse(
        "CLUSTERCONFIG:\n  HeartBeatIntervalSeconds: 7\nLoadBalancerConfig:\n  PORT: 1\n\
         Agents:\n  - AGENTTYPE: keyvaluestore\n    ClusterShutdownAction: kill\n",
    );
    assert_eq!(config.cluster.unwrap().heartbeat_interval, secs(7));
    assert_eq!(config.load_balancer.unwrap().port, Some(1));
    assert!(
        config.agents[0].is_key_value_store(),
        "agent type compared without case too"
    );
    assert_eq!(
        config.agents[0].cluster_shutdown_action,
        ShutdownAction::Kill
    );
}

#[test]
fn a_key_without_value_means_none() {
    let config = parse(
        "loadBalancerConfig:\n  certificate:\n  privateKeyFile: ~\n  port:\n\
         agents:\n  - agentType: Worker\n    commandLineArguments:\n    executablePath: ''\n\
         \x20   environmentVariables:\n    ports:\n    serviceNames:\n    useTLS:\n",
    );
    let lb = config.load_balancer.unwrap();
    assert_eq!(
        (lb.certificate, lb.private_key_file, lb.port),
        (None, None, None)
    );
    let agent = &config.agents[0];
    assert_eq!(agent.command_line_arguments, None);
    assert_eq!(agent.executable_path, None);
    assert!(agent.environment_variables.is_empty());
    assert!(agent.ports.is_empty());
    assert_eq!(agent.service_names, None);
    assert!(!agent.use_tls);
    assert_eq!(*agent, AgentConfig::new("Worker"));
}

#[test]
fn environment_values_are_passed_as_their_text_in_order() {
    let config = parse(
        "agents:\n  - agentType: Worker\n    environmentVariables:\n\
         \x20     Z_FLAG: false\n      COUNT: 8\n      TEMP: C:\\Temp\n      HEX: 0x10\n\
         \x20     RATE: 1.50\n      QUOTED: \"a: b\"\n      EMPTY:\n      TILDE: '~'\n      YES: yes\n",
    );
    assert_eq!(
        config.agents[0].environment_variables,
        env(&[
            ("Z_FLAG", "false"),
            ("COUNT", "8"),
            ("TEMP", r"C:\Temp"),
            ("HEX", "0x10"),
            ("RATE", "1.50"),
            ("QUOTED", "a: b"),
            ("EMPTY", ""),
            ("TILDE", "~"),
            ("YES", "yes"),
        ])
    );
}

#[test]
fn lists_in_flow_and_block_form_are_the_same() {
    let flow =
        parse("agents:\n- agentType: W\n  ports: [ 5161, 5162 ]\n  serviceNames: [ A, 'B' ]\n");
    let block = parse(
        "agents:\n- agentType: W\n  ports:\n  - 5161\n  -   5162\n  serviceNames:\n    - A\n    - \"B\"\n",
    );
    assert_eq!(flow.agents, block.agents);
    assert_eq!(flow.agents[0].ports, [5161, 5162]);
    assert_eq!(flow.agents[0].process_count, 2);
    assert_eq!(flow.agents[0].service_names, names(&["A", "B"]));
}

#[test]
fn empty_service_names_differ_from_none_given() {
    let config = parse(
        "agents:\n- agentType: A\n  serviceNames: []\n- agentType: B\n- agentType: C\n  serviceNames:\n",
    );
    assert_eq!(config.agents[0].service_names, Some(vec![]));
    assert_eq!(config.agents[1].service_names, None);
    assert_eq!(config.agents[2].service_names, None);
}

#[test]
fn defaults_are_the_csharp_ones() {
    let config = parse("clusterConfig:\nloadBalancerConfig:\nagents:\n- agentType: Worker\n");
    let cluster = config.cluster.unwrap();
    assert_eq!(cluster.name, None);
    assert_eq!(cluster.heartbeat_interval, secs(30));
    assert_eq!(cluster.member_response_timeout, secs(5));
    assert_eq!(cluster.member_max_shutdown_time, secs(45));
    assert_eq!(cluster.member_max_startup_retries, 25);
    let lb = config.load_balancer.unwrap();
    assert_eq!(lb.recently_used_timeout, secs(5));
    assert_eq!(lb.service_response_timeout, secs(2));
    assert_eq!(lb.probe_interval, Duration::from_millis(1000));
    let agent = &config.agents[0];
    assert_eq!(agent.startup_wait, secs(8));
    assert_eq!(agent.process_count, 1);
    assert_eq!(agent.host_name, "127.0.0.1");
    assert_eq!(agent.cluster_shutdown_action, ShutdownAction::None);
    assert!(!agent.exclude_from_service_registry);

    // startupWaitSeconds: 0 means the default, as in the C# LocalProcess.
    let config = parse("agents:\n- agentType: W\n  startupWaitSeconds: 0\n");
    assert_eq!(config.agents[0].startup_wait, secs(8));
    // Fractions where the C# type is a double.
    let config = parse(
        "loadBalancerConfig:\n  serviceResponseTimeoutSeconds: 0.5\n  probeIntervalMs: 250\n\
         agents:\n- agentType: W\n  recyclingIntervalHours: 0.25\n  startupWaitSeconds: 1.5\n",
    );
    let lb = config.load_balancer.unwrap();
    assert_eq!(lb.service_response_timeout, Duration::from_millis(500));
    assert_eq!(lb.probe_interval, Duration::from_millis(250));
    assert_eq!(config.agents[0].recycling_interval_hours, Some(0.25));
    assert_eq!(config.agents[0].startup_wait, Duration::from_millis(1500));
}

#[test]
fn quaestors_own_keys_are_read_with_compatible_defaults() {
    let config = parse("agents:\n- agentType: Worker\n");
    let agent = &config.agents[0];
    assert_eq!(agent.working_directory, None);
    assert_eq!(agent.stop_signal, Signal::SIGTERM);
    assert_eq!(
        agent.health_check.failures_before_restart, 1,
        "the C# version restarts at the first failed heartbeat"
    );
    assert_eq!(agent.restart_backoff.initial, Duration::from_millis(500));
    assert_eq!(agent.restart_backoff.max, secs(60));
    assert_eq!(agent.restart_backoff.reset_after, secs(60));

    let config = parse(
        "clusterConfig:\n  etcd: [ http://127.0.0.1:2379, http://127.0.0.1:22379 ]\n\
         agents:\n- agentType: Worker\n  workingDirectory: run/workers\n  stopSignal: int\n  \
         HEALTHCHECK:\n    failuresBeforeRestart: 3\n  restartBackoff:\n    initialSeconds: 0.25\n    \
         maxSeconds: 10\n    resetAfterSeconds: 0\n",
    );
    assert_eq!(
        config.cluster.as_ref().unwrap().etcd,
        ["http://127.0.0.1:2379", "http://127.0.0.1:22379"]
    );
    let agent = &config.agents[0];
    assert_eq!(agent.working_directory.as_deref(), Some("run/workers"));
    assert_eq!(agent.stop_signal, Signal::SIGINT);
    assert_eq!(agent.health_check.failures_before_restart, 3);
    assert_eq!(agent.restart_backoff.initial, Duration::from_millis(250));
    assert_eq!(agent.restart_backoff.max, secs(10));
    assert_eq!(agent.restart_backoff.reset_after, Duration::ZERO);

    // One URL alone is a list of one; signals with or without SIG, in any case.
    let config = parse(
        "clusterConfig:\n  etcd: http://10.0.0.1:2379\nagents:\n- agentType: W\n  stopSignal: SIGQUIT\n",
    );
    assert_eq!(config.cluster.unwrap().etcd, ["http://10.0.0.1:2379"]);
    assert_eq!(config.agents[0].stop_signal, Signal::SIGQUIT);
    // Only initialSeconds, above the default max: the max follows.
    let config = parse("agents:\n- agentType: W\n  restartBackoff:\n    initialSeconds: 120\n");
    assert_eq!(config.agents[0].restart_backoff.max, secs(120));
    // The etcd list is the registry the balancer reads too.
    let config = parse(
        "clusterConfig:\n  etcd: [ http://127.0.0.1:2379 ]\nagents:\n- agentType: KeyValueStore\n  ports: [ 32379 ]\n",
    );
    assert_eq!(
        config.etcd_options().unwrap().endpoints,
        ["http://127.0.0.1:2379"],
        "an explicit list wins over the KeyValueStore agent"
    );
}

#[test]
fn quaestors_own_keys_refuse_bad_values() {
    let agent = "agents:\n  - agentType: Worker\n";
    assert_eq!(
        error(&format!("{agent}    hostName: worker7.example.com\n")),
        "test.yml:3:15: key `agents[0].hostName`: `worker7.example.com` is not this machine, \
         and an agent without `ports` gets ephemeral ports, which only local processes can \
         have; list its ports"
    );
    for local in ["localhost", "127.0.0.2", "::1", "[::1]", "0.0.0.0"] {
        parse(&format!("{agent}    hostName: '{local}'\n"));
    }
    parse(&format!(
        "{agent}    hostName: worker7.example.com\n    ports: [ 5161 ]\n"
    ));
    assert_eq!(
        error(&format!("{agent}    stopSignal: SIGNOPE\n")),
        "test.yml:3:17: key `agents[0].stopSignal`: \
         `SIGNOPE` is not a signal name (e.g. SIGTERM, SIGINT, SIGQUIT)"
    );
    assert_eq!(
        error(&format!(
            "{agent}    healthCheck:\n      failuresBeforeRestart: 0\n"
        )),
        "test.yml:4:30: key `agents[0].healthCheck.failuresBeforeRestart`: \
         0 is out of range (expected 1 to 4294967295)"
    );
    assert_eq!(
        error(&format!(
            "{agent}    restartBackoff:\n      initialSeconds: 5\n      maxSeconds: 2\n"
        )),
        "test.yml:5:19: key `agents[0].restartBackoff.maxSeconds`: \
         maxSeconds (2) is less than initialSeconds (5)"
    );
    assert_eq!(
        error(&format!(
            "{agent}    restartBackoff:\n      initialSeconds: 0\n"
        )),
        "test.yml:4:23: key `agents[0].restartBackoff.initialSeconds`: \
         must be greater than 0 seconds"
    );
    assert!(
        error(&format!("{agent}    restartBackoff:\n      maxSecs: 2\n"))
            .contains("key `agents[0].restartBackoff.maxSecs`"),
    );
    assert!(
        error(&format!("{agent}    restartBackoff:\n      maxSecs: 2\n")).contains("maxSeconds"),
        "the nearest key is suggested"
    );
    assert_eq!(
        error("clusterConfig:\n  etcd: [ '' ]\n"),
        "test.yml:2:11: key `clusterConfig.etcd[0]`: \
         expected an etcd client URL like http://127.0.0.1:2379"
    );
    assert!(error("clusterConfig:\n  etcd:\n    url: x\n").contains("key `clusterConfig.etcd`"),);
}

#[test]
fn empty_and_comment_only_files_are_empty_configs() {
    for text in ["", "\n\n", "# only\n# comments\n", "---\n", "~\n"] {
        let config = parse(text);
        assert!(
            config.cluster.is_none() && config.load_balancer.is_none() && config.agents.is_empty()
        );
    }
}

// ---- mistakes ---------------------------------------------------------------------------

#[test]
fn unknown_key_names_file_line_column_and_nearest_key() {
    assert_eq!(
        error("clusterConfig:\n  name: x\n  heartBeatIntervalSecs: 30\n"),
        "test.yml:3:3: key `clusterConfig.heartBeatIntervalSecs`: unknown key; \
         did you mean `heartBeatIntervalSeconds`?"
    );
    assert_eq!(
        error("agents:\n  - agentType: Worker\n    usetsl: true\n"),
        "test.yml:3:5: key `agents[0].usetsl`: unknown key; did you mean `useTls`?"
    );
    assert_eq!(
        error("agents:\n  Worker:\n    port: [1]\n"),
        "test.yml:3:5: key `agents.Worker.port`: unknown key; did you mean `ports`?"
    );
    assert_eq!(
        error("# a comment\nlogging:\n  level: debug\n"),
        "test.yml:2:1: key `logging`: unknown key; \
         valid keys here: clusterConfig, loadBalancerConfig, agents"
    );
    // A key of another section: where it belongs.
    assert_eq!(
        error("agents:\n  - agentType: W\n    heartBeatIntervalSeconds: 3\n"),
        "test.yml:3:5: key `agents[0].heartBeatIntervalSeconds`: unknown key here; \
         it belongs in `clusterConfig`"
    );
    assert_eq!(
        error("clusterConfig:\n  agents: []\n"),
        "test.yml:2:3: key `clusterConfig.agents`: unknown key here; it belongs in the top level"
    );
    let error =
        QuaestorConfig::parse("loadBalancerConfig:\n  hostname: a\n  prot: 1\n", "f").unwrap_err();
    assert_eq!(error.pos().map(|p| (p.line, p.column)), Some((3, 3)));
    assert_eq!(error.key().unwrap().to_string(), "loadBalancerConfig.prot");
    assert_eq!(
        error.problem(),
        Some(&Problem::UnknownKey {
            suggestion: Some("port"),
            belongs_in: None,
            valid: &[
                "hostName",
                "port",
                "certificate",
                "privateKeyFile",
                "enforceMutualTls",
                "serviceResponseTimeoutSeconds",
                "recentlyUsedTimeoutSeconds",
                "probeIntervalMs",
                "workerCaFile",
                "workerCertFile",
                "workerKeyFile",
                "xdsLbPolicy",
                "xdsLbPolicies",
                "httpHostName",
                "httpPort",
            ],
        })
    );
}

#[test]
fn bad_values_name_line_and_key() {
    let agent = "agents:\n  - agentType: Worker\n";
    assert_eq!(
        error(&format!("{agent}    ports: [ 5161, 70000 ]\n")),
        "test.yml:3:20: key `agents[0].ports[1]`: port 70000 is outside 1-65535"
    );
    assert_eq!(
        error(&format!("{agent}    ports:\n    - -1\n")),
        "test.yml:4:7: key `agents[0].ports[0]`: port -1 is outside 1-65535"
    );
    assert_eq!(
        error(&format!("{agent}    ports: [0]\n")),
        "test.yml:3:13: key `agents[0].ports[0]`: port 0 is outside 1-65535"
    );
    assert_eq!(
        error("loadBalancerConfig:\n  port: 70000\n"),
        "test.yml:2:9: key `loadBalancerConfig.port`: port 70000 is outside 1-65535"
    );
    assert_eq!(
        error(&format!("{agent}    processCount: 0\n")),
        "test.yml:3:19: key `agents[0].processCount`: 0 is out of range (expected 1 to 10000)"
    );
    assert_eq!(
        error("clusterConfig:\n  heartBeatIntervalSeconds: thirty\n"),
        "test.yml:2:29: key `clusterConfig.heartBeatIntervalSeconds`: \
         expected a number, found `thirty`"
    );
    assert_eq!(
        error("clusterConfig:\n  memberMaxStartupRetries: 2.5\n"),
        "test.yml:2:28: key `clusterConfig.memberMaxStartupRetries`: \
         expected a whole number, found `2.5`"
    );
    assert_eq!(
        error("clusterConfig:\n  memberMaxStartupRetries: 99999999999999999999999\n"),
        "test.yml:2:28: key `clusterConfig.memberMaxStartupRetries`: \
         99999999999999999999999 is out of range (expected 0 to 4294967295)"
    );
    assert_eq!(
        error("clusterConfig:\n  heartBeatIntervalSeconds: 0\n"),
        "test.yml:2:29: key `clusterConfig.heartBeatIntervalSeconds`: must be greater than 0 seconds"
    );
    assert_eq!(
        error("loadBalancerConfig:\n  recentlyUsedTimeoutSeconds: -1\n"),
        "test.yml:2:31: key `loadBalancerConfig.recentlyUsedTimeoutSeconds`: \
         -1 seconds is out of range (expected 0 to 315360000)"
    );
    assert_eq!(
        error("loadBalancerConfig:\n  serviceResponseTimeoutSeconds: .inf\n"),
        "test.yml:2:34: key `loadBalancerConfig.serviceResponseTimeoutSeconds`: \
         expected a number, found `.inf`"
    );
    assert_eq!(
        error(&format!("{agent}    useTLS: yes\n")),
        "test.yml:3:13: key `agents[0].useTLS`: expected true or false, found `yes`"
    );
    assert_eq!(
        error(&format!("{agent}    clusterShutdownAction: Terminate\n")),
        "test.yml:3:28: key `agents[0].clusterShutdownAction`: expected None or Kill, found `Terminate`"
    );
    assert_eq!(
        error(&format!("{agent}    serviceNames: [ a/b ]\n")),
        "test.yml:3:21: key `agents[0].serviceNames[0]`: service name `a/b` must not contain '/'"
    );
    assert_eq!(
        error(&format!("{agent}    ports: [ 1, 1 ]\n")),
        "test.yml:3:17: key `agents[0].ports[1]`: port 1 is listed twice"
    );
}

#[test]
fn ports_must_match_process_count_at_the_agents_line() {
    assert_eq!(
        error(
            "agents:\n  - agentType: Worker\n    processCount: 4\n    ports: [ 5161, 5162, 5163 ]\n"
        ),
        "test.yml:2:5: key `agents[0]`: processCount is 4 (line 3) but ports lists 3 (line 4); \
         give one port per process, or no ports for ephemeral ports"
    );
    assert_eq!(
        error("agents:\n  Worker:\n    ports: [ 1, 2 ]\n    processCount: 1\n"),
        "test.yml:2:3: key `agents.Worker`: processCount is 1 (line 4) but ports lists 2 (line 3); \
         give one port per process, or no ports for ephemeral ports"
    );
    // No ports: ephemeral ports, any count.
    assert_eq!(
        parse("agents:\n  Worker:\n    processCount: 3\n").agents[0].process_count,
        3
    );
}

#[test]
fn wrong_shapes_are_named() {
    assert_eq!(
        error("clusterConfig: [ 1, 2 ]\n"),
        "test.yml:1:16: key `clusterConfig`: expected a mapping of keys to values, found a list"
    );
    assert_eq!(
        error("agents: 5\n"),
        "test.yml:1:9: key `agents`: expected a list of agents (or a mapping from agent type to agent), found a single value"
    );
    assert_eq!(
        error("agents:\n  - Worker\n"),
        "test.yml:2:5: key `agents[0]`: expected an agent (a mapping of keys to values), found a single value"
    );
    assert_eq!(
        error("agents:\n  - executablePath: w\n"),
        "test.yml:2:5: key `agents[0]`: `agentType` is required"
    );
    assert_eq!(
        error("agents:\n  - agentType: W\n    environmentVariables: [ A=1 ]\n"),
        "test.yml:3:27: key `agents[0].environmentVariables`: \
         expected a mapping of variable names to values, found a list"
    );
    assert_eq!(
        error("agents:\n  - agentType: W\n    ports: 5150\n"),
        "test.yml:3:12: key `agents[0].ports`: expected a list of ports (like `[ 5161, 5162 ]`), found a single value"
    );
    assert_eq!(
        error("agents:\n  Worker:\n    agentType: Master\n"),
        "test.yml:3:16: key `agents.Worker.agentType`: \
         this agent is `Worker` by its key; agentType `Master` contradicts it"
    );
    assert_eq!(
        error("- 1\n- 2\n"),
        "test.yml:1:1: expected a mapping with sections (clusterConfig, loadBalancerConfig, agents), \
         found a list"
    );
    assert_eq!(
        error("loadBalancerConfig:\n  port: 1\nserverConfig:\n  port: 2\n"),
        "test.yml:3:1: key `serverConfig`: `serverConfig` and `loadBalancerConfig` (line 1) are the same section; give one"
    );
}

#[test]
fn duplicate_keys_are_errors_also_differing_in_case() {
    assert_eq!(
        error("agents:\n  - agentType: W\n    useTLS: true\n    UseTls: false\n"),
        "test.yml:4:5: key `agents[0].UseTls`: duplicate key (first given on line 3; \
         keys are compared without regard to case)"
    );
    assert_eq!(
        error("clusterConfig:\n  name: a\nclusterConfig:\n  name: b\n"),
        "test.yml:3:1: key `clusterConfig`: duplicate key (first given on line 1; \
         keys are compared without regard to case)"
    );
    assert!(
        error(
            "agents:\n  - agentType: W\n    environmentVariables:\n      Temp: a\n      TEMP: b\n"
        )
        .starts_with("test.yml:5:7: key `agents[0].environmentVariables.TEMP`: duplicate key")
    );
}

#[test]
fn syntax_errors_name_file_and_line() {
    let message = error("clusterConfig:\n  name: [ unclosed\n  heartBeatIntervalSeconds: 3\n");
    assert!(message.starts_with("test.yml:3:"), "{message}");
    assert!(message.contains("YAML syntax: "), "{message}");

    // A tab where YAML wants spaces.
    let message = error("clusterConfig:\n\tname: x\n");
    assert!(message.starts_with("test.yml:2:"), "{message}");
    assert!(message.contains("YAML syntax: "), "{message}");

    let message = error("agents:\n  - agentType: W\n    ports: [1, 2\n");
    assert!(message.starts_with("test.yml:4:"), "{message}");
    assert!(message.contains("key `agents[0].ports"), "{message}");

    let message = error("a: 1\n---\nb: 2\n");
    assert!(
        message.starts_with("test.yml:2:1: YAML syntax: a second YAML document"),
        "{message}"
    );

    let error =
        QuaestorConfig::from_bytes(b"clusterConfig:\n  name: caf\xE9\n", "l1.yml").unwrap_err();
    assert_eq!(
        error.to_string(),
        "l1.yml:2:12: the file is not UTF-8 (invalid byte 0xE9)"
    );
}

#[test]
fn junk_never_panics() {
    let junk: &[&[u8]] = &[
        b"\t\t\t",
        b"clusterConfig:\n\t- x",
        b"&a [*a]",
        b"a: &a\n  b: *a\n",
        b"*unknown",
        b"agents: &x\n  - agentType: W\n    ports: *x\n",
        b"agents:\n  - agentType: W\n    ports: [ 99999999999999999999999999999999999 ]\n",
        b"agents:\n  - agentType: W\n    processCount: -99999999999999999999999\n",
        b"agents:\n  - agentType: W\n    recyclingIntervalHours: 1e400\n",
        b"agents:\n  - agentType: W\n    startupWaitSeconds: -0\n",
        b"loadBalancerConfig:\n  probeIntervalMs: NaN\n",
        b"clusterConfig: {name: [a, {b: c}]}",
        b"agents: {Worker: [1, 2]}",
        b"agents:\n  ? [complex, key]\n  : 1\n",
        b"agents:\n  : no key\n",
        b"<<: *base\n",
        b"!!binary aGVsbG8=",
        b"%YAML 1.2\n---\nagents: []\n...\n",
        b"\xFF\xFE\x00",
        b"\xFE\xFF\xD8\x00",
        b"\x00\x01\x02\x03",
        b"\xEF\xBB\xBF\xEF\xBB\xBF",
        b"'unterminated",
        b"\"\\u12\"",
        b"|\n  block\n",
        b"key: >\n folded\n",
        b"- - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - -",
        b"{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{",
        b"agents:\n- agentType: W\n  environmentVariables:\n    \"A=B\": 1\n",
        b"agents:\n- agentType: W\n  environmentVariables:\n    A: \"x\\0y\"\n",
        b"agents:\n- agentType: W\n  serviceNames: [ ~ ]\n",
        b"agents:\n- agentType: ''\n",
    ];
    for input in junk {
        if let Err(error) = QuaestorConfig::from_bytes(input, "junk.yml") {
            assert!(error.to_string().starts_with("junk.yml:"), "{error}");
        }
    }
    let deep = "[".repeat(50_000) + &"]".repeat(50_000);
    assert!(QuaestorConfig::parse(&deep, "deep.yml").is_err());
    let huge = format!("# {}\n", "x".repeat(2 << 20));
    assert_eq!(
        error(&huge),
        "test.yml:1:1: larger than 1024 KiB: not a config file"
    );
    let wide = format!("agents:\n{}", "  - agentType: W\n".repeat(20_000));
    assert_eq!(parse(&wide).agents.len(), 20_000);

    // Every sample, mutated byte by byte: loads or fails, never panics.
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    const NASTY: &[u8] = b":-[]{},&*!|>'\"#%@`?\t\n\r 0x\xFF\xC3~";
    for (dir, file) in [
        ("Quaestor.Console", GENERAL_FILE),
        ("Quaestor.Cluster.Console", CLUSTER_FILE),
        ("Quaestor.LoadBalancer.Console", LOAD_BALANCER_FILE),
        ("ConfigurableCluster.Guardian", GENERAL_FILE),
    ] {
        let original = std::fs::read(fixture_dir(dir).join(file)).unwrap();
        for _ in 0..400 {
            let mut bytes = original.clone();
            for _ in 0..1 + next() % 4 {
                let at = (next() as usize) % bytes.len().max(1);
                let byte = NASTY[(next() as usize) % NASTY.len()];
                match next() % 3 {
                    0 if at < bytes.len() => bytes[at] = byte,
                    1 => bytes.insert(at.min(bytes.len()), byte),
                    _ if at < bytes.len() => {
                        bytes.remove(at);
                    }
                    _ => {}
                }
            }
            let _ = QuaestorConfig::from_bytes(&bytes, "mutant.yml");
        }
    }
}

// ---- files ------------------------------------------------------------------------------

/// A folder of its own under the system temp folder, removed at the end.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("quaestor-config-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn find_config_prefers_explicit_then_general_then_role_file() {
    let dir = TempDir::new("find");
    let general = dir.0.join(GENERAL_FILE);
    let role = dir.0.join(LOAD_BALANCER_FILE);

    let error = find_config(None, &dir.0, LOAD_BALANCER_FILE).unwrap_err();
    assert!(
        matches!(&error, ConfigError::NotFound { tried } if tried == &[general.clone(), role.clone()])
    );
    assert_eq!(
        error.to_string(),
        format!(
            "no configuration file found (tried `{}`, `{}`)",
            general.display(),
            role.display()
        )
    );

    std::fs::write(&role, "agents: []\n").unwrap();
    assert_eq!(find_config(None, &dir.0, LOAD_BALANCER_FILE).unwrap(), role);
    std::fs::write(&general, "agents: []\n").unwrap();
    assert_eq!(
        find_config(None, &dir.0, LOAD_BALANCER_FILE).unwrap(),
        general
    );
    assert_eq!(find_config(None, &dir.0, CLUSTER_FILE).unwrap(), general);

    // --config wins over the folder, and must exist.
    let explicit = fixture_dir("Quaestor.Cluster.Console").join(CLUSTER_FILE);
    assert_eq!(
        find_config(Some(&explicit), &dir.0, LOAD_BALANCER_FILE).unwrap(),
        explicit
    );
    let missing = dir.0.join("nope.yml");
    let error = find_config(Some(&missing), &dir.0, LOAD_BALANCER_FILE).unwrap_err();
    assert!(
        matches!(&error, ConfigError::NotFound { tried } if tried == std::slice::from_ref(&missing))
    );

    // A folder named like the file is not the file.
    std::fs::remove_file(&general).unwrap();
    std::fs::create_dir(&general).unwrap();
    assert_eq!(find_config(None, &dir.0, LOAD_BALANCER_FILE).unwrap(), role);

    // The role asking for the general file tries it once.
    let error = find_config(None, &dir.0, GENERAL_FILE).unwrap_err();
    assert!(matches!(&error, ConfigError::NotFound { tried } if tried.len() == 1));

    // The samples' own folders.
    assert_eq!(
        find_config(
            None,
            &fixture_dir("Quaestor.LoadBalancer.Console"),
            LOAD_BALANCER_FILE
        )
        .unwrap(),
        fixture_dir("Quaestor.LoadBalancer.Console").join(LOAD_BALANCER_FILE)
    );
}

#[test]
fn load_reports_unreadable_files_with_their_path() {
    let dir = TempDir::new("load");
    let missing = dir.0.join("missing.yml");
    let error = QuaestorConfig::load(&missing).unwrap_err();
    assert!(matches!(error, ConfigError::Read { .. }));
    assert!(
        error
            .to_string()
            .starts_with(&format!("{}: cannot read: ", missing.display())),
        "{error}"
    );
    assert!(
        QuaestorConfig::load(&dir.0).is_err(),
        "a folder is not a config file"
    );

    let bad = dir.0.join("bad.yml");
    std::fs::write(&bad, "clusterConfig:\n  nmae: x\n").unwrap();
    let error = QuaestorConfig::load(&bad).unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "{}:2:3: key `clusterConfig.nmae`: unknown key; did you mean `name`?",
            bad.display()
        )
    );
}

/// The example configs under `sdk-examples/` load, and say what they are meant to show.
#[test]
fn the_example_configs_load() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk-examples");
    let load = |dir: &str| {
        let config = QuaestorConfig::load(examples.join(dir).join(GENERAL_FILE))
            .unwrap_or_else(|error| panic!("{error}"));
        assert!(config.warnings.is_empty(), "{dir}: {:?}", config.warnings);
        config
    };
    let memory = load("hello-world");
    assert!(memory.etcd_options().is_none(), "in-memory registry");
    assert_eq!(
        memory.worker_locations().len(),
        4,
        "four workers behind the balancer"
    );
    let etcd = load("hello-world-etcd");
    assert!(etcd.agents[0].is_key_value_store());
    assert_eq!(
        etcd.etcd_options().expect("etcd").endpoints,
        ["http://127.0.0.1:2379"]
    );
    assert_eq!(etcd.agents[1].health_check.failures_before_restart, 2);
    let native = load("native");
    assert_eq!(
        native.worker_locations().len(),
        3,
        "the C, C++ and C# samples"
    );
    assert_eq!(
        native.agents[2].working_directory.as_deref(),
        Some("../csharp")
    );
}

/// `etcdOptions` (under `clusterConfig` and on a KeyValueStore agent) and the worker TLS keys
/// of `loadBalancerConfig`: what they become, and each mistake at its key.
#[test]
fn etcd_options_and_worker_tls_keys() {
    let dir = tempfile::tempdir().expect("dir");
    let password_file = dir.path().join("etcd-password");
    std::fs::write(&password_file, "from-file\n").expect("write");
    // SAFETY: no other test reads or writes this variable.
    unsafe { std::env::set_var("QUAESTOR_CONFIG_TEST_ETCD_PASSWORD", "from-env") };

    let path = dir.path().join("quaestor.config.yml");
    let text = "clusterConfig:\n  etcd: https://10.0.0.1:2379\n  ETCDOPTIONS:\n    caFile: ca.pem\n    \
                certFile: client.pem\n    keyFile: client.key\n    user: quaestor\n    \
                passwordEnv: QUAESTOR_CONFIG_TEST_ETCD_PASSWORD\n\
                loadBalancerConfig:\n  workerCaFile: workers-ca.pem\n  workerCertFile: lb.pem\n  \
                workerKeyFile: lb.key\n";
    std::fs::write(&path, text).expect("write");
    let config = QuaestorConfig::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let etcd = config.etcd_options().expect("etcd");
    assert_eq!(etcd.endpoints, ["https://10.0.0.1:2379"]);
    let tls = etcd.tls.expect("TLS");
    assert_eq!(
        tls.ca,
        Some(dir.path().join("ca.pem")),
        "relative to the file"
    );
    assert_eq!(
        tls.identity,
        Some((dir.path().join("client.pem"), dir.path().join("client.key")))
    );
    assert_eq!(
        etcd.user,
        Some(("quaestor".to_owned(), "from-env".to_owned()))
    );
    assert!(
        !format!("{config:?}").contains("from-env"),
        "the password is not shown"
    );
    let balancer = config.load_balancer.as_ref().expect("section");
    let worker_tls = balancer.balancer_options(&config).client_tls.expect("TLS");
    assert_eq!(worker_tls.ca, Some(dir.path().join("workers-ca.pem")));
    assert_eq!(
        worker_tls.identity,
        Some((dir.path().join("lb.pem"), dir.path().join("lb.key")))
    );
    assert!(
        parse("loadBalancerConfig:\n  port: 1\n")
            .load_balancer
            .unwrap()
            .balancer_options(&parse(""))
            .client_tls
            .is_none(),
        "the system roots by default"
    );

    // On the KeyValueStore agent, with the password from a file (its trailing newline dropped).
    let store = parse(&format!(
        "agents:\n- agentType: KeyValueStore\n  ports: [ 2379 ]\n  useTLS: true\n  etcdOptions:\n    \
         user: quaestor\n    passwordFile: {}\n",
        password_file.display()
    ));
    let etcd = store.etcd_options().expect("etcd");
    assert_eq!(etcd.endpoints, ["https://127.0.0.1:2379"]);
    assert_eq!(etcd.tls.expect("useTLS: TLS").ca, None, "the system roots");
    assert_eq!(
        etcd.user,
        Some(("quaestor".to_owned(), "from-file".to_owned()))
    );

    let cluster = "clusterConfig:\n  etcdOptions:\n";
    assert_eq!(
        error(&format!(
            "{cluster}    passwordEnv: QUAESTOR_CONFIG_TEST_UNSET\n    user: u\n"
        )),
        "test.yml:3:18: key `clusterConfig.etcdOptions.passwordEnv`: \
         the environment variable `QUAESTOR_CONFIG_TEST_UNSET` is not set (or not UTF-8)"
    );
    assert!(
        error(&format!("{cluster}    passwordFile: /nonexistent/pw\n    user: u\n"))
            .starts_with("test.yml:3:19: key `clusterConfig.etcdOptions.passwordFile`: cannot read the password file /nonexistent/pw"),
    );
    assert_eq!(
        error(&format!("{cluster}    user: u\n")),
        "test.yml:3:5: key `clusterConfig.etcdOptions.user`: `user` needs `passwordEnv` or `passwordFile`"
    );
    assert_eq!(
        error(&format!("{cluster}    certFile: c.pem\n")),
        "test.yml:3:5: key `clusterConfig.etcdOptions.certFile`: `certFile` needs `keyFile`"
    );
    assert!(
        error(&format!("{cluster}    password: x\n"))
            .contains("key `clusterConfig.etcdOptions.password`: unknown key"),
    );
    assert_eq!(
        error("agents:\n- agentType: Worker\n  etcdOptions:\n    caFile: ca.pem\n"),
        "test.yml:3:3: key `agents[0].etcdOptions`: \
         only a KeyValueStore agent takes `etcdOptions` (this one is `Worker`)"
    );
    assert_eq!(
        error("loadBalancerConfig:\n  workerKeyFile: k.pem\n"),
        "test.yml:2:3: key `loadBalancerConfig.workerKeyFile`: `workerKeyFile` needs `workerCertFile`"
    );
}

/// Found by fuzzing the config loader (fuzz/seeds/config/crash-password-dev-zero.yml): a
/// `passwordFile` that never ends (`/dev/zero`) or is huge was read whole, so a load took all
/// memory; a pipe blocked it. Now only a small regular file is read.
#[test]
fn a_password_file_must_be_a_small_regular_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let big = dir.path().join("big");
    std::fs::write(&big, vec![b'x'; 2 * 1024 * 1024]).expect("write");
    let cluster = "clusterConfig:\n  etcdOptions:\n    user: u\n";
    let message = error(&format!("{cluster}    passwordFile: {}\n", big.display()));
    assert!(
        message.starts_with("test.yml:4:19: key `clusterConfig.etcdOptions.passwordFile`: cannot read the password file")
            && message.ends_with("larger than 64 KiB: not a password file"),
        "{message}"
    );
    for (path, problem) in [
        ("/dev/zero", "not a regular file"),
        (dir.path().to_str().expect("UTF-8"), "not a regular file"),
    ] {
        let message = error(&format!("{cluster}    passwordFile: {path}\n"));
        assert!(message.ends_with(problem), "{message}");
    }
    let latin1 = dir.path().join("latin1");
    std::fs::write(&latin1, b"p\xe4ss\n").expect("write");
    let message = error(&format!(
        "{cluster}    passwordFile: {}\n",
        latin1.display()
    ));
    assert!(message.ends_with("not UTF-8"), "{message}");
}

#[test]
fn a_mistyped_agent_type_warns_with_a_suggestion() {
    let config = parse(
        "agents:\n  - agentType: Worker\n    ports: [ 5161 ]\n  - agentType: Wroker\n    ports: [ 5162 ]\n  - agentType: keyvaluestor\n    ports: [ 2379 ]\n  - agentType: Master\n    ports: [ 9999 ]\n",
    );
    let warnings: Vec<String> = config.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(
        warnings[0].ends_with(
            "test.yml:4:16: key `agents[1].agentType`: agentType `Wroker` is not a type quaestor knows; did you mean `Worker`? (as it is, its processes run as plain processes, not as Worker)"
        ),
        "{}",
        warnings[0]
    );
    assert!(
        warnings[1].contains(
            "agentType `keyvaluestor` is not a type quaestor knows; did you mean `KeyValueStore`?"
        ),
        "{}",
        warnings[1]
    );
    // Known types in any case, and names far from them (C# takes any, for display), pass.
    let quiet = parse(
        "agents:\n  - agentType: worker\n    ports: [ 5161 ]\n  - agentType: Master\n    ports: [ 9999 ]\n",
    );
    assert!(quiet.warnings.is_empty(), "{:?}", quiet.warnings);
    // The mapping form: the key is the type.
    let mapped = parse("agents:\n  Wroker:\n    ports: [ 5161 ]\n");
    assert_eq!(mapped.warnings.len(), 1, "{:?}", mapped.warnings);
    assert!(
        mapped.warnings[0]
            .to_string()
            .contains(":2:3: key `agents.Wroker`: agentType `Wroker`"),
        "{}",
        mapped.warnings[0]
    );
}

#[test]
fn xds_lb_policies_come_from_services_then_agents_then_the_default() {
    use quaestor_core::config::LbPolicy;
    let config = parse(
        "loadBalancerConfig:\n  xdsLbPolicy: least_request\n  xdsLbPolicies:\n    Billing: pick_first\n\
         agents:\n  - agentType: Worker\n    serviceNames: [ Worker, Billing ]\n    xdsLbPolicy: weighted_round_robin\n",
    );
    let balancer = config.load_balancer.clone().expect("loadBalancerConfig");
    let policies = balancer.lb_policies(&config);
    assert_eq!(policies.of("Billing"), LbPolicy::PickFirst);
    assert_eq!(policies.of("Worker"), LbPolicy::WeightedRoundRobin);
    assert_eq!(policies.of("Other"), LbPolicy::LeastRequest);
    assert_eq!(
        QuaestorConfig::parse("", "test.yml")
            .expect("empty")
            .load_balancer
            .unwrap_or_default()
            .xds_lb_policy,
        LbPolicy::RoundRobin,
        "round_robin by default"
    );
    assert_eq!(
        error("loadBalancerConfig:\n  xdsLbPolicy: ring_hash\n"),
        "test.yml:2:16: key `loadBalancerConfig.xdsLbPolicy`: expected one of \
         round_robin, least_request, weighted_round_robin, pick_first, found `ring_hash`"
    );
    assert!(
        error("loadBalancerConfig:\n  xdsLbPolicies:\n    Worker: fastest\n")
            .starts_with("test.yml:3:13: key `loadBalancerConfig.xdsLbPolicies.Worker`"),
    );
    assert!(
        error("loadBalancerConfig:\n  xdsLbPolicies: [ a ]\n")
            .contains("expected a mapping of service names to LB policies"),
    );
}

#[test]
fn the_http_listener_is_off_unless_a_port_is_given() {
    let lb = parse("loadBalancerConfig:\n  port: 5150\n")
        .load_balancer
        .unwrap();
    assert_eq!((lb.http_host_name, lb.http_port), (None, None));
    let lb = parse("loadBalancerConfig:\n  httpHostName: 0.0.0.0\n  httpPort: 9150\n")
        .load_balancer
        .unwrap();
    assert_eq!(lb.http_host_name.as_deref(), Some("0.0.0.0"));
    assert_eq!(lb.http_port, Some(9150));
    // 0: any free port.
    let lb = parse("loadBalancerConfig:\n  httpPort: 0\n")
        .load_balancer
        .unwrap();
    assert_eq!(lb.http_port, Some(0));
    let message = error("loadBalancerConfig:\n  httpPort: 70000\n");
    assert!(message.contains("httpPort"), "{message}");
}

#[test]
fn the_cluster_http_listener_is_off_unless_a_port_is_given() {
    let cluster = parse("clusterConfig:\n  name: c\n").cluster.unwrap();
    assert_eq!((cluster.http_host_name, cluster.http_port), (None, None));
    let cluster = parse("clusterConfig:\n  httpHostName: 0.0.0.0\n  httpPort: 9151\n")
        .cluster
        .unwrap();
    assert_eq!(cluster.http_host_name.as_deref(), Some("0.0.0.0"));
    assert_eq!(cluster.http_port, Some(9151));
    let message = error("clusterConfig:\n  httpPort: -1\n");
    assert!(message.contains("clusterConfig.httpPort"), "{message}");
}
