//! `goheap completions SHELL` (shell completion scripts, from the clap definition with
//! `clap_complete`) and `goheap man` (the manual page in roff, with `clap_mangen`).

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, CommandFactory};

use super::{Cli, Failure};

#[derive(Args)]
pub(crate) struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Args)]
pub(crate) struct ManArgs {
    /// Print the page of this subcommand instead (`record` prints goheap-record(1)).
    pub command: Option<String>,
    /// Write goheap.1 and one page per subcommand (goheap-profile.1, goheap-record.1, ...) into this
    /// directory instead of printing goheap.1 on stdout.
    #[arg(long)]
    pub out_dir: Option<PathBuf>,
}

/// Prints the completion script for `args.shell` on stdout.
pub(crate) fn completions(args: CompletionsArgs) -> Result<(), Failure> {
    let mut cmd = Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "goheap", &mut out);
    write_stdout(&out)
}

/// Prints goheap(1) (or a subcommand's page) on stdout, or writes every page into `--out-dir`.
pub(crate) fn man(args: ManArgs) -> Result<(), Failure> {
    let mut cmd = Cli::command().disable_help_subcommand(true);
    // Gives subcommands their page names (goheap-record).
    cmd.build();
    let cmd = match &args.command {
        None => cmd,
        Some(name) => cmd.find_subcommand(name).cloned().ok_or_else(|| {
            let names: Vec<&str> = cmd.get_subcommands().map(|c| c.get_name()).collect();
            Failure::Other(anyhow::anyhow!(
                "no subcommand {name:?} (there are: {})",
                names.join(", ")
            ))
        })?,
    };
    match args.out_dir {
        Some(dir) => {
            std::fs::create_dir_all(&dir)
                .and_then(|_| clap_mangen::generate_to(cmd, &dir))
                .map_err(|e| Failure::Other(anyhow::anyhow!("writing {}: {e}", dir.display())))?;
            eprintln!("wrote the manual pages into {}", dir.display());
            Ok(())
        }
        None => {
            let mut out = Vec::new();
            clap_mangen::Man::new(cmd)
                .render(&mut out)
                .map_err(|e| Failure::Other(e.into()))?;
            write_stdout(&out)
        }
    }
}

fn write_stdout(bytes: &[u8]) -> Result<(), Failure> {
    let mut o = std::io::stdout().lock();
    o.write_all(bytes)
        .and_then(|_| o.flush())
        .map_err(|e| Failure::Other(anyhow::anyhow!("writing stdout: {e}")))
}
