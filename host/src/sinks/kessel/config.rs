//! `[pipelines.<name>.sink] kind = "kessel"`: plain data, checked by
//! [`KesselSinkConfig::check`] and turned into a running sink by
//! [`super::KesselSink::new`].

use crate::config::{Problem, resolve};
use crate::notify::NotifyConfig;
use serde::Deserialize;
use std::fmt;
use std::path::{Path, PathBuf};

/// The Kessel Inventory sink's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KesselSinkConfig {
    /// The gRPC API: `http://host:port` (plaintext) or `https://host:port`
    /// (TLS; trusts the system's roots unless `tls.ca_file` is set).
    pub endpoint: String,
    /// Longest one call may take, in milliseconds, connecting included
    /// (default 10000). A call that overruns is retried.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Calls in flight at once across the whole sink (default 64).
    #[serde(default = "default_max_concurrency")]
    pub max_concurrency: usize,
    /// `write_visibility` of reports whose request does not set one
    /// (`minimize_latency` or `immediate`); unset leaves the server's default.
    #[serde(default)]
    pub write_visibility: Option<WriteVisibility>,
    /// What NotFound on DeleteResource means (default `success`: it is what
    /// a delete replayed after a lost acknowledgement looks like).
    #[serde(default)]
    pub delete_not_found: DeleteNotFound,
    /// TLS settings for an `https` endpoint.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// OAuth2 client credentials; without them, calls carry no token.
    #[serde(default)]
    pub auth: Option<AuthConfig>,
    /// A Postgres NOTIFY after each event's outputs are acknowledged by
    /// Kessel (read-after-write for a request handler that LISTENs).
    #[serde(default)]
    pub notify: Option<NotifyConfig>,
}

/// The `write_visibility` a pipeline may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WriteVisibility {
    /// Favour throughput: permission checks may see the write later.
    MinimizeLatency,
    /// The write is visible to permission checks when the call returns.
    Immediate,
}

/// What NotFound on DeleteResource means.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeleteNotFound {
    /// The resource is gone already: delivered.
    #[default]
    Success,
    /// A permanent failure (the error policy applies).
    Error,
}

/// `[pipelines.<name>.sink.tls]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file of the CA(s) to trust instead of the system's roots (also
    /// trusted, besides the system's roots, by the OAuth2 token requests).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// The name the server's certificate must carry, when it is not the
    /// endpoint's host.
    #[serde(default)]
    pub server_name: Option<String>,
}

/// `[pipelines.<name>.sink.auth]`: OAuth2 client credentials. The secret
/// comes from exactly one of `client_secret`, `client_secret_file` (read at
/// each token request, so a rotated file is picked up) and
/// `client_secret_env`; the token endpoint from exactly one of `token_url`
/// and `issuer` (OIDC discovery).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    pub client_id: String,
    #[serde(default)]
    pub client_secret: Option<Secret>,
    #[serde(default)]
    pub client_secret_file: Option<PathBuf>,
    /// The name of an environment variable holding the secret.
    #[serde(default)]
    pub client_secret_env: Option<String>,
    /// The token endpoint.
    #[serde(default)]
    pub token_url: Option<String>,
    /// The OIDC issuer whose `/.well-known/openid-configuration` names the
    /// token endpoint.
    #[serde(default)]
    pub issuer: Option<String>,
    /// The `scope` to ask for, if the provider wants one.
    #[serde(default)]
    pub scope: Option<String>,
}

/// A secret read from the configuration: never printed, not even by
/// `Debug`.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(\"***\")")
    }
}

fn default_timeout_ms() -> u64 {
    10_000
}

fn default_max_concurrency() -> usize {
    64
}

impl KesselSinkConfig {
    /// Takes relative file paths from `base` (the config file's directory).
    pub(crate) fn resolve_paths(&mut self, base: &Path) {
        if let Some(ca_file) = self.tls.as_mut().and_then(|tls| tls.ca_file.as_mut()) {
            *ca_file = resolve(base, ca_file);
        }
        if let Some(file) = self
            .auth
            .as_mut()
            .and_then(|auth| auth.client_secret_file.as_mut())
        {
            *file = resolve(base, file);
        }
    }

    /// Problems that types alone cannot catch; paths relative to the sink.
    pub(crate) fn check(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        let mut add = |path: &str, message: String| {
            problems.push(Problem {
                path: path.to_string(),
                message,
            })
        };
        let https = match url_scheme(&self.endpoint) {
            Ok(scheme) => scheme == "https",
            Err(message) => {
                add("endpoint", message);
                false
            }
        };
        if self.timeout_ms == 0 {
            add("timeout_ms", "must be at least 1".into());
        }
        if self.max_concurrency == 0 {
            add("max_concurrency", "must be at least 1".into());
        }
        if let Some(tls) = &self.tls {
            if !https && url_scheme(&self.endpoint).is_ok() {
                add("tls", "needs an https:// endpoint".into());
            }
            if let Some(ca_file) = &tls.ca_file
                && !ca_file.is_file()
            {
                add("tls.ca_file", format!("no file at {}", ca_file.display()));
            }
            if tls.server_name.as_deref() == Some("") {
                add("tls.server_name", "must not be empty".into());
            }
        }
        if let Some(auth) = &self.auth {
            if auth.client_id.is_empty() {
                add("auth.client_id", "must not be empty".into());
            }
            let sources = [
                auth.client_secret.is_some(),
                auth.client_secret_file.is_some(),
                auth.client_secret_env.is_some(),
            ];
            if sources.iter().filter(|set| **set).count() != 1 {
                add(
                    "auth",
                    "set exactly one of client_secret, client_secret_file and client_secret_env"
                        .into(),
                );
            }
            if let Some(file) = &auth.client_secret_file
                && !file.is_file()
            {
                add(
                    "auth.client_secret_file",
                    format!("no file at {}", file.display()),
                );
            }
            if let Some(name) = &auth.client_secret_env
                && std::env::var_os(name).is_none()
            {
                add(
                    "auth.client_secret_env",
                    format!("the environment variable {name} is not set"),
                );
            }
            match (&auth.token_url, &auth.issuer) {
                (Some(_), Some(_)) | (None, None) => {
                    add("auth", "set exactly one of token_url and issuer".into())
                }
                (Some(url), None) => {
                    if let Err(message) = url_scheme(url) {
                        add("auth.token_url", message);
                    }
                }
                (None, Some(url)) => {
                    if let Err(message) = url_scheme(url) {
                        add("auth.issuer", message);
                    }
                }
            }
        }
        if let Some(notify) = &self.notify {
            problems.extend(notify.check().into_iter().map(|problem| Problem {
                path: format!("notify.{}", problem.path),
                message: problem.message,
            }));
        }
        problems
    }
}

/// The scheme of an `http(s)://host…` URL, or why it is not one.
fn url_scheme(url: &str) -> Result<&'static str, String> {
    let scheme = if url.starts_with("https://") {
        "https"
    } else if url.starts_with("http://") {
        "http"
    } else {
        return Err(format!("{url:?} is not an http:// or https:// URL"));
    };
    match url.parse::<tonic::transport::Uri>() {
        Ok(uri) if uri.host().is_some_and(|host| !host.is_empty()) => Ok(scheme),
        Ok(_) => Err(format!("{url:?} has no host")),
        Err(error) => Err(format!("{url:?} is not a valid URL: {error}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> KesselSinkConfig {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn defaults_are_documented_ones() {
        let config = parse(r#"endpoint = "http://127.0.0.1:9000""#);
        assert_eq!(config.timeout_ms, 10_000);
        assert_eq!(config.max_concurrency, 64);
        assert_eq!(config.write_visibility, None);
        assert_eq!(config.delete_not_found, DeleteNotFound::Success);
        assert!(config.tls.is_none() && config.auth.is_none());
        assert!(config.check().is_empty());
    }

    #[test]
    fn refuses_unknown_keys() {
        let error = toml::from_str::<KesselSinkConfig>(
            r#"
            endpoint = "http://x"
            [auth]
            client_id = "a"
            client_secret = "s"
            token_uri = "http://idp"
            "#,
        )
        .unwrap_err();
        assert!(
            error.to_string().contains("unknown field `token_uri`"),
            "{error}"
        );
    }

    #[test]
    fn reports_every_problem_with_its_path() {
        let config = parse(
            r#"
            endpoint = "http://kessel:9000"
            timeout_ms = 0
            max_concurrency = 0
            [tls]
            ca_file = "/nonexistent/ca.pem"
            server_name = ""
            [auth]
            client_id = ""
            client_secret = "s"
            client_secret_env = "FERRY_TEST_SURELY_UNSET_VARIABLE"
            token_url = "ftp://idp"
            "#,
        );
        let problems: Vec<String> = config.check().iter().map(Problem::to_string).collect();
        for needle in [
            "timeout_ms: must be at least 1",
            "max_concurrency: must be at least 1",
            "tls: needs an https:// endpoint",
            "tls.ca_file: no file at /nonexistent/ca.pem",
            "tls.server_name: must not be empty",
            "auth.client_id: must not be empty",
            "auth: set exactly one of client_secret, client_secret_file and client_secret_env",
            "auth.client_secret_env: the environment variable FERRY_TEST_SURELY_UNSET_VARIABLE is not set",
            "auth.token_url: \"ftp://idp\" is not an http:// or https:// URL",
        ] {
            assert!(
                problems.iter().any(|p| p == needle),
                "no problem {needle:?} in {problems:#?}"
            );
        }
        let config = parse(
            r#"
            endpoint = "kessel:9000"
            [auth]
            client_id = "a"
            client_secret = "s"
            "#,
        );
        let problems: Vec<String> = config.check().iter().map(Problem::to_string).collect();
        assert_eq!(
            problems,
            [
                "endpoint: \"kessel:9000\" is not an http:// or https:// URL",
                "auth: set exactly one of token_url and issuer",
            ]
        );
    }

    #[test]
    fn never_prints_the_secret() {
        let config = parse(
            r#"
            endpoint = "https://kessel:9000"
            [auth]
            client_id = "ferry"
            client_secret = "hunter2-very-secret"
            issuer = "https://sso.example.com/realms/x"
            "#,
        );
        let debug = format!("{config:?} {config:#?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("client_id: \"ferry\""), "{debug}");
        assert!(config.check().is_empty());
    }

    #[test]
    fn resolves_files_from_the_config_directory() {
        let mut config = parse(
            r#"
            endpoint = "https://kessel:9000"
            tls = { ca_file = "ca.pem" }
            auth = { client_id = "a", client_secret_file = "secret", token_url = "http://idp/token" }
            "#,
        );
        config.resolve_paths(Path::new("/etc/ferry"));
        assert_eq!(
            config.tls.unwrap().ca_file.unwrap(),
            Path::new("/etc/ferry/ca.pem")
        );
        assert_eq!(
            config.auth.unwrap().client_secret_file.unwrap(),
            Path::new("/etc/ferry/secret")
        );
    }
}
