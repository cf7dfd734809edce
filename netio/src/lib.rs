// The overview is shared with the facade, which renders it at `tasklet::netio`.
#![doc = include_str!("overview.md")]
#![deny(missing_docs, missing_debug_implementations, unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

#[macro_use]
mod sock;
mod addr;
#[cfg(any(feature = "futures-io", feature = "tokio"))]
mod async_io;
#[cfg(feature = "codec")]
pub mod codec;
pub mod console;
pub mod process;
#[cfg(feature = "codec")]
pub mod protocol;
mod server;
mod sys;
mod tcp;
#[cfg(feature = "tls")]
pub mod tls;
mod udp;
mod unix;
mod workers;

pub use addr::{lookup_host, ToSocketAddrs};
#[cfg(any(feature = "futures-io", feature = "tokio"))]
pub use async_io::{AsyncStream, StreamSocket};
pub use server::{
    DatagramServer, DatagramSocket, HandlerResult, Listener, ServerHandle, ServerStopper,
    StreamServer,
};
pub use tcp::{Incoming, TcpListener, TcpStream};
pub use udp::UdpSocket;
pub use unix::{UnixDatagram, UnixIncoming, UnixListener, UnixStream};
pub use workers::WorkerListeners;
