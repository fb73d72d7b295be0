//! Fault injection for the reliability tests, with real servers only:
//!
//! - [`FaultProxy`]: an HTTP/1.1 proxy on a free loopback port in front of a real registry.
//!   Rules, matched by method and path (a regex over path and query) and counted, make it
//!   answer a status itself (429 with `Retry-After`, 500, 502, 503), answer late, drop the
//!   connection in the middle of the request body or of the response. It records every
//!   request it saw: method, path, the status the client got, and when.
//! - [`Distribution`]: a Distribution registry with extra configuration (TLS, token auth)
//!   that can be killed with SIGKILL and restarted on the same port and storage.
//!
//! Plain std threads and sockets: one thread per connection, one request per connection (the
//! proxy asks the registry for `Connection: close`, which the registry passes on to the
//! client). Request bodies are streamed through, with `Content-Length` or chunked framing.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// What the proxy does with a request a rule matches.
#[derive(Clone, Debug)]
pub enum Action {
    /// Pass the request on (with the rule's delay: a slow answer).
    Forward,
    /// Answer this status without asking the registry; the request body is read and dropped.
    Respond {
        status: u16,
        retry_after: Option<u64>,
    },
    /// Pass the head and this many body bytes on, then close both connections.
    DropRequestBody { after: u64 },
    /// Pass the request on, then send the client only the first half of the registry's
    /// response head and close the connection.
    DropResponse,
    /// Pass the request on and the response back with the last byte of its body changed
    /// (same length): a source serving bytes that do not match their digest.
    CorruptResponseBody,
}

/// `429 Too Many Requests` with `Retry-After: seconds`.
pub fn too_many_requests(retry_after: u64) -> Action {
    Action::Respond {
        status: 429,
        retry_after: Some(retry_after),
    }
}

/// An error status without `Retry-After`.
pub fn status(status: u16) -> Action {
    Action::Respond {
        status,
        retry_after: None,
    }
}

/// One scripted fault: which requests (method, path pattern, which of the matches) and what.
#[derive(Clone, Debug)]
pub struct Rule {
    method: Option<String>,
    path: regex::Regex,
    action: Action,
    delay: Duration,
    skip: usize,
    times: Option<usize>,
    matched: usize,
    applied: usize,
}

impl Rule {
    /// `method` `"*"` matches every method; `path` is a regex searched in the request target
    /// (path and query, as sent). Without [`Rule::times`] the rule applies forever.
    pub fn new(method: &str, path: &str, action: Action) -> Self {
        Self {
            method: (method != "*").then(|| method.to_string()),
            path: regex::Regex::new(path).expect("a valid path pattern"),
            action,
            delay: Duration::ZERO,
            skip: 0,
            times: None,
            matched: 0,
            applied: 0,
        }
    }

    /// Applies to this many requests, then no more.
    pub fn times(mut self, n: usize) -> Self {
        self.times = Some(n);
        self
    }

    /// Lets the first `n` matching requests through untouched.
    pub fn skip(mut self, n: usize) -> Self {
        self.skip = n;
        self
    }

    /// Waits this long before the answer (any action that answers).
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    fn matches(&self, method: &str, target: &str) -> bool {
        self.method.as_deref().is_none_or(|m| m == method) && self.path.is_match(target)
    }
}

/// One request the proxy saw.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    /// Path and query, as the client sent them.
    pub target: String,
    /// What the client got; `None` when the proxy dropped the connection (or not answered yet).
    pub status: Option<u16>,
    /// The injected fault, if any, in words.
    pub fault: Option<String>,
    /// When the request head arrived, since the proxy started.
    pub started: Duration,
    /// When the answer's head went out (or the connection was dropped).
    pub answered: Option<Duration>,
    /// Request body bytes read from the client.
    pub body_bytes: u64,
}

impl Seen {
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or(&self.target)
    }

    pub fn is_write(&self) -> bool {
        matches!(self.method.as_str(), "PUT" | "POST" | "PATCH" | "DELETE")
    }
}

struct Shared {
    upstream: String,
    epoch: Instant,
    rules: Mutex<Vec<Rule>>,
    log: Mutex<Vec<Seen>>,
}

pub struct FaultProxy {
    /// `127.0.0.1:PORT`: use it as the registry host.
    pub addr: String,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// A proxy in front of `upstream` (`host:port`, plain HTTP).
    pub fn start(upstream: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let addr = listener.local_addr().unwrap().to_string();
        let shared = Arc::new(Shared {
            upstream: upstream.to_string(),
            epoch: Instant::now(),
            rules: Mutex::default(),
            log: Mutex::default(),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let accept = {
            let shared = Arc::clone(&shared);
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                for connection in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(connection) = connection else { continue };
                    let shared = Arc::clone(&shared);
                    std::thread::spawn(move || {
                        let _ = handle(&shared, connection);
                    });
                }
            })
        };
        FaultProxy {
            addr,
            shared,
            stop,
            accept: Some(accept),
        }
    }

    /// Adds a rule; the first rule (in the order added) that matches and has uses left wins.
    pub fn inject(&self, rule: Rule) {
        self.shared.rules.lock().unwrap().push(rule);
    }

    /// Removes every rule: from now on the proxy only forwards.
    pub fn clear(&self) {
        self.shared.rules.lock().unwrap().clear();
    }

    /// Every request seen so far, in the order they arrived.
    pub fn seen(&self) -> Vec<Seen> {
        self.shared.log.lock().unwrap().clone()
    }

    /// Forgets the requests seen so far.
    pub fn forget(&self) {
        self.shared.log.lock().unwrap().clear();
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.addr);
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

enum Framing {
    Empty,
    Length(u64),
    Chunked,
}

struct Head {
    method: String,
    target: String,
    /// Header lines as received, without the line ends.
    headers: Vec<(String, String)>,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn framing(&self) -> Framing {
        if self
            .header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
        {
            Framing::Chunked
        } else {
            match self
                .header("content-length")
                .and_then(|v| v.trim().parse().ok())
            {
                Some(0) | None => Framing::Empty,
                Some(n) => Framing::Length(n),
            }
        }
    }
}

fn read_head(reader: &mut BufReader<TcpStream>) -> io::Result<Option<Head>> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return Err(io::Error::other(format!(
            "not an HTTP request line: {line:?}"
        )));
    };
    let (method, target) = (method.to_string(), target.to_string());
    let mut headers = Vec::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let trimmed = line.trim_end_matches(['\r', '\n']);
        if trimmed.is_empty() {
            break;
        }
        if let Some((name, value)) = trimmed.split_once(':') {
            headers.push((name.trim().to_string(), value.trim().to_string()));
        }
    }
    Ok(Some(Head {
        method,
        target,
        headers,
    }))
}

/// Copies the body (raw, framing included) from `from` to `to` (or nowhere), stopping after
/// `limit` payload bytes. Returns the payload bytes read and whether the body was complete.
fn pass_body(
    from: &mut BufReader<TcpStream>,
    framing: &Framing,
    mut to: Option<&mut TcpStream>,
    limit: Option<u64>,
) -> io::Result<(u64, bool)> {
    let mut payload = 0u64;
    let mut buffer = vec![0u8; 64 * 1024];
    let mut copy = |from: &mut BufReader<TcpStream>,
                    to: &mut Option<&mut TcpStream>,
                    mut n: u64,
                    payload: &mut u64|
     -> io::Result<bool> {
        while n > 0 {
            let room = limit.map_or(u64::MAX, |l| l.saturating_sub(*payload));
            if room == 0 {
                return Ok(false);
            }
            let want = n.min(buffer.len() as u64).min(room) as usize;
            let got = from.read(&mut buffer[..want])?;
            if got == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            if let Some(to) = to.as_mut() {
                to.write_all(&buffer[..got])?;
            }
            n -= got as u64;
            *payload += got as u64;
        }
        Ok(true)
    };
    match framing {
        Framing::Empty => Ok((0, true)),
        Framing::Length(n) => {
            let complete = copy(from, &mut to, *n, &mut payload)?;
            Ok((payload, complete))
        }
        Framing::Chunked => {
            let mut line = String::new();
            loop {
                line.clear();
                if from.read_line(&mut line)? == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                if let Some(to) = to.as_mut() {
                    to.write_all(line.as_bytes())?;
                }
                let size_text = line.trim().split(';').next().unwrap_or("").trim();
                let size = u64::from_str_radix(size_text, 16)
                    .map_err(|_| io::Error::other(format!("bad chunk size {line:?}")))?;
                if size == 0 {
                    // Trailers, then the empty line.
                    loop {
                        line.clear();
                        if from.read_line(&mut line)? == 0 {
                            return Err(io::ErrorKind::UnexpectedEof.into());
                        }
                        if let Some(to) = to.as_mut() {
                            to.write_all(line.as_bytes())?;
                        }
                        if line.trim().is_empty() {
                            return Ok((payload, true));
                        }
                    }
                }
                if !copy(from, &mut to, size, &mut payload)? {
                    return Ok((payload, false));
                }
                let mut crlf = [0u8; 2];
                from.read_exact(&mut crlf)?;
                if let Some(to) = to.as_mut() {
                    to.write_all(&crlf)?;
                }
            }
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Injected",
    }
}

fn handle(shared: &Shared, client: TcpStream) -> io::Result<()> {
    client.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut writer = client.try_clone()?;
    let mut reader = BufReader::with_capacity(64 * 1024, client);
    let Some(head) = read_head(&mut reader)? else {
        return Ok(());
    };
    let started = shared.epoch.elapsed();

    // Which rule, if any.
    let chosen = {
        let mut rules = shared.rules.lock().unwrap();
        let mut chosen = None;
        for rule in rules.iter_mut() {
            if !rule.matches(&head.method, &head.target) {
                continue;
            }
            rule.matched += 1;
            if rule.matched <= rule.skip || rule.times.is_some_and(|t| rule.applied >= t) {
                continue;
            }
            rule.applied += 1;
            chosen = Some((rule.action.clone(), rule.delay));
            break;
        }
        chosen
    };
    let (action, delay) = chosen.clone().unwrap_or((Action::Forward, Duration::ZERO));
    let fault = chosen.map(|(action, delay)| match action {
        Action::Forward => format!("answered {} ms late", delay.as_millis()),
        Action::Respond {
            status,
            retry_after: Some(s),
        } => format!("answered {status} with Retry-After: {s}"),
        Action::Respond { status, .. } => format!("answered {status}"),
        Action::DropRequestBody { after } => {
            format!("dropped the connection after {after} request body bytes")
        }
        Action::DropResponse => "dropped the connection in the middle of the response".into(),
        Action::CorruptResponseBody => "changed the last byte of the response body".into(),
    });
    let index = {
        let mut log = shared.log.lock().unwrap();
        log.push(Seen {
            method: head.method.clone(),
            target: head.target.clone(),
            status: None,
            fault,
            started,
            answered: None,
            body_bytes: 0,
        });
        log.len() - 1
    };
    let record = |status: Option<u16>, body_bytes: u64| {
        let mut log = shared.log.lock().unwrap();
        let entry = &mut log[index];
        entry.status = status;
        entry.body_bytes = body_bytes;
        entry.answered = Some(shared.epoch.elapsed());
    };
    let framing = head.framing();
    // curl asks before large bodies; the proxy answers for the registry (which is never asked).
    let expects_continue = head
        .header("expect")
        .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));

    if let Action::Respond {
        status,
        retry_after,
    } = action
    {
        // A client waiting for `100 Continue` gets the final answer instead, and sends no body.
        let (body_bytes, _) = if expects_continue {
            (0, true)
        } else {
            pass_body(&mut reader, &framing, None, None)?
        };
        std::thread::sleep(delay);
        let code = match status {
            429 => "TOOMANYREQUESTS",
            503 => "UNAVAILABLE",
            // What Distribution 2.8 answers a manifest PUT that races a blob commit.
            400 => "DIGEST_INVALID",
            _ => "UNKNOWN",
        };
        let body = format!(
            r#"{{"errors":[{{"code":"{code}","message":"fault injected by the test proxy","detail":{status}}}]}}"#
        );
        let mut answer = format!(
            "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nDocker-Distribution-Api-Version: registry/2.0\r\n",
            reason(status),
            body.len()
        );
        if let Some(seconds) = retry_after {
            answer.push_str(&format!("Retry-After: {seconds}\r\n"));
        }
        answer.push_str("Connection: close\r\n\r\n");
        if head.method != "HEAD" {
            answer.push_str(&body);
        }
        record(Some(status), body_bytes);
        writer.write_all(answer.as_bytes())?;
        writer.flush()?;
        let _ = writer.shutdown(Shutdown::Write);
        return Ok(());
    }

    let upstream = match TcpStream::connect(&shared.upstream) {
        Ok(upstream) => upstream,
        Err(_) => {
            // The registry is down: the client sees a refused connection of sorts.
            record(None, 0);
            return Ok(());
        }
    };
    upstream.set_read_timeout(Some(Duration::from_secs(120)))?;
    let mut to_upstream = upstream.try_clone()?;
    let mut request = format!("{} {} HTTP/1.1\r\n", head.method, head.target);
    for (name, value) in &head.headers {
        let lower = name.to_ascii_lowercase();
        if matches!(
            lower.as_str(),
            "connection" | "keep-alive" | "proxy-connection" | "expect"
        ) {
            continue;
        }
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("Connection: close\r\n\r\n");
    to_upstream.write_all(request.as_bytes())?;
    if expects_continue {
        writer.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        writer.flush()?;
    }

    let limit = match action {
        Action::DropRequestBody { after } => Some(after),
        _ => None,
    };
    let (body_bytes, complete) = pass_body(&mut reader, &framing, Some(&mut to_upstream), limit)?;
    if !complete {
        // Mid-body: both sides lose the connection.
        record(None, body_bytes);
        let _ = to_upstream.shutdown(Shutdown::Both);
        let _ = writer.shutdown(Shutdown::Both);
        return Ok(());
    }
    to_upstream.flush()?;

    let mut from_upstream = BufReader::with_capacity(64 * 1024, upstream);
    // The response head; interim 1xx heads before it are passed on as they are.
    let mut response_head = Vec::new();
    let mut status: Option<u16>;
    let mut line = String::new();
    loop {
        let start = response_head.len();
        loop {
            line.clear();
            if from_upstream.read_line(&mut line)? == 0 {
                break;
            }
            response_head.extend_from_slice(line.as_bytes());
            if line == "\r\n" || line == "\n" {
                break;
            }
        }
        status = std::str::from_utf8(&response_head[start..])
            .ok()
            .and_then(|text| text.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok());
        if response_head.len() == start || !status.is_some_and(|s| (100..200).contains(&s)) {
            break;
        }
    }
    std::thread::sleep(delay);
    if matches!(action, Action::DropResponse) {
        record(None, body_bytes);
        let _ = writer.write_all(&response_head[..response_head.len() / 2]);
        let _ = writer.flush();
        let _ = writer.shutdown(Shutdown::Both);
        let _ = from_upstream.get_ref().shutdown(Shutdown::Both);
        return Ok(());
    }
    record(status, body_bytes);
    writer.write_all(&response_head)?;
    if matches!(action, Action::CorruptResponseBody) {
        // Test bodies are small enough to hold; a Content-Length body's last byte is content.
        let mut body = Vec::new();
        from_upstream.read_to_end(&mut body)?;
        if let Some(last) = body.last_mut() {
            *last ^= 0xff;
        }
        writer.write_all(&body)?;
    } else {
        io::copy(&mut from_upstream, &mut writer)?;
    }
    writer.flush()?;
    let _ = writer.shutdown(Shutdown::Write);
    Ok(())
}

/// A Distribution registry with extra configuration, that can be killed (SIGKILL) and
/// restarted on the same address and storage.
pub struct Distribution {
    /// `IP:PORT` it listens on.
    pub addr: String,
    pub dir: TempDir,
    config: PathBuf,
    child: Option<Child>,
    /// One access log per run.
    logs: Vec<PathBuf>,
}

impl Distribution {
    /// On a free port of 127.0.0.1. `http_extra` is YAML indented by two spaces, placed under
    /// `http:` (e.g. `tls:`); `extra` is top-level YAML (e.g. `auth:`).
    pub fn start(http_extra: &str, extra: &str) -> Self {
        Self::start_on("127.0.0.1", http_extra, extra)
    }

    /// Listening on `ip` (a loopback address).
    pub fn start_on(ip: &str, http_extra: &str, extra: &str) -> Self {
        super::require("docker-registry");
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.yml");
        for attempt in 1..=5 {
            let port = super::free_port();
            let addr = format!("{ip}:{port}");
            std::fs::write(
                &config,
                format!(
                    "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n{http_extra}{extra}",
                    dir.path().join("data").display()
                ),
            )
            .unwrap();
            let log = dir.path().join(format!("registry-{attempt}.log"));
            if let Some(child) = spawn_registry(&config, &addr, &log) {
                return Distribution {
                    addr,
                    dir,
                    config,
                    child: Some(child),
                    logs: vec![log],
                };
            }
        }
        panic!("docker-registry could not get a free port in 5 attempts");
    }

    /// SIGKILL, as `kill -9` does; waits until the process is gone.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL the registry");
            let _ = child.wait();
        }
    }

    /// Starts it again on the same address and storage.
    pub fn restart(&mut self) {
        self.kill9();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let log = self
                .dir
                .path()
                .join(format!("registry-run-{}.log", self.logs.len() + 1));
            let child = spawn_registry(&self.config, &self.addr, &log);
            self.logs.push(log);
            if let Some(child) = child {
                self.child = Some(child);
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the registry did not start again on {}:\n{}",
                self.addr,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The storage root (`rootdirectory`).
    pub fn storage(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Every request answered so far (all runs), from the access logs.
    pub fn requests(&self) -> Vec<super::Request> {
        let re = regex::Regex::new(r#""([A-Z]+) (\S+) HTTP/[0-9.]+" ([0-9]{3})"#).unwrap();
        self.logs
            .iter()
            .flat_map(|log| {
                let text = std::fs::read_to_string(log).unwrap_or_default();
                text.lines()
                    .filter_map(|line| re.captures(line))
                    .map(|c| super::Request {
                        method: c[1].to_string(),
                        uri: c[2].to_string(),
                        status: c[3].parse().unwrap(),
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// The whole log of every run, for failure messages.
    pub fn log(&self) -> String {
        self.logs
            .iter()
            .map(|log| std::fs::read_to_string(log).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n--- restart ---\n")
    }
}

impl Drop for Distribution {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Starts `docker-registry serve CONFIG` logging to `log`; `None` when it exits before it
/// listens on `addr` (the port was taken in between).
fn spawn_registry(config: &Path, addr: &str, log: &Path) -> Option<Child> {
    let log_file = std::fs::File::create(log).unwrap();
    let mut child = Command::new("docker-registry")
        .arg("serve")
        .arg(config)
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file)
        .spawn()
        .expect("docker-registry starts");
    let needle = format!("listening on {addr}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if child.try_wait().ok().flatten().is_some() {
            return None;
        }
        let said = std::fs::read_to_string(log).unwrap_or_default();
        if said.contains(&needle) && TcpStream::connect(addr).is_ok() {
            return Some(child);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!(
        "docker-registry did not listen on {addr}; its log:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}
