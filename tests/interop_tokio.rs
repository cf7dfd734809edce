//! The `tokio` and `futures-io` features: tokio futures under
//! `tasklet::block_on` without a user-made runtime, and netio sockets as
//! async streams.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use tasklet::netio::{AsyncStream, TcpListener, TcpStream, UnixStream};

const LIMIT: Duration = Duration::from_secs(30);

struct DropProbe(Arc<Mutex<Option<thread::ThreadId>>>);

impl Drop for DropProbe {
    fn drop(&mut self) {
        *self.0.lock().unwrap() = Some(thread::current().id());
    }
}

#[test]
fn thousand_tokio_sleeps_overlap_while_a_ticker_keeps_its_schedule() {
    tasklet::dispatch(|| {
        // Start the background runtime before timing.
        tasklet::block_on(tokio::time::sleep(Duration::from_millis(1)));
        let ticker = tasklet::spawn(|| {
            let mut gaps = Vec::new();
            let mut last = Instant::now();
            for _ in 0..10 {
                tasklet::sleep(Duration::from_millis(10));
                gaps.push(last.elapsed());
                last = Instant::now();
            }
            gaps
        });
        let t0 = Instant::now();
        let sleepers: Vec<_> = (0..1000)
            .map(|_| {
                tasklet::spawn(|| {
                    tasklet::block_on(tokio::time::sleep(Duration::from_millis(50)));
                    Instant::now()
                })
            })
            .collect();
        let ends: Vec<Instant> = tasklet::joinall(sleepers)
            .into_iter()
            .map(|r| r.unwrap())
            .collect();
        let took = ends.iter().max().unwrap().duration_since(t0);
        // ~50 ms; sequential would be 50 s. Generous for a loaded machine.
        assert!(took >= Duration::from_millis(50), "{took:?}");
        assert!(took < Duration::from_secs(5), "{took:?}");
        let gaps = ticker.join().unwrap();
        // The ticker was never held up for long by the waiting tasklets.
        let worst = gaps.iter().max().unwrap();
        assert!(*worst < Duration::from_secs(1), "{gaps:?}");
    });
}

#[test]
fn tokio_spawn_and_join_from_a_tasklet() {
    tasklet::dispatch(|| {
        let v = tasklet::block_on(async {
            let a = tokio::spawn(async {
                tokio::time::sleep(Duration::from_millis(5)).await;
                20
            });
            let b = tokio::task::spawn_blocking(|| 22);
            a.await.unwrap() + b.await.unwrap()
        });
        assert_eq!(v, 42);
        // Outside a dispatcher too.
        let handle = tasklet::tokio::handle();
        assert_eq!(tasklet::block_on(handle.spawn(async { 1 })).unwrap(), 1);
    });
    assert_eq!(
        tasklet::block_on(async { tokio::spawn(async { 2 }).await.unwrap() }),
        2
    );
}

#[test]
fn tokio_client_talks_to_a_netio_server_in_the_same_dispatcher() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tasklet::dispatch(|| {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tasklet::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 5];
            for _ in 0..100 {
                s.read_exact(&mut buf).unwrap();
                buf.reverse();
                s.write_all(&buf).unwrap();
            }
        });
        let r = tasklet::timeout(LIMIT, || {
            tasklet::block_on(async move {
                let mut c = tokio::net::TcpStream::connect(addr).await?;
                let mut reply = [0u8; 5];
                for _ in 0..100 {
                    c.write_all(b"hello").await?;
                    c.read_exact(&mut reply).await?;
                    assert_eq!(&reply, b"olleh");
                }
                std::io::Result::Ok(())
            })
        });
        r.expect("no deadlock").unwrap();
        server.join().unwrap();
    });
}

#[test]
fn kill_and_timeout_drop_a_tokio_future_in_the_tasklet() {
    tasklet::dispatch(|| {
        let dropped = Arc::new(Mutex::new(None));
        let probe = DropProbe(dropped.clone());
        let h = tasklet::spawn(move || {
            tasklet::block_on(async move {
                let _probe = probe;
                tokio::time::sleep(Duration::from_secs(3600)).await;
            })
        });
        tasklet::sleep(Duration::from_millis(5));
        h.kill();
        assert!(h.join().is_err());
        assert_eq!(*dropped.lock().unwrap(), Some(thread::current().id()));

        let dropped = Arc::new(Mutex::new(None));
        let probe = DropProbe(dropped.clone());
        let r = tasklet::timeout(Duration::from_millis(20), move || {
            tasklet::block_on(async move {
                let _probe = probe;
                let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                let _ = l.accept().await; // nobody connects
            })
        });
        assert!(r.is_err());
        assert_eq!(*dropped.lock().unwrap(), Some(thread::current().id()));
    });
}

#[test]
fn panic_in_a_tokio_future_reaches_join() {
    tasklet::dispatch(|| {
        let h = tasklet::spawn(|| {
            tasklet::block_on(async {
                tokio::time::sleep(Duration::from_millis(1)).await;
                panic!("tokio-side boom")
            })
        });
        let e = h.join().unwrap_err();
        assert!(e.is_panic());
    });
}

/// A minimal HTTP/1.1 server on netio: answers every request on a
/// connection with `hello <path>`.
fn netio_http_server(listener: TcpListener) {
    loop {
        let Ok((s, _)) = listener.accept() else {
            return;
        };
        tasklet::spawn(move || {
            let mut r = std::io::BufReader::new(&s);
            loop {
                let mut head = Vec::new();
                loop {
                    let mut line = String::new();
                    match std::io::BufRead::read_line(&mut r, &mut line) {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                    if line == "\r\n" {
                        break;
                    }
                    head.push(line);
                }
                let path = head[0].split(' ').nth(1).unwrap_or("/").to_string();
                let body = format!("hello {path}");
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                if (&s).write_all(resp.as_bytes()).is_err() {
                    return;
                }
            }
        });
    }
}

#[test]
fn hyper_client_over_tokio_sockets_from_100_tasklets() {
    tasklet::dispatch(|| {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tasklet::spawn(move || netio_http_server(listener));
        let clients: Vec<_> = (0..100)
            .map(|i| {
                tasklet::spawn(move || {
                    tasklet::block_on(async move {
                        let s = tokio::net::TcpStream::connect(addr).await.unwrap();
                        let io = hyper_util::rt::TokioIo::new(s);
                        let (mut send, conn) =
                            hyper::client::conn::http1::handshake(io).await.unwrap();
                        // The connection task runs on the background runtime.
                        tokio::spawn(conn);
                        let mut bodies = Vec::new();
                        for j in 0..3 {
                            use http_body_util::{BodyExt, Empty};
                            let req = hyper::Request::get(format!("/{i}/{j}"))
                                .header("host", "localhost")
                                .body(Empty::<hyper::body::Bytes>::new())
                                .unwrap();
                            // The connection task (on tokio's worker) must have
                            // finished the previous exchange.
                            send.ready().await.unwrap();
                            let resp = send.send_request(req).await.unwrap();
                            assert_eq!(resp.status(), 200);
                            let body = resp.into_body().collect().await.unwrap().to_bytes();
                            bodies.push(String::from_utf8(body.to_vec()).unwrap());
                        }
                        bodies
                    })
                })
            })
            .collect();
        let r = tasklet::timeout(LIMIT, || tasklet::joinall(clients)).expect("in time");
        for (i, b) in r.into_iter().enumerate() {
            let b = b.unwrap();
            assert_eq!(
                b,
                (0..3)
                    .map(|j| format!("hello /{i}/{j}"))
                    .collect::<Vec<_>>()
            );
        }
        server.kill();
    });
}

#[test]
fn hyper_client_over_netio_sockets_needs_no_tokio_reactor() {
    // hyper's client over tasklet sockets through the tokio I/O traits: the
    // socket readiness comes from the dispatcher's own hub.
    tasklet::dispatch(|| {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tasklet::spawn(move || netio_http_server(listener));
        let clients: Vec<_> = (0..20)
            .map(|i| {
                tasklet::spawn(move || {
                    let s = TcpStream::connect(addr).unwrap();
                    let io = hyper_util::rt::TokioIo::new(AsyncStream::new(s));
                    tasklet_runtime_free_get(io, i)
                })
            })
            .collect();
        let r = tasklet::timeout(LIMIT, || tasklet::joinall(clients)).expect("in time");
        for (i, b) in r.into_iter().enumerate() {
            assert_eq!(b.unwrap(), format!("hello /netio/{i}"));
        }
        server.kill();
    });
}

/// One GET over `io`, driving hyper's connection in the same future (the
/// netio socket must stay on this dispatcher, so it cannot be spawned on
/// tokio's worker).
fn tasklet_runtime_free_get(
    io: hyper_util::rt::TokioIo<AsyncStream<TcpStream>>,
    i: usize,
) -> String {
    use http_body_util::{BodyExt, Empty};
    tasklet::block_on(async move {
        let (mut send, conn) =
            hyper::client::conn::http1::handshake::<_, Empty<hyper::body::Bytes>>(io)
                .await
                .unwrap();
        let req = hyper::Request::get(format!("/netio/{i}"))
            .header("host", "localhost")
            .body(Empty::new())
            .unwrap();
        let work = async {
            let resp = send.send_request(req).await.unwrap();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            String::from_utf8(body.to_vec()).unwrap()
        };
        let conn = async {
            let _ = conn.await;
            std::future::pending::<()>().await;
        };
        futures::pin_mut!(work, conn);
        match futures::future::select(work, conn).await {
            futures::future::Either::Left((body, _)) => body,
            futures::future::Either::Right(((), _)) => unreachable!(),
        }
    })
}

#[test]
fn netio_streams_as_futures_io() {
    use futures::io::{AsyncReadExt, AsyncWriteExt};
    tasklet::dispatch(|| {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        // Blocking-style peer in another tasklet of the same dispatcher.
        let peer = tasklet::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut all = Vec::new();
            s.read_to_end(&mut all).unwrap();
            s.write_all(&all).unwrap();
            all.len()
        });
        let mut s = AsyncStream::new(TcpStream::connect(addr).unwrap());
        // Large enough to fill the socket buffers: writes return Pending.
        let data: Vec<u8> = (0..4 << 20).map(|i| (i % 251) as u8).collect();
        let echoed = tasklet::timeout(LIMIT, || {
            tasklet::block_on(async {
                s.write_all(&data).await?;
                s.close().await?;
                let mut back = Vec::new();
                s.read_to_end(&mut back).await?;
                std::io::Result::Ok(back)
            })
        })
        .expect("in time")
        .unwrap();
        assert_eq!(peer.join().unwrap(), data.len());
        assert!(echoed == data);

        let (a, b) = UnixStream::pair().unwrap();
        let reader = tasklet::spawn(move || {
            let mut b = AsyncStream::new(b);
            tasklet::block_on(async move {
                let mut buf = [0u8; 4];
                b.read_exact(&mut buf).await.unwrap();
                buf
            })
        });
        tasklet::sleep(Duration::from_millis(5));
        tasklet::block_on(async { AsyncStream::new(&a).write_all(b"unix").await }).unwrap();
        assert_eq!(&reader.join().unwrap(), b"unix");
    });
}

#[test]
fn netio_streams_as_tokio_io() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tasklet::dispatch(|| {
        let (a, b) = UnixStream::pair().unwrap();
        let echo = tasklet::spawn(move || {
            let mut b = AsyncStream::new(b);
            tasklet::block_on(async move {
                let (mut r, mut w) = tokio::io::split(&mut b);
                tokio::io::copy(&mut r, &mut w).await
            })
        });
        let mut a = AsyncStream::new(a);
        let got = tasklet::timeout(LIMIT, || {
            tasklet::block_on(async {
                let data = vec![7u8; 1 << 20];
                let mut back = vec![0u8; data.len()];
                let (mut r, mut w) = tokio::io::split(&mut a);
                let write = async {
                    w.write_all(&data).await?;
                    w.shutdown().await
                };
                let (wr, rr) = tokio::join!(write, r.read_exact(&mut back));
                wr?;
                rr?;
                std::io::Result::Ok(back == data)
            })
        })
        .expect("in time")
        .unwrap();
        assert!(got);
        assert_eq!(echo.join().unwrap().unwrap(), 1 << 20);
    });
}

#[test]
fn polling_a_netio_stream_outside_a_dispatcher_is_an_error() {
    use futures::io::AsyncReadExt;
    let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
    let mut a = AsyncStream::new(UnixStream::from(a));
    let mut buf = [0u8; 1];
    let e = tasklet::block_on(a.read(&mut buf)).unwrap_err();
    assert!(e.to_string().contains("dispatch"), "{e}");
}

#[test]
fn async_interop_example_answers_through_the_async_back_end() {
    let (mut server, addr, drain) = common::start_example(
        "async_interop",
        &["--addr", "127.0.0.1:0"],
        &["listening on "],
    );
    let clients: Vec<_> = (0..20)
        .map(|i| {
            let addr = addr.clone();
            thread::spawn(move || {
                let s = std::net::TcpStream::connect(&addr).unwrap();
                s.set_read_timeout(Some(LIMIT)).unwrap();
                let mut r = BufReader::new(s.try_clone().unwrap());
                for j in 0..5 {
                    (&s).write_all(
                        format!("GET /c{i}/r{j} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
                    )
                    .unwrap();
                    let mut status = String::new();
                    r.read_line(&mut status).unwrap();
                    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
                    let mut len = 0;
                    loop {
                        let mut h = String::new();
                        r.read_line(&mut h).unwrap();
                        if h == "\r\n" {
                            break;
                        }
                        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap();
                        }
                    }
                    let mut body = vec![0; len];
                    r.read_exact(&mut body).unwrap();
                    let body = String::from_utf8(body).unwrap();
                    assert!(
                        body.starts_with(&format!("back end saw /c{i}/r{j} (")),
                        "{body}"
                    );
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    common::sigterm_and_wait(&mut server, "async_interop");
    let log = drain.join().unwrap();
    assert!(!log.contains("panicked"), "{log}");
}
