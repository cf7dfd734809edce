//! Cooperative name resolution: [`ToSocketAddrs`] and [`lookup_host`].

use std::io;
use std::net::{self, IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::vec;

/// Values that resolve to one or more [`SocketAddr`]s, without blocking the
/// dispatcher.
///
/// Implemented for the same types as [`std::net::ToSocketAddrs`]: socket
/// addresses, `(ip, port)` pairs, `"host:port"` strings, `(host, port)` pairs
/// and slices of addresses. Literal addresses (`"127.0.0.1:80"`,
/// `"[::1]:80"`, `(Ipv4Addr::LOCALHOST, 80)`) are parsed in place; host
/// names are resolved with the system resolver (`getaddrinfo`) on an offload
/// thread through [`tasklet::unblock`](tasklet_runtime::unblock), so other tasklets keep
/// running while the lookup waits. Outside a dispatcher the lookup simply
/// runs on the calling thread.
///
/// ```
/// use tasklet::netio::ToSocketAddrs;
/// tasklet::dispatch(|| {
///     let addrs = "localhost:8080".resolve().unwrap();
///     assert!(addrs.iter().all(|a| a.port() == 8080 && a.ip().is_loopback()));
///     assert_eq!(("10.1.2.3", 53).resolve().unwrap(), ["10.1.2.3:53".parse().unwrap()]);
/// });
/// ```
pub trait ToSocketAddrs {
    /// Resolves to the list of addresses, in the order the resolver gave them.
    ///
    /// Fails with `ErrorKind::InvalidInput` for a malformed address or port
    /// and with the resolver's error for an unknown host.
    fn resolve(&self) -> io::Result<Vec<SocketAddr>>;
}

/// Resolves `addr` cooperatively (see [`ToSocketAddrs`]); tokio's `lookup_host`.
///
/// ```
/// tasklet::dispatch(|| {
///     let first = tasklet::netio::lookup_host("localhost:80").unwrap().next().unwrap();
///     assert!(first.ip().is_loopback());
/// });
/// ```
pub fn lookup_host<A: ToSocketAddrs>(addr: A) -> io::Result<vec::IntoIter<SocketAddr>> {
    addr.resolve().map(Vec::into_iter)
}

impl ToSocketAddrs for SocketAddr {
    fn resolve(&self) -> io::Result<Vec<SocketAddr>> {
        Ok(vec![*self])
    }
}

impl ToSocketAddrs for SocketAddrV4 {
    fn resolve(&self) -> io::Result<Vec<SocketAddr>> {
        Ok(vec![SocketAddr::V4(*self)])
    }
}

impl ToSocketAddrs for SocketAddrV6 {
    fn resolve(&self) -> io::Result<Vec<SocketAddr>> {
        Ok(vec![SocketAddr::V6(*self)])
    }
}

impl ToSocketAddrs for (IpAddr, u16) {
    fn resolve(&self) -> io::Result<Vec<SocketAddr>> {
        Ok(vec![SocketAddr::new(self.0, self.1)])
    }
}

impl ToSocketAddrs for (Ipv4Addr, u16) {
    fn resolve(&self) -> io::Result<Vec<SocketAddr>> {
        Ok(vec![SocketAddr::new(IpAddr::V4(self.0), self.1)])
    }
}

impl ToSocketAddrs for (Ipv6Addr, u16) {
    fn resolve(&self) -> io::Result<Vec<SocketAddr>> {
        Ok(vec![SocketAddr::new(IpAddr::V6(self.0), self.1)])
    }
}

impl ToSocketAddrs for (&str, u16) {
    fn resolve(&self) -> io::Result<Vec<SocketAddr>> {
        resolve_host_port(self.0, self.1)
    }
}

impl ToSocketAddrs for (String, u16) {
    fn resolve(&self) -> io::Result<Vec<SocketAddr>> {
        resolve_host_port(&self.0, self.1)
    }
}

impl ToSocketAddrs for str {
    fn resolve(&self) -> io::Result<Vec<SocketAddr>> {
        if let Ok(a) = self.parse::<SocketAddr>() {
            return Ok(vec![a]);
        }
        let Some((host, port)) = self.rsplit_once(':') else {
            return Err(invalid("invalid socket address: expected \"host:port\""));
        };
        let port: u16 = port.parse().map_err(|_| invalid("invalid port value"))?;
        resolve_host_port(host, port)
    }
}

impl ToSocketAddrs for String {
    fn resolve(&self) -> io::Result<Vec<SocketAddr>> {
        self.as_str().resolve()
    }
}

impl ToSocketAddrs for [SocketAddr] {
    fn resolve(&self) -> io::Result<Vec<SocketAddr>> {
        Ok(self.to_vec())
    }
}

impl ToSocketAddrs for Vec<SocketAddr> {
    fn resolve(&self) -> io::Result<Vec<SocketAddr>> {
        Ok(self.clone())
    }
}

impl<T: ToSocketAddrs + ?Sized> ToSocketAddrs for &T {
    fn resolve(&self) -> io::Result<Vec<SocketAddr>> {
        (**self).resolve()
    }
}

fn invalid(msg: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

fn resolve_host_port(host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
    // IP literals never need the resolver (nor a thread hop).
    let literal = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if let Ok(ip) = literal.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    if host.is_empty() {
        return Err(invalid("invalid socket address: empty host name"));
    }
    let host = host.to_owned();
    let r = tasklet_runtime::unblock(move || {
        net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), port)).map(Iterator::collect::<Vec<_>>)
    });
    match r {
        Ok(v) if v.is_empty() => Err(io::Error::new(
            io::ErrorKind::NotFound,
            "host name resolved to no address",
        )),
        r => r,
    }
}

/// Tries `f` on each address in turn; returns the first success or the last error.
pub(crate) fn each_addr<A, T, F>(addr: A, mut f: F) -> io::Result<T>
where
    A: ToSocketAddrs,
    F: FnMut(&SocketAddr) -> io::Result<T>,
{
    let mut last = None;
    for a in addr.resolve()? {
        match f(&a) {
            Ok(v) => return Ok(v),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| invalid("could not resolve to any addresses")))
}
