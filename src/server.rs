//! `synap serve`: open the node, serve HTTP, form or join the cluster, and
//! shut down cleanly on SIGINT/SIGTERM.

use std::sync::Arc;

use axum::serve::ListenerExt;

use crate::api;
use crate::api::auth::Auth;
use crate::node::{cluster, NodeConfig};
use crate::peer::PeerClient;
use crate::tls::listener::{Peer, ServerTls, TlsListener};

/// Why the server stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The node could not start.
    #[error(transparent)]
    Start(#[from] cluster::StartError),
    /// Raft stopped on a fatal error (a storage failure such as a full
    /// disk): the node exits so that its supervisor restarts it once the
    /// cause is fixed, instead of serving on as a zombie.
    #[error("{0}; exiting")]
    Fatal(String),
    /// The TLS certificate, key or CA files could not be used.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// The listen address could not be bound or serving failed.
    #[error("cannot serve on {addr}: {source}")]
    Listen {
        /// The address.
        addr: std::net::SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// How long a stopping node waits for its final checkpoint.
const CHECKPOINT_GRACE: std::time::Duration = std::time::Duration::from_secs(30);

/// Runs a node, with `auth` guarding its public API, until it is told to
/// stop.
pub async fn serve(config: NodeConfig, auth: Auth) -> Result<(), ServeError> {
    let addr = config.listen;
    // Unusable certificates stop the start before anything is opened.
    let tls = config.tls.clone().map(ServerTls::load).transpose()?.map(Arc::new);
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|source| ServeError::Listen { addr, source })?;
    let node = cluster::open(config).await?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(id = node.id(), %addr, scheme, advertise = %node.config.advertise, "serving");
    tokio::spawn(cluster::bootstrap(node.clone()));
    if auth.is_open() {
        tracing::warn!("no API keys configured: the API is open to anyone who can reach {addr}");
    }
    let auth = Arc::new(auth);
    let reloads = Reloads { auth: auth.clone(), tls: tls.clone().map(|tls| (tls, node.peers.clone())) };
    tokio::spawn(reload_on_hangup(reloads));
    let app = api::router(node.clone(), auth);
    let hub = node.hub.clone();
    let mut metrics = node.raft.metrics();
    let watched = node.clone();
    let stopping = async move {
        tokio::select! {
            _ = shutdown_signal() => {}
            // A fatal storage error stops Raft for good on this node.
            _ = metrics.wait_for(|m| m.running_state.is_err()) => {}
            _ = watched.stop_requested() => {}
        }
        // Subscribers hold their connections open forever; tell them to go
        // (they resume elsewhere) so that the graceful shutdown can finish.
        hub.shut_down();
    };
    let served = match tls {
        None => {
            // Without TCP_NODELAY a small write that follows one the peer
            // has not acknowledged yet (the next WebSocket frame to a
            // subscriber, a response on a kept-alive connection) waits for
            // the peer's delayed acknowledgement: up to 40 ms on Linux.
            let listener = listener.tap_io(|stream| {
                if let Err(e) = stream.set_nodelay(true) {
                    tracing::debug!("TCP_NODELAY on an accepted connection: {e}");
                }
            });
            axum::serve(listener, app).with_graceful_shutdown(stopping).await
        }
        Some(tls) => {
            let listener = TlsListener::new(listener, tls).map_err(|source| ServeError::Listen { addr, source })?;
            let app = app.into_make_service_with_connect_info::<Peer>();
            axum::serve(listener, app).with_graceful_shutdown(stopping).await
        }
    };
    let fatal = node.raft.metrics().borrow().running_state.clone().err().map(|f| format!("raft stopped: {f}"));
    let fatal = fatal.or_else(|| node.stop_reason());
    if let Err(e) = node.raft.shutdown().await {
        tracing::warn!("raft shutdown: {e}");
    }
    if fatal.is_none() {
        // Raft has stopped, so nothing applies any more: a clean stop leaves
        // a durable state and the next start re-applies nothing. (After a
        // storage error sled may never finish a flush; the log replays on
        // the next start instead.)
        let store = node.store.clone();
        let checkpoint = tokio::task::spawn_blocking(move || store.checkpoint());
        match tokio::time::timeout(CHECKPOINT_GRACE, checkpoint).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!("final checkpoint: {e}"),
            Ok(Err(e)) => tracing::warn!("final checkpoint: {e}"),
            Err(_) => {
                tracing::warn!("final checkpoint: not done after {CHECKPOINT_GRACE:?}; the log replays on restart")
            }
        }
    }
    if let Some(fatal) = fatal {
        tracing::error!("{fatal}; exiting");
        return Err(ServeError::Fatal(fatal));
    }
    served.map_err(|source| ServeError::Listen { addr, source })
}

/// What a SIGHUP reads again.
struct Reloads {
    auth: Arc<Auth>,
    /// The server's TLS set-up and the client that talks TLS to peers.
    tls: Option<(Arc<ServerTls>, PeerClient)>,
}

impl Reloads {
    /// Reads the API keys and the TLS files again; whatever does not load
    /// stays as it was (and says why in the log).
    fn reload(&self) {
        match self.auth.reload() {
            Ok(keys) => tracing::info!(keys, "API keys reloaded"),
            Err(e) => tracing::error!("API keys not reloaded: {e}"),
        }
        let Some((server, peers)) = &self.tls else { return };
        // Both sides are read before either is swapped.
        let reloaded = server.files().peer_client_config().and_then(|client| {
            server.reload()?;
            peers.set_tls(&client)
        });
        match reloaded {
            Ok(()) => tracing::info!("TLS certificates reloaded"),
            Err(e) => tracing::error!("TLS certificates not reloaded: {e}"),
        }
    }
}

/// Reads keys and certificates again on every SIGHUP.
async fn reload_on_hangup(reloads: Reloads) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP: keys and certificates will not be reloaded");
            return;
        };
        while hangups.recv().await.is_some() {
            reloads.reload();
        }
    }
    #[cfg(not(unix))]
    let _ = reloads;
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(term) => term,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down");
}
