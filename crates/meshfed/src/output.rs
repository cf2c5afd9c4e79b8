//! Standard output that ends a command quietly when its reader has gone, and data printed as
//! `--output` asks (JSON, YAML, or the command's table).
//!
//! `println!` panics when stdout is a pipe whose reader has exited (`meshfed federation show ID
//! | head -1`). Commands print through [`outln!`] instead: it returns
//! [`Failure::StdoutClosed`] on `EPIPE`, which the command passes on with `?` and which ends
//! the process with nothing more printed.

use std::fmt;
use std::io::{self, Write as _};

use anyhow::anyhow;

use crate::cli::OutputFormat;
use crate::failure::Failure;

/// `println!` that returns `Result<(), Failure>` instead of panicking; pass it on with `?`.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::output::write_line(format_args!($($arg)*))
    };
}
pub(crate) use outln;

/// Writes `args` and a newline to stdout (flushed, as stdout is line-buffered).
pub(crate) fn write_line(args: fmt::Arguments<'_>) -> Result<(), Failure> {
    let mut out = io::stdout().lock();
    let written = out
        .write_fmt(args)
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush());
    written.map_err(stdout_failure)
}

/// A failed write to stdout as a failure: the reader is gone (quiet), or something else.
pub(crate) fn stdout_failure(e: io::Error) -> Failure {
    if e.kind() == io::ErrorKind::BrokenPipe {
        Failure::StdoutClosed
    } else {
        Failure::Runtime(anyhow!("cannot write to standard output: {e}"))
    }
}

/// Prints `rows` under `head` as columns padded to their widest cell, two spaces apart.
pub(crate) fn table<const N: usize>(head: [&str; N], rows: &[[String; N]]) -> Result<(), Failure> {
    let mut widths = head.map(str::len);
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let line = |cells: [&str; N]| {
        let parts: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        outln!("{}", parts.join("  ").trim_end())
    };
    line(head)?;
    for r in rows {
        line(r.each_ref().map(String::as_str))?;
    }
    Ok(())
}

/// How JSON is laid out when `--output json` asks for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Layout {
    /// On one line (a list, for line-oriented tools).
    Line,
    /// Indented (one object).
    Indented,
}

/// Prints `value` as `format` asks: JSON (laid out as `layout`) or YAML here, or, for the
/// table, as `table` prints it.
pub(crate) fn print<T: serde::Serialize + ?Sized>(
    format: OutputFormat,
    value: &T,
    layout: Layout,
    table: impl FnOnce(&T) -> Result<(), Failure>,
) -> Result<(), Failure> {
    structured(format, value, layout).unwrap_or_else(|| table(value))
}

/// Prints `value` as JSON (laid out as `layout`) or YAML when `format` asks for either, and
/// says how that went; `None` for the table, which the caller prints.
pub(crate) fn structured<T: serde::Serialize + ?Sized>(
    format: OutputFormat,
    value: &T,
    layout: Layout,
) -> Option<Result<(), Failure>> {
    let text = match format {
        OutputFormat::Table => return None,
        OutputFormat::Json => match layout {
            Layout::Line => serde_json::to_string(value),
            Layout::Indented => serde_json::to_string_pretty(value),
        }
        .map_err(|e| anyhow!("writing JSON: {e}")),
        // A YAML document ends with its last line's newline, which `outln!` adds.
        OutputFormat::Yaml => serde_norway::to_string(value)
            .map(|t| t.trim_end_matches('\n').to_owned())
            .map_err(|e| anyhow!("writing YAML: {e}")),
    };
    Some(text.map_err(Failure::Runtime).and_then(|t| outln!("{t}")))
}
