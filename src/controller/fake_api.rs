//! A stand-in Kubernetes API server for unit tests of the controller: plain HTTP/1.1 on a
//! loopback port, one request per connection, answered by a closure of the test and recorded.
//! Enough to drive one reconciliation (reads, status patches, events) without a cluster.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    /// Path and query, as sent.
    pub path: String,
    pub body: String,
}

type Handler = dyn Fn(&Request) -> (u16, String) + Send + Sync;

pub struct FakeApi {
    pub client: kube::Client,
    /// `127.0.0.1:PORT`: it may stand in for a registry too.
    pub addr: String,
    requests: Arc<Mutex<Vec<Request>>>,
    server: tokio::task::JoinHandle<()>,
}

impl FakeApi {
    /// Serves until dropped; `answer` gives each request's status code and JSON body.
    pub async fn start(answer: impl Fn(&Request) -> (u16, String) + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a free port");
        let addr = listener.local_addr().expect("bound").to_string();
        let url = format!("http://{addr}");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let answer: Arc<Handler> = Arc::new(answer);
        let server = tokio::spawn({
            let requests = Arc::clone(&requests);
            async move {
                while let Ok((socket, _)) = listener.accept().await {
                    let (requests, answer) = (Arc::clone(&requests), Arc::clone(&answer));
                    tokio::spawn(async move {
                        let _ = serve_one(socket, &requests, &*answer).await;
                    });
                }
            }
        });
        let config = kube::Config::new(url.parse().expect("a URL"));
        let client = kube::Client::try_from(config).expect("a client for the fake API server");
        Self {
            client,
            addr,
            requests,
            server,
        }
    }

    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().expect("not poisoned").clone()
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// A `metav1.Status` failure body.
pub fn status(code: u16, reason: &str, message: &str) -> (u16, String) {
    let body = serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code,
    });
    (code, body.to_string())
}

async fn serve_one(
    mut socket: TcpStream,
    requests: &Mutex<Vec<Request>>,
    answer: &Handler,
) -> std::io::Result<()> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        let n = socket.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buffer.extend_from_slice(&chunk[..n]);
        if let Some(i) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).to_string();
    let mut request_line = head.lines().next().unwrap_or_default().split_whitespace();
    let method = request_line.next().unwrap_or_default().to_string();
    let path = request_line.next().unwrap_or_default().to_string();
    let length: usize = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse().ok())
        .unwrap_or(0);
    while buffer.len() < head_end + length {
        let n = socket.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buffer.extend_from_slice(&chunk[..n]);
    }
    let request = Request {
        method,
        path,
        body: String::from_utf8_lossy(&buffer[head_end..]).to_string(),
    };
    let (code, body) = answer(&request);
    requests.lock().expect("not poisoned").push(request);
    let response = format!(
        "HTTP/1.1 {code} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    socket.write_all(response.as_bytes()).await?;
    socket.shutdown().await
}
