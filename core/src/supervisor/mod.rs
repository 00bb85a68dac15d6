//! The supervisor: starts the configured processes, checks them, restarts, recycles and
//! (de)registers them.
//!
//! - [`member`]: the state machine of one member (pure transitions).
//! - [`spawn`]: building a member's command line and starting it in its own process group.
//! - [`runner`]: runs one member: the state machine driven by the real process.
//! - [`cluster`]: the members of every agent of a configuration.
//! - [`recycle`]: restarting members after an interval, when idle, one per agent at a time.
//! - [`control`]: the control socket of a running cluster (`quaestor cluster status`, `stop`,
//!   `start`, `restart`, `drain`, `undrain`, `logs`).
//! - [`logbook`]: the recent output of every member, for `quaestor cluster logs`.
//! - [`ready`]: the "cluster ready" line.

pub mod cluster;
pub mod control;
pub mod logbook;
pub mod member;
pub mod ready;
pub mod recycle;
pub mod runner;
pub mod spawn;
