//! `quaestor exec-member --parent PID -- PROGRAM ARGS...` (hidden): the guard the supervisor
//! starts members through, so that nothing a member starts outlives a supervisor killed by
//! SIGKILL (see `quaestor_core::supervisor::spawn::guard_member`). With `--exec`, it asks
//! for a parent-death signal and becomes the program (how the guard starts the member).

use std::ffi::{OsStr, OsString};
use std::process::ExitCode;

use quaestor_core::supervisor::spawn::{exec_member, guard_member};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The supervisor's pid (with --exec: the guard's).
    #[arg(long)]
    parent: u32,
    /// Become the program at once instead of guarding it.
    #[arg(long)]
    exec: bool,
    /// The member's program and arguments.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<OsString>,
}

/// Guards (or becomes) the member; returns only if that fails (exit 127, as a shell does).
pub fn run(args: &Args) -> ExitCode {
    let (program, rest) = args.command.split_first().expect("clap requires a program");
    let rest: Vec<&OsStr> = rest.iter().map(OsString::as_os_str).collect();
    let outcome = if args.exec {
        exec_member(program, &rest, args.parent)
    } else {
        match std::env::current_exe() {
            Ok(shim) => guard_member(&shim, program, &rest, args.parent),
            Err(e) => Err(format!("cannot find the quaestor binary: {e}")),
        }
    };
    match outcome {
        Ok(never) => match never {},
        Err(reason) => {
            eprintln!("quaestor exec-member: {reason}");
            ExitCode::from(127)
        }
    }
}
