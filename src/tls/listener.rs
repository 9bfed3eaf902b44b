//! The server half: a listener that hands axum TLS connections, and the
//! set-up it uses, swapped whole when the files are read again.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::IncomingStream;
use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use super::{server_config, TlsError, TlsFiles};

/// A client that has not finished its handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections whose handshake is done and that axum has not taken yet.
const READY_CONNECTIONS: usize = 256;

/// This node's server-side TLS: the files, and the set-up read from them
/// last. New connections use the newest; open ones keep theirs.
#[derive(Debug)]
pub struct ServerTls {
    files: TlsFiles,
    current: RwLock<Arc<ServerConfig>>,
}

impl ServerTls {
    /// Reads the files; fails if any is missing or unusable.
    pub fn load(files: TlsFiles) -> Result<Self, TlsError> {
        let config = server_config(&files)?;
        Ok(Self { files, current: RwLock::new(Arc::new(config)) })
    }

    /// The files this set-up is read from.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// Reads the files again; on any error the set-up stays as it was.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = Arc::new(server_config(&self.files)?);
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = config;
        Ok(())
    }

    fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.current.read().unwrap_or_else(|p| p.into_inner()).clone())
    }
}

/// Who is at the other end of a TLS connection, for the handlers
/// (`ConnectInfo<Peer>`).
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    /// The remote address.
    pub addr: SocketAddr,
    /// Whether it presented a client certificate that the client CA
    /// verified (always false without `--tls-client-ca`).
    pub certified: bool,
}

/// TLS connections for `axum::serve`. Handshakes run in tasks of their
/// own, so a slow or silent client never holds up the next one.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, Peer)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Accepts on `tcp` and completes handshakes with `tls`'s newest
    /// set-up, until the listener is dropped.
    pub fn new(tcp: TcpListener, tls: Arc<ServerTls>) -> std::io::Result<Self> {
        let local = tcp.local_addr()?;
        let (handed, ready) = mpsc::channel(READY_CONNECTIONS);
        tokio::spawn(accept_loop(tcp, tls, handed));
        Ok(Self { ready, local })
    }
}

async fn accept_loop(tcp: TcpListener, tls: Arc<ServerTls>, handed: mpsc::Sender<(TlsStream<TcpStream>, Peer)>) {
    loop {
        let accepted = tokio::select! {
            accepted = tcp.accept() => accepted,
            () = handed.closed() => return,
        };
        let (stream, addr) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors, mostly: wait for some to close
                // rather than spin.
                tracing::warn!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let acceptor = tls.acceptor();
        let handed = handed.clone();
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => {
                    let certified = stream.get_ref().1.peer_certificates().is_some_and(|c| !c.is_empty());
                    let _ = handed.send((stream, Peer { addr, certified })).await;
                }
                Ok(Err(e)) => tracing::debug!(%addr, "TLS handshake refused: {e}"),
                Err(_) => tracing::debug!(%addr, "TLS handshake not done within {HANDSHAKE_TIMEOUT:?}"),
            }
        });
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = Peer;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(connection) => connection,
            // The accept loop ends only when this receiver is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(Peer { addr: self.local, certified: false })
    }
}

impl Connected<IncomingStream<'_, TlsListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Self {
        *stream.remote_addr()
    }
}
