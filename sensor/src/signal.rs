//! Process signals shared by every long-running subcommand (`listen`, `relay`, `punch`).

use tokio::sync::watch;

/// Returns on the first SIGINT or SIGTERM (logged). Without a SIGTERM handler (not expected on
/// Linux) only SIGINT ends it.
pub async fn wait_for_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let terminated = async {
        match term.as_mut() {
            Some(s) => {
                s.recv().await;
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
        _ = terminated => tracing::info!("SIGTERM received"),
    }
}

/// A watch that turns true on SIGTERM or SIGINT. The handlers are installed before this returns,
/// so a signal from then on never kills the process.
pub fn stop_on_signal() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).ok();
    tokio::spawn(async move {
        tokio::select! {
            _ = recv(term.as_mut()) => tracing::info!("SIGTERM received"),
            _ = recv(int.as_mut()) => tracing::info!("SIGINT received"),
        }
        let _ = tx.send(true);
    });
    rx
}

async fn recv(signal: Option<&mut tokio::signal::unix::Signal>) {
    match signal {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}
