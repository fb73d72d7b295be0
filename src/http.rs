//! `/metrics`, `/healthz` and `/readyz`, served over HTTP/1.1 by hyper. Any method and any
//! query string is accepted: probes and scrapers only GET, and nothing here changes state.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{ACCEPT, CONTENT_TYPE, HeaderValue, VARY};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::metrics::Exposition;

/// How long a connection may take to send a request's head before it is dropped.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// What the endpoints report.
pub struct Probes {
    pub readiness: ReadinessCell,
    pub metrics: Box<dyn Fn(Exposition) -> String + Send + Sync>,
}

/// What `/readyz` answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Readiness {
    /// Not yet listed what it watches: 503.
    Starting,
    /// Runs with a working watch (or stands by as a healthy non-leader): 200.
    Ready,
    /// Its watch failed and has not delivered since (the API server unreachable, a watch
    /// refused or broken): 503 until it recovers.
    WatchFailing,
}

/// A [`Readiness`] shared between the controller, which sets it, and the server.
#[derive(Debug, Default)]
pub struct ReadinessCell(AtomicU8);

impl ReadinessCell {
    pub fn set(&self, readiness: Readiness) {
        let value = match readiness {
            Readiness::Starting => 0,
            Readiness::Ready => 1,
            Readiness::WatchFailing => 2,
        };
        self.0.store(value, Ordering::Relaxed);
    }

    pub fn get(&self) -> Readiness {
        match self.0.load(Ordering::Relaxed) {
            1 => Readiness::Ready,
            2 => Readiness::WatchFailing,
            _ => Readiness::Starting,
        }
    }
}

/// Binds the address now, so a taken port fails the start instead of leaving probes unanswered.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Answers until the listener fails or the task is aborted.
pub async fn serve(listener: TcpListener, probes: Arc<Probes>) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "serving /metrics, /healthz and /readyz");
    }
    loop {
        let (socket, _) = listener.accept().await?;
        let probes = Arc::clone(&probes);
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let response = respond(&probes, &request);
                async move { Ok::<_, Infallible>(response) }
            });
            let _ = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(socket), service)
                .await;
        });
    }
}

fn respond<B>(probes: &Probes, request: &Request<B>) -> Response<Full<Bytes>> {
    match request.uri().path() {
        "/metrics" => {
            let accept = request.headers().get(ACCEPT).and_then(|v| v.to_str().ok());
            let exposition = negotiate(accept);
            let mut response = text(
                StatusCode::OK,
                exposition.content_type(),
                (probes.metrics)(exposition),
            );
            response
                .headers_mut()
                .insert(VARY, HeaderValue::from_static("accept"));
            response
        }
        "/healthz" => text(StatusCode::OK, "text/plain", "ok\n"),
        "/readyz" => match probes.readiness.get() {
            Readiness::Ready => text(StatusCode::OK, "text/plain", "ok\n"),
            Readiness::Starting => {
                text(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "starting\n")
            }
            Readiness::WatchFailing => text(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                "the controller cannot watch its objects\n",
            ),
        },
        _ => text(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
    }
}

fn text(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// OpenMetrics unless the `Accept` header prefers the Prometheus text format (`text/plain`)
/// to it: no header, `*/*`, or a header naming neither format get OpenMetrics, which every
/// Prometheus since 2.5 asks for first.
fn negotiate(accept: Option<&str>) -> Exposition {
    let Some(accept) = accept else {
        return Exposition::OpenMetrics;
    };
    // The best quality each format is accepted with; 0 when not at all.
    let (mut openmetrics, mut prometheus_text) = (0.0_f32, 0.0_f32);
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let media_type = parts.next().unwrap_or_default().to_ascii_lowercase();
        let quality = parts
            .filter_map(|p| p.strip_prefix("q="))
            .find_map(|q| q.parse::<f32>().ok())
            .unwrap_or(1.0);
        let raise = |best: &mut f32| *best = best.max(quality);
        match media_type.as_str() {
            "application/openmetrics-text" | "application/*" => raise(&mut openmetrics),
            "text/plain" | "text/*" => raise(&mut prometheus_text),
            "*/*" => {
                raise(&mut openmetrics);
                raise(&mut prometheus_text);
            }
            _ => {}
        }
    }
    if prometheus_text > openmetrics {
        Exposition::PrometheusText
    } else {
        Exposition::OpenMetrics
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

    #[test]
    fn openmetrics_unless_plain_text_is_preferred() {
        assert_eq!(negotiate(None), Exposition::OpenMetrics);
        assert_eq!(negotiate(Some("*/*")), Exposition::OpenMetrics);
        assert_eq!(negotiate(Some(PROMETHEUS_ACCEPT)), Exposition::OpenMetrics);
        assert_eq!(negotiate(Some("application/json")), Exposition::OpenMetrics);
        assert_eq!(
            negotiate(Some("text/plain;version=0.0.4")),
            Exposition::PrometheusText
        );
        assert_eq!(
            negotiate(Some("text/plain;version=0.0.4;q=1,*/*;q=0.1")),
            Exposition::PrometheusText
        );
        assert_eq!(
            negotiate(Some("application/openmetrics-text;q=0, text/plain")),
            Exposition::PrometheusText
        );
        assert_eq!(
            negotiate(Some("text/plain;q=0.5, application/openmetrics-text")),
            Exposition::OpenMetrics
        );
    }

    struct Served {
        addr: SocketAddr,
        probes: Arc<Probes>,
        server: tokio::task::JoinHandle<std::io::Result<()>>,
    }

    impl Drop for Served {
        fn drop(&mut self) {
            self.server.abort();
        }
    }

    async fn serve_test_probes() -> Served {
        let listener = bind("127.0.0.1:0".parse().unwrap())
            .await
            .expect("a free port");
        let addr = listener.local_addr().expect("bound");
        let probes = Arc::new(Probes {
            readiness: ReadinessCell::default(),
            metrics: Box::new(|exposition| format!("metrics as {exposition:?}\n")),
        });
        let server = tokio::spawn(serve(listener, Arc::clone(&probes)));
        Served {
            addr,
            probes,
            server,
        }
    }

    /// One request on its own connection, the raw response back (the server closes once the
    /// client asked it to).
    async fn get(addr: SocketAddr, path: &str, headers: &str) -> String {
        let mut socket = tokio::net::TcpStream::connect(addr)
            .await
            .expect("connects");
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n{headers}\r\n");
        socket
            .write_all(request.as_bytes())
            .await
            .expect("request sent");
        let mut response = String::new();
        tokio::time::timeout(Duration::from_secs(5), socket.read_to_string(&mut response))
            .await
            .expect("answered in time")
            .expect("read");
        response
    }

    fn status_line(response: &str) -> &str {
        response.lines().next().unwrap_or_default()
    }

    fn header<'a>(response: &'a str, name: &str) -> Option<&'a str> {
        response
            .split("\r\n\r\n")
            .next()?
            .lines()
            .skip(1)
            .find_map(|line| {
                let (key, value) = line.split_once(':')?;
                key.eq_ignore_ascii_case(name).then(|| value.trim())
            })
    }

    fn body(response: &str) -> &str {
        response.split_once("\r\n\r\n").map_or("", |(_, b)| b)
    }

    #[tokio::test]
    async fn probes_answer_and_readiness_follows_the_flag() {
        let served = serve_test_probes().await;

        let health = get(served.addr, "/healthz", "").await;
        assert_eq!(status_line(&health), "HTTP/1.1 200 OK", "{health}");
        assert_eq!(body(&health), "ok\n");

        let starting = get(served.addr, "/readyz", "").await;
        assert_eq!(
            status_line(&starting),
            "HTTP/1.1 503 Service Unavailable",
            "{starting}"
        );
        assert_eq!(body(&starting), "starting\n");

        served.probes.readiness.set(Readiness::Ready);
        let ready = get(served.addr, "/readyz?verbose", "").await;
        assert_eq!(status_line(&ready), "HTTP/1.1 200 OK", "{ready}");
        assert_eq!(body(&ready), "ok\n");

        served.probes.readiness.set(Readiness::WatchFailing);
        let failing = get(served.addr, "/readyz", "").await;
        assert_eq!(
            status_line(&failing),
            "HTTP/1.1 503 Service Unavailable",
            "{failing}"
        );
        assert_eq!(body(&failing), "the controller cannot watch its objects\n");

        let elsewhere = get(served.addr, "/", "").await;
        assert_eq!(
            status_line(&elsewhere),
            "HTTP/1.1 404 Not Found",
            "{elsewhere}"
        );
    }

    #[tokio::test]
    async fn metrics_are_served_in_the_format_asked_for() {
        let served = serve_test_probes().await;

        let default = get(served.addr, "/metrics", "").await;
        assert_eq!(status_line(&default), "HTTP/1.1 200 OK", "{default}");
        assert_eq!(
            header(&default, "content-type"),
            Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
        );
        assert_eq!(body(&default), "metrics as OpenMetrics\n");

        let scraped = get(
            served.addr,
            "/metrics",
            &format!("Accept: {PROMETHEUS_ACCEPT}\r\n"),
        )
        .await;
        assert_eq!(body(&scraped), "metrics as OpenMetrics\n");

        let plain = get(served.addr, "/metrics", "Accept: text/plain\r\n").await;
        assert_eq!(
            header(&plain, "content-type"),
            Some("text/plain; version=0.0.4; charset=utf-8")
        );
        assert_eq!(header(&plain, "vary"), Some("accept"));
        assert_eq!(body(&plain), "metrics as PrometheusText\n");
    }
}
