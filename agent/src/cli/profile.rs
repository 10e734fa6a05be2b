//! `goheap profile`: one heap profile of one process, written to a file, with a summary.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;

use super::Failure;
use crate::profile::oneshot::{ProfileRequest, Profiler, WriteFailure};

#[derive(Args)]
pub(crate) struct ProfileArgs {
    /// Process id of the Go program.
    #[arg(long, short = 'p')]
    pub pid: i32,
    /// Output file (`-` for stdout). Default: goheap-<name>-<pid>-<unix time>.pb.gz in the current directory.
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

pub(crate) fn run(proc_root: &std::path::Path, args: ProfileArgs) -> Result<(), Failure> {
    let mut profiler = Profiler::new(proc_root.to_path_buf());
    let read = profiler
        .read(&ProfileRequest {
            pid: args.pid,
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
    let dest = match &args.output {
        Some(p) if p.as_os_str() == "-" => None,
        Some(p) => Some(p.clone()),
        None => Some(default_output(&outcome.process_name, args.pid)),
    };
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
            let what = path.display().to_string();
            let writing =
                |e: std::io::Error| Failure::Other(anyhow::anyhow!("writing {what}: {e}"));
            // A file this run creates is removed again if the profile cannot be completed.
            let (file, created) = match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)
            {
                Ok(f) => (f, true),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    (std::fs::File::create(path).map_err(writing)?, false)
                }
                Err(e) => return Err(writing(e)),
            };
            match read.write_gzip(Counting::new(file), summarize) {
                Ok((c, s)) => (c.bytes, s),
                Err(e) => {
                    if created {
                        let _ = std::fs::remove_file(path);
                    }
                    return Err(write_failure(e, &what));
                }
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

/// `goheap-<name>-<pid>-<unix time>.pb.gz` in the current directory.
fn default_output(process_name: &str, pid: i32) -> PathBuf {
    super::output::default_path("", process_name, pid, "pb.gz")
}

fn write_failure(e: WriteFailure, what: &str) -> Failure {
    match e {
        WriteFailure::Refused(r) => Failure::Refused(r),
        WriteFailure::Io(e) => Failure::Other(anyhow::anyhow!("writing {what}: {e}")),
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
