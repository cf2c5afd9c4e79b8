//! How a command ends: the one place that maps outcomes to exit codes and prints errors.
//!
//! Exit codes: [`SUCCESS`] 0, [`RUNTIME`] 1 (the command was well formed but could not be
//! carried out, or a check it made came out negative), [`USAGE`] 2 (bad arguments or
//! configuration, including a configuration file that is missing or unusable). Errors print to
//! stderr as `error: <message>` followed by one `  caused by: <message>` line per underlying
//! cause; command-line errors are printed by clap, which also begins them with `error:`.

use std::io::Write as _;
use std::process::ExitCode;

use meshfed_node::InitError;

/// Exit status of a command that did what it was asked.
pub(crate) const SUCCESS: u8 = 0;
/// Exit status of a well-formed command that could not be carried out.
pub(crate) const RUNTIME: u8 = 1;
/// Exit status of a command with bad arguments or configuration.
pub(crate) const USAGE: u8 = 2;

/// A command did not succeed; the variant decides the exit code.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The command line is wrong (or help or the version was asked for, which clap also
    /// reports this way).
    CommandLine(clap::Error),
    /// An input that configures the command (a file named by an option) is missing or unusable.
    Config(anyhow::Error),
    /// An argument's value is wrong in a way found only when the command used it (the gateway
    /// refused it as a bad request, or the node directory already holds what it would create).
    Input(anyhow::Error),
    /// The command was valid but could not be carried out.
    Runtime(anyhow::Error),
    /// The command carried out a check whose answer is negative (an envelope's signature does
    /// not verify, say) and has already printed that answer; nothing more is printed.
    CheckFailed,
    /// Standard output is a pipe whose reader has gone (`meshfed … | head -1`): the command
    /// stops writing and ends quietly, as if it had finished.
    StdoutClosed,
}

impl Failure {
    /// The process exit code for this outcome.
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            // `--help` and `--version` arrive as clap "errors" that print to stdout.
            Self::CommandLine(e) if !e.use_stderr() => SUCCESS,
            Self::StdoutClosed => SUCCESS,
            Self::CommandLine(_) | Self::Config(_) | Self::Input(_) => USAGE,
            Self::Runtime(_) | Self::CheckFailed => RUNTIME,
        }
    }

    /// The failure in one line, without its causes.
    pub(crate) fn summary(&self) -> String {
        match self {
            Self::CommandLine(e) => e.kind().to_string(),
            Self::Config(e) | Self::Input(e) | Self::Runtime(e) => e.to_string(),
            Self::CheckFailed => "a check failed".to_owned(),
            Self::StdoutClosed => "standard output is closed".to_owned(),
        }
    }

    /// Prints the outcome (stderr for errors) and returns the exit code.
    pub(crate) fn report(self) -> ExitCode {
        let code = self.exit_code();
        match self {
            Self::CommandLine(e) => {
                // Nothing useful is left to do if the terminal is gone.
                let _ = e.print();
            }
            Self::Config(err) | Self::Input(err) | Self::Runtime(err) => {
                // `eprintln!` would panic if stderr were closed too.
                let _ = writeln!(std::io::stderr(), "{}", render(&err));
            }
            Self::CheckFailed | Self::StdoutClosed => {}
        }
        ExitCode::from(code)
    }
}

/// `error: <message>` and one `  caused by: <cause>` line per source.
fn render(err: &anyhow::Error) -> String {
    let mut out = format!("error: {err}");
    for cause in err.chain().skip(1) {
        out.push_str("\n  caused by: ");
        out.push_str(&cause.to_string());
    }
    out
}

impl From<clap::Error> for Failure {
    fn from(e: clap::Error) -> Self {
        Self::CommandLine(e)
    }
}

impl From<InitError> for Failure {
    fn from(e: InitError) -> Self {
        match e {
            // `init` on a directory that holds an identity, without `--force`: the user named
            // the wrong directory or forgot the flag.
            InitError::AlreadyInitialized { .. } | InitError::RootKeyOutExists { .. } => {
                Self::Input(e.into())
            }
            // Key, certificate and file-system failures.
            _ => Self::Runtime(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::cli::Cli;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn report_lists_the_cause_chain() {
        let err = anyhow::Error::new(Outer(std::io::Error::other("inner")));
        assert_eq!(render(&err), "error: outer\n  caused by: inner");
    }

    #[test]
    fn bad_argument_is_a_usage_error_and_help_is_success() {
        let bad = Cli::try_parse_from(["meshfed", "init", "--mesh", "Bad"]).unwrap_err();
        assert_eq!(Failure::from(bad).exit_code(), USAGE);
        let help = Cli::try_parse_from(["meshfed", "--help"]).unwrap_err();
        assert_eq!(Failure::from(help).exit_code(), SUCCESS);
    }

    #[test]
    fn configuration_is_a_usage_error_and_a_negative_check_a_runtime_one() {
        let config = Failure::Config(anyhow::anyhow!("no such CA file"));
        assert_eq!(config.exit_code(), USAGE);
        assert_eq!(Failure::CheckFailed.exit_code(), RUNTIME);
    }

    #[test]
    fn an_existing_identity_is_a_usage_error() {
        let err = InitError::AlreadyInitialized {
            path: "meshfed/meshfed.toml".into(),
            dir: "meshfed".into(),
        };
        assert_eq!(Failure::from(err).exit_code(), USAGE);
    }
}
