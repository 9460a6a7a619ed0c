//! The container image, for real, with podman and runc: built from
//! `tests/container/Containerfile` (the Dockerfile's runtime, on a base
//! assembled from this build of ferry and its shared libraries: no registry
//! can be reached here), run with the quick start's plugin on the host
//! network, checked for readiness, its healthcheck, a delivered event, a
//! non-root user, and a clean exit on SIGTERM.

use crate::common::{repo, run, stderr, stdout};
use crate::wire::{free_port, wait_ready};
use ferry_plugin_artifacts::KESSEL_OUTBOX_RUST;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `podman` with the test's settings (see tests/container/containers.conf).
fn podman() -> Command {
    let mut command = Command::new("podman");
    command.env(
        "CONTAINERS_CONF",
        repo().join("tests/container/containers.conf"),
    );
    command
}

fn podman_ok(args: &[&str]) -> String {
    let output = run(podman().args(args));
    assert!(
        output.status.success(),
        "podman {args:?} failed:\n{}{}",
        stdout(&output),
        stderr(&output)
    );
    stdout(&output)
}

/// Copies `from` to `root` + the same absolute path (following symlinks).
fn install(root: &Path, from: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt as _;
    let to = root.join(from.strip_prefix("/").unwrap());
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    std::fs::copy(from, &to).unwrap();
    std::fs::set_permissions(&to, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// The shared libraries `binary` loads, as absolute paths (ldd).
fn shared_libraries(binary: &Path) -> Vec<PathBuf> {
    let output = run(Command::new("ldd").arg(binary));
    assert!(output.status.success(), "{}", stderr(&output));
    stdout(&output)
        .lines()
        .filter_map(|line| {
            let path = match line.split_once("=>") {
                Some((_, after)) => after.split_whitespace().next()?,
                None => line.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

/// The build context: the Containerfile and a root filesystem with ferry
/// (without debug information), its libraries, the users and a config.
fn build_context(dir: &Path, admin_port: u16) -> PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let context = dir.join("context");
    let root = context.join("rootfs");
    std::fs::create_dir_all(root.join("usr/local/bin")).unwrap();
    std::fs::copy(
        repo().join("tests/container/Containerfile"),
        context.join("Containerfile"),
    )
    .unwrap();
    let binary = root.join("usr/local/bin/ferry");
    let stripped = run(Command::new("objcopy")
        .arg("--strip-debug")
        .arg(env!("CARGO_BIN_EXE_ferry"))
        .arg(&binary));
    assert!(stripped.status.success(), "{}", stderr(&stripped));
    for library in shared_libraries(&binary) {
        install(&root, &library, 0o755);
    }
    // TLS roots, as the Dockerfile's ca-certificates package gives.
    install(
        &root,
        Path::new("/etc/ssl/certs/ca-certificates.crt"),
        0o644,
    );
    for (path, text) in [
        (
            "etc/passwd",
            "root:x:0:0::/root:/sbin/nologin\nferry:x:10001:10001::/nonexistent:/sbin/nologin\n",
        ),
        ("etc/group", "root:x:0:\nferry:x:10001:\n"),
    ] {
        std::fs::create_dir_all(root.join(path).parent().unwrap()).unwrap();
        std::fs::write(root.join(path), text).unwrap();
    }
    std::fs::create_dir_all(root.join("etc/ferry")).unwrap();
    std::fs::write(
        root.join("etc/ferry/ferry.toml"),
        format!(
            r#"
            [admin]
            listen = "127.0.0.1:{admin_port}"

            [pipelines.quickstart]
            source = {{ kind = "file", path = "-" }}
            sink = {{ kind = "file", path = "/out/out.jsonl" }}

            [pipelines.quickstart.plugin]
            path = "/plugins/kessel_outbox_plugin.wasm"
            settings = {{ version = "v1beta2" }}
            "#
        ),
    )
    .unwrap();
    for writable in ["tmp", "plugins", "out"] {
        std::fs::create_dir_all(root.join(writable)).unwrap();
        std::fs::set_permissions(root.join(writable), std::fs::Permissions::from_mode(0o1777))
            .unwrap();
    }
    context
}

#[test]
fn the_image_runs_as_a_user_reports_ready_delivers_and_stops_cleanly_on_sigterm() {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    let found = Command::new("podman").arg("--version").output();
    assert!(
        found.is_ok_and(|output| output.status.success()),
        "podman is not installed: run scripts/setup"
    );
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let context = build_context(dir.path(), port);
    let tag = format!("localhost/ferry-test:{}", std::process::id());
    let name = format!("ferry-test-{}", std::process::id());
    // `docker` format: OCI images drop HEALTHCHECK.
    podman_ok(&[
        "build",
        "--format",
        "docker",
        "--tag",
        &tag,
        context.to_str().unwrap(),
    ]);
    let user = podman_ok(&["image", "inspect", "--format", "{{.Config.User}}", &tag]);
    assert_eq!(
        user.trim(),
        "10001:10001",
        "the image runs as a non-root user"
    );

    let plugins = dir.path().join("plugins");
    let out = dir.path().join("out");
    for volume in [&plugins, &out] {
        std::fs::create_dir_all(volume).unwrap();
        std::fs::set_permissions(volume, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    std::fs::copy(
        KESSEL_OUTBOX_RUST,
        plugins.join("kessel_outbox_plugin.wasm"),
    )
    .unwrap();

    let mut container = podman()
        .args([
            "run",
            "--rm",
            "--interactive",
            "--network",
            "host",
            "--name",
            &name,
        ])
        .arg("--volume")
        .arg(format!("{}:/plugins:ro", plugins.display()))
        .arg("--volume")
        .arg(format!("{}:/out", out.display()))
        .arg(&tag)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = container.stdin.take().unwrap();

    wait_ready(port, "the container");
    let healthcheck = run(podman().args(["healthcheck", "run", &name]));
    assert!(
        healthcheck.status.success(),
        "healthcheck: {}{}",
        stdout(&healthcheck),
        stderr(&healthcheck)
    );

    let events =
        std::fs::read_to_string(repo().join("tests/vectors/kessel-outbox/events.jsonl")).unwrap();
    writeln!(stdin, "{}", events.lines().next().unwrap()).unwrap();
    stdin.flush().unwrap();
    let delivered = out.join("out.jsonl");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(&delivered).unwrap_or_default();
        if text.contains("\"kessel_report\"") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no event was delivered: {text:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        std::fs::metadata(&delivered).unwrap().uid(),
        10001,
        "written by the image's user"
    );

    // SIGTERM with stdin still open: ferry stops reading, drains, exits 0.
    let stopping = Instant::now();
    podman_ok(&["kill", "--signal", "TERM", &name]);
    let output = container.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(0), "{log}");
    assert!(stopping.elapsed() < Duration::from_secs(20));
    assert!(log.contains("Stopping"), "{log}");
    drop(stdin);
    podman_ok(&["rmi", "--force", &tag]);
}
