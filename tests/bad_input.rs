//! The bad-input corpus (tests/corpus/invalid, expectations in tests/corpus/expected.tsv) run
//! through both front doors:
//!
//! - `garden-artifacts apply -f FILE` against a real Distribution registry: the exit code, the
//!   message naming object and field, bounded time and memory (YAML bombs), and the registry's
//!   access log: invalid input writes nothing at all;
//! - `kubectl apply --dry-run=server -f FILE` against a real kube-apiserver 1.20 with the CRD:
//!   refused with the expected message where the schema can say it, accepted where only our
//!   validation can (cross-field rules; Kubernetes 1.20 has no CEL).
//!
//! Files may hold `{{repeat N "TEXT"}}`, expanded here, so that oversize inputs are not
//! committed as megabytes.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::cluster::cluster;
use common::{BINARY, Registry, Request};

/// The registry address the corpus files are written with.
const PLACEHOLDER_REGISTRY: &str = "127.0.0.1:5000";
/// Bounds of one `apply` of a corpus file: YAML bombs must be refused within them.
const APPLY_TIMEOUT: Duration = Duration::from_secs(60);
const APPLY_ADDRESS_SPACE_KIB: u64 = 2 * 1024 * 1024;
/// Secrets the corpus puts into inputs; no output may repeat them.
const SECRETS: &[&str] = &["s3cr3t"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stream {
    Stdout,
    Stderr,
}

#[derive(Debug, Clone)]
struct Case {
    file: String,
    exit: i32,
    stream: Stream,
    substring: String,
    /// `None`: the schema cannot say it, the API server accepts the file.
    kubectl: Option<String>,
}

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus")
}

/// The table, checked against the folder: every file has exactly one row and every row a file.
fn cases() -> Vec<Case> {
    let table = std::fs::read_to_string(corpus_dir().join("expected.tsv")).unwrap();
    let mut cases = Vec::new();
    for (i, line) in table.lines().enumerate() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let columns: Vec<&str> = line.split('\t').collect();
        assert_eq!(
            columns.len(),
            5,
            "expected.tsv line {}: 5 tab-separated columns, got {line:?}",
            i + 1
        );
        cases.push(Case {
            file: columns[0].to_string(),
            exit: columns[1]
                .parse()
                .unwrap_or_else(|_| panic!("expected.tsv line {}: exit code", i + 1)),
            stream: match columns[2] {
                "stdout" => Stream::Stdout,
                "stderr" => Stream::Stderr,
                other => panic!("expected.tsv line {}: stream {other:?}", i + 1),
            },
            substring: columns[3].to_string(),
            kubectl: (columns[4] != "-").then(|| columns[4].to_string()),
        });
    }
    let mut files: Vec<String> = std::fs::read_dir(corpus_dir().join("invalid"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    let mut listed: Vec<String> = cases.iter().map(|c| c.file.clone()).collect();
    listed.sort();
    assert_eq!(
        files, listed,
        "tests/corpus/invalid and expected.tsv must name the same files, once each"
    );
    assert!(cases.len() >= 60, "the corpus has {} inputs", cases.len());
    for case in &cases {
        assert!(!case.substring.is_empty(), "{}: empty substring", case.file);
        assert!(
            case.exit == 1 || case.exit == 2,
            "{}: exit {} is not a failure",
            case.file,
            case.exit
        );
    }
    cases
}

/// `{{repeat N "TEXT"}}` → TEXT N times.
fn expand(bytes: &[u8]) -> Vec<u8> {
    let re = regex::bytes::Regex::new(r#"\{\{repeat ([0-9]+) "([^"]*)"\}\}"#).unwrap();
    re.replace_all(bytes, |c: &regex::bytes::Captures<'_>| {
        let n: usize = std::str::from_utf8(&c[1]).unwrap().parse().unwrap();
        c[2].repeat(n)
    })
    .into_owned()
}

/// The corpus file, expanded, with the registry address replaced, in `dir`.
fn materialize(case: &Case, dir: &Path, registry: &str) -> PathBuf {
    let raw = std::fs::read(corpus_dir().join("invalid").join(&case.file)).unwrap();
    let expanded = expand(&raw);
    let text = replace_bytes(
        &expanded,
        PLACEHOLDER_REGISTRY.as_bytes(),
        registry.as_bytes(),
    );
    let path = dir.join(&case.file);
    std::fs::write(&path, text).unwrap();
    path
}

fn replace_bytes(haystack: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(haystack.len());
    let mut i = 0;
    while i < haystack.len() {
        if haystack[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(haystack[i]);
            i += 1;
        }
    }
    out
}

/// `garden-artifacts apply -f FILE` with an anonymous docker config, a bounded address space and
/// a wall-clock limit; `None` when it had to be killed.
fn apply_bounded(file: &Path) -> (Option<Output>, Duration) {
    let docker_config = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let mut child = Command::new("sh")
        .args([
            "-c",
            &format!("ulimit -v {APPLY_ADDRESS_SPACE_KIB} && exec \"$0\" \"$@\""),
        ])
        .arg(BINARY)
        .arg("apply")
        .arg("-f")
        .arg(file)
        .env("DOCKER_CONFIG", docker_config.path())
        .env_remove("REGISTRY_AUTH_FILE")
        // glibc reserves 64 MiB of address space per malloc arena; keep that small and fixed.
        .env("MALLOC_ARENA_MAX", "2")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sh runs");
    // Read both pipes on threads, so a large output cannot block the child.
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut stdout, &mut buf).ok();
        buf
    });
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut stderr, &mut buf).ok();
        buf
    });
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > APPLY_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let elapsed = started.elapsed();
    let stdout = out_reader.join().unwrap();
    let stderr = err_reader.join().unwrap();
    (
        status.map(|status| Output {
            status,
            stdout,
            stderr,
        }),
        elapsed,
    )
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `PUT /v2/<name>/manifests/<tag>` (by tag, not by digest) as (name, tag).
fn tag_put(request: &Request) -> Option<(String, String)> {
    if request.method != "PUT" {
        return None;
    }
    let path = request.uri.strip_prefix("/v2/")?;
    let (name, reference) = path.rsplit_once("/manifests/")?;
    (!reference.contains(':')).then(|| (name.to_string(), reference.to_string()))
}

/// From `apply`'s text output: (repository path, tag) of every object that did not fail.
fn converged_tags(stdout: &str, registry: &str) -> Vec<(String, String)> {
    let mut tags = Vec::new();
    for line in stdout.lines() {
        let columns: Vec<&str> = line.split("  ").collect();
        if columns.len() < 4 || columns[3].starts_with("failed") {
            continue;
        }
        let repository = columns[1].split('@').next().unwrap();
        let path = repository
            .strip_prefix(&format!("{registry}/"))
            .unwrap_or(repository);
        for tag in columns[2].split(',') {
            tags.push((path.to_string(), tag.to_string()));
        }
    }
    tags.sort();
    tags
}

#[test]
fn apply_refuses_every_corpus_input_and_writes_nothing_for_it() {
    let cases = cases();
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    let mut slowest = (Duration::ZERO, String::new());
    let mut by_exit: BTreeMap<i32, usize> = BTreeMap::new();
    // Requests of any kind (reads included) while apply handled invalid input.
    let mut requests_on_invalid = 0;

    for case in &cases {
        let file = materialize(case, dir.path(), &registry.addr);
        let before = registry.requests().len();
        let (output, elapsed) = apply_bounded(&file);
        if elapsed > slowest.0 {
            slowest = (elapsed, case.file.clone());
        }
        let Some(output) = output else {
            failures.push(format!(
                "{}: still running after {APPLY_TIMEOUT:?}, killed",
                case.file
            ));
            continue;
        };
        if output.status.code() != Some(2) {
            // The access log line of the last request may be written just after the answer.
            std::thread::sleep(Duration::from_millis(300));
        }
        let requests = registry.requests();
        let these = &requests[before.min(requests.len())..];
        let writes = Registry::writes(these);
        if case.exit == 2 {
            requests_on_invalid += these.len();
        }
        let stdout = text(&output.stdout);
        let stderr = text(&output.stderr);
        let shown = format!("--- stdout ---\n{stdout}--- stderr ---\n{stderr}");
        *by_exit.entry(case.exit).or_default() += 1;

        if output.status.code() != Some(case.exit) {
            failures.push(format!(
                "{}: exit {:?}, expected {}\n{shown}",
                case.file,
                output.status.code(),
                case.exit
            ));
            continue;
        }
        let substring = case.substring.replace(PLACEHOLDER_REGISTRY, &registry.addr);
        let haystack = match case.stream {
            Stream::Stdout => &stdout,
            Stream::Stderr => &stderr,
        };
        if !haystack.contains(&substring) {
            failures.push(format!(
                "{}: {:?} does not contain {substring:?}\n{shown}",
                case.file, case.stream
            ));
        }
        for secret in SECRETS {
            if stdout.contains(secret) || stderr.contains(secret) {
                failures.push(format!(
                    "{}: the output repeats {secret:?}\n{shown}",
                    case.file
                ));
            }
        }
        if case.exit == 2 {
            if !stderr.contains("invalid input, nothing was written") {
                failures.push(format!(
                    "{}: exit 2 without \"invalid input, nothing was written\"\n{shown}",
                    case.file
                ));
            }
            if !writes.is_empty() {
                failures.push(format!(
                    "{}: invalid input, yet the registry got writes: {writes:?}",
                    case.file
                ));
            }
        } else {
            // Only objects that converged wrote, each of its tags once; a failed object moves
            // no tag (and when none converged, nothing at all was written).
            let converged = converged_tags(&stdout, &registry.addr);
            let mut tagged: Vec<(String, String)> = writes.iter().filter_map(tag_put).collect();
            tagged.sort();
            if tagged != converged || (converged.is_empty() && !writes.is_empty()) {
                failures.push(format!(
                    "{}: tags written {tagged:?}, but the converged objects hold {converged:?}; writes: {writes:?}\n{shown}",
                    case.file
                ));
            }
        }
    }
    println!(
        "bad input: {} corpus inputs tried with `garden-artifacts apply` ({} invalid input, {} failed object; {requests_on_invalid} registry requests for the invalid ones); slowest {} in {:.2}s",
        cases.len(),
        by_exit.get(&2).copied().unwrap_or(0),
        by_exit.get(&1).copied().unwrap_or(0),
        slowest.1,
        slowest.0.as_secs_f64()
    );
    assert!(
        failures.is_empty(),
        "{} of {} corpus inputs behaved unexpectedly:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}

#[test]
fn the_api_server_refuses_what_the_schema_can_say_and_only_that() {
    let cases = cases();
    let cluster = cluster();
    let out = cluster.kubectl(&["create", "namespace", "ci"]);
    assert!(
        out.status.success() || text(&out.stderr).contains("AlreadyExists"),
        "kubectl create namespace ci: {}",
        text(&out.stderr)
    );
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<PathBuf> = cases
        .iter()
        .map(|case| materialize(case, dir.path(), PLACEHOLDER_REGISTRY))
        .collect();

    // Two at a time: kubectl spends most of its time waiting for the API server.
    let results: Vec<Output> = std::thread::scope(|scope| {
        let chunks: Vec<Vec<(usize, &PathBuf)>> = (0..2)
            .map(|k| files.iter().enumerate().skip(k).step_by(2).collect())
            .collect();
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|chunk| {
                scope.spawn(move || {
                    chunk
                        .into_iter()
                        .map(|(i, file)| {
                            let file = file.to_string_lossy().into_owned();
                            (
                                i,
                                cluster.kubectl(&["apply", "--dry-run=server", "-f", &file]),
                            )
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut all: Vec<(usize, Output)> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        all.sort_by_key(|(i, _)| *i);
        all.into_iter().map(|(_, o)| o).collect()
    });

    let mut failures = Vec::new();
    let (mut refused, mut accepted) = (0, 0);
    for (case, out) in cases.iter().zip(&results) {
        let stdout = text(&out.stdout);
        let stderr = text(&out.stderr);
        match &case.kubectl {
            Some(substring) => {
                refused += 1;
                if out.status.success() {
                    failures.push(format!(
                        "{}: the API server accepted it, expected a refusal with {substring:?}\n{stdout}",
                        case.file
                    ));
                } else if !stderr.contains(substring.as_str()) {
                    failures.push(format!(
                        "{}: refused, but without {substring:?}:\n{stderr}",
                        case.file
                    ));
                }
            }
            None => {
                accepted += 1;
                if !out.status.success() {
                    failures.push(format!(
                        "{}: marked `-` (the schema cannot say it), but the API server refused it:\n{stderr}",
                        case.file
                    ));
                }
            }
        }
    }
    println!(
        "bad input: {} corpus inputs tried with `kubectl apply --dry-run=server` ({refused} refused by the schema, {accepted} only by our validation)",
        cases.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {} corpus inputs behaved unexpectedly with kubectl:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}

/// The client verbs write tags too: one in the shape of a fallback or cosign tag is refused
/// with exit 2 before any request, naming the argument.
#[test]
fn client_verbs_refuse_fallback_and_cosign_shaped_tags() {
    let registry = Registry::start();
    let r = &registry.addr;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a.release");
    std::fs::write(&file, "ID=gardenlinux\n").unwrap();
    let file = file.to_str().unwrap();
    let hex = "0123456789abcdef".repeat(4);
    let fallback = format!("sha256-{hex}");
    let signature = format!("sha256-{hex}.sig");
    let attestation = format!("sha256-{hex}.att");
    let runs: Vec<(Vec<String>, &str)> = vec![
        (
            vec![
                "push".into(),
                format!("{r}/verbs:v1,{fallback}"),
                file.into(),
            ],
            "referrers fallback index",
        ),
        (
            vec!["tag".into(), format!("{r}/verbs:v1"), signature.clone()],
            "TAG: tag",
        ),
        (
            vec![
                "copy".into(),
                format!("{r}/verbs:v1"),
                format!("{r}/copy:{attestation}"),
            ],
            "DST: tag",
        ),
    ];
    for (args, expected) in runs {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = common::garden_artifacts(&args, &[]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains(expected) && err.contains("has the shape of the tag that holds"),
            "{args:?}: {err}"
        );
    }
    assert!(registry.requests().is_empty(), "{:#?}", registry.requests());
}
