//! Compiled plugins, cached on disk by the component's digest.
//!
//! Compiling a component with Cranelift takes from tens of milliseconds to
//! seconds; a restart, a second pipeline with the same plugin, or a reload
//! back to a previous version must not pay it again. An entry is named by the
//! component's SHA-256 and by the engine's compatibility hash (Wasmtime
//! version and compiler settings), so a new ferry build never loads an
//! artifact it did not make.

use super::Digest;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use wasmtime::Engine;
use wasmtime::component::Component;

/// A directory of precompiled components.
#[derive(Debug, Clone)]
pub struct ArtifactCache {
    dir: PathBuf,
}

/// Whether a component came from the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    Hit,
    Miss,
    Disabled,
}

impl std::fmt::Display for CacheOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CacheOutcome::Hit => "loaded from the cache",
            CacheOutcome::Miss => "compiled and cached",
            CacheOutcome::Disabled => "compiled; the cache is disabled",
        })
    }
}

impl ArtifactCache {
    /// A cache in `dir`, created (private to the user) when missing.
    pub fn new(dir: impl Into<PathBuf>) -> std::io::Result<ArtifactCache> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
        }
        Ok(ArtifactCache { dir })
    }

    /// The default location: `$FERRY_CACHE_DIR`, else
    /// `$XDG_CACHE_HOME/ferry/plugins`, else `~/.cache/ferry/plugins`.
    pub fn default_dir() -> Option<PathBuf> {
        if let Some(dir) = std::env::var_os("FERRY_CACHE_DIR") {
            return Some(dir.into());
        }
        let base = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cache")))?;
        Some(base.join("ferry").join("plugins"))
    }

    fn path(&self, engine: &Engine, digest: &Digest) -> PathBuf {
        let mut hasher = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        self.dir
            .join(format!("{}-{:016x}.cwasm", digest.hex(), hasher.finish()))
    }

    /// The compiled component for `bytes`, from the cache or compiled now
    /// (and then stored).
    pub fn load(
        &self,
        engine: &Engine,
        digest: &Digest,
        bytes: &[u8],
    ) -> wasmtime::Result<(Component, CacheOutcome)> {
        let path = self.path(engine, digest);
        if path.exists() {
            // SAFETY: the file was written by `precompile_component` of an
            // engine with the same compatibility hash, into a directory only
            // this user can write.
            match unsafe { Component::deserialize_file(engine, &path) } {
                Ok(component) => return Ok((component, CacheOutcome::Hit)),
                Err(error) => tracing::warn!(
                    path = %path.display(),
                    %error,
                    "A cached plugin artifact could not be loaded; compiling it again."
                ),
            }
        }
        let compiled = engine.precompile_component(bytes)?;
        if let Err(error) = write_atomically(&path, &compiled) {
            tracing::warn!(path = %path.display(), %error, "The compiled plugin could not be cached.");
        }
        // SAFETY: `compiled` was just produced by this engine.
        let component = unsafe { Component::deserialize(engine, &compiled)? };
        Ok((component, CacheOutcome::Miss))
    }
}

/// Writes `bytes` to a temporary file beside `path`, then renames it, so a
/// concurrent reader never sees half an artifact.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}
