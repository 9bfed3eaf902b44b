//! `synap serve`: open the node, serve HTTP, form or join the cluster, and
//! shut down cleanly on SIGINT/SIGTERM.

use crate::api;
use crate::api::auth::Auth;
use crate::node::{cluster, NodeConfig};

/// Why the server stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The node could not start.
    #[error(transparent)]
    Start(#[from] cluster::StartError),
    /// The listen address could not be bound or serving failed.
    #[error("cannot serve on {addr}: {source}")]
    Listen {
        /// The address.
        addr: std::net::SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Runs a node, with `auth` guarding its public API, until it is told to
/// stop.
pub async fn serve(config: NodeConfig, auth: Auth) -> Result<(), ServeError> {
    let addr = config.listen;
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|source| ServeError::Listen { addr, source })?;
    let node = cluster::open(config).await?;
    tracing::info!(id = node.id(), %addr, advertise = %node.config.advertise, "serving");
    tokio::spawn(cluster::bootstrap(node.clone()));
    if auth.is_open() {
        tracing::warn!("no API keys configured: the API is open to anyone who can reach {addr}");
    }
    let app = api::router(node.clone(), auth);
    let hub = node.hub.clone();
    let stopping = async move {
        shutdown_signal().await;
        // Subscribers hold their connections open forever; tell them to go
        // (they resume elsewhere) so that the graceful shutdown can finish.
        hub.shut_down();
    };
    let served = axum::serve(listener, app).with_graceful_shutdown(stopping).await;
    if let Err(e) = node.raft.shutdown().await {
        tracing::warn!("raft shutdown: {e}");
    }
    // Raft has stopped, so nothing applies any more: a clean stop leaves a
    // durable state and the next start re-applies nothing.
    let store = node.store.clone();
    match tokio::task::spawn_blocking(move || store.checkpoint()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!("final checkpoint: {e}"),
        Err(e) => tracing::warn!("final checkpoint: {e}"),
    }
    served.map_err(|source| ServeError::Listen { addr, source })
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
