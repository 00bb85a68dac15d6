//! `quaestor discover ADDR SERVICE`: one `DiscoverServices` / `DiscoverTopServices`.

use serde_json::json;

use super::{ClientArgs, call_failure, client_failure};
use crate::exit::{Exit, Failure};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The balancer: host:port, http://host:port or https://host:port.
    address: String,
    /// The service to find.
    service: String,
    /// Best first (DiscoverTopServices), only workers that report load; default: every
    /// healthy worker in random order (DiscoverServices).
    #[arg(long)]
    top: bool,
    /// At most this many; 0 means all.
    #[arg(long, value_name = "N", default_value_t = 0, value_parser = clap::value_parser!(i32).range(0..))]
    max: i32,
    /// The scope ("" is the default scope).
    #[arg(long, default_value = "")]
    scope: String,
    /// Print one JSON array of {scope, service_name, host_name, port}.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    client: ClientArgs,
}

/// Prints `host:port` lines (or JSON); exit 1 when no worker serves the service.
pub async fn run(args: Args) -> Result<Exit, Failure> {
    let target = args.client.target(&args.address)?;
    let channel = target.connect().await.map_err(client_failure)?;
    let found = target
        .discover(
            channel.clone(),
            &args.scope,
            &args.service,
            args.max,
            args.top,
        )
        .await
        .map_err(|e| {
            call_failure(
                e,
                "Quaestor.ServiceDiscovery",
                ": is it a worker, not a balancer?",
            )
        })?;
    if args.json {
        let list: Vec<_> = found
            .iter()
            .map(|l| json!({"scope": l.scope, "service_name": l.service_name, "host_name": l.host_name, "port": l.port}))
            .collect();
        crate::output::line(serde_json::Value::from(list));
    } else {
        for location in &found {
            crate::output::line(format_args!("{}:{}", location.host_name, location.port));
        }
    }
    if !found.is_empty() {
        return Ok(Exit::Ok);
    }
    // The discovery API cannot list names: ask for the same name in other cases.
    let mut known = Vec::new();
    for name in other_cases(&args.service) {
        let answer = target
            .discover(channel.clone(), &args.scope, &name, 1, false)
            .await;
        if answer.is_ok_and(|found| !found.is_empty()) {
            known.push(name);
        }
    }
    let scope = if args.scope.is_empty() {
        String::new()
    } else {
        format!(" in scope '{}'", args.scope)
    };
    let hint = if known.is_empty() {
        String::new()
    } else {
        format!(" (names are case-sensitive; known: {})", known.join(", "))
    };
    Err(Failure::new(
        Exit::Failure,
        format!("no location for '{}'{scope}{hint}", args.service),
    ))
}

/// `name` spelled as services usually are, when that differs from `name`: `Worker`,
/// `worker`, `WORKER`.
fn other_cases(name: &str) -> Vec<String> {
    let mut chars = name.chars();
    let capitalized = chars.next().map_or_else(String::new, |first| {
        first
            .to_uppercase()
            .chain(chars.flat_map(char::to_lowercase))
            .collect()
    });
    let mut cases = Vec::new();
    for case in [capitalized, name.to_lowercase(), name.to_uppercase()] {
        if case != name && !cases.contains(&case) {
            cases.push(case);
        }
    }
    cases
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_spellings() {
        assert_eq!(other_cases("worker"), ["Worker", "WORKER"]);
        assert_eq!(other_cases("Worker"), ["worker", "WORKER"]);
        assert_eq!(other_cases("WORKER"), ["Worker", "worker"]);
        assert!(other_cases("").is_empty());
    }
}
