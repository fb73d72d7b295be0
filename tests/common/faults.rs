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
    /// The registry behaviour the proxy puts on, if any.
    profile: Option<ProfileState>,
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
        Self::start_with(upstream, None)
    }

    /// A proxy in front of `upstream` that behaves like `profile` (see [`Profile`]).
    pub fn with_profile(upstream: &str, profile: Profile) -> Self {
        Self::start_with(upstream, Some(profile))
    }

    fn start_with(upstream: &str, profile: Option<Profile>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let addr = listener.local_addr().unwrap().to_string();
        let shared = Arc::new(Shared {
            profile: profile.map(|p| ProfileState::start(p, &addr, upstream)),
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
    let Some(mut head) = read_head(&mut reader)? else {
        return Ok(());
    };
    let started = shared.epoch.elapsed();
    // The log shows what the client sent, before a profile rewrites it.
    let sent_target = head.target.clone();
    if let Some(profile) = &shared.profile {
        match profile.step(shared, &mut head, &mut reader)? {
            Step::Forward => {}
            Step::Answer(answer) => {
                shared.log.lock().unwrap().push(Seen {
                    method: head.method.clone(),
                    target: sent_target,
                    status: Some(answer.status),
                    fault: None,
                    started,
                    answered: Some(shared.epoch.elapsed()),
                    body_bytes: 0,
                });
                answer.write(&mut writer, head.method == "HEAD")?;
                return Ok(());
            }
        }
    }

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
            target: sent_target,
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

/// Registry behaviours the proxy can put on a Distribution 2.8, so the tests meet what the
/// registries people use do differently (see `tests/profiles.rs`):
///
/// | profile | tag pages | Link target | token auth | blob GET | mounts | referrers API |
/// |---|---|---|---|---|---|---|
/// | `Ghcr` | 100 | relative | per-repository scopes | 307 to a CDN | refused (202) | none (fallback tags) |
/// | `Distribution3` | 100 | relative | none | direct | allowed | none |
/// | `Harbor` | 100 | relative | per-repository scopes | direct | allowed | paged by 5 |
/// | `Quay` | 50 | absolute, opaque `next_page` | per-repository scopes | 307 to a CDN | refused | paged by 5, absolute |
///
/// Quay also hands out upload sessions whose `Location` holds a `;` (a path parameter), the
/// shape of a pre-signed URL, so a client that cuts `Location` at `;` loses the session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    Ghcr,
    Distribution3,
    Harbor,
    Quay,
}

impl Profile {
    pub const ALL: [Profile; 4] = [
        Profile::Ghcr,
        Profile::Distribution3,
        Profile::Harbor,
        Profile::Quay,
    ];

    /// Tags per page at most, whatever `n` the client asks for.
    pub fn tag_page(self) -> usize {
        match self {
            Profile::Quay => 50,
            _ => 100,
        }
    }

    /// Referrers per page of the referrers API; `None`: no referrers API (404).
    pub fn referrers_page(self) -> Option<usize> {
        match self {
            Profile::Harbor | Profile::Quay => Some(5),
            _ => None,
        }
    }

    pub fn token_auth(self) -> bool {
        !matches!(self, Profile::Distribution3)
    }

    pub fn blob_redirect(self) -> bool {
        matches!(self, Profile::Ghcr | Profile::Quay)
    }

    pub fn refuses_mounts(self) -> bool {
        matches!(self, Profile::Ghcr | Profile::Quay)
    }

    fn absolute_links(self) -> bool {
        matches!(self, Profile::Quay)
    }

    fn semicolon_sessions(self) -> bool {
        matches!(self, Profile::Quay)
    }
}

/// A bearer token the proxy handed out: what it grants, and how many more requests it is good
/// for (then it has expired: 401).
struct Token {
    grants: Vec<(String, String)>,
    uses_left: usize,
}

/// A request the "CDN" host got.
#[derive(Clone, Debug)]
pub struct CdnSeen {
    pub target: String,
    /// Whether an `Authorization` header came along (it must not: the CDN is another host).
    pub had_authorization: bool,
    pub status: u16,
}

pub struct ProfileState {
    profile: Profile,
    /// `127.0.0.1:PORT` of the proxy (for challenges and absolute links).
    addr: String,
    /// `127.0.0.1:PORT` of the CDN host blob GETs are redirected to.
    pub cdn_addr: String,
    tokens: Mutex<std::collections::HashMap<String, Token>>,
    issued: std::sync::atomic::AtomicUsize,
    /// Requests refused because their token had expired.
    expired: std::sync::atomic::AtomicUsize,
    /// Requests a token is good for before it expires.
    token_uses: usize,
    referrers: Mutex<std::collections::HashMap<(String, String), Vec<serde_json::Value>>>,
    cdn_log: Arc<Mutex<Vec<CdnSeen>>>,
}

pub enum Step {
    Forward,
    Answer(Answer),
}

pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    fn json(status: u16, body: String) -> Self {
        Answer {
            status,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: body.into_bytes(),
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn write(&self, to: &mut TcpStream, head_only: bool) -> io::Result<()> {
        let mut text = format!("HTTP/1.1 {} Profile\r\n", self.status);
        for (name, value) in &self.headers {
            let lower = name.to_ascii_lowercase();
            if matches!(
                lower.as_str(),
                "connection" | "content-length" | "transfer-encoding"
            ) {
                continue;
            }
            text.push_str(&format!("{name}: {value}\r\n"));
        }
        text.push_str(&format!(
            "Content-Length: {}\r\nConnection: close\r\n\r\n",
            self.body.len()
        ));
        to.write_all(text.as_bytes())?;
        if !head_only {
            to.write_all(&self.body)?;
        }
        to.flush()?;
        let _ = to.shutdown(Shutdown::Write);
        Ok(())
    }
}

/// One request to the registry on a connection of its own (HTTP/1.0: a plain body up to the
/// close), read whole.
fn ask_upstream(
    upstream: &str,
    method: &str,
    target: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> io::Result<Answer> {
    let mut connection = TcpStream::connect(upstream)?;
    connection.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut request = format!("{method} {target} HTTP/1.0\r\n");
    // The client's Host, so the registry writes URLs (upload Locations) to the proxy.
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
        request.push_str(&format!("Host: {upstream}\r\n"));
    }
    for (name, value) in headers {
        let lower = name.to_ascii_lowercase();
        if matches!(
            lower.as_str(),
            "connection"
                | "keep-alive"
                | "expect"
                | "content-length"
                | "transfer-encoding"
                | "authorization"
        ) {
            continue;
        }
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    connection.write_all(request.as_bytes())?;
    connection.write_all(body)?;
    let mut reader = BufReader::new(connection);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::other(format!("not a status line: {line:?}")))?;
    let mut answer_headers = Vec::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            break;
        }
        let trimmed = line.trim_end_matches(['\r', '\n']);
        if trimmed.is_empty() {
            break;
        }
        if let Some((name, value)) = trimmed.split_once(':') {
            answer_headers.push((name.trim().to_string(), value.trim().to_string()));
        }
    }
    let mut body = Vec::new();
    if method != "HEAD" {
        reader.read_to_end(&mut body)?;
    }
    Ok(Answer {
        status,
        headers: answer_headers,
        body,
    })
}

fn query_param(target: &str, name: &str) -> Option<String> {
    let query = target.split_once('?')?.1;
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn unauthorized(realm: &str, service: &str, scope: &str) -> Answer {
    let mut answer = Answer::json(
        401,
        r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#.into(),
    );
    answer.headers.push((
        "WWW-Authenticate".into(),
        format!(r#"Bearer realm="{realm}",service="{service}",scope="{scope}""#),
    ));
    answer
}

impl ProfileState {
    fn start(profile: Profile, addr: &str, upstream: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let cdn_addr = listener.local_addr().unwrap().to_string();
        let cdn_log: Arc<Mutex<Vec<CdnSeen>>> = Arc::default();
        {
            let cdn_log = Arc::clone(&cdn_log);
            let upstream = upstream.to_string();
            std::thread::spawn(move || {
                for connection in listener.incoming() {
                    let Ok(connection) = connection else { continue };
                    let cdn_log = Arc::clone(&cdn_log);
                    let upstream = upstream.clone();
                    std::thread::spawn(move || {
                        let _ = serve_cdn(&upstream, &cdn_log, connection);
                    });
                }
            });
        }
        ProfileState {
            profile,
            addr: addr.to_string(),
            cdn_addr,
            tokens: Mutex::default(),
            issued: Default::default(),
            expired: Default::default(),
            token_uses: 10,
            referrers: Mutex::default(),
            cdn_log,
        }
    }

    fn service(&self) -> String {
        format!("{:?}", self.profile).to_ascii_lowercase()
    }

    /// What the profile does with a request: answer it itself, or (maybe rewritten) forward.
    fn step(
        &self,
        shared: &Shared,
        head: &mut Head,
        reader: &mut BufReader<TcpStream>,
    ) -> io::Result<Step> {
        let path = head.target.split('?').next().unwrap_or("").to_string();
        if path == "/token" {
            return Ok(Step::Answer(self.issue_token(&head.target)));
        }
        let route = regex::Regex::new(r"^/v2/(.+)/(manifests|blobs|tags|referrers)/(.*)$").unwrap();
        let Some(captures) = route.captures(&path) else {
            return Ok(Step::Forward);
        };
        let name = captures[1].to_string();
        let kind = captures[2].to_string();
        let rest = captures[3].to_string();
        if self.profile.token_auth() {
            let action = if matches!(head.method.as_str(), "GET" | "HEAD") {
                "pull"
            } else {
                "push"
            };
            if let Some(refused) = self.check_token(head, &name, action) {
                // The body, if any, is read and dropped.
                pass_body(reader, &head.framing(), None, None)?;
                return Ok(Step::Answer(refused));
            }
        }
        if self.profile.semicolon_sessions() && head.target.contains(";session=1") {
            head.target = head.target.replacen(";session=1", "", 1);
        }
        match (head.method.as_str(), kind.as_str()) {
            ("GET", "tags") if rest == "list" => {
                self.tag_page(shared, head, &name).map(Step::Answer)
            }
            ("GET", "referrers") if self.profile.referrers_page().is_some() => {
                Ok(Step::Answer(self.referrers_page(head, &name, &rest)))
            }
            ("GET", "blobs") if self.profile.blob_redirect() && rest.starts_with("sha256:") => {
                Ok(Step::Answer(Answer {
                    status: 307,
                    headers: vec![(
                        "Location".into(),
                        format!(
                            "http://{}/store/{name}/{rest};v=2?X-Amz-Signature=5e1f%3Bab;c&X-Amz-Expires=300",
                            self.cdn_addr
                        ),
                    )],
                    body: Vec::new(),
                }))
            }
            ("POST", "blobs") if rest.starts_with("uploads") => {
                if self.profile.refuses_mounts() && head.target.contains("mount=") {
                    head.target = format!("/v2/{name}/blobs/uploads/");
                }
                if !self.profile.semicolon_sessions() {
                    return Ok(Step::Forward);
                }
                pass_body(reader, &head.framing(), None, None)?;
                let mut answer =
                    ask_upstream(&shared.upstream, "POST", &head.target, &head.headers, &[])?;
                for (header, value) in answer.headers.iter_mut() {
                    if header.eq_ignore_ascii_case("location") {
                        *value = match value.split_once('?') {
                            Some((path, query)) => format!("{path};session=1?{query}"),
                            None => format!("{value};session=1"),
                        };
                    }
                }
                Ok(Step::Answer(answer))
            }
            ("PUT", "manifests") if self.profile.referrers_page().is_some() => {
                let mut body = Vec::new();
                if let Framing::Length(n) = head.framing() {
                    body.resize(n as usize, 0);
                    reader.read_exact(&mut body)?;
                } else {
                    let mut sink = Vec::new();
                    reader.read_to_end(&mut sink)?;
                    body = sink;
                }
                let mut answer =
                    ask_upstream(&shared.upstream, "PUT", &head.target, &head.headers, &body)?;
                if answer.status == 201
                    && let Some(subject) = self.index_referrer(&name, head, &body)
                {
                    answer.headers.push(("OCI-Subject".into(), subject));
                }
                Ok(Step::Answer(answer))
            }
            ("DELETE", "manifests") if self.profile.referrers_page().is_some() => {
                for entries in self.referrers.lock().unwrap().values_mut() {
                    entries.retain(|e| e["digest"] != rest.as_str());
                }
                Ok(Step::Forward)
            }
            _ => Ok(Step::Forward),
        }
    }

    fn issue_token(&self, target: &str) -> Answer {
        let query = target.split_once('?').map_or("", |(_, q)| q);
        let mut grants = Vec::new();
        for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
            if key != "scope" {
                continue;
            }
            let parts: Vec<&str> = value.split(':').collect();
            if let [kind, name, actions] = parts[..]
                && kind == "repository"
            {
                for action in actions.split(',') {
                    grants.push((name.to_string(), action.to_string()));
                }
            }
        }
        let n = self.issued.fetch_add(1, Ordering::SeqCst);
        let token = format!("profile-token-{n}");
        self.tokens.lock().unwrap().insert(
            token.clone(),
            Token {
                grants,
                uses_left: self.token_uses,
            },
        );
        Answer::json(200, format!(r#"{{"token":"{token}","expires_in":300}}"#))
    }

    /// `None` when the request's token grants `action` on `name` (and one use is spent).
    fn check_token(&self, head: &Head, name: &str, action: &str) -> Option<Answer> {
        let scope = format!("repository:{name}:{action}");
        let refuse = || {
            Some(unauthorized(
                &format!("http://{}/token", self.addr),
                &self.service(),
                &scope,
            ))
        };
        let Some(token) = head
            .header("authorization")
            .and_then(|v| v.strip_prefix("Bearer "))
        else {
            return refuse();
        };
        let mut tokens = self.tokens.lock().unwrap();
        let Some(known) = tokens.get_mut(token.trim()) else {
            return refuse();
        };
        if known.uses_left == 0 {
            self.expired.fetch_add(1, Ordering::SeqCst);
            return refuse();
        }
        if !known.grants.iter().any(|(n, a)| n == name && a == action) {
            return refuse();
        }
        known.uses_left -= 1;
        None
    }

    fn tag_page(&self, shared: &Shared, head: &Head, name: &str) -> io::Result<Answer> {
        let full = ask_upstream(
            &shared.upstream,
            "GET",
            &format!("/v2/{name}/tags/list"),
            &[],
            &[],
        )?;
        if full.status != 200 {
            return Ok(full);
        }
        let listed: serde_json::Value = serde_json::from_slice(&full.body).unwrap();
        let mut tags: Vec<String> = listed["tags"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t.as_str().map(String::from))
            .collect();
        tags.sort();
        let page = query_param(&head.target, "n")
            .and_then(|n| n.parse().ok())
            .unwrap_or(usize::MAX)
            .min(self.profile.tag_page());
        let after = if self.profile.absolute_links() {
            query_param(&head.target, "next_page")
                .map(|token| String::from_utf8(hex::decode(token).unwrap()).unwrap())
        } else {
            query_param(&head.target, "last")
        };
        let start = after.map_or(0, |last| tags.partition_point(|t| *t <= last));
        let end = (start + page).min(tags.len());
        let mut answer = Answer::json(
            200,
            serde_json::json!({"name": name, "tags": tags[start..end]}).to_string(),
        );
        if end < tags.len() {
            let last = &tags[end - 1];
            let link = if self.profile.absolute_links() {
                format!(
                    r#"<http://{}/v2/{name}/tags/list?n={page}&next_page={}>; rel="next""#,
                    self.addr,
                    hex::encode(last)
                )
            } else {
                format!(r#"</v2/{name}/tags/list?last={last}&n={page}>; rel="next""#)
            };
            answer.headers.push(("Link".into(), link));
        }
        Ok(answer)
    }

    fn referrers_page(&self, head: &Head, name: &str, subject: &str) -> Answer {
        let size = self.profile.referrers_page().unwrap();
        let all = self
            .referrers
            .lock()
            .unwrap()
            .get(&(name.to_string(), subject.to_string()))
            .cloned()
            .unwrap_or_default();
        let start: usize = query_param(&head.target, "page_from")
            .and_then(|p| p.parse().ok())
            .unwrap_or(0)
            .min(all.len());
        let end = (start + size).min(all.len());
        let mut answer = Answer {
            status: 200,
            headers: vec![(
                "Content-Type".into(),
                "application/vnd.oci.image.index.v1+json".into(),
            )],
            body: serde_json::json!({
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "manifests": all[start..end],
            })
            .to_string()
            .into_bytes(),
        };
        if end < all.len() {
            let target = format!("/v2/{name}/referrers/{subject}?page_from={end}");
            let link = if self.profile.absolute_links() {
                format!(r#"<http://{}{target}>; rel="next""#, self.addr)
            } else {
                format!(r#"<{target}>; rel="next""#)
            };
            answer.headers.push(("Link".into(), link));
        }
        answer
    }

    /// Records a stored manifest with a `subject` as its referrer; the subject's digest.
    fn index_referrer(&self, name: &str, head: &Head, body: &[u8]) -> Option<String> {
        use sha2::Digest as _;
        let manifest: serde_json::Value = serde_json::from_slice(body).ok()?;
        let subject = manifest["subject"]["digest"].as_str()?.to_string();
        let digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(body)));
        let media_type = manifest["mediaType"]
            .as_str()
            .or(head.header("content-type"))
            .unwrap_or_default()
            .to_string();
        let artifact_type = manifest["artifactType"]
            .as_str()
            .or(manifest["config"]["mediaType"].as_str())
            .unwrap_or_default()
            .to_string();
        let mut descriptor = serde_json::json!({
            "mediaType": media_type,
            "digest": digest,
            "size": body.len(),
            "artifactType": artifact_type,
        });
        if let Some(annotations) = manifest.get("annotations") {
            descriptor["annotations"] = annotations.clone();
        }
        let mut referrers = self.referrers.lock().unwrap();
        let entries = referrers
            .entry((name.to_string(), subject.clone()))
            .or_default();
        if !entries.iter().any(|e| e["digest"] == digest.as_str()) {
            entries.push(descriptor);
        }
        Some(subject)
    }
}

/// The "CDN": serves `/store/<name>/<digest>;v=2?X-Amz-Signature=...` from the registry,
/// refusing requests without the signature, and notes whether credentials came along.
fn serve_cdn(upstream: &str, log: &Mutex<Vec<CdnSeen>>, client: TcpStream) -> io::Result<()> {
    let mut writer = client.try_clone()?;
    let mut reader = BufReader::new(client);
    let Some(head) = read_head(&mut reader)? else {
        return Ok(());
    };
    let had_authorization = head.header("authorization").is_some();
    let signed = query_param(&head.target, "X-Amz-Signature").as_deref() == Some("5e1f;ab;c");
    let path = head.target.split('?').next().unwrap_or("");
    let stored = path
        .strip_prefix("/store/")
        .and_then(|p| p.strip_suffix(";v=2"))
        .and_then(|p| p.rsplit_once('/'));
    let answer = match (signed, stored) {
        (true, Some((name, digest))) => ask_upstream(
            upstream,
            &head.method,
            &format!("/v2/{name}/blobs/{digest}"),
            &[],
            &[],
        )?,
        _ => Answer::json(403, r#"{"error":"not signed"}"#.into()),
    };
    log.lock().unwrap().push(CdnSeen {
        target: head.target.clone(),
        had_authorization,
        status: answer.status,
    });
    answer.write(&mut writer, head.method == "HEAD")
}

impl FaultProxy {
    /// The profile's state, when the proxy has one.
    pub fn profile(&self) -> Option<&ProfileState> {
        self.shared.profile.as_ref()
    }
}

impl ProfileState {
    /// Every request the CDN host got.
    pub fn cdn_seen(&self) -> Vec<CdnSeen> {
        self.cdn_log.lock().unwrap().clone()
    }

    /// Requests refused with 401 because their token had expired.
    pub fn expired_refusals(&self) -> usize {
        self.expired.load(Ordering::SeqCst)
    }

    /// Tokens handed out so far.
    pub fn tokens_issued(&self) -> usize {
        self.issued.load(Ordering::SeqCst)
    }
}
