//! Runs the test Kessel server by hand:
//!
//! ```text
//! ferry-kessel-server [--port N] [--tls] [--oauth CLIENT_ID:SECRET] [--token-lifetime SECONDS]
//! ```
//!
//! It prints the endpoint (and the CA file, the token URL), then serves
//! until Ctrl-C, printing what it applied as JSON Lines on the way out.

use ferry_kessel_server::{KesselServer, OAuthOptions, Options};
use std::time::Duration;

fn main() -> anyhow::Result<()> {
    let mut options = Options::default();
    let mut lifetime = Duration::from_secs(300);
    let mut clients = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .ok_or_else(|| anyhow::anyhow!("{name} needs a value"))
        };
        match arg.as_str() {
            "--port" => options.port = value("--port")?.parse()?,
            "--tls" => options.tls = true,
            "--oauth" => {
                let pair = value("--oauth")?;
                let (id, secret) = pair
                    .split_once(':')
                    .ok_or_else(|| anyhow::anyhow!("--oauth takes CLIENT_ID:SECRET"))?;
                clients.push((id.to_string(), secret.to_string()));
            }
            "--token-lifetime" => {
                lifetime = Duration::from_secs(value("--token-lifetime")?.parse()?)
            }
            "-h" | "--help" => {
                println!(
                    "ferry-kessel-server [--port N] [--tls] [--oauth CLIENT_ID:SECRET] [--token-lifetime SECONDS]"
                );
                return Ok(());
            }
            other => anyhow::bail!("unknown argument {other:?}; see --help"),
        }
    }
    if !clients.is_empty() {
        options.oauth = Some(OAuthOptions {
            clients,
            token_lifetime: lifetime,
        });
    }
    let server = KesselServer::start_with(options)?;
    println!("endpoint: {}", server.endpoint());
    if let Some(pem) = server.ca_pem() {
        let path = std::env::temp_dir().join(format!("ferry-kessel-ca-{}.pem", std::process::id()));
        std::fs::write(&path, pem)?;
        println!("ca_file: {}", path.display());
    }
    if let (Some(issuer), Some(token_url)) = (server.issuer(), server.token_url()) {
        println!("issuer: {issuer}");
        println!("token_url: {token_url}");
    }
    println!("Serving until Ctrl-C.");
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(tokio::signal::ctrl_c())?;
    for entry in server.log() {
        println!(
            "{}",
            serde_json::json!({ "method": entry.method, "request": entry.request })
        );
    }
    println!("{:?}", server.counts());
    Ok(())
}
