//! `quaestor worker`: the reference worker. Serves the demo Work service, health and load on
//! one port, and can turn NOT_SERVING or crash on cue, as later tests and demos need:
//! `--unhealthy-after`, `--exit-after`, and SIGUSR1 (NOT_SERVING) / SIGUSR2 (SERVING).
//! With `--work-ms` and `--max-concurrent` it is a worker of fixed service time and limited
//! concurrency (calls beyond the limit wait in the worker and count as current requests), as
//! the end-to-end balancing benchmark (cli/benches/e2e.rs) needs. With `--orca-per-call` its
//! Work answers carry per-call ORCA reports.

use std::path::PathBuf;
use std::time::Duration;

use quaestor_core::reporter::Reporter;
use quaestor_core::tls::ServerTls;
use quaestor_demo::WorkService;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};

use super::{parse_duration, resolve};
use crate::exit::{Exit, Failure};

/// The service reported when no `--service` is given (the C# HelloWorld worker's name).
pub const DEFAULT_SERVICE: &str = "Worker";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Port to serve on; 0 picks a free port. The worker prints `listening on HOST:PORT`.
    #[arg(long, required_unless_present = "port_given")]
    port: Option<u16>,
    /// The port, as the C# HelloWorld WorkerProcess takes it: `worker PORT [SECONDS]`.
    #[arg(value_name = "PORT", conflicts_with = "port")]
    port_given: Option<u16>,
    /// Seconds until every service turns NOT_SERVING, as the C# WorkerProcess takes them
    /// (≤ 0: never); the same as --unhealthy-after.
    #[arg(
        value_name = "SECONDS",
        requires = "port_given",
        conflicts_with = "unhealthy_after",
        allow_negative_numbers = true
    )]
    seconds_given: Option<i64>,
    /// Host name or IP address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// A service to report health and load for; repeat for several [default: Worker].
    #[arg(long = "service", value_name = "NAME")]
    services: Vec<String>,
    /// Requests each service takes at once (the reported request_capacity; -1: unknown)
    /// [default: --max-concurrent if given, else 4].
    #[arg(long, allow_negative_numbers = true,
          value_parser = clap::value_parser!(i32).range(-1..))]
    capacity: Option<i32>,
    /// Every Work/DoWork call takes this many milliseconds, whatever it asks for (a fixed
    /// service time); at most 600000 (the demo service's limit).
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u32).range(0..=600_000))]
    work_ms: Option<u32>,
    /// At most this many Work/DoWork calls run at once; later ones wait in the worker (first
    /// come, first served) and count as current requests while they wait.
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    max_concurrent: Option<u32>,
    /// Requests reported as in flight before any call arrives.
    #[arg(long, value_name = "N", default_value_t = 0, value_parser = clap::value_parser!(i32).range(0..))]
    busy: i32,
    /// Known load rate to report (≥ 0) [default: not set].
    #[arg(long, value_name = "X", value_parser = parse_load_rate)]
    load_rate: Option<f64>,
    /// Turn every service NOT_SERVING after this long (e.g. 100, 100s, 1.5m).
    #[arg(long, value_name = "SECS", value_parser = parse_duration)]
    unhealthy_after: Option<Duration>,
    /// Exit at once after this long, without a graceful stop (a simulated crash).
    #[arg(long, value_name = "SECS", value_parser = parse_duration)]
    exit_after: Option<Duration>,
    /// Exit code for --exit-after.
    #[arg(
        long,
        value_name = "CODE",
        default_value_t = 1,
        requires = "exit_after"
    )]
    exit_code: u8,
    /// Certificate (PEM) to serve TLS with.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// CA (PEM) that client certificates must be signed by (mutual TLS).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,
    /// Send a per-call ORCA report (the `endpoint-load-metrics-bin` trailer, gRFC A51) with
    /// every Work/DoWork answer: the load as the call ends, the call itself no longer counted.
    #[arg(long)]
    orca_per_call: bool,
    /// On SIGTERM/SIGINT, how long calls in flight may take to finish.
    #[arg(long, value_name = "SECS", value_parser = parse_duration, default_value = "10s")]
    grace: Duration,
}

fn parse_load_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate >= 0.0 => Ok(rate),
        _ => Err(format!("{text:?} is not a load rate (a number ≥ 0)")),
    }
}

pub async fn run(args: Args) -> Result<Exit, Failure> {
    let services = if args.services.is_empty() {
        vec![DEFAULT_SERVICE.to_owned()]
    } else {
        args.services.clone()
    };
    let capacity = args.capacity.unwrap_or_else(|| {
        args.max_concurrent
            .map_or(4, |k| i32::try_from(k).unwrap_or(i32::MAX))
    });
    let reporter = Reporter::new();
    for name in &services {
        let load = reporter
            .add_service(name, capacity)
            .map_err(|e| Failure::usage(format!("--service {name:?}: {e}")))?;
        if args.busy > 0 {
            load.reset_current_requests(args.busy);
        }
        if let Some(rate) = args.load_rate {
            load.set_known_load_rate(rate);
        }
    }

    let tls = args
        .tls_cert
        .clone()
        .zip(args.tls_key.clone())
        .map(|(cert, key)| {
            let tls = ServerTls::new(cert, key);
            match args.tls_client_ca.clone() {
                Some(ca) => tls.with_client_ca(ca),
                None => tls,
            }
        });
    let port = args.port.or(args.port_given).unwrap_or_default();
    let unhealthy_after = args.unhealthy_after.or(args
        .seconds_given
        .filter(|s| *s > 0)
        .map(|s| Duration::from_secs(s.unsigned_abs())));
    let addr = resolve("--host", &args.host, port).await?;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| Failure::new(Exit::Failure, format!("cannot listen on {addr}: {e}")))?;
    let local = listener
        .local_addr()
        .map_err(|e| Failure::unexpected(format!("no local address: {e}")))?;

    let work = WorkService::paced(
        reporter.clone(),
        &services[0],
        &local.to_string(),
        args.work_ms.map(|ms| Duration::from_millis(u64::from(ms))),
        args.max_concurrent.map(|k| k as usize),
    );
    let server = if args.orca_per_call {
        reporter
            .server()
            .add_service(reporter.per_call_orca().wrap(work))
    } else {
        reporter.server().add_service(work)
    };
    let mut server = server
        .with_tls(tls)
        .with_grace_period(args.grace)
        .spawn(listener)
        .map_err(Failure::usage)?;
    // The signals are watched before the line below: a signal sent as soon as it is read must
    // not meet the default action (which ends the process).
    // SIGUSR1 / SIGUSR2: turn every service NOT_SERVING / SERVING, e.g. to watch a balancer
    // move traffic away and back.
    for (kind, serving) in [
        (SignalKind::user_defined1(), false),
        (SignalKind::user_defined2(), true),
    ] {
        let mut flips =
            signal(kind).map_err(|e| Failure::unexpected(format!("cannot watch {kind:?}: {e}")))?;
        let reporter = reporter.clone();
        tokio::spawn(async move {
            while flips.recv().await.is_some() {
                tracing::warn!(serving, "health flipped by signal");
                reporter.set_all_serving(serving);
            }
        });
    }

    let mut terminate = signal(SignalKind::terminate())
        .map_err(|e| Failure::unexpected(format!("cannot watch SIGTERM: {e}")))?;
    let mut interrupt = signal(SignalKind::interrupt())
        .map_err(|e| Failure::unexpected(format!("cannot watch SIGINT: {e}")))?;

    // Tests and scripts wait for this line; logs go to stderr.
    crate::output::announce(format_args!("listening on {local}"));
    tracing::info!(%local, ?services, capacity, work_ms = args.work_ms,
        max_concurrent = args.max_concurrent, "worker serving");

    if let Some(after) = unhealthy_after {
        let reporter = reporter.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            tracing::warn!(?after, "turning NOT_SERVING as asked by --unhealthy-after");
            reporter.set_all_serving(false);
        });
    }
    if let Some(after) = args.exit_after {
        let code = args.exit_code;
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            tracing::warn!(?after, code, "exiting as asked by --exit-after");
            std::process::exit(i32::from(code));
        });
    }

    tokio::select! {
        _ = terminate.recv() => tracing::info!("SIGTERM: stopping"),
        _ = interrupt.recv() => tracing::info!("SIGINT: stopping"),
        ended = server.wait() => {
            return match ended {
                Ok(()) => Err(Failure::unexpected("the server stopped by itself")),
                Err(e) => Err(Failure::unexpected(e)),
            };
        }
    }
    server.shutdown().await.map_err(Failure::unexpected)?;
    tracing::info!("stopped");
    Ok(Exit::Ok)
}
