//! Standard output for the commands, through [`outln!`] in place of `println!`.
//!
//! A reader that stops early (`regate policy eval … | head`) closes the pipe. `println!`
//! would panic on the next write; here the rest of the output is dropped quietly, as any Unix
//! tool drops it, and the command still exits with its own verdict. Any other failure to
//! write (a full disk) is reported once on stderr, and [`verdict`] turns the command's exit
//! code into 2: output that was asked for and lost is an error. What a command prints is its
//! own; only how it reaches stdout is here.

use std::fmt;
use std::io::{self, Write};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU8, Ordering};

const OPEN: u8 = 0;
/// The reader went away: nothing more is written, and it is no error.
const CLOSED: u8 = 1;
/// Writing failed otherwise: nothing more is written, and the command fails.
const FAILED: u8 = 2;

static STATE: AtomicU8 = AtomicU8::new(OPEN);

/// `println!` for the commands: a line to stdout, dropped once stdout is closed.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::cli::out::line(format_args!($($arg)*))
    };
}
pub(crate) use outln;

/// `print!` for text that ends its own lines.
pub(crate) fn text(text: &str) {
    write(|out| out.write_all(text.as_bytes()));
}

/// One line, as [`outln!`] writes it.
pub(crate) fn line(args: fmt::Arguments<'_>) {
    write(|out| {
        out.write_fmt(args)?;
        out.write_all(b"\n")
    });
}

fn write(f: impl FnOnce(&mut io::StdoutLock<'_>) -> io::Result<()>) {
    if STATE.load(Ordering::Relaxed) != OPEN {
        return;
    }
    let mut out = io::stdout().lock();
    if let Err(e) = f(&mut out).and_then(|()| out.flush()) {
        if e.kind() == io::ErrorKind::BrokenPipe {
            STATE.store(CLOSED, Ordering::Relaxed);
        } else {
            STATE.store(FAILED, Ordering::Relaxed);
            eprintln!("regate: cannot write to standard output: {e}");
        }
    }
}

/// The command's exit code, unless its output could not be written (a closed pipe aside).
pub(crate) fn verdict(code: ExitCode) -> ExitCode {
    match STATE.load(Ordering::Relaxed) {
        FAILED => ExitCode::from(2),
        _ => code,
    }
}
