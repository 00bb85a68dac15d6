//! The supervisor: starts the configured processes, checks them, restarts, recycles and
//! (de)registers them.
//!
//! - [`member`]: the state machine of one member (pure transitions).
//! - [`spawn`]: building a member's command line and starting it in its own process group.
//! - [`runner`]: runs one member: the state machine driven by the real process.
//! - [`cluster`]: the members of every agent of a configuration.

pub mod cluster;
pub mod member;
pub mod runner;
pub mod spawn;
