//! `goheap profile`: one heap profile of one process, written to a file, with a summary.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;

use super::output::{OutputError, OutputFile};
use super::{Failure, TargetArgs};
use crate::profile::oneshot::{ProfileRequest, Profiler, WriteFailure};

#[derive(Args)]
pub(crate) struct ProfileArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Output file (`-` for stdout), or a directory (`DIR/`) to write the default names into.
    /// Default: goheap-<name>-<pid>-<unix time>.pb.gz (.svg, .folded) in the current directory, one
    /// file per process. A file is only written whole (a temporary file renamed into place).
    #[arg(long, short = 'o')]
    pub output: Option<PathBuf>,
    /// Refuse stripped binaries whose runtime globals were found from code references only (no
    /// .symtab or debug file).
    #[arg(long)]
    pub require_symtab: bool,
    /// Do not print the summary.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

/// The streamed pprof of `pid` into `dest` (stdout when `None`), the summary on stderr.
pub(crate) fn run(
    proc_root: &std::path::Path,
    pid: i32,
    dest: Option<PathBuf>,
    args: &ProfileArgs,
) -> Result<(), Failure> {
    let mut profiler = Profiler::new(proc_root.to_path_buf());
    let read = profiler
        .read(&ProfileRequest {
            pid,
            require_symbol_table: args.require_symtab,
        })
        .map_err(Failure::Refused)?;
    let outcome = &read.outcome;
    if !outcome.layout_tested {
        eprintln!(
            "goheap: warning: Go version {} is outside the tested range ({}); the layout self-check passed, but check the result",
            outcome.go_version,
            crate::runtime::version::SUPPORTED_RANGE
        );
    }
    if let Some(w) = &outcome.warning {
        eprintln!("goheap: warning: partial profile: {w}");
    }
    let summarize = !args.quiet;
    // The profile is encoded and gzipped straight into the file (or stdout) as it is built.
    let (written, summary) = match &dest {
        None => {
            let stdout = std::io::stdout().lock();
            let (c, s) = read
                .write_gzip(Counting::new(stdout), summarize)
                .map_err(|e| write_failure(e, "stdout"))?;
            (c.bytes, s)
        }
        Some(path) => {
            // The file appears under its name only once complete (see OutputFile).
            let mut file = OutputFile::create(path).map_err(Failure::Output)?;
            let result = read.write_gzip(Counting::new(file.file()), summarize);
            match result {
                Ok((c, s)) => {
                    let bytes = c.bytes;
                    file.commit().map_err(Failure::Output)?;
                    (bytes, s)
                }
                Err(WriteFailure::Refused(r)) => return Err(Failure::Refused(r)),
                Err(WriteFailure::Io(e)) => return Err(Failure::Output(file.error(&e))),
            }
        }
    };
    if let Some(summary) = summary {
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "{}", outcome.summary_text(&summary));
        if let Some(path) = &dest {
            let _ = writeln!(
                err,
                "wrote {} ({} bytes); open with: go tool pprof {}",
                path.display(),
                written,
                path.display()
            );
        }
    }
    Ok(())
}

fn write_failure(e: WriteFailure, what: &str) -> Failure {
    match e {
        WriteFailure::Refused(r) => Failure::Refused(r),
        WriteFailure::Io(e) => Failure::Output(OutputError::of(std::path::Path::new(what), &e)),
    }
}

/// A writer that counts the bytes written through it.
struct Counting<W> {
    inner: W,
    bytes: u64,
}

impl<W> Counting<W> {
    fn new(inner: W) -> Self {
        Counting { inner, bytes: 0 }
    }
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
