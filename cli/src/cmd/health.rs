//! `quaestor health ADDR [SERVICE]`: one `grpc.health.v1.Health/Check`.

use quaestor_core::server::health::ServingStatus;

use super::{ClientArgs, call_failure, client_failure};
use crate::exit::{Exit, Failure};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The server: host:port, http://host:port or https://host:port.
    address: String,
    /// The service to check; empty: the server as a whole.
    #[arg(default_value = "")]
    service: String,
    #[command(flatten)]
    client: ClientArgs,
}

/// Prints SERVING, NOT_SERVING, SERVICE_UNKNOWN or UNKNOWN.
pub async fn run(args: Args) -> Result<Exit, Failure> {
    let target = args.client.target(&args.address)?;
    let channel = target.connect().await.map_err(client_failure)?;
    let status = target
        .check_health(channel, &args.service)
        .await
        .map_err(|e| call_failure(e, "grpc.health.v1.Health", ""))?;
    crate::output::line(status.as_str_name());
    Ok(if status == ServingStatus::Serving {
        Exit::Ok
    } else {
        Exit::Failure
    })
}
