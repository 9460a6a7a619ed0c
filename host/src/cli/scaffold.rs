//! `ferry plugin new`: a plugin project that builds and passes its own test
//! vectors unchanged, in each language with a template under
//! `plugins/templates/` (embedded in the binary by build.rs).

use anyhow::{Context as _, bail};
use clap::{Args, ValueEnum};
use std::path::{Path, PathBuf};

include!(concat!(env!("OUT_DIR"), "/scaffolds.rs"));

/// The world every scaffold builds against.
const WIT: &str = include_str!("../../../wit/plugin.wit");
/// The starter mapping's vectors, shared by every language.
const EVENTS: &str = include_str!("../../../plugins/templates/vectors/events.jsonl");
const EXPECTED: &str = include_str!("../../../plugins/templates/vectors/expected.jsonl");

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum Lang {
    /// Rust with wit-bindgen (cargo, wasm32-wasip2).
    Rust,
    /// JavaScript with componentize-js (node, npm).
    Js,
    /// Python with componentize-py (python3, pip).
    Python,
    /// C with wit-bindgen, clang and wasi-libc.
    C,
}

impl Lang {
    fn template(self) -> &'static str {
        match self {
            Lang::Rust => "rust",
            Lang::Js => "js",
            Lang::Python => "python",
            Lang::C => "c",
        }
    }
}

#[derive(Debug, Args)]
pub(crate) struct NewArgs {
    /// The plugin's language.
    #[arg(long, value_enum)]
    lang: Lang,
    /// The directory to create; its name becomes the plugin's name.
    dir: PathBuf,
}

pub(crate) fn new(args: NewArgs) -> anyhow::Result<()> {
    let name = plugin_name(&args.dir)?;
    if args.dir.exists() && std::fs::read_dir(&args.dir)?.next().is_some() {
        bail!(
            "{} exists and is not empty: choose a new directory",
            args.dir.display()
        );
    }
    let template = args.lang.template();
    let mut written = 0;
    for (lang, path, contents, executable) in FILES {
        if *lang == template {
            let contents = match std::str::from_utf8(contents) {
                Ok(text) => text.replace("{{name}}", &name).into_bytes(),
                Err(_) => contents.to_vec(),
            };
            write(&args.dir.join(path), &contents, *executable)?;
            written += 1;
        }
    }
    if written == 0 {
        bail!("this ferry has no {template} scaffold");
    }
    write(&args.dir.join("wit/plugin.wit"), WIT.as_bytes(), false)?;
    write(
        &args.dir.join("vectors/events.jsonl"),
        EVENTS.as_bytes(),
        false,
    )?;
    write(
        &args.dir.join("vectors/expected.jsonl"),
        EXPECTED.as_bytes(),
        false,
    )?;
    println!(
        "created {} ({template} plugin {name}): `{}/test` builds it and checks its vectors",
        args.dir.display(),
        args.dir.display()
    );
    Ok(())
}

/// The directory's name, as a package name: lowercase letters, digits and
/// dashes, starting with a letter.
fn plugin_name(dir: &Path) -> anyhow::Result<String> {
    let base = dir
        .file_name()
        .and_then(|name| name.to_str())
        .with_context(|| format!("{} has no usable name", dir.display()))?;
    let name: String = base
        .chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' => c,
            'A'..='Z' => c.to_ascii_lowercase(),
            _ => '-',
        })
        .collect();
    let name = name.trim_matches('-').to_string();
    match name.chars().next() {
        Some(first) if first.is_ascii_lowercase() => Ok(name),
        _ => bail!("{base:?} cannot name a plugin: use a directory name that starts with a letter"),
    }
}

fn write(path: &Path, contents: &[u8], executable: bool) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    std::fs::write(path, contents).with_context(|| format!("cannot write {}", path.display()))?;
    #[cfg(unix)]
    if executable {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("cannot make {} executable", path.display()))?;
    }
    #[cfg(not(unix))]
    let _ = executable;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_the_directory() {
        assert_eq!(
            plugin_name(Path::new("/tmp/My_Plugin")).unwrap(),
            "my-plugin"
        );
        assert_eq!(plugin_name(Path::new("orders")).unwrap(), "orders");
        assert!(plugin_name(Path::new("/tmp/42")).is_err());
    }

    #[test]
    fn every_language_has_a_scaffold_with_build_and_test_scripts() {
        for lang in Lang::value_variants() {
            let files: Vec<_> = FILES
                .iter()
                .filter(|(l, ..)| *l == lang.template())
                .map(|(_, path, _, executable)| (*path, *executable))
                .collect();
            for script in ["build", "test"] {
                assert!(
                    files.contains(&(script, true)),
                    "{lang:?} has no executable {script}: {files:?}"
                );
            }
            assert!(files.iter().any(|(path, _)| *path == "README.md"));
        }
    }
}
