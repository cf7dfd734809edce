//! Loading certificates and keys from PEM files.

use std::fmt;
use std::io;
use std::path::Path;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{RootCertStore, ServerConfig};

use super::crypto_provider;

/// An error about the PEM file `path`: `kind`, and a message naming the file.
fn file_error(path: &Path, kind: io::ErrorKind, what: impl fmt::Display) -> io::Error {
    io::Error::new(kind, format!("{}: {what}", path.display()))
}

fn pem_error(path: &Path, e: pem::Error) -> io::Error {
    match e {
        pem::Error::Io(e) => file_error(path, e.kind(), format_args!("cannot read: {e}")),
        e => file_error(
            path,
            io::ErrorKind::InvalidData,
            format_args!("not a valid PEM file: {e}"),
        ),
    }
}

/// Reads every certificate (`-----BEGIN CERTIFICATE-----` section) of the
/// PEM file `path`, in order: a server's chain, end-entity first, or a set
/// of trusted roots.
///
/// Errors name the file: one that cannot be read keeps the I/O error's kind
/// (e.g. `NotFound`); bad PEM or a file with no certificate is `InvalidData`.
pub fn load_certs(path: impl AsRef<Path>) -> io::Result<Vec<CertificateDer<'static>>> {
    let path = path.as_ref();
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, e))?;
    if certs.is_empty() {
        return Err(file_error(
            path,
            io::ErrorKind::InvalidData,
            "no certificate found (expected a PEM \"BEGIN CERTIFICATE\" section)",
        ));
    }
    Ok(certs)
}

/// Reads the first private key of the PEM file `path` (PKCS#8
/// `BEGIN PRIVATE KEY`, PKCS#1 `BEGIN RSA PRIVATE KEY` or SEC1
/// `BEGIN EC PRIVATE KEY`).
///
/// Errors name the file, as [`load_certs`]'s; a file holding certificates
/// but no key says so.
pub fn load_private_key(path: impl AsRef<Path>) -> io::Result<PrivateKeyDer<'static>> {
    let path = path.as_ref();
    let mut saw_cert = false;
    for item in
        <(pem::SectionKind, Vec<u8>)>::pem_file_iter(path).map_err(|e| pem_error(path, e))?
    {
        let (kind, der) = item.map_err(|e| pem_error(path, e))?;
        if kind == pem::SectionKind::Certificate {
            saw_cert = true;
        }
        if let Some(key) = PrivateKeyDer::from_pem(kind, der) {
            return Ok(key);
        }
    }
    let what = if saw_cert {
        "no private key found (the file holds certificates: is it the certificate file?)"
    } else {
        "no private key found (expected a PEM \"BEGIN PRIVATE KEY\", \"BEGIN RSA PRIVATE KEY\" \
         or \"BEGIN EC PRIVATE KEY\" section)"
    };
    Err(file_error(path, io::ErrorKind::InvalidData, what))
}

/// Reads the certificates of the PEM file `path` into a root store, for a
/// client that trusts a private CA (or a self-signed server).
///
/// Errors name the file, as [`load_certs`]'s; a certificate rustls cannot
/// use as a trust anchor is `InvalidData`.
pub fn load_root_certs(path: impl AsRef<Path>) -> io::Result<RootCertStore> {
    let path = path.as_ref();
    let mut roots = RootCertStore::empty();
    for (i, cert) in load_certs(path)?.into_iter().enumerate() {
        roots.add(cert).map_err(|e| {
            file_error(
                path,
                io::ErrorKind::InvalidData,
                format_args!("certificate {} is not a usable trust anchor: {e}", i + 1),
            )
        })?;
    }
    Ok(roots)
}

/// A server configuration (ring provider, TLS 1.2 and 1.3, no client
/// authentication) serving the certificate chain of the PEM file
/// `cert_path` with the key of `key_path`.
///
/// Set `alpn_protocols` on the result as needed, then wrap it in an `Arc`
/// for [`TlsAcceptor::new`]. Errors name the file at fault; a key that does
/// not match the certificate is `InvalidInput`, naming both.
///
/// [`TlsAcceptor::new`]: super::TlsAcceptor::new
pub fn server_config_from_pem(
    cert_path: impl AsRef<Path>,
    key_path: impl AsRef<Path>,
) -> io::Result<ServerConfig> {
    let (cert_path, key_path) = (cert_path.as_ref(), key_path.as_ref());
    let certs = load_certs(cert_path)?;
    let key = load_private_key(key_path)?;
    ServerConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "certificate {} with key {}: {e}",
                    cert_path.display(),
                    key_path.display()
                ),
            )
        })
}
