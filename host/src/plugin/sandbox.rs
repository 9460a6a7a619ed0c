//! What a plugin instance lives in: its store data, its memory cap and a WASI
//! context that grants nothing.
//!
//! Toolchains (Rust's std, componentize-py, componentize-js, wasi-libc)
//! produce components that import WASI 0.2 even when the plugin never touches
//! a file. The host satisfies those imports with a context that has no
//! preopened directory, no environment, no arguments, no network, a closed
//! stdin, and clocks frozen at the Unix epoch, so a plugin has no ambient
//! authority and maps a replayed event to the same output. What the guest
//! writes to stdout/stderr is kept (bounded) to explain traps and is
//! forwarded to the log.

use bytes::Bytes;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError, StreamResult};
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxView, WasiView};

/// The data of one plugin instance's `Store`.
pub struct Sandbox {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limiter: MemoryLimiter,
    pub(crate) output: GuestOutput,
    /// Tags for the plugin's log lines.
    pub(crate) log_target: Arc<LogTarget>,
}

/// Who a plugin's log lines belong to.
#[derive(Debug)]
pub struct LogTarget {
    pub pipeline: String,
    pub plugin: String,
}

impl Sandbox {
    /// A sandbox whose instances may use at most `memory_cap` bytes.
    pub fn new(memory_cap: usize, log_target: Arc<LogTarget>) -> Sandbox {
        let output = GuestOutput::default();
        let wasi = WasiCtx::builder()
            .stdout(output.clone())
            .stderr(output.clone())
            .wall_clock(FrozenClock)
            .monotonic_clock(FrozenClock)
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        Sandbox {
            wasi,
            table: ResourceTable::new(),
            limiter: MemoryLimiter::new(memory_cap),
            output,
            log_target,
        }
    }
}

impl WasiView for Sandbox {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Caps the total size of an instance's linear memories.
pub struct MemoryLimiter {
    cap: usize,
    total: usize,
    exceeded: Option<MemoryCapExceeded>,
}

/// A guest tried to grow its memory past the cap.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the plugin exceeded its memory cap of {} MiB (it asked for {} MiB)", .cap >> 20, .requested.div_ceil(1 << 20))]
pub struct MemoryCapExceeded {
    pub cap: usize,
    pub requested: usize,
}

impl MemoryLimiter {
    fn new(cap: usize) -> Self {
        MemoryLimiter {
            cap,
            total: 0,
            exceeded: None,
        }
    }

    /// The growth this limiter refused, if any. Wasmtime may wrap the error
    /// returned from `memory_growing`; this is the reliable record of it.
    pub fn exceeded(&self) -> Option<&MemoryCapExceeded> {
        self.exceeded.as_ref()
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let requested = self.total - current + desired;
        if requested > self.cap {
            // Trap rather than fail the grow: the guest's allocator would
            // abort anyway, and a trap lets the host say which limit was hit.
            let exceeded = MemoryCapExceeded {
                cap: self.cap,
                requested,
            };
            self.exceeded = Some(exceeded.clone());
            return Err(exceeded.into());
        }
        self.total = requested;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1 << 20)
    }
}

/// A clock stopped at the Unix epoch.
struct FrozenClock;

impl HostWallClock for FrozenClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }

    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl HostMonotonicClock for FrozenClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }

    fn now(&self) -> u64 {
        0
    }
}

/// What the guest writes to stdout and stderr: the last [`GuestOutput::KEEP`]
/// bytes since the host last drained it.
#[derive(Clone, Default)]
pub struct GuestOutput {
    buffer: Arc<Mutex<Vec<u8>>>,
}

impl GuestOutput {
    /// How much output is kept between drains.
    const KEEP: usize = 8 * 1024;

    /// Takes what was written since the last call, as text.
    pub fn take(&self) -> String {
        let bytes = std::mem::take(&mut *self.buffer.lock().unwrap());
        String::from_utf8_lossy(&bytes).into_owned()
    }

    fn append(&self, bytes: &[u8]) {
        let mut buffer = self.buffer.lock().unwrap();
        buffer.extend_from_slice(bytes);
        if buffer.len() > Self::KEEP {
            let excess = buffer.len() - Self::KEEP;
            buffer.drain(..excess);
        }
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl OutputStream for GuestOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.append(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(64 * 1024)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for GuestOutput {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for GuestOutput {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.append(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limiter_counts_every_memory_of_an_instance() {
        let mut limiter = MemoryLimiter::new(10 << 20);
        assert!(limiter.memory_growing(0, 6 << 20, None).unwrap());
        // A second memory may not take the total past the cap.
        let error = limiter.memory_growing(0, 5 << 20, None).unwrap_err();
        let error = error.downcast_ref::<MemoryCapExceeded>().unwrap();
        assert_eq!((error.cap, error.requested), (10 << 20, 11 << 20));
        assert!(limiter.memory_growing(0, 4 << 20, None).unwrap());
    }

    #[test]
    fn guest_output_keeps_the_tail() {
        let output = GuestOutput::default();
        output.append(&vec![b'a'; GuestOutput::KEEP]);
        output.append(b"panicked at the end");
        let text = output.take();
        assert_eq!(text.len(), GuestOutput::KEEP);
        assert!(text.ends_with("panicked at the end"));
        assert_eq!(output.take(), "");
    }
}
