//! Standard output that ends a command quietly when its reader has gone.
//!
//! `println!` panics when stdout is a pipe whose reader has exited (`meshfed federation show ID
//! | head -1`). Commands print through [`outln!`] instead: it returns
//! [`Failure::StdoutClosed`] on `EPIPE`, which the command passes on with `?` and which ends
//! the process with nothing more printed.

use std::fmt;
use std::io::{self, Write as _};

use anyhow::anyhow;

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
