//! `quaestor xds bootstrap`: the bootstrap file that points stock gRPC xDS clients (an
//! `xds:///SERVICE` target) at a quaestor balancer.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::exit::{Exit, Failure};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Print a gRPC xDS bootstrap (JSON) naming a quaestor balancer as management server.
    #[command(after_help = crate::examples(&[
        ("quaestor xds bootstrap --server 127.0.0.1:5150 > xds.json",
         "then GRPC_XDS_BOOTSTRAP=xds.json for clients of xds:///Worker"),
        ("quaestor xds bootstrap --server lb:5150 --ca ca.pem --node-id web-1",
         "over TLS, with a node id of one's own"),
    ]))]
    Bootstrap(BootstrapArgs),
}

#[derive(Debug, clap::Args)]
pub struct BootstrapArgs {
    /// The balancer's address, HOST:PORT (its own port serves ADS).
    #[arg(long, value_name = "HOST:PORT")]
    server: String,
    /// The node id clients send [default: quaestor-client@HOSTNAME].
    #[arg(long, value_name = "ID")]
    node_id: Option<String>,
    /// Reach the balancer over TLS (also implied by --ca or --cert).
    #[arg(long)]
    tls: bool,
    /// CA certificate (PEM) that signed the balancer's certificate [default: the system's roots].
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS.
    #[arg(long, value_name = "FILE", requires = "key")]
    cert: Option<PathBuf>,
    /// Client private key (PEM) for mutual TLS.
    #[arg(long, value_name = "FILE", requires = "cert")]
    key: Option<PathBuf>,
}

pub fn run(command: Command) -> Result<Exit, Failure> {
    match command {
        Command::Bootstrap(args) => {
            let bootstrap = bootstrap(&args)?;
            let text = serde_json::to_string_pretty(&bootstrap).map_err(Failure::unexpected)?;
            println!("{text}");
            Ok(Exit::Ok)
        }
    }
}

fn bootstrap(args: &BootstrapArgs) -> Result<Value, Failure> {
    check_server(&args.server)?;
    let credentials = if args.tls || args.ca.is_some() || args.cert.is_some() {
        let mut config = serde_json::Map::new();
        if let Some(ca) = &args.ca {
            config.insert("ca_certificate_file".into(), absolute(ca, "--ca")?.into());
        }
        if let (Some(cert), Some(key)) = (&args.cert, &args.key) {
            config.insert("certificate_file".into(), absolute(cert, "--cert")?.into());
            config.insert("private_key_file".into(), absolute(key, "--key")?.into());
        }
        json!({"type": "tls", "config": config})
    } else {
        json!({"type": "insecure"})
    };
    let node_id = match &args.node_id {
        Some(id) if id.trim().is_empty() => {
            return Err(Failure::usage("--node-id must not be empty"));
        }
        Some(id) => id.clone(),
        None => format!("quaestor-client@{}", host_name()),
    };
    Ok(json!({
        "xds_servers": [{
            "server_uri": args.server,
            "channel_creds": [credentials],
            "server_features": ["xds_v3"],
        }],
        "node": {"id": node_id, "locality": {}},
    }))
}

/// HOST:PORT with a port of 1–65535.
fn check_server(server: &str) -> Result<(), Failure> {
    let bad = || {
        Failure::usage(format!(
            "--server {server:?}: expected HOST:PORT, e.g. 127.0.0.1:5150"
        ))
    };
    let (host, port) = server.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    if host.is_empty() || port == 0 {
        return Err(bad());
    }
    Ok(())
}

/// The file's absolute path (clients may run elsewhere than here); it must exist.
fn absolute(path: &Path, option: &str) -> Result<String, Failure> {
    std::fs::canonicalize(path)
        .map(|p| p.display().to_string())
        .map_err(|e| Failure::usage(format!("{option} {}: {e}", path.display())))
}

fn host_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|n| n.into_string().ok())
        .unwrap_or_else(|| "localhost".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(server: &str) -> BootstrapArgs {
        BootstrapArgs {
            server: server.to_owned(),
            node_id: Some("n1".into()),
            tls: false,
            ca: None,
            cert: None,
            key: None,
        }
    }

    #[test]
    fn bootstraps_name_the_server_and_node() {
        let value = bootstrap(&args("127.0.0.1:5150")).unwrap();
        assert_eq!(value["xds_servers"][0]["server_uri"], "127.0.0.1:5150");
        assert_eq!(
            value["xds_servers"][0]["channel_creds"][0]["type"],
            "insecure"
        );
        assert_eq!(value["node"]["id"], "n1");
        for bad in ["127.0.0.1", ":5150", "host:0", "host:x", "host:70000"] {
            assert!(bootstrap(&args(bad)).is_err(), "{bad}");
        }
    }
}
