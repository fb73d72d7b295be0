//! `/metrics`, `/healthz` and `/readyz` over a minimal HTTP/1.1 responder: three GET routes
//! for probes and Prometheus do not need a web framework.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// What the endpoints report.
pub struct Probes {
    /// Set once the controller runs (or stands by as a healthy non-leader).
    pub ready: AtomicBool,
    pub metrics: Box<dyn Fn() -> String + Send + Sync>,
}

/// Binds the address now, so a taken port fails the start instead of leaving probes unanswered.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

pub async fn serve(listener: TcpListener, probes: Arc<Probes>) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "serving /metrics, /healthz and /readyz");
    }
    loop {
        let (mut socket, _) = listener.accept().await?;
        let probes = Arc::clone(&probes);
        tokio::spawn(async move {
            let mut buffer = vec![0u8; 4096];
            let Ok(Ok(n)) =
                tokio::time::timeout(std::time::Duration::from_secs(5), socket.read(&mut buffer))
                    .await
            else {
                return;
            };
            let request = String::from_utf8_lossy(&buffer[..n]);
            let path = request
                .lines()
                .next()
                .and_then(|line| line.split_whitespace().nth(1))
                .unwrap_or("/");
            let (status, content_type, body) = match path.split('?').next().unwrap_or(path) {
                "/metrics" => ("200 OK", "text/plain; version=0.0.4", (probes.metrics)()),
                "/healthz" => ("200 OK", "text/plain", "ok\n".to_string()),
                "/readyz" if probes.ready.load(Ordering::Relaxed) => {
                    ("200 OK", "text/plain", "ok\n".to_string())
                }
                "/readyz" => (
                    "503 Service Unavailable",
                    "text/plain",
                    "starting\n".to_string(),
                ),
                _ => ("404 Not Found", "text/plain", "not found\n".to_string()),
            };
            let response = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = socket.write_all(response.as_bytes()).await;
            let _ = socket.shutdown().await;
        });
    }
}
