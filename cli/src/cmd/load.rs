//! `quaestor load ADDR SERVICE`: one `LoadReportingGrpc/ReportLoad`.

use std::time::SystemTime;

use quaestor_core::load::time_from_dotnet_ticks;
use quaestor_core::proto::load_reporting::LoadReportResponse;
use serde_json::json;

use super::{ClientArgs, call_failure, client_failure};
use crate::exit::{Exit, Failure};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The worker (or its control endpoint): host:port, http://host:port or https://host:port.
    address: String,
    /// The service whose load to report.
    service: String,
    /// The scope to ask in.
    #[arg(long, default_value = "")]
    scope: String,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    client: ClientArgs,
}

pub async fn run(args: Args) -> Result<Exit, Failure> {
    let target = args.client.target(&args.address)?;
    let channel = target.connect().await.map_err(client_failure)?;
    let report = target
        .report_load(channel, &args.scope, &args.service)
        .await
        .map_err(|e| call_failure(e, "Quaestor.LoadReporting", ": is it a worker?"))?;
    let text = if args.json {
        as_json(&args.scope, &args.service, &report).to_string()
    } else {
        as_text(&args.service, &report)
    };
    crate::output::line(text);
    Ok(Exit::Ok)
}

fn as_json(scope: &str, service: &str, report: &LoadReportResponse) -> serde_json::Value {
    let stats = report.server_stats.unwrap_or_default();
    json!({
        "scope": scope,
        "service_name": service,
        "timestamp_ticks": report.timestamp_ticks,
        "known_load_rate": report.known_load_rate,
        "request_capacity": stats.request_capacity,
        "current_requests": stats.current_requests,
        "server_utilization": stats.server_utilization,
        "server_memory_usage_percent": stats.server_memory_usage_percent,
    })
}

fn as_text(service: &str, report: &LoadReportResponse) -> String {
    let stats = report.server_stats.unwrap_or_default();
    let rate = if report.known_load_rate < 0.0 {
        "not set".to_owned()
    } else {
        report.known_load_rate.to_string()
    };
    let changed = match time_from_dotnet_ticks(report.timestamp_ticks) {
        None => "never".to_owned(),
        Some(at) => {
            let age = SystemTime::now()
                .duration_since(at)
                .map_or(0.0, |d| d.as_secs_f64());
            format!("{age:.3} s ago (ticks {})", report.timestamp_ticks)
        }
    };
    format!(
        "service             {service}\n\
         current requests    {} of {}\n\
         known load rate     {rate}\n\
         server utilization  {:.1} %\n\
         memory usage        {:.1} %\n\
         last change         {changed}",
        stats.current_requests,
        stats.request_capacity,
        stats.server_utilization * 100.0,
        stats.server_memory_usage_percent,
    )
}
