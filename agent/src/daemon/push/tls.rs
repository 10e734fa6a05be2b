//! TLS for push sinks (`pyroscope+https`, `pyroscope+connect+https`, `otlp+https`, `otlp+grpcs`):
//! rustls with the `ring` provider, the certificate chain and the host name (SNI, DNS or IP SAN)
//! always verified. The trusted roots are the system's CA bundle (read once at start with
//! `rustls-native-certs`: `SSL_CERT_FILE`/`SSL_CERT_DIR` or /etc/ssl/certs) or, with
//! `--push-ca-file`, only the PEM certificates of that file (as `curl --cacert`). There is no
//! switch that turns verification off.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};

/// Largest `--push-ca-file` read, in bytes (a bundle of a few hundred certificates).
pub const MAX_CA_FILE: u64 = 4 << 20;

/// Most certificates taken from `--push-ca-file`.
pub const MAX_CA_CERTS: usize = 1024;

/// The two client configurations every TLS sink shares: one offering ALPN `http/1.1` (the
/// HTTP/1.1 client), one offering `h2` (gRPC).
#[derive(Clone)]
pub struct TlsConfigs {
    pub http1: Arc<ClientConfig>,
    pub h2: Arc<ClientConfig>,
}

impl std::fmt::Debug for TlsConfigs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsConfigs")
    }
}

/// Builds the client configurations: roots from `ca_file` (PEM) when given, else the system's.
pub fn configs(ca_file: Option<&Path>) -> anyhow::Result<TlsConfigs> {
    let roots = match ca_file {
        Some(p) => roots_from_file(p)?,
        None => system_roots()?,
    };
    let make = |alpn: &[u8]| -> anyhow::Result<Arc<ClientConfig>> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut c = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| anyhow::anyhow!("TLS setup for --push: {e}"))?
            .with_root_certificates(roots.clone())
            .with_no_client_auth();
        c.alpn_protocols = vec![alpn.to_vec()];
        Ok(Arc::new(c))
    };
    Ok(TlsConfigs {
        http1: make(b"http/1.1")?,
        h2: make(b"h2")?,
    })
}

fn system_roots() -> anyhow::Result<RootCertStore> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        anyhow::bail!(
            "no CA certificate found in the system's bundle (/etc/ssl/certs, SSL_CERT_FILE) for an https --push sink; install ca-certificates or give the receiver's CA with --push-ca-file PATH"
        );
    }
    Ok(roots)
}

fn roots_from_file(p: &Path) -> anyhow::Result<RootCertStore> {
    let what = |e: &dyn std::fmt::Display| {
        anyhow::anyhow!(
            "--push-ca-file {}: {e}; give a readable PEM file of CA certificates",
            p.display()
        )
    };
    let f = std::fs::File::open(p).map_err(|e| what(&e))?;
    let mut pem = Vec::new();
    f.take(MAX_CA_FILE + 1)
        .read_to_end(&mut pem)
        .map_err(|e| what(&e))?;
    if pem.len() as u64 > MAX_CA_FILE {
        return Err(what(&format!("larger than {MAX_CA_FILE} bytes")));
    }
    let mut roots = RootCertStore::empty();
    for (n, c) in CertificateDer::pem_slice_iter(&pem).enumerate() {
        if n >= MAX_CA_CERTS {
            return Err(what(&format!("more than {MAX_CA_CERTS} certificates")));
        }
        let c = c.map_err(|e| what(&format!("not PEM ({e})")))?;
        roots
            .add(c)
            .map_err(|e| what(&format!("certificate {} rejected ({e})", n + 1)))?;
    }
    if roots.is_empty() {
        return Err(what(&"no CERTIFICATE block"));
    }
    Ok(roots)
}

/// The one line logged when a TLS handshake fails: what went wrong and what to do.
pub fn advice(detail: &str, ca_file: bool) -> String {
    if ca_file {
        format!("{detail}: check that --push-ca-file holds the CA that signed the receiver's certificate and that the URL's host is a name in it")
    } else {
        format!("{detail}: if the receiver's certificate comes from a private CA, give that CA with --push-ca-file PATH; the URL's host must be a name in the certificate")
    }
}
