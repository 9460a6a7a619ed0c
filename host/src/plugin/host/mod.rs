//! Host implementations of the interfaces a plugin imports, one file per WIT
//! interface.

mod log;

pub(crate) use log::truncate_tail;

use super::bindings::ferry::plugin::host;
use super::sandbox::Sandbox;
use wasmtime::component::{HasSelf, Linker};

/// Adds every `ferry:plugin` import to `linker`.
pub fn add_to_linker(linker: &mut Linker<Sandbox>) -> wasmtime::Result<()> {
    host::add_to_linker::<Sandbox, HasSelf<Sandbox>>(linker, |sandbox| sandbox)
}
