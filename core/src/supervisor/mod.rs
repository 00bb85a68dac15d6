//! The supervisor: starts the configured processes, checks them, restarts, recycles and
//! (de)registers them.
//!
//! - [`member`]: the state machine of one member (pure transitions).
//! - [`spawn`]: building a member's command line and starting it in its own process group.

pub mod member;
pub mod spawn;
