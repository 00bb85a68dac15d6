//! Exit codes: 0 ok (also: a client command whose stdout was closed), 1 failure (the answer is
//! "no", or the server does not serve what was asked), 2 unexpected error (also: a server or
//! etcd that cannot be reached, a TLS handshake refused, TLS against plaintext or the reverse),
//! 64 bad configuration or usage.

use std::fmt::Display;
use std::process::ExitCode;

/// How a command ended when it ran to its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Ok,
    /// The command worked and the answer is "no" (e.g. NOT_SERVING).
    Failure,
    /// The server could not be reached or did not answer in time.
    Unreachable,
    /// A code chosen by the user (`worker --exit-code`).
    Code(u8),
}

pub const USAGE: u8 = 64;

impl From<Exit> for u8 {
    fn from(exit: Exit) -> u8 {
        match exit {
            Exit::Ok => 0,
            Exit::Failure => 1,
            Exit::Unreachable => 2,
            Exit::Code(code) => code,
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> ExitCode {
        ExitCode::from(u8::from(exit))
    }
}

/// A command that could not do its work: a one-line message on stderr and an exit code.
#[derive(Debug)]
pub struct Failure {
    pub exit: Exit,
    pub message: String,
}

impl Failure {
    pub fn new(exit: Exit, message: impl Display) -> Self {
        Failure {
            exit,
            message: message.to_string(),
        }
    }

    /// Bad arguments or configuration: exit 64.
    pub fn usage(message: impl Display) -> Self {
        Self::new(Exit::Code(USAGE), message)
    }

    /// Something that should not happen: exit 2.
    pub fn unexpected(message: impl Display) -> Self {
        Self::new(Exit::Unreachable, message)
    }

    /// The same failure, its message preceded by `context`.
    pub fn context(self, context: impl Display) -> Self {
        Failure {
            exit: self.exit,
            message: format!("{context}: {}", self.message),
        }
    }

    /// Prints the message and gives the exit code.
    pub fn report(self) -> ExitCode {
        eprintln!("quaestor: {}", self.message);
        self.exit.into()
    }
}

/// `--help` and `--version` print and exit 0; any other parse error is one line, exit 64.
pub fn usage_error(error: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match error.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = error.print();
            ExitCode::SUCCESS
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = error.print();
            ExitCode::from(USAGE)
        }
        _ => {
            // The first paragraph of clap's message, on one line (it may list arguments
            // on the lines below its first).
            let rendered = error.render().to_string();
            let paragraph: Vec<&str> = rendered
                .lines()
                .map(str::trim)
                .skip_while(|line| line.is_empty())
                .take_while(|line| !line.is_empty())
                .collect();
            let line = paragraph.join(" ");
            let line = line.trim_start_matches("error: ");
            Failure::usage(format!("{line} (see `quaestor --help`)")).report()
        }
    }
}
