//! Man pages and shell completions from the clap definitions ([`crate::cli::Cli`]),
//! for packages (`make deb`) and for `cargo install` users: `fastnet gen-docs --out DIR`
//! (hidden) writes `DIR/man/fastnet*.1` and `DIR/completions/{fastnet.bash,_fastnet,fastnet.fish}`.

use anyhow::{Context, Result};
use clap::CommandFactory;
use clap_complete::Shell;
use std::path::Path;

pub fn generate(out: &Path) -> Result<()> {
    let man = out.join("man");
    let completions = out.join("completions");
    for d in [&man, &completions] {
        std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
    }
    // One page per (visible) subcommand: fastnet.1, fastnet-run.1, fastnet-netns-up.1, ...
    clap_mangen::generate_to(crate::cli::Cli::command(), &man)
        .with_context(|| format!("cannot write man pages to {}", man.display()))?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(
            shell,
            &mut crate::cli::Cli::command(),
            "fastnet",
            &completions,
        )
        .with_context(|| format!("cannot write {shell} completions"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn pages_for_each_command_and_three_shells() {
        let dir = std::env::temp_dir().join(format!("fastnet-gendocs-{}", std::process::id()));
        super::generate(&dir).unwrap();
        for page in [
            "fastnet.1",
            "fastnet-run.1",
            "fastnet-stat.1",
            "fastnet-exporter.1",
            "fastnet-netns-up.1",
        ] {
            let text = std::fs::read_to_string(dir.join("man").join(page)).unwrap();
            assert!(
                text.starts_with(".ie \\n(.g .ds Aq") || text.contains(".TH"),
                "{page}"
            );
        }
        let run = std::fs::read_to_string(dir.join("man/fastnet-run.1")).unwrap();
        assert!(run.contains("\\-\\-iface"), "{run}");
        assert!(
            !dir.join("man/fastnet-gen-docs.1").exists(),
            "hidden stays hidden"
        );
        let bash = std::fs::read_to_string(dir.join("completions/fastnet.bash")).unwrap();
        assert!(bash.contains("complete -F _fastnet"), "{bash}");
        assert!(dir.join("completions/_fastnet").exists());
        assert!(dir.join("completions/fastnet.fish").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
