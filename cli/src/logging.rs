//! Logs go to stderr through tracing; `RUST_LOG` overrides the `-v`/`-q` default.

use std::io::IsTerminal;

use clap::{ArgAction, Args, ValueEnum};
use tracing_subscriber::EnvFilter;

use crate::env;

#[derive(Debug, Args)]
pub struct LogArgs {
    /// More log output (-v debug, -vv trace).
    #[arg(short, long, global = true, action = ArgAction::Count)]
    verbose: u8,
    /// Less log output (-q warnings only, -qq errors only).
    #[arg(short, long, global = true, action = ArgAction::Count, conflicts_with = "verbose")]
    quiet: u8,
    /// The format of the log on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = env::LOG_FORMAT)]
    log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

pub fn init(args: &LogArgs) -> Result<(), String> {
    let level = match (args.verbose, args.quiet) {
        (0, 0) => "info",
        (1, _) => "debug",
        (v, _) if v >= 2 => "trace",
        (_, 1) => "warn",
        _ => "error",
    };
    let filter = match std::env::var(env::RUST_LOG) {
        Ok(spec) if !spec.is_empty() => EnvFilter::try_new(&spec)
            .map_err(|e| format!("invalid {}={spec:?}: {e}", env::RUST_LOG))?,
        _ => EnvFilter::new(format!("{level},h2=warn,hyper=warn,tower=warn")),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let result = match args.log_format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    result.map_err(|e| format!("cannot start logging: {e}"))
}
