//! Writing to stdout without panicking on a closed pipe (`quaestor registry list | head -1`).
//!
//! Rust ignores SIGPIPE, so a write to a pipe whose reader is gone fails with EPIPE, and
//! `println!` panics on it. The client commands print through [`line`]/[`text`]: a closed
//! stdout ends them quietly with exit 0 (the reader has what it wanted, as with ripgrep).
//! The servers print through [`announce`], which never ends the process: a server whose
//! stdout is gone keeps serving (SIGPIPE stays ignored, so its sockets cannot kill it either).

use std::fmt::Display;
use std::io::{ErrorKind, Write};

/// Prints `text` and a newline; a closed stdout ends the process with exit 0, another
/// write error with exit 1.
pub fn line(text: impl Display) {
    write_or_exit(format_args!("{text}\n"));
}

/// Prints `text` as it is (no newline added), as [`line`] does.
pub fn text(text: impl Display) {
    write_or_exit(format_args!("{text}"));
}

fn write_or_exit(text: std::fmt::Arguments<'_>) {
    let mut stdout = std::io::stdout().lock();
    let written = stdout.write_fmt(text).and_then(|()| stdout.flush());
    match written {
        Ok(()) => {}
        Err(error) if error.kind() == ErrorKind::BrokenPipe => std::process::exit(0),
        Err(error) => {
            eprintln!("quaestor: cannot write to stdout: {error}");
            std::process::exit(1);
        }
    }
}

/// A server's line on stdout (`listening on ADDR`): lost, with a debug log, if stdout is
/// closed; the server keeps running.
pub fn announce(text: impl Display) {
    let mut stdout = std::io::stdout().lock();
    let written = writeln!(stdout, "{text}").and_then(|()| stdout.flush());
    if let Err(error) = written {
        tracing::debug!(%error, "stdout is closed: {text}");
    }
}
