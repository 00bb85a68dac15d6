//! quaestor-core: the roles of quaestor as a library.
//!
//! - [`backoff`]: the one exponential backoff of every retry loop.
//! - [`load`]: the load of one service inside a worker ([`load::ServiceLoad`]).
//! - [`reporter`]: serves `grpc.health.v1.Health` and `LoadReportingGrpc` for a worker.
//! - [`registry`]: where the workers are: in memory or in etcd (leases, watch, failover).
//! - [`supervisor`]: starts, checks, restarts, recycles and registers local processes.
//! - [`server`]: one gRPC server (health, reflection, TLS, graceful stop) every role serves on.
//! - [`balancer`]: follows a registry, monitors every location, answers discovery from memory.
//! - [`config`]: the C# Quaestor's YAML config files (`quaestor.config.yml` and the roles' own).
//! - [`client`]: connecting to quaestor servers and asking them for health and load.
//! - [`tls`]: TLS settings shared by servers and clients.
//! - [`sdk`]: the worker-facing API the C ABI and the Python module translate ([`sdk::Worker`],
//!   [`sdk::DiscoveryClient`]); [`error`]: the [`error::ErrorKind`] of every failure.
//! - [`http`]: the opt-in HTTP listener of a process: `/metrics`, `/status.json`, `/healthz`,
//!   `/readyz`.
//! - [`proto`]: the generated wire types (see DESIGN.md "Wire contracts").
#![forbid(unsafe_code)]

pub mod backoff;
pub mod balancer;
pub mod blocking;
pub mod client;
pub mod config;
pub mod error;
pub mod http;
pub mod load;
pub mod proto;
pub mod registry;
pub mod reporter;
pub mod sdk;
pub mod server;
pub mod sidecar;
pub mod supervisor;
pub mod tls;
pub mod wallclock;
