//! Small wire-level helpers shared by the integration tests and the
//! benchmarks (included with `#[path]`).

use std::io::{Read as _, Write as _};
use std::time::{Duration, Instant};

/// One HTTP/1.1 request to `127.0.0.1:port`, retried for up to 30 s while
/// nothing listens yet: the status code and the body.
pub fn http(port: u16, method: &str, path: &str) -> (u16, String) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut stream = loop {
        match std::net::TcpStream::connect(("127.0.0.1", port)) {
            Ok(stream) => break stream,
            Err(error) if Instant::now() > deadline => panic!("{method} {path}: {error}"),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nhost: localhost\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, body.to_string())
}

/// `component` with a custom section `name` holding `payload` appended: the
/// same code under another digest, like a rebuild that changed nothing that
/// matters.
pub fn with_custom_section(component: &[u8], name: &str, payload: &str) -> Vec<u8> {
    let size = 1 + name.len() + payload.len();
    assert!(size < 128, "one-byte LEB128 sizes only");
    let mut bytes = component.to_vec();
    bytes.push(0); // the custom section id
    bytes.push(size as u8);
    bytes.push(name.len() as u8);
    bytes.extend_from_slice(name.as_bytes());
    bytes.extend_from_slice(payload.as_bytes());
    bytes
}

/// Waits until ferry's admin server on `port` says ready (`/readyz` 200);
/// panics naming `what` after 60 s.
pub fn wait_ready(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while http(port, "GET", "/readyz").0 != 200 {
        assert!(Instant::now() < deadline, "{what} never became ready");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}
