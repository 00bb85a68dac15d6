//! `quaestor discover ADDR SERVICE`: one `DiscoverServices` / `DiscoverTopServices`.

use serde_json::json;

use super::{ClientArgs, client_failure};
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
        .discover(channel, &args.scope, &args.service, args.max, args.top)
        .await
        .map_err(client_failure)?;
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
    Ok(if found.is_empty() {
        Exit::Failure
    } else {
        Exit::Ok
    })
}
