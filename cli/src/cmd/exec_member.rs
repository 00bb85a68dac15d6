//! `quaestor exec-member --parent PID -- PROGRAM ARGS...` (hidden): the shim the supervisor
//! starts members through, so that a member dies with a supervisor killed by SIGKILL.

use std::ffi::{OsStr, OsString};
use std::process::ExitCode;

use quaestor_core::supervisor::spawn::exec_member;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The supervisor's pid.
    #[arg(long)]
    parent: u32,
    /// The member's program and arguments.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<OsString>,
}

/// Becomes the member; returns only if that fails (exit 127, as a shell does).
pub fn run(args: &Args) -> ExitCode {
    let (program, rest) = args.command.split_first().expect("clap requires a program");
    let rest: Vec<&OsStr> = rest.iter().map(OsString::as_os_str).collect();
    match exec_member(program, &rest, args.parent) {
        Ok(never) => match never {},
        Err(reason) => {
            eprintln!("quaestor exec-member: {reason}");
            ExitCode::from(127)
        }
    }
}
