//! TLS (`--features tls`): round trips with rustls clients, concurrency,
//! handshake timeouts and kills, bad peers, close_notify vs abrupt close,
//! ALPN/SNI and the PEM loaders. Certificates are generated at test time.
#![cfg(feature = "tls")]

mod common;

use std::cell::Cell;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tasklet::netio::tls::rustls::pki_types::pem::PemObject;
use tasklet::netio::tls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tasklet::netio::tls::rustls::{self, ClientConfig, RootCertStore, ServerConfig};
use tasklet::netio::tls::{self, TlsAcceptor, TlsConnector, TlsStream, TlsTransport};
use tasklet::netio::{StreamServer, TcpListener, TcpStream, UnixStream};

fn run<T: 'static>(f: impl FnOnce() -> T + 'static) -> T {
    tasklet::dispatch(|| tasklet::timeout(Duration::from_secs(120), f).expect("test timed out"))
}

/// A self-signed certificate for "localhost" and 127.0.0.1, as PEM.
struct Cert {
    cert_pem: String,
    key_pem: String,
}

fn cert() -> Cert {
    let ck =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    Cert {
        cert_pem: ck.cert.pem(),
        key_pem: ck.key_pair.serialize_pem(),
    }
}

impl Cert {
    fn der(&self) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(self.cert_pem.as_bytes()).unwrap()
    }

    fn server_config(&self, alpn: &[&[u8]]) -> Arc<ServerConfig> {
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).unwrap();
        let mut cfg = ServerConfig::builder_with_provider(tls::crypto_provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![self.der()], key)
            .unwrap();
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(cfg)
    }

    fn client_config(&self, alpn: &[&[u8]]) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(self.der()).unwrap();
        let mut cfg = ClientConfig::builder_with_provider(tls::crypto_provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(cfg)
    }
}

fn echo<S: TlsTransport>(mut s: TlsStream<S>) -> io::Result<()> {
    let mut buf = [0u8; 8192];
    loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            return s.shutdown();
        }
        s.write_all(&buf[..n])?;
    }
}

/// A TLS echo server on a `StreamServer`.
fn echo_server(acceptor: TlsAcceptor) -> tasklet::netio::ServerHandle {
    StreamServer::bind("127.0.0.1:0", move |s: TcpStream, _| {
        echo(acceptor.accept(s)?)
    })
    .unwrap()
    .start()
}

/// A plain std thread running a blocking rustls client (`StreamOwned`)
/// against `addr`: the reference implementation on the other side.
#[test]
fn round_trip_with_blocking_rustls_client() {
    let c = cert();
    let client_cfg = c.client_config(&[]);
    let server_cfg = c.server_config(&[]);
    let (addr_tx, addr_rx) = std::sync::mpsc::channel::<SocketAddr>();
    let client = std::thread::spawn(move || {
        let addr = addr_rx.recv().unwrap();
        let tcp = std::net::TcpStream::connect(addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let conn =
            rustls::ClientConnection::new(client_cfg, "localhost".try_into().unwrap()).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        for size in [1usize, 100, 16 * 1024, 16 * 1024 + 1, 300_000] {
            let msg: Vec<u8> = (0..size).map(|i| (i * 7 + size) as u8).collect();
            tls.write_all(&msg).unwrap();
            let mut back = vec![0u8; size];
            tls.read_exact(&mut back).unwrap();
            assert_eq!(back, msg, "echo of {size} bytes");
        }
        // close_notify: the server's read ends with Ok(0), it answers in kind.
        tls.conn.send_close_notify();
        tls.flush().unwrap();
        let mut rest = Vec::new();
        assert_eq!(tls.read_to_end(&mut rest).unwrap(), 0);
    });
    run(move || {
        let handle = echo_server(TlsAcceptor::new(server_cfg));
        addr_tx.send(handle.local_addr()).unwrap();
        tasklet::unblock(move || client.join()).expect("client thread failed");
        assert_eq!(handle.stop(Duration::from_secs(5)), 0);
    });
}

#[test]
fn round_trip_tasklet_client_and_accessors() {
    let c = cert();
    let server_cfg = c.server_config(&[b"h2", b"http/1.1"]);
    let client_cfg = c.client_config(&[b"http/1.1"]);
    run(move || {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = TlsAcceptor::new(server_cfg);
        let server = tasklet::spawn(move || {
            let (s, _) = listener.accept().unwrap();
            let tls = acceptor.accept(s).unwrap();
            assert!(tls.is_server());
            assert_eq!(tls.server_name(), Some("localhost"));
            assert_eq!(tls.alpn_protocol(), Some(&b"http/1.1"[..]));
            assert_eq!(
                tls.protocol_version(),
                Some(rustls::ProtocolVersion::TLSv1_3)
            );
            assert!(tls.negotiated_cipher_suite().is_some());
            assert!(tls.peer_certificates().is_none());
            assert!(tls.get_ref().peer_addr().is_ok());
            assert!(format!("{tls:?}").contains("TlsStream"));
            echo(tls).unwrap();
        });
        let connector = TlsConnector::new(client_cfg);
        let mut tls = connector
            .connect("localhost", TcpStream::connect(addr).unwrap())
            .unwrap();
        assert!(!tls.is_server());
        assert_eq!(tls.alpn_protocol(), Some(&b"http/1.1"[..]));
        assert_eq!(tls.peer_certificates().unwrap().len(), 1);
        for i in 0..50u8 {
            tls.write_all(&[i; 1000]).unwrap();
            let mut back = [0u8; 1000];
            tls.read_exact(&mut back).unwrap();
            assert_eq!(back, [i; 1000]);
        }
        tls.shutdown().unwrap();
        tls.shutdown().unwrap(); // once is enough; again is harmless
        let err = tls.write(b"late").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
        let mut rest = Vec::new();
        assert_eq!(tls.read_to_end(&mut rest).unwrap(), 0);
        server.join().unwrap();
    });
}

#[test]
fn over_unix_stream_and_ip_server_name() {
    let c = cert();
    let acceptor = TlsAcceptor::new(c.server_config(&[]));
    let connector = TlsConnector::new(c.client_config(&[]));
    run(move || {
        let (a, b) = UnixStream::pair().unwrap();
        let server = tasklet::spawn(move || echo(acceptor.accept(a)?));
        // An IP address as the name: checked against the certificate's IP SAN.
        let mut tls = connector.connect("127.0.0.1", b).unwrap();
        assert_eq!(tls.server_name(), None);
        tls.write_all(b"over a unix socket").unwrap();
        let mut back = [0u8; 18];
        tls.read_exact(&mut back).unwrap();
        assert_eq!(&back, b"over a unix socket");
        tls.shutdown().unwrap();
        server.join().unwrap().unwrap();
    });
}

/// One tasklet reads while another writes through `&TlsStream`, both
/// directions at once with more data than the socket buffers hold: a lock
/// held across a socket wait would deadlock here.
#[test]
fn shared_reference_full_duplex() {
    const TOTAL: usize = 8 << 20;
    let c = cert();
    let acceptor = TlsAcceptor::new(c.server_config(&[]));
    let connector = TlsConnector::new(c.client_config(&[]));
    run(move || {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        // The server echoes with a reader and a writer tasklet joined by a channel.
        let server = tasklet::spawn(move || {
            let (s, _) = listener.accept().unwrap();
            let tls = Rc::new(acceptor.accept(s).unwrap());
            let (tx, rx) = tasklet::sync::channel::<Vec<u8>>(4);
            let reader = {
                let tls = tls.clone();
                tasklet::spawn(move || {
                    let mut buf = vec![0u8; 20_000];
                    loop {
                        let n = (&*tls).read(&mut buf).unwrap();
                        if n == 0 {
                            return;
                        }
                        tx.send(buf[..n].to_vec()).unwrap();
                    }
                })
            };
            for chunk in rx.iter() {
                (&*tls).write_all(&chunk).unwrap();
            }
            reader.join().unwrap();
            tls.shutdown().unwrap();
        });
        let tls = Rc::new(
            connector
                .connect("localhost", TcpStream::connect(addr).unwrap())
                .unwrap(),
        );
        let writer = {
            let tls = tls.clone();
            tasklet::spawn(move || {
                let mut sent = 0;
                let mut i = 0u32;
                while sent < TOTAL {
                    let chunk: Vec<u8> = (0..10_007u32).map(|j| (i + j) as u8).collect();
                    (&*tls).write_all(&chunk).unwrap();
                    sent += chunk.len();
                    i += 1;
                }
                tls.shutdown().unwrap();
                sent
            })
        };
        let mut got = Vec::with_capacity(TOTAL + 20_000);
        (&*tls).read_to_end(&mut got).unwrap();
        let sent = writer.join().unwrap();
        assert_eq!(got.len(), sent);
        for (i, chunk) in got.chunks(10_007).enumerate() {
            assert!(
                chunk
                    .iter()
                    .enumerate()
                    .all(|(j, &b)| b == (i as u32 + j as u32) as u8),
                "chunk {i} corrupted"
            );
        }
        server.join().unwrap();
    });
}

#[test]
fn thousand_concurrent_clients() {
    const N: usize = 1000;
    let c = cert();
    let acceptor = TlsAcceptor::new(c.server_config(&[]));
    let connector = TlsConnector::new(c.client_config(&[]));
    // Server and clients on two dispatchers (two threads).
    let (addr_tx, addr_rx) = std::sync::mpsc::channel::<SocketAddr>();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let server = std::thread::spawn(move || {
        tasklet::dispatch(move || {
            let handle = StreamServer::bind("127.0.0.1:0", move |s: TcpStream, _| {
                s.set_read_timeout(Some(Duration::from_secs(60)))?;
                echo(acceptor.accept(s)?)
            })
            .unwrap()
            .start();
            addr_tx.send(handle.local_addr()).unwrap();
            tasklet::unblock(move || stop_rx.recv()).unwrap();
            handle.stop(Duration::from_secs(5))
        })
    });
    let addr = addr_rx.recv().unwrap();
    run(move || {
        let done = Rc::new(Cell::new(0usize));
        let clients: Vec<_> = (0..N)
            .map(|i| {
                let connector = connector.clone();
                let done = done.clone();
                tasklet::spawn(move || {
                    let tcp = TcpStream::connect(addr).unwrap();
                    tcp.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
                    let mut tls = connector.connect("localhost", tcp).unwrap();
                    let msg = format!("client {i}");
                    for _ in 0..3 {
                        tls.write_all(msg.as_bytes()).unwrap();
                        let mut back = vec![0u8; msg.len()];
                        tls.read_exact(&mut back).unwrap();
                        assert_eq!(back, msg.as_bytes());
                    }
                    tls.shutdown().unwrap();
                    let mut rest = Vec::new();
                    tls.read_to_end(&mut rest).unwrap();
                    done.set(done.get() + 1);
                })
            })
            .collect();
        for c in clients {
            c.join().unwrap();
        }
        assert_eq!(done.get(), N);
    });
    stop_tx.send(()).unwrap();
    assert_eq!(server.join().unwrap(), 0, "every handler had ended");
}

/// Clients that connect and stall mid-handshake (nothing sent, or half a
/// ClientHello) are dropped by the handshake timeout, while clients that
/// came after them are served.
#[test]
fn stalled_handshake_times_out_without_stalling_others() {
    let c = cert();
    let acceptor = TlsAcceptor::new(c.server_config(&[])).handshake_timeout(Duration::from_secs(5));
    let connector = TlsConnector::new(c.client_config(&[]));
    run(move || {
        let errors = Rc::new(std::cell::RefCell::new(Vec::new()));
        let errs = errors.clone();
        let handle = StreamServer::bind("127.0.0.1:0", move |s: TcpStream, _| {
            match acceptor.accept(s) {
                Ok(tls) => echo(tls),
                Err(e) => {
                    errs.borrow_mut().push(e.kind());
                    Err(e)
                }
            }
        })
        .unwrap()
        .start();
        let addr = handle.local_addr();

        // Staller 1 sends nothing; staller 2 sends the start of a ClientHello.
        let silent = TcpStream::connect(addr).unwrap();
        let partial = TcpStream::connect(addr).unwrap();
        (&partial)
            .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
            .unwrap();

        let clients: Vec<_> = (0..20u8)
            .map(|i| {
                let connector = connector.clone();
                tasklet::spawn(move || {
                    let mut tls = connector
                        .connect("localhost", TcpStream::connect(addr).unwrap())
                        .unwrap();
                    tls.write_all(&[i; 10]).unwrap();
                    let mut back = [0u8; 10];
                    tls.read_exact(&mut back).unwrap();
                    assert_eq!(back, [i; 10]);
                })
            })
            .collect();
        for c in clients {
            c.join().unwrap();
        }
        // The others were served while the stallers still held their handshakes.
        assert!(
            errors.borrow().is_empty(),
            "stallers timed out before the others were served"
        );

        // Then the stallers are dropped.
        for s in [&silent, &partial] {
            s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            let mut buf = [0u8; 64];
            let start = Instant::now();
            // EOF (or a reset): the server gave up on the handshake.
            match (&*s).read(&mut buf) {
                Ok(0) => {}
                Ok(n) => panic!("unexpected {n} bytes from the server"),
                Err(e) => assert_ne!(e.kind(), io::ErrorKind::TimedOut, "never closed"),
            }
            assert!(start.elapsed() < Duration::from_secs(30));
        }
        let errors = errors.borrow().clone();
        assert_eq!(errors, vec![io::ErrorKind::TimedOut; 2]);
        assert_eq!(handle.stop(Duration::from_secs(5)), 0);
    });
}

/// The socket's read timeout bounds each wait of the handshake.
#[test]
fn handshake_honours_socket_read_timeout() {
    let c = cert();
    let acceptor = TlsAcceptor::new(c.server_config(&[]));
    run(move || {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tasklet::spawn(move || {
            let (s, _) = listener.accept().unwrap();
            s.set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            acceptor.accept(s).map(|_| ())
        });
        let _silent = TcpStream::connect(addr).unwrap();
        let err = server.join().unwrap().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    });
}

/// What descriptor `fd` of this process refers to now (`socket:[inode]`),
/// or `None` if it is closed. Comparing it before and after tells whether
/// that very socket was closed, even while other tests open descriptors.
fn fd_target(fd: i32) -> Option<std::path::PathBuf> {
    std::fs::read_link(format!("/proc/self/fd/{fd}")).ok()
}

/// A handshake killed (or timed out by `tasklet::timeout`) while it waits
/// leaves nothing behind: the socket is closed (the peer sees EOF) and no
/// descriptor leaks.
#[test]
fn kill_and_timeout_mid_handshake_leave_nothing_behind() {
    let c = cert();
    let acceptor = TlsAcceptor::new(c.server_config(&[]));
    run(move || {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        for round in 0..2 {
            let client = TcpStream::connect(addr).unwrap();
            (&client).write_all(&[0x16, 0x03, 0x01]).unwrap();
            let (s, _) = listener.accept().unwrap();
            let server_fd = std::os::fd::AsRawFd::as_raw_fd(&s);
            let server_sock = fd_target(server_fd).expect("accepted socket is open");
            let acceptor = acceptor.clone();
            let started = Rc::new(tasklet::sync::Event::new());
            let st = started.clone();
            let server = tasklet::spawn(move || {
                st.set();
                if round == 0 {
                    acceptor.accept(s).map(|_| ())
                } else {
                    tasklet::timeout(Duration::from_millis(100), || {
                        acceptor.accept(s).map(|_| ())
                    })
                    .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))
                }
            });
            started.wait();
            tasklet::yield_now();
            if round == 0 {
                server.kill();
                assert!(server.join().is_err(), "killed");
            } else {
                let err = server.join().unwrap().unwrap_err();
                assert_eq!(err.kind(), io::ErrorKind::TimedOut);
            }
            client
                .set_read_timeout(Some(Duration::from_secs(30)))
                .unwrap();
            let mut buf = [0u8; 16];
            assert_eq!((&client).read(&mut buf).unwrap(), 0, "socket closed");
            assert_ne!(
                fd_target(server_fd).as_ref(),
                Some(&server_sock),
                "the server's socket descriptor was not closed"
            );
        }
    });
}

/// A plaintext HTTP client on the TLS port gets an alert and a closed
/// connection; the handler sees `InvalidData`; the server carries on.
#[test]
fn plaintext_client_gets_clean_error_and_server_carries_on() {
    let c = cert();
    let acceptor = TlsAcceptor::new(c.server_config(&[]));
    let connector = TlsConnector::new(c.client_config(&[]));
    run(move || {
        let errors = Rc::new(std::cell::RefCell::new(Vec::new()));
        let errs = errors.clone();
        let handle = StreamServer::bind("127.0.0.1:0", move |s: TcpStream, _| {
            match acceptor.accept(s) {
                Ok(tls) => echo(tls),
                Err(e) => {
                    errs.borrow_mut().push(e.kind());
                    Err(e)
                }
            }
        })
        .unwrap()
        .start();
        let addr = handle.local_addr();
        for _ in 0..3 {
            let mut plain = TcpStream::connect(addr).unwrap();
            plain
                .set_read_timeout(Some(Duration::from_secs(30)))
                .unwrap();
            plain
                .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
                .unwrap();
            let mut reply = Vec::new();
            match plain.read_to_end(&mut reply) {
                Ok(_) => {}
                Err(e) => assert_eq!(e.kind(), io::ErrorKind::ConnectionReset),
            }
            if !reply.is_empty() {
                assert_eq!(reply[0], 0x15, "a TLS alert record");
            }
        }
        assert_eq!(*errors.borrow(), vec![io::ErrorKind::InvalidData; 3]);
        // The server still serves TLS.
        let mut tls = connector
            .connect("localhost", TcpStream::connect(addr).unwrap())
            .unwrap();
        tls.write_all(b"still here").unwrap();
        let mut back = [0u8; 10];
        tls.read_exact(&mut back).unwrap();
        assert_eq!(&back, b"still here");
        drop(tls);
        handle.stop(Duration::from_secs(5));
    });
}

/// close_notify ends reads with `Ok(0)`; a peer that closes the connection
/// without it makes the read fail with `UnexpectedEof` (after the data).
#[test]
fn close_notify_versus_abrupt_close() {
    let c = cert();
    let acceptor = TlsAcceptor::new(c.server_config(&[]));
    let connector = TlsConnector::new(c.client_config(&[]));
    run(move || {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        for clean in [true, false] {
            let acceptor = acceptor.clone();
            let l = listener.try_clone().unwrap();
            let server = tasklet::spawn(move || {
                let (s, _) = l.accept().unwrap();
                let mut tls = acceptor.accept(s).unwrap();
                tls.write_all(b"bye").unwrap();
                if clean {
                    tls.shutdown().unwrap();
                }
                // Dropped: the socket closes (without close_notify unless sent).
            });
            let mut tls = connector
                .connect("localhost", TcpStream::connect(addr).unwrap())
                .unwrap();
            server.join().unwrap();
            let mut got = [0u8; 3];
            tls.read_exact(&mut got).unwrap();
            assert_eq!(&got, b"bye");
            let mut buf = [0u8; 8];
            if clean {
                assert_eq!(tls.read(&mut buf).unwrap(), 0);
                assert_eq!(tls.read(&mut buf).unwrap(), 0, "stays at end of stream");
            } else {
                let err = tls.read(&mut buf).unwrap_err();
                assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
            }
        }
    });
}

#[test]
fn untrusted_certificate_and_bad_server_name_fail_cleanly() {
    let c = cert();
    let other = cert();
    let acceptor = TlsAcceptor::new(c.server_config(&[]));
    let wrong_roots = TlsConnector::new(other.client_config(&[]));
    let right_roots = TlsConnector::new(c.client_config(&[]));
    run(move || {
        let handle = echo_server(acceptor);
        let addr = handle.local_addr();
        let err = wrong_roots
            .connect("localhost", TcpStream::connect(addr).unwrap())
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("certificate"), "{err}");
        let err = right_roots
            .connect("example.com", TcpStream::connect(addr).unwrap())
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
        let err = right_roots
            .connect("not a name!", TcpStream::connect(addr).unwrap())
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        handle.stop(Duration::from_secs(5));
    });
}

#[test]
fn pem_loaders_name_the_file_and_the_problem() {
    let dir = std::env::temp_dir().join(format!("tasklet-tls-pem-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let c = cert();
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    let junk_path = dir.join("junk.pem");
    let broken_path = dir.join("broken.pem");
    std::fs::write(&cert_path, &c.cert_pem).unwrap();
    std::fs::write(&key_path, &c.key_pem).unwrap();
    std::fs::write(&junk_path, "hello, not PEM\n").unwrap();
    std::fs::write(&broken_path, "-----BEGIN CERTIFICATE-----\nAAAA\n").unwrap();

    assert_eq!(tls::load_certs(&cert_path).unwrap().len(), 1);
    tls::load_private_key(&key_path).unwrap();
    assert_eq!(tls::load_root_certs(&cert_path).unwrap().len(), 1);
    let cfg = tls::server_config_from_pem(&cert_path, &key_path).unwrap();
    assert!(cfg.alpn_protocols.is_empty());

    let missing = dir.join("missing.pem");
    let e = tls::load_certs(&missing).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::NotFound);
    assert!(e.to_string().contains("missing.pem"), "{e}");

    let e = tls::load_certs(&junk_path).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    assert!(
        e.to_string().contains("junk.pem") && e.to_string().contains("no certificate"),
        "{e}"
    );

    let e = tls::load_certs(&broken_path).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    assert!(
        e.to_string().contains("broken.pem") && e.to_string().contains("PEM"),
        "{e}"
    );

    let e = tls::load_private_key(&cert_path).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    assert!(
        e.to_string().contains("cert.pem") && e.to_string().contains("certificate file"),
        "{e}"
    );

    let e = tls::server_config_from_pem(&key_path, &key_path).unwrap_err();
    assert!(
        e.to_string().contains("key.pem") && e.to_string().contains("no certificate"),
        "{e}"
    );

    // A key that is not the certificate's.
    let other = cert();
    let other_key = dir.join("other-key.pem");
    std::fs::write(&other_key, &other.key_pem).unwrap();
    let e = tls::server_config_from_pem(&cert_path, &other_key).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    assert!(
        e.to_string().contains("cert.pem") && e.to_string().contains("other-key.pem"),
        "{e}"
    );

    std::fs::remove_dir_all(&dir).unwrap();
}

/// A fresh certificate written as `cert.pem` and `key.pem` into a new
/// directory (named after `tag`) for the example binaries' flags.
fn cert_files(
    tag: &str,
) -> (
    std::path::PathBuf,
    Cert,
    std::path::PathBuf,
    std::path::PathBuf,
) {
    let dir = std::env::temp_dir().join(format!("tasklet-tls-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let c = cert();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, &c.cert_pem).unwrap();
    std::fs::write(&key_path, &c.key_pem).unwrap();
    (dir, c, cert_path, key_path)
}

/// `echo_server` and `http_hello` with `--tls-cert`/`--tls-key` serve TLS
/// echo and HTTPS, and stop cleanly on SIGTERM.
#[test]
fn examples_serve_tls() {
    let (dir, c, cert_path, key_path) = cert_files("examples");
    let tls_args = [
        "--addr",
        "127.0.0.1:0",
        "--tls-cert",
        cert_path.to_str().unwrap(),
        "--tls-key",
        key_path.to_str().unwrap(),
    ];
    let (mut echo, echo_addr, echo_log) =
        common::start_example("echo_server", &tls_args, &["TLS echo server listening on "]);
    let (mut http, http_addr, http_log) =
        common::start_example("http_hello", &tls_args, &["listening on https://"]);
    let connector = TlsConnector::new(c.client_config(&[b"http/1.1"]));
    run(move || {
        let tcp = TcpStream::connect(echo_addr.as_str()).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut tls = connector.connect("localhost", tcp).unwrap();
        tls.write_all(b"echo over TLS").unwrap();
        let mut back = [0u8; 13];
        tls.read_exact(&mut back).unwrap();
        assert_eq!(&back, b"echo over TLS");
        tls.shutdown().unwrap();
        let mut rest = Vec::new();
        assert_eq!(
            tls.read_to_end(&mut rest).unwrap(),
            0,
            "close_notify in return"
        );

        let tcp = TcpStream::connect(http_addr.as_str()).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut tls = connector.connect("localhost", tcp).unwrap();
        assert_eq!(tls.alpn_protocol(), Some(&b"http/1.1"[..]));
        tls.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut answer = String::new();
        tls.read_to_string(&mut answer).unwrap();
        assert_eq!(answer.matches("HTTP/1.1 200 OK").count(), 2, "{answer}");
        assert!(answer.ends_with("Hello, World!"), "{answer}");

        // An HTTP/1.0 client offers only "http/1.0" (`curl --http1.0`):
        // served, not refused with a no_application_protocol alert.
        let tcp = TcpStream::connect(http_addr.as_str()).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut tls = TlsConnector::new(c.client_config(&[b"http/1.0"]))
            .connect("localhost", tcp)
            .unwrap();
        assert_eq!(tls.alpn_protocol(), Some(&b"http/1.0"[..]));
        tls.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
        let mut answer = String::new();
        tls.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
        assert!(answer.ends_with("Hello, World!"), "{answer}");
    });
    common::sigterm_and_wait(&mut echo, "echo_server");
    common::sigterm_and_wait(&mut http, "http_hello");
    drop((echo_log.join(), http_log.join()));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `http_hello` bounds a TLS handshake as a whole by its request timeout:
/// a client trickling its hello a byte at a time, each byte well inside
/// the idle timeout, is cut off after `--request-timeout`.
#[test]
fn http_hello_cuts_off_a_trickled_tls_handshake() {
    let (dir, _, cert_path, key_path) = cert_files("trickle");
    let args = [
        "--addr",
        "127.0.0.1:0",
        "--workers",
        "1",
        "--idle-timeout",
        "30",
        "--request-timeout",
        "1",
        "--tls-cert",
        cert_path.to_str().unwrap(),
        "--tls-key",
        key_path.to_str().unwrap(),
    ];
    let (mut http, addr, log) =
        common::start_example("http_hello", &args, &["listening on https://"]);
    let addr = addr.trim_start_matches("https://").to_owned();
    let mut s = std::net::TcpStream::connect(addr.as_str()).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let start = Instant::now();
    // The first bytes of a TLS record holding a ClientHello, then padding
    // of the announced length, one byte every 200 ms.
    let hello = [
        0x16u8, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
    ];
    let closed = hello.iter().chain(std::iter::repeat(&0u8)).any(|b| {
        if s.write_all(&[*b]).is_err() {
            return true;
        }
        let mut buf = [0u8; 64];
        match s.read(&mut buf) {
            Ok(_) => true, // an alert or EOF: the server gave up
            Err(e)
                if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::TimedOut =>
            {
                assert!(
                    start.elapsed() < Duration::from_secs(15),
                    "still open after 15 s"
                );
                false
            }
            Err(_) => true,
        }
    });
    assert!(closed);
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(10),
        "closed after {took:?}, not about 1 s"
    );
    common::sigterm_and_wait(&mut http, "http_hello");
    drop(log.join());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Streams move between threads like the sockets under them; acceptors and
/// connectors are shared across threads.
#[test]
fn tls_types_are_send_and_acceptors_sync() {
    fn send<T: Send>() {}
    fn sync<T: Send + Sync>() {}
    send::<TlsStream<TcpStream>>();
    send::<TlsStream<UnixStream>>();
    sync::<TlsAcceptor>();
    sync::<TlsConnector>();
}

/// Outside a dispatcher the TLS types block the thread, like the sockets:
/// a plain thread connects over std's and netio's `TcpStream`.
#[test]
fn tls_on_a_plain_thread() {
    let c = cert();
    let acceptor = TlsAcceptor::new(c.server_config(&[]));
    let connector =
        TlsConnector::new(c.client_config(&[])).handshake_timeout(Duration::from_secs(30));
    let (addr_tx, addr_rx) = std::sync::mpsc::channel::<SocketAddr>();
    let client = std::thread::spawn(move || {
        let addr = addr_rx.recv().unwrap();
        let std_tcp = std::net::TcpStream::connect(addr).unwrap();
        std_tcp
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let netio_tcp = TcpStream::connect(addr).unwrap();
        netio_tcp
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut a = connector.connect("localhost", std_tcp).unwrap();
        let mut b = connector.connect("localhost", netio_tcp).unwrap();
        a.write_all(b"std").unwrap();
        b.write_all(b"netio").unwrap();
        let (mut x, mut y) = ([0u8; 3], [0u8; 5]);
        a.read_exact(&mut x).unwrap();
        b.read_exact(&mut y).unwrap();
        assert_eq!((&x, &y), (b"std", b"netio"));
    });
    run(move || {
        let handle = echo_server(acceptor);
        addr_tx.send(handle.local_addr()).unwrap();
        tasklet::unblock(move || client.join()).expect("client thread failed");
        handle.stop(Duration::from_millis(100));
    });
}
