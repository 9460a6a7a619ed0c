//! A CA and a server certificate generated at start, for TLS tests.

/// The server's certificate and key, and the CA to trust (PEM).
pub struct Identity {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

/// Several rustls providers are compiled into the test binaries, so rustls
/// cannot pick one by itself: use ring, as the host does.
pub fn install_crypto_provider() {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        // Another part of the process may have installed one: fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// The names the server certificate carries.
pub const SERVER_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "kessel.test"];

/// A fresh CA and a certificate it issued for [`SERVER_NAMES`].
pub fn generate() -> Result<Identity, rcgen::Error> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.distinguished_name
        .push(DnType::CommonName, "ferry test Kessel CA");
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);

    let key = KeyPair::generate()?;
    let mut server = CertificateParams::new(
        SERVER_NAMES
            .iter()
            .map(|name| name.to_string())
            .collect::<Vec<_>>(),
    )?;
    server
        .distinguished_name
        .push(DnType::CommonName, "kessel.test");
    let cert = server.signed_by(&key, &issuer)?;
    Ok(Identity {
        ca_pem: ca_cert.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}
