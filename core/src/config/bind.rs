//! From the YAML tree to typed config: keys matched without regard to case, every value
//! checked, every error placed at its line, column and key path.

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use super::error::{ConfigError, ConfigWarning, KeyPath, Pos, Problem};
use super::yaml::{Entry, Node, Value};
use super::{
    AgentConfig, ClusterConfig, EtcdAccessConfig, HealthCheckConfig, LbPolicy, LoadBalancerConfig,
    QuaestorConfig, RestartBackoffConfig, Secret, ShutdownAction, Signal,
};

/// Top-level sections, as the C# Quaestor writes them.
pub(crate) const TOP_KEYS: &[&str] = &["clusterConfig", "loadBalancerConfig", "agents"];
/// `serverConfig`: the load balancer section's name in older C# files (same keys).
const LEGACY_SERVER_CONFIG: &str = "serverConfig";
/// `bootstrapCluster`: in the C# example Guardian's file, "not supported (yet)" there either.
const LEGACY_BOOTSTRAP: &str = "bootstrapCluster";

pub(crate) const CLUSTER_KEYS: &[&str] = &[
    "name",
    "heartBeatIntervalSeconds",
    "memberResponseTimeOutSeconds",
    "memberMaxShutdownTimeSeconds",
    "memberMaxStartupRetries",
    "etcd",
    "etcdOptions",
    "httpHostName",
    "httpPort",
];

pub(crate) const LOAD_BALANCER_KEYS: &[&str] = &[
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
];

pub(crate) const AGENT_KEYS: &[&str] = &[
    "agentType",
    "executablePath",
    "commandLineArguments",
    "processCount",
    "clusterShutdownAction",
    "environmentVariables",
    "hostName",
    "useTls",
    "clientCertificate",
    "ports",
    "serviceNames",
    "startupWaitSeconds",
    "recyclingIntervalHours",
    "excludeFromServiceRegistry",
    "workingDirectory",
    "stopSignal",
    "healthCheck",
    "restartBackoff",
    "etcdOptions",
    "xdsLbPolicy",
];

pub(crate) const ETCD_OPTIONS_KEYS: &[&str] = &[
    "caFile",
    "certFile",
    "keyFile",
    "user",
    "passwordEnv",
    "passwordFile",
];

pub(crate) const HEALTH_CHECK_KEYS: &[&str] = &["failuresBeforeRestart"];

pub(crate) const RESTART_BACKOFF_KEYS: &[&str] =
    &["initialSeconds", "maxSeconds", "resetAfterSeconds"];

/// Where each key is valid, for the hint on a key given in the wrong place.
const SECTIONS: &[(&str, &[&str])] = &[
    ("the top level", TOP_KEYS),
    ("`clusterConfig`", CLUSTER_KEYS),
    ("`loadBalancerConfig`", LOAD_BALANCER_KEYS),
    ("an agent", AGENT_KEYS),
    ("an agent's `healthCheck`", HEALTH_CHECK_KEYS),
    ("an agent's `restartBackoff`", RESTART_BACKOFF_KEYS),
    ("`etcdOptions`", ETCD_OPTIONS_KEYS),
];

/// Longest duration accepted anywhere (ten years): far beyond any sensible setting, far below
/// anything that overflows an `Instant`.
const MAX_SECONDS: f64 = 10.0 * 365.0 * 24.0 * 3600.0;
/// More processes than this for one agent is a typo, not a plan.
const MAX_PROCESS_COUNT: i64 = 10_000;

struct Cx<'a> {
    file: &'a Path,
    warnings: Vec<ConfigWarning>,
}

impl Cx<'_> {
    fn error(&self, pos: Pos, key: &KeyPath, problem: Problem) -> ConfigError {
        ConfigError::invalid(self.file, pos, key.clone(), problem)
    }

    /// A bad value: placed at the value (or, for an empty value, where it would be).
    fn bad(&self, node: &Node, key: &KeyPath, message: impl Into<String>) -> ConfigError {
        self.error(node.pos, key, Problem::InvalidValue(message.into()))
    }

    fn warn(&mut self, pos: Pos, key: KeyPath, message: impl Into<String>) {
        self.warnings.push(ConfigWarning {
            path: self.file.to_owned(),
            pos,
            key,
            message: message.into(),
        });
    }
}

/// Binds a parsed document (`None`: an empty file) to a [`QuaestorConfig`].
pub(crate) fn bind(root: Option<&Node>, file: &Path) -> Result<QuaestorConfig, ConfigError> {
    let mut cx = Cx {
        file,
        warnings: Vec::new(),
    };
    let mut config = QuaestorConfig {
        path: file.to_owned(),
        cluster: None,
        load_balancer: None,
        agents: Vec::new(),
        warnings: Vec::new(),
    };
    let Some(root) = root else {
        return Ok(config);
    };
    let top = KeyPath::root();
    let entries = match &root.value {
        Value::Null => &[][..],
        Value::Map(entries) => entries,
        _ => {
            return Err(cx.bad(
                root,
                &top,
                format!(
                    "expected a mapping with sections ({}), found {}",
                    TOP_KEYS.join(", "),
                    root.kind()
                ),
            ));
        }
    };
    let mut load_balancer_key: Option<&Entry> = None;
    for entry in entries {
        let at = top.key(&entry.key);
        if entry.key.eq_ignore_ascii_case(LEGACY_BOOTSTRAP) {
            cx.warn(
                entry.key_pos,
                at,
                "ignored: the C# Quaestor did not support it either",
            );
            continue;
        }
        let legacy = entry.key.eq_ignore_ascii_case(LEGACY_SERVER_CONFIG);
        let key = if legacy {
            "loadBalancerConfig"
        } else {
            canonical_key(&cx, entry, &top, TOP_KEYS)?
        };
        match key {
            "clusterConfig" => config.cluster = Some(cluster(&cx, &entry.value, &at)?),
            "loadBalancerConfig" => {
                if let Some(first) = load_balancer_key {
                    return Err(cx.error(
                        entry.key_pos,
                        &at,
                        Problem::InvalidValue(format!(
                            "`{}` and `{}` (line {}) are the same section; give one",
                            entry.key, first.key, first.key_pos.line
                        )),
                    ));
                }
                load_balancer_key = Some(entry);
                if legacy {
                    cx.warn(
                        entry.key_pos,
                        at.clone(),
                        "older name of `loadBalancerConfig`; read as `loadBalancerConfig`",
                    );
                }
                config.load_balancer = Some(load_balancer(&cx, &entry.value, &at)?);
            }
            _ => {
                config.agents = agents(&cx, &entry.value, &at)?;
                warn_mistyped_agent_types(&mut cx, &entry.value, &at, &config.agents);
            }
        }
    }
    config.warnings = cx.warnings;
    Ok(config)
}

// ---- keys ----------------------------------------------------------------------------------

/// The canonical spelling of `entry`'s key among `valid`, or an unknown-key error.
fn canonical_key(
    cx: &Cx,
    entry: &Entry,
    parent: &KeyPath,
    valid: &'static [&'static str],
) -> Result<&'static str, ConfigError> {
    valid
        .iter()
        .find(|key| key.eq_ignore_ascii_case(&entry.key))
        .copied()
        .ok_or_else(|| {
            cx.error(
                entry.key_pos,
                &parent.key(&entry.key),
                Problem::UnknownKey {
                    suggestion: nearest_key(&entry.key, valid),
                    belongs_in: SECTIONS
                        .iter()
                        .find(|(_, keys)| keys.iter().any(|k| k.eq_ignore_ascii_case(&entry.key)))
                        .map(|(section, _)| *section),
                    valid,
                },
            )
        })
}

/// The entries of a section (a mapping; an empty value is an empty section), each with the
/// canonical spelling of its key.
fn section<'n>(
    cx: &Cx,
    node: &'n Node,
    at: &KeyPath,
    valid: &'static [&'static str],
) -> Result<Vec<(&'static str, &'n Entry)>, ConfigError> {
    let entries = match &node.value {
        Value::Null => &[][..],
        Value::Map(entries) => entries,
        _ => {
            return Err(cx.bad(
                node,
                at,
                format!(
                    "expected a mapping of keys to values, found {}",
                    node.kind()
                ),
            ));
        }
    };
    entries
        .iter()
        .map(|entry| Ok((canonical_key(cx, entry, at, valid)?, entry)))
        .collect()
}

/// The valid key a mistyped `key` most likely meant: the nearest by edit distance (ignoring
/// case) when near enough, or the one it is the start of.
pub(crate) fn nearest_key(key: &str, valid: &[&'static str]) -> Option<&'static str> {
    let key = key.to_lowercase();
    if key.chars().count() > 64 {
        return None; // not a typo of any key
    }
    let (best, distance) = valid
        .iter()
        .map(|candidate| (*candidate, edit_distance(&key, &candidate.to_lowercase())))
        .min_by_key(|(_, distance)| *distance)?;
    let budget = (best.chars().count() / 3).max(1);
    if distance <= budget {
        return Some(best);
    }
    if key.chars().count() >= 4 {
        return valid
            .iter()
            .find(|candidate| candidate.to_lowercase().starts_with(&key))
            .copied();
    }
    None
}

/// Edit distance in characters counting insertions, deletions, substitutions and swaps of
/// neighbours (optimal string alignment): `prot` is one edit from `port`.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut before: Vec<usize> = vec![0; b.len() + 1];
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    let mut current: Vec<usize> = vec![0; b.len() + 1];
    for i in 1..=a.len() {
        current[0] = i;
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (previous[j] + 1)
                .min(current[j - 1] + 1)
                .min(previous[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(before[j - 2] + 1);
            }
            current[j] = best;
        }
        std::mem::swap(&mut before, &mut previous);
        std::mem::swap(&mut previous, &mut current);
    }
    previous[b.len()]
}

// ---- sections --------------------------------------------------------------------------------

fn cluster(cx: &Cx, node: &Node, at: &KeyPath) -> Result<ClusterConfig, ConfigError> {
    let mut config = ClusterConfig::default();
    for (key, entry) in section(cx, node, at, CLUSTER_KEYS)? {
        let at = at.key(&entry.key);
        let value = &entry.value;
        match key {
            "name" => config.name = text(cx, value, &at)?,
            "heartBeatIntervalSeconds" => {
                set(
                    &mut config.heartbeat_interval,
                    positive_seconds(cx, value, &at)?,
                );
            }
            "memberResponseTimeOutSeconds" => {
                set(
                    &mut config.member_response_timeout,
                    positive_seconds(cx, value, &at)?,
                );
            }
            "memberMaxShutdownTimeSeconds" => {
                set(
                    &mut config.member_max_shutdown_time,
                    seconds(cx, value, &at)?,
                );
            }
            "memberMaxStartupRetries" => {
                let retries = integer(cx, value, &at, 0, i64::from(u32::MAX))?;
                set(
                    &mut config.member_max_startup_retries,
                    retries.map(clamp_u32),
                );
            }
            "etcd" => config.etcd = etcd_endpoints(cx, value, &at)?,
            "httpHostName" => config.http_host_name = text(cx, value, &at)?,
            "httpPort" => {
                config.http_port = integer(cx, value, &at, 0, 65_535)?
                    .map(|port| u16::try_from(port).unwrap_or_default());
            }
            _ => config.etcd_options = etcd_access(cx, value, &at)?,
        }
    }
    Ok(config)
}

/// Password files larger than this are refused (a password is one line).
const MAX_PASSWORD_FILE_BYTES: u64 = 64 * 1024;

/// A `passwordFile`'s content: a regular file (not a device or a pipe, which could be read
/// forever or block the load), of at most [`MAX_PASSWORD_FILE_BYTES`], in UTF-8.
fn read_password_file(path: &Path) -> Result<String, String> {
    let metadata = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if !metadata.is_file() {
        return Err("not a regular file".to_owned());
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|file| {
            file.take(MAX_PASSWORD_FILE_BYTES + 1)
                .read_to_end(&mut bytes)
        })
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > MAX_PASSWORD_FILE_BYTES {
        return Err(format!(
            "larger than {} KiB: not a password file",
            MAX_PASSWORD_FILE_BYTES / 1024
        ));
    }
    String::from_utf8(bytes).map_err(|_| "not UTF-8".to_owned())
}

/// `etcdOptions: { caFile, certFile, keyFile, user, passwordEnv | passwordFile }`. The
/// password is read now, so that a variable that is not set or a file that cannot be read is
/// an error at its key.
fn etcd_access(cx: &Cx, node: &Node, at: &KeyPath) -> Result<EtcdAccessConfig, ConfigError> {
    let mut config = EtcdAccessConfig::default();
    let mut given: Vec<(&'static str, Pos, KeyPath)> = Vec::new();
    for (key, entry) in section(cx, node, at, ETCD_OPTIONS_KEYS)? {
        let at = at.key(&entry.key);
        let value = &entry.value;
        let Some(text) = text(cx, value, &at)? else {
            continue;
        };
        given.push((key, entry.key_pos, at.clone()));
        match key {
            "caFile" => config.ca_file = Some(text),
            "certFile" => config.cert_file = Some(text),
            "keyFile" => config.key_file = Some(text),
            "user" => config.user = Some(text),
            "passwordEnv" => match std::env::var(&text) {
                Ok(password) => config.password = Some(Secret(password)),
                Err(_) => {
                    return Err(cx.bad(
                        value,
                        &at,
                        format!("the environment variable `{text}` is not set (or not UTF-8)"),
                    ));
                }
            },
            _ => {
                let path = cx.file.parent().unwrap_or(Path::new(".")).join(&text);
                match read_password_file(&path) {
                    Ok(password) => {
                        let password = password
                            .strip_suffix('\n')
                            .map(|p| p.strip_suffix('\r').unwrap_or(p))
                            .unwrap_or(&password);
                        config.password = Some(Secret(password.to_owned()));
                    }
                    Err(problem) => {
                        return Err(cx.bad(
                            value,
                            &at,
                            format!(
                                "cannot read the password file {}: {problem}",
                                path.display()
                            ),
                        ));
                    }
                }
            }
        }
    }
    let find = |key: &str| given.iter().find(|(k, _, _)| *k == key);
    let problem = |(_, pos, key): &(&str, Pos, KeyPath), message: &str| {
        cx.error(*pos, key, Problem::InvalidValue(message.to_owned()))
    };
    if let (Some(env), Some(_)) = (find("passwordEnv"), find("passwordFile")) {
        return Err(problem(
            env,
            "give `passwordEnv` or `passwordFile`, not both",
        ));
    }
    match (find("certFile"), find("keyFile")) {
        (Some(cert), None) => return Err(problem(cert, "`certFile` needs `keyFile`")),
        (None, Some(key)) => return Err(problem(key, "`keyFile` needs `certFile`")),
        _ => {}
    }
    let password = find("passwordEnv").or(find("passwordFile"));
    match (find("user"), password) {
        (Some(user), None) => {
            return Err(problem(
                user,
                "`user` needs `passwordEnv` or `passwordFile`",
            ));
        }
        (None, Some(password)) => return Err(problem(password, "a password needs `user`")),
        _ => {}
    }
    Ok(config)
}

/// `etcd`: one client URL, or a list of them (flow or block).
fn etcd_endpoints(cx: &Cx, node: &Node, at: &KeyPath) -> Result<Vec<String>, ConfigError> {
    let items = match &node.value {
        Value::Null => return Ok(Vec::new()),
        Value::Scalar(_) => std::slice::from_ref(node),
        Value::Seq(items) => items.as_slice(),
        Value::Map(_) => {
            return Err(cx.bad(
                node,
                at,
                "expected etcd client URLs (like `[ http://127.0.0.1:2379 ]`), found a mapping",
            ));
        }
    };
    let mut endpoints = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let at = if matches!(node.value, Value::Seq(_)) {
            at.index(i)
        } else {
            at.clone()
        };
        match text(cx, item, &at)? {
            Some(url) if !url.trim().is_empty() && !url.contains(char::is_whitespace) => {
                endpoints.push(url)
            }
            _ => {
                return Err(cx.bad(
                    item,
                    &at,
                    "expected an etcd client URL like http://127.0.0.1:2379",
                ));
            }
        }
    }
    Ok(endpoints)
}

fn load_balancer(cx: &Cx, node: &Node, at: &KeyPath) -> Result<LoadBalancerConfig, ConfigError> {
    let mut config = LoadBalancerConfig::default();
    let mut cert_at: Option<(Pos, KeyPath)> = None;
    let mut key_at: Option<(Pos, KeyPath)> = None;
    for (key, entry) in section(cx, node, at, LOAD_BALANCER_KEYS)? {
        let at = at.key(&entry.key);
        let value = &entry.value;
        match key {
            "hostName" => config.host_name = text(cx, value, &at)?,
            "port" => config.port = port(cx, value, &at)?,
            "certificate" => config.certificate = text(cx, value, &at)?,
            "privateKeyFile" => config.private_key_file = text(cx, value, &at)?,
            "enforceMutualTls" => set(&mut config.enforce_mutual_tls, boolean(cx, value, &at)?),
            "serviceResponseTimeoutSeconds" => {
                set(
                    &mut config.service_response_timeout,
                    seconds(cx, value, &at)?,
                );
            }
            "recentlyUsedTimeoutSeconds" => {
                set(&mut config.recently_used_timeout, seconds(cx, value, &at)?);
            }
            "probeIntervalMs" => {
                let ms = integer(cx, value, &at, 1, 3_600_000)?;
                set(
                    &mut config.probe_interval,
                    ms.map(|ms| Duration::from_millis(ms.unsigned_abs())),
                );
            }
            "workerCaFile" => config.worker_ca_file = text(cx, value, &at)?,
            "xdsLbPolicy" => set(&mut config.xds_lb_policy, lb_policy(cx, value, &at)?),
            "xdsLbPolicies" => config.xds_lb_policies = lb_policies(cx, value, &at)?,
            "httpHostName" => config.http_host_name = text(cx, value, &at)?,
            "httpPort" => {
                config.http_port = integer(cx, value, &at, 0, 65_535)?
                    .map(|port| u16::try_from(port).unwrap_or_default());
            }
            "workerCertFile" => {
                config.worker_cert_file = text(cx, value, &at)?;
                cert_at = Some((entry.key_pos, at.clone()));
            }
            _ => {
                config.worker_key_file = text(cx, value, &at)?;
                key_at = Some((entry.key_pos, at.clone()));
            }
        }
    }
    match (&config.worker_cert_file, &config.worker_key_file) {
        (Some(_), None) => {
            let (pos, key) = cert_at.unwrap_or_default();
            return Err(cx.error(
                pos,
                &key,
                Problem::InvalidValue("`workerCertFile` needs `workerKeyFile`".into()),
            ));
        }
        (None, Some(_)) => {
            let (pos, key) = key_at.unwrap_or_default();
            return Err(cx.error(
                pos,
                &key,
                Problem::InvalidValue("`workerKeyFile` needs `workerCertFile`".into()),
            ));
        }
        _ => {}
    }
    Ok(config)
}

/// The agent types quaestor gives a meaning (compared without regard to case); C# takes any
/// name, for display only.
const KNOWN_AGENT_TYPES: &[&str] = &["Worker", "KeyValueStore", "LoadBalancer"];

/// A warning for each agent type that is not one of [`KNOWN_AGENT_TYPES`] but close to one
/// (`Wroker`): such an agent runs as a plain process, not as what it was likely meant to be.
/// Other names pass quietly (C# configs use their own for display).
fn warn_mistyped_agent_types(cx: &mut Cx, node: &Node, at: &KeyPath, agents: &[AgentConfig]) {
    let places: Vec<(Pos, KeyPath)> = match &node.value {
        Value::Seq(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let at = at.index(i);
                let given = match &item.value {
                    Value::Map(entries) => entries
                        .iter()
                        .find(|e| e.key.eq_ignore_ascii_case("agentType")),
                    _ => None,
                };
                given.map_or((item.pos, at.clone()), |e| (e.value.pos, at.key(&e.key)))
            })
            .collect(),
        Value::Map(entries) => entries
            .iter()
            .map(|e| (e.key_pos, at.key(&e.key)))
            .collect(),
        _ => Vec::new(),
    };
    for (agent, (pos, key)) in agents.iter().zip(places) {
        let given = &agent.agent_type;
        if KNOWN_AGENT_TYPES
            .iter()
            .any(|t| t.eq_ignore_ascii_case(given))
        {
            continue;
        }
        if let Some(known) = nearest_key(given, KNOWN_AGENT_TYPES) {
            cx.warn(
                pos,
                key,
                format!(
                    "agentType `{given}` is not a type quaestor knows; did you mean `{known}`? \
                     (as it is, its processes run as plain processes, not as {known})"
                ),
            );
        }
    }
}

/// `agents`: a list of agents each with its `agentType` (current C# files), or a mapping from
/// agent type to agent (older C# files).
fn agents(cx: &Cx, node: &Node, at: &KeyPath) -> Result<Vec<AgentConfig>, ConfigError> {
    match &node.value {
        Value::Null => Ok(Vec::new()),
        Value::Seq(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| agent(cx, item, item.pos, &at.index(i), None))
            .collect(),
        Value::Map(entries) => entries
            .iter()
            .map(|entry| {
                let name = Some(entry.key.as_str());
                agent(cx, &entry.value, entry.key_pos, &at.key(&entry.key), name)
            })
            .collect(),
        Value::Scalar(_) => Err(cx.bad(
            node,
            at,
            "expected a list of agents (or a mapping from agent type to agent), found a single value",
        )),
    }
}

/// One agent. `named`: the agent type given by its key in the mapping form.
fn agent(
    cx: &Cx,
    node: &Node,
    agent_pos: Pos,
    at: &KeyPath,
    named: Option<&str>,
) -> Result<AgentConfig, ConfigError> {
    if matches!(node.value, Value::Scalar(_) | Value::Seq(_)) {
        return Err(cx.bad(
            node,
            at,
            format!(
                "expected an agent (a mapping of keys to values), found {}",
                node.kind()
            ),
        ));
    }
    let mut agent = AgentConfig::new(named.unwrap_or_default());
    let mut process_count: Option<(u32, Pos)> = None;
    let mut ports_pos = agent_pos;
    let mut host_pos: Option<(Pos, KeyPath)> = None;
    let mut etcd_options_at: Option<(Pos, KeyPath)> = None;
    for (key, entry) in section(cx, node, at, AGENT_KEYS)? {
        let at = at.key(&entry.key);
        let value = &entry.value;
        match key {
            "agentType" => {
                let given = text(cx, value, &at)?
                    .ok_or_else(|| cx.bad(value, &at, "the agent type must not be empty"))?;
                match named {
                    Some(name) if !name.eq_ignore_ascii_case(&given) => {
                        return Err(cx.bad(
                            value,
                            &at,
                            format!(
                                "this agent is `{name}` by its key; agentType `{given}` contradicts it"
                            ),
                        ));
                    }
                    Some(_) => {}
                    None => agent.agent_type = given,
                }
            }
            "executablePath" => agent.executable_path = text(cx, value, &at)?,
            "commandLineArguments" => agent.command_line_arguments = text(cx, value, &at)?,
            "processCount" => {
                let count = integer(cx, value, &at, 1, MAX_PROCESS_COUNT)?;
                process_count = count.map(|count| (clamp_u32(count), value.pos));
            }
            "clusterShutdownAction" => {
                set(
                    &mut agent.cluster_shutdown_action,
                    shutdown_action(cx, value, &at)?,
                );
            }
            "environmentVariables" => {
                agent.environment_variables = environment(cx, value, &at)?;
            }
            "hostName" => {
                if let Some(host) = text(cx, value, &at)? {
                    agent.host_name = host;
                    host_pos = Some((value.pos, at.clone()));
                }
            }
            "useTls" => set(&mut agent.use_tls, boolean(cx, value, &at)?),
            "clientCertificate" => agent.client_certificate = text(cx, value, &at)?,
            "ports" => {
                agent.ports = ports(cx, value, &at)?;
                ports_pos = entry.key_pos;
            }
            "serviceNames" => agent.service_names = service_names(cx, value, &at)?,
            "startupWaitSeconds" => {
                // As in the C# LocalProcess: 0 means the default (8 s), not "no wait".
                if let Some(wait) = seconds(cx, value, &at)? {
                    if !wait.is_zero() {
                        agent.startup_wait = wait;
                    }
                }
            }
            "recyclingIntervalHours" => {
                agent.recycling_interval_hours = hours(cx, value, &at)?.filter(|h| *h > 0.0);
            }
            "excludeFromServiceRegistry" => set(
                &mut agent.exclude_from_service_registry,
                boolean(cx, value, &at)?,
            ),
            "workingDirectory" => agent.working_directory = text(cx, value, &at)?,
            "stopSignal" => set(&mut agent.stop_signal, stop_signal(cx, value, &at)?),
            "healthCheck" => agent.health_check = health_check(cx, value, &at)?,
            "restartBackoff" => agent.restart_backoff = restart_backoff(cx, value, &at)?,
            "xdsLbPolicy" => agent.xds_lb_policy = lb_policy(cx, value, &at)?,
            _ => {
                agent.etcd_options = etcd_access(cx, value, &at)?;
                etcd_options_at = Some((entry.key_pos, at.clone()));
            }
        }
    }
    if let Some((pos, key)) = etcd_options_at.filter(|_| !agent.is_key_value_store()) {
        return Err(cx.error(
            pos,
            &key,
            Problem::InvalidValue(format!(
                "only a KeyValueStore agent takes `etcdOptions` (this one is `{}`)",
                agent.agent_type
            )),
        ));
    }
    if agent.agent_type.is_empty() {
        return Err(cx.error(agent_pos, at, Problem::MissingKey("agentType")));
    }
    // Ephemeral ports are picked on this machine: a process elsewhere cannot have one.
    if let Some((pos, key)) = host_pos.filter(|_| agent.ports.is_empty()) {
        if !is_local_host(&agent.host_name) && !agent.is_key_value_store() {
            return Err(cx.error(
                pos,
                &key,
                Problem::InvalidValue(format!(
                    "`{}` is not this machine, and an agent without `ports` gets ephemeral \
                     ports, which only local processes can have; list its ports",
                    agent.host_name
                )),
            ));
        }
    }
    agent.process_count = match process_count {
        Some((count, count_pos)) => {
            if !agent.ports.is_empty() && agent.ports.len() != count as usize {
                return Err(cx.error(
                    agent_pos,
                    at,
                    Problem::InvalidValue(format!(
                        "processCount is {count} (line {}) but ports lists {} (line {}); \
                         give one port per process, or no ports for ephemeral ports",
                        count_pos.line,
                        agent.ports.len(),
                        ports_pos.line
                    )),
                ));
            }
            count
        }
        // The C# load balancer's files list ports without a processCount: one per port.
        None => u32::try_from(agent.ports.len()).unwrap_or(u32::MAX).max(1),
    };
    Ok(agent)
}

// ---- values ----------------------------------------------------------------------------------

/// `localhost`, a loopback or unspecified address, or this machine's host name.
fn is_local_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.eq_ignore_ascii_case("localhost") || host.to_ascii_lowercase().ends_with(".localhost") {
        return true;
    }
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return ip.is_loopback() || ip.is_unspecified();
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .is_ok_and(|name| name.trim().eq_ignore_ascii_case(host))
}

fn set<T>(field: &mut T, value: Option<T>) {
    if let Some(value) = value {
        *field = value;
    }
}

fn clamp_u32(value: i64) -> u32 {
    u32::try_from(value).unwrap_or(if value < 0 { 0 } else { u32::MAX })
}

/// The text of a single value; `None` for an empty value (`key:`, `~`, `''`).
fn text(cx: &Cx, node: &Node, at: &KeyPath) -> Result<Option<String>, ConfigError> {
    match &node.value {
        Value::Null => Ok(None),
        Value::Scalar(text) if text.is_empty() => Ok(None),
        Value::Scalar(text) => Ok(Some(text.clone())),
        _ => Err(cx.bad(
            node,
            at,
            format!("expected a single value, found {}", node.kind()),
        )),
    }
}

/// The text of a single value that must be read as something else (a number, a flag).
fn scalar<'n>(
    cx: &Cx,
    node: &'n Node,
    at: &KeyPath,
    expected: &str,
) -> Result<Option<&'n str>, ConfigError> {
    match &node.value {
        Value::Null => Ok(None),
        Value::Scalar(text) => Ok(Some(text.trim())),
        _ => Err(cx.bad(
            node,
            at,
            format!("expected {expected}, found {}", node.kind()),
        )),
    }
}

/// `true` or `false`, in any case (as .NET's `bool.Parse` reads them).
fn boolean(cx: &Cx, node: &Node, at: &KeyPath) -> Result<Option<bool>, ConfigError> {
    let Some(text) = scalar(cx, node, at, "true or false")? else {
        return Ok(None);
    };
    if text.eq_ignore_ascii_case("true") {
        Ok(Some(true))
    } else if text.eq_ignore_ascii_case("false") {
        Ok(Some(false))
    } else {
        Err(cx.bad(node, at, format!("expected true or false, found `{text}`")))
    }
}

/// A whole number in `min..=max` (decimal, optional sign, as .NET's `int.Parse` reads it).
fn integer(
    cx: &Cx,
    node: &Node,
    at: &KeyPath,
    min: i64,
    max: i64,
) -> Result<Option<i64>, ConfigError> {
    let Some(text) = scalar(cx, node, at, "a whole number")? else {
        return Ok(None);
    };
    let digits = text.strip_prefix(['+', '-']).unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(cx.bad(node, at, format!("expected a whole number, found `{text}`")));
    }
    match text.parse::<i64>() {
        Ok(value) if (min..=max).contains(&value) => Ok(Some(value)),
        _ => Err(cx.bad(
            node,
            at,
            format!("{text} is out of range (expected {min} to {max})"),
        )),
    }
}

/// A finite decimal number (`8`, `0.5`, `1e3`); not YAML's `.inf`/`.nan`, not hex.
fn number(cx: &Cx, node: &Node, at: &KeyPath) -> Result<Option<f64>, ConfigError> {
    let Some(text) = scalar(cx, node, at, "a number")? else {
        return Ok(None);
    };
    let plain = !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'+' | b'-' | b'e' | b'E'))
        && text.bytes().any(|b| b.is_ascii_digit());
    match text.parse::<f64>() {
        Ok(value) if plain && value.is_finite() => Ok(Some(value)),
        _ => Err(cx.bad(node, at, format!("expected a number, found `{text}`"))),
    }
}

/// A number of seconds, 0 or more.
fn seconds(cx: &Cx, node: &Node, at: &KeyPath) -> Result<Option<Duration>, ConfigError> {
    let Some(value) = number(cx, node, at)? else {
        return Ok(None);
    };
    if !(0.0..=MAX_SECONDS).contains(&value) {
        return Err(cx.bad(
            node,
            at,
            format!("{value} seconds is out of range (expected 0 to {MAX_SECONDS})"),
        ));
    }
    Ok(Some(Duration::from_secs_f64(value)))
}

/// A number of seconds greater than 0 (an interval or a timeout that cannot be zero).
fn positive_seconds(cx: &Cx, node: &Node, at: &KeyPath) -> Result<Option<Duration>, ConfigError> {
    let duration = seconds(cx, node, at)?;
    if duration.is_some_and(|d| d.is_zero()) {
        return Err(cx.bad(node, at, "must be greater than 0 seconds"));
    }
    Ok(duration)
}

/// A number of hours, 0 or more (at most ten years).
fn hours(cx: &Cx, node: &Node, at: &KeyPath) -> Result<Option<f64>, ConfigError> {
    let Some(value) = number(cx, node, at)? else {
        return Ok(None);
    };
    let max = MAX_SECONDS / 3600.0;
    if !(0.0..=max).contains(&value) {
        return Err(cx.bad(
            node,
            at,
            format!("{value} hours is out of range (expected 0 to {max})"),
        ));
    }
    Ok(Some(value))
}

fn port(cx: &Cx, node: &Node, at: &KeyPath) -> Result<Option<u16>, ConfigError> {
    let Some(text) = scalar(cx, node, at, "a port number")? else {
        return Ok(None);
    };
    let Ok(value) = text.parse::<i64>() else {
        return Err(cx.bad(
            node,
            at,
            format!("expected a port number (1-65535), found `{text}`"),
        ));
    };
    match u16::try_from(value) {
        Ok(port) if port != 0 => Ok(Some(port)),
        _ => Err(cx.bad(node, at, format!("port {value} is outside 1-65535"))),
    }
}

/// A list of ports, flow (`[ 5161, 5162 ]`) or block; empty or no value: none.
fn ports(cx: &Cx, node: &Node, at: &KeyPath) -> Result<Vec<u16>, ConfigError> {
    let items = match &node.value {
        Value::Null => return Ok(Vec::new()),
        Value::Seq(items) => items,
        _ => {
            return Err(cx.bad(
                node,
                at,
                format!(
                    "expected a list of ports (like `[ 5161, 5162 ]`), found {}",
                    node.kind()
                ),
            ));
        }
    };
    let mut ports: Vec<u16> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let at = at.index(i);
        let Some(port) = port(cx, item, &at)? else {
            return Err(cx.bad(
                item,
                &at,
                "expected a port number (1-65535), found an empty value",
            ));
        };
        if ports.contains(&port) {
            return Err(cx.bad(item, &at, format!("port {port} is listed twice")));
        }
        ports.push(port);
    }
    Ok(ports)
}

/// `serviceNames`: no value means none given; `[]` means "check the empty service name".
fn service_names(cx: &Cx, node: &Node, at: &KeyPath) -> Result<Option<Vec<String>>, ConfigError> {
    let items = match &node.value {
        Value::Null => return Ok(None),
        Value::Seq(items) => items,
        _ => {
            return Err(cx.bad(
                node,
                at,
                format!("expected a list of service names, found {}", node.kind()),
            ));
        }
    };
    let mut names = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let at = at.index(i);
        let Some(name) = text(cx, item, &at)? else {
            return Err(cx.bad(
                item,
                &at,
                "empty service name; write `serviceNames: []` to check the empty service name",
            ));
        };
        if name.contains('/') {
            return Err(cx.bad(
                item,
                &at,
                format!("service name `{name}` must not contain '/'"),
            ));
        }
        names.push(name);
    }
    Ok(Some(names))
}

/// The entries of a mapping of `what` (none for a key without value).
fn mapping<'a>(
    cx: &Cx,
    node: &'a Node,
    at: &KeyPath,
    what: &str,
) -> Result<&'a [Entry], ConfigError> {
    match &node.value {
        Value::Null => Ok(&[]),
        Value::Map(entries) => Ok(entries),
        _ => Err(cx.bad(
            node,
            at,
            format!("expected a mapping of {what}, found {}", node.kind()),
        )),
    }
}

/// `environmentVariables`: name → any single value, passed as its text (`false`, `8`,
/// `C:\Temp`); an empty value is the empty string. In file order.
fn environment(cx: &Cx, node: &Node, at: &KeyPath) -> Result<Vec<(String, String)>, ConfigError> {
    let entries = mapping(cx, node, at, "variable names to values")?;
    let mut variables = Vec::with_capacity(entries.len());
    for entry in entries {
        let at = at.key(&entry.key);
        if entry.key.contains(['=', '\0']) {
            return Err(cx.error(
                entry.key_pos,
                &at,
                Problem::InvalidValue(
                    "an environment variable name must not contain '=' or NUL".into(),
                ),
            ));
        }
        let value = text(cx, &entry.value, &at)?.unwrap_or_default();
        if value.contains('\0') {
            return Err(cx.bad(
                &entry.value,
                &at,
                "an environment variable value must not contain NUL",
            ));
        }
        variables.push((entry.key.clone(), value));
    }
    Ok(variables)
}

/// A signal by name, in any case, with or without `SIG` (`TERM`, `SIGINT`, `sigquit`).
fn stop_signal(cx: &Cx, node: &Node, at: &KeyPath) -> Result<Option<Signal>, ConfigError> {
    let Some(text) = scalar(cx, node, at, "a signal name")? else {
        return Ok(None);
    };
    let upper = text.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse::<Signal>().map(Some).map_err(|_| {
        cx.bad(
            node,
            at,
            format!("`{text}` is not a signal name (e.g. SIGTERM, SIGINT, SIGQUIT)"),
        )
    })
}

/// `healthCheck: { failuresBeforeRestart: N }`.
fn health_check(cx: &Cx, node: &Node, at: &KeyPath) -> Result<HealthCheckConfig, ConfigError> {
    let mut config = HealthCheckConfig::default();
    for (_, entry) in section(cx, node, at, HEALTH_CHECK_KEYS)? {
        let at = at.key(&entry.key);
        let failures = integer(cx, &entry.value, &at, 1, i64::from(u32::MAX))?;
        set(&mut config.failures_before_restart, failures.map(clamp_u32));
    }
    Ok(config)
}

/// `restartBackoff: { initialSeconds, maxSeconds, resetAfterSeconds }`; max must not be less
/// than initial.
fn restart_backoff(
    cx: &Cx,
    node: &Node,
    at: &KeyPath,
) -> Result<RestartBackoffConfig, ConfigError> {
    let mut config = RestartBackoffConfig::default();
    let mut max_given: Option<(&Node, KeyPath)> = None;
    for (key, entry) in section(cx, node, at, RESTART_BACKOFF_KEYS)? {
        let at = at.key(&entry.key);
        let value = &entry.value;
        match key {
            "initialSeconds" => set(&mut config.initial, positive_seconds(cx, value, &at)?),
            "maxSeconds" => {
                set(&mut config.max, positive_seconds(cx, value, &at)?);
                max_given = Some((value, at));
            }
            _ => set(&mut config.reset_after, seconds(cx, value, &at)?),
        }
    }
    if config.max < config.initial {
        match max_given {
            Some((value, at)) => {
                return Err(cx.bad(
                    value,
                    &at,
                    format!(
                        "maxSeconds ({}) is less than initialSeconds ({})",
                        config.max.as_secs_f64(),
                        config.initial.as_secs_f64()
                    ),
                ));
            }
            // Only initialSeconds given, above the default max: the max follows it.
            None => config.max = config.initial,
        }
    }
    Ok(config)
}

/// An xDS LB policy by name (`round_robin`, `least_request`, `weighted_round_robin`,
/// `pick_first`).
fn lb_policy(cx: &Cx, node: &Node, at: &KeyPath) -> Result<Option<LbPolicy>, ConfigError> {
    let choices = LbPolicy::ALL.map(LbPolicy::name).join(", ");
    let Some(text) = scalar(cx, node, at, &choices)? else {
        return Ok(None);
    };
    LbPolicy::from_name(text).map(Some).ok_or_else(|| {
        cx.bad(
            node,
            at,
            format!("expected one of {choices}, found `{text}`"),
        )
    })
}

/// `xdsLbPolicies`: a mapping from service name to LB policy.
fn lb_policies(cx: &Cx, node: &Node, at: &KeyPath) -> Result<Vec<(String, LbPolicy)>, ConfigError> {
    let entries = mapping(cx, node, at, "service names to LB policies")?;
    let mut policies = Vec::with_capacity(entries.len());
    for entry in entries {
        let at = at.key(&entry.key);
        if let Some(policy) = lb_policy(cx, &entry.value, &at)? {
            policies.push((entry.key.clone(), policy));
        }
    }
    Ok(policies)
}

/// `None` or `Kill`, in any case, or their numbers 0 and 1 (as .NET reads enums).
fn shutdown_action(
    cx: &Cx,
    node: &Node,
    at: &KeyPath,
) -> Result<Option<ShutdownAction>, ConfigError> {
    let Some(text) = scalar(cx, node, at, "None or Kill")? else {
        return Ok(None);
    };
    if text.eq_ignore_ascii_case("none") || text == "0" {
        Ok(Some(ShutdownAction::None))
    } else if text.eq_ignore_ascii_case("kill") || text == "1" {
        Ok(Some(ShutdownAction::Kill))
    } else {
        Err(cx.bad(node, at, format!("expected None or Kill, found `{text}`")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_counts_edits() {
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("port", "ports"), 1);
        assert_eq!(edit_distance("héllo", "hello"), 1);
        assert_eq!(edit_distance("prot", "port"), 1);
        assert_eq!(edit_distance("ab", "ba"), 1);
        assert_eq!(edit_distance("abc", ""), 3);
    }

    #[test]
    fn nearest_key_suggests_typos_and_prefixes_only() {
        assert_eq!(
            nearest_key("heartBeatIntervalSecs", CLUSTER_KEYS),
            Some("heartBeatIntervalSeconds")
        );
        assert_eq!(nearest_key("port", AGENT_KEYS), Some("ports"));
        assert_eq!(nearest_key("USETSL", AGENT_KEYS), Some("useTls"));
        assert_eq!(
            nearest_key("heartbeat", CLUSTER_KEYS),
            Some("heartBeatIntervalSeconds")
        );
        assert_eq!(nearest_key("agent", TOP_KEYS), Some("agents"));
        assert_eq!(nearest_key("logging", TOP_KEYS), None);
        assert_eq!(nearest_key("x", AGENT_KEYS), None);
        assert_eq!(nearest_key("prot", LOAD_BALANCER_KEYS), Some("port"));
        assert_eq!(nearest_key(&"a".repeat(10_000), AGENT_KEYS), None);
    }

    /// Every key of every table is handled by its section (a nested list is wrong for all of
    /// them, so each must fail at its own key, not be ignored).
    #[test]
    fn every_known_key_is_bound() {
        let cases: [(&str, &[&str]); 7] = [
            ("clusterConfig:\n  ", CLUSTER_KEYS),
            ("loadBalancerConfig:\n  ", LOAD_BALANCER_KEYS),
            ("agents:\n  Worker:\n    ", AGENT_KEYS),
            (
                "agents:\n  Worker:\n    healthCheck:\n      ",
                HEALTH_CHECK_KEYS,
            ),
            (
                "agents:\n  Worker:\n    restartBackoff:\n      ",
                RESTART_BACKOFF_KEYS,
            ),
            ("clusterConfig:\n  etcdOptions:\n    ", ETCD_OPTIONS_KEYS),
            (
                "agents:\n  KeyValueStore:\n    etcdOptions:\n      ",
                ETCD_OPTIONS_KEYS,
            ),
        ];
        for (prefix, keys) in cases {
            for key in keys {
                let text = format!("{prefix}{key}: [[1]]\n");
                let root = super::super::yaml::parse(&text).unwrap();
                let error = bind(root.as_ref(), Path::new("t.yml")).unwrap_err();
                let shown = error.to_string();
                assert!(shown.contains(&key.to_string()), "{key}: {shown}");
                assert!(
                    matches!(error.problem(), Some(Problem::InvalidValue(_))),
                    "{key}: {shown}"
                );
            }
        }
    }
}
