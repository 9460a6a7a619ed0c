//! `write-wasi-adapter PATH`: writes wasi_snapshot_preview1.reactor.wasm to PATH.

use std::{env, fs, path::PathBuf, process::ExitCode};
use wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER as ADAPTER;

fn main() -> ExitCode {
    let Some(path) = env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: write-wasi-adapter PATH");
        return ExitCode::from(2);
    };
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        if let Err(error) = fs::create_dir_all(dir) {
            eprintln!("cannot create {}: {error}", dir.display());
            return ExitCode::FAILURE;
        }
    }
    // Write beside the target and rename, so a reader never sees half a file.
    let partial = path.with_extension("wasm.partial");
    match fs::write(&partial, ADAPTER).and_then(|()| fs::rename(&partial, &path)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("cannot write {}: {error}", path.display());
            ExitCode::FAILURE
        }
    }
}
