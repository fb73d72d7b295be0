//! The verbs against registry behaviour profiles (`common::faults::Profile`): a real
//! Distribution behind the fault proxy behaving like ghcr.io, Distribution 3, Harbor and
//! Quay: tag and referrer pages cut with `Link`, per-repository token scopes that expire
//! mid-run, blob GETs redirected to a "CDN" host with a pre-signed query, refused mounts.

mod common;

use std::path::Path;

use common::faults::{FaultProxy, Profile, Seen};
use common::{Registry, examples_with_containers_for, garden_artifacts, stderr, stdout};
use serde_json::Value;

fn run_ok(args: &[&str]) -> String {
    let out = garden_artifacts(args, &[]);
    assert!(
        out.status.success(),
        "garden-artifacts {args:?} failed:\n{}\n{}",
        stdout(&out),
        stderr(&out)
    );
    stdout(&out)
}

fn json(args: &[&str]) -> Value {
    let text = run_ok(args);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{args:?}: {e}: {text}"))
}

fn rewrite_tree(dir: &Path, from: &str, to: &str) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rewrite_tree(&path, from, to);
        } else if path.extension().is_some_and(|e| e == "yaml") {
            let text = std::fs::read_to_string(&path).unwrap();
            std::fs::write(&path, text.replace(from, to)).unwrap();
        }
    }
}

/// The digests of the referrers `discover` finds for `reference`, sorted.
fn discovered(reference: &str) -> Vec<String> {
    let tree = json(&["discover", reference, "--format", "json"]);
    let mut found: Vec<String> = tree["referrers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| r["digest"].as_str().unwrap().to_string())
        .collect();
    found.sort();
    found
}

fn registry_requests(seen: &[Seen]) -> Vec<&Seen> {
    seen.iter()
        .filter(|s| s.path().starts_with("/v2/"))
        .collect()
}

fn describe(seen: &[&Seen]) -> String {
    seen.iter()
        .map(|s| format!("{} {} {:?}", s.method, s.target, s.status))
        .collect::<Vec<_>>()
        .join("\n")
}

/// apply of the examples, twice: the second run writes nothing and reports every object
/// unchanged.
fn examples_converge(profile: Profile, registry: &Registry, proxy: &FaultProxy) {
    let examples = examples_with_containers_for(registry);
    rewrite_tree(examples.path(), &registry.addr, &proxy.addr);
    let dir = examples.path().to_str().unwrap();
    let apply_only = examples.path().join("apply-only");
    let apply = || {
        json(&[
            "apply",
            "-f",
            dir,
            "-f",
            apply_only.to_str().unwrap(),
            "-o",
            "json",
        ])
    };
    let first = apply();
    let results = first.as_array().unwrap();
    assert_eq!(results.len(), 12, "{profile:?}: {first:#}");
    for r in results {
        assert_eq!(r["result"], "created", "{profile:?}: {r}");
    }
    proxy.forget();
    let second = apply();
    for r in second.as_array().unwrap() {
        assert_eq!(r["result"], "unchanged", "{profile:?}: {r}");
    }
    let seen = proxy.seen();
    let requests = registry_requests(&seen);
    let writes: Vec<_> = requests.iter().copied().filter(|s| s.is_write()).collect();
    assert!(
        writes.is_empty(),
        "{profile:?}: the second apply wrote:\n{}",
        describe(&writes)
    );
    let heads = requests.iter().filter(|s| s.method == "HEAD").count();
    eprintln!(
        "{profile:?}: second apply: {} registry requests ({heads} HEAD), {} token requests",
        requests.len(),
        seen.len() - requests.len()
    );
    if let Some(state) = proxy.profile()
        && profile.token_auth()
    {
        assert!(
            state.expired_refusals() > 0,
            "{profile:?}: no token expired mid-run; the test would not see a renewal"
        );
    }
}

fn exercise(profile: Profile) {
    let registry = Registry::start();
    let proxy = FaultProxy::with_profile(&registry.addr, profile);
    let host = proxy.addr.clone();
    examples_converge(profile, &registry, &proxy);

    // A repository with more tags than a page: 20 tags of the artefact after 150 others.
    let input = tempfile::tempdir().unwrap();
    let file = input.path().join("gl-1.0.release");
    std::fs::write(&file, "ID=gardenlinux\n").unwrap();
    let file = file.to_str().unwrap();
    let repo = format!("{host}/paged/app");
    let old: Vec<String> = (0..20).map(|i| format!("z-{i:02}")).collect();
    let pushed = json(&[
        "push",
        &format!("{repo}:{}", old.join(",")),
        file,
        "-o",
        "json",
    ]);
    let digest = pushed["digest"].as_str().unwrap().to_string();
    let filler: Vec<String> = (0..150).map(|i| format!("a-{i:03}")).collect();
    let mut tag_args = vec!["tag".to_string(), format!("{repo}:z-00")];
    tag_args.extend(filler.iter().cloned());
    run_ok(&tag_args.iter().map(String::as_str).collect::<Vec<_>>());

    // 20 new tags then the 20 that exist: the misses make the engine list the tags, and the
    // existing ones are on the second page.
    let new: Vec<String> = (0..20).map(|i| format!("new-{i:02}")).collect();
    let all = [new.clone(), old.clone()].concat().join(",");
    proxy.forget();
    let again = json(&["push", &format!("{repo}:{all}"), file, "-o", "json"]);
    assert_eq!(again["digest"], digest.as_str());
    let seen = proxy.seen();
    let listed_pages = seen
        .iter()
        .filter(|s| s.method == "GET" && s.path().ends_with("/tags/list") && s.status == Some(200))
        .count();
    let rewritten: Vec<_> = seen
        .iter()
        .filter(|s| s.method == "PUT" && s.path().contains("/manifests/z-"))
        .collect();
    assert!(
        rewritten.is_empty(),
        "{profile:?}: tags that exist (on the listing's second page) were written again:\n{}\nafter these requests:\n{}",
        describe(&rewritten),
        describe(
            &seen
                .iter()
                .filter(|s| !s.path().contains("/manifests/z-"))
                .collect::<Vec<_>>()
        )
    );
    assert!(
        listed_pages >= 2,
        "{profile:?}: {listed_pages} tag pages read"
    );

    // More referrers than a page of the referrers API.
    let subject = format!("{repo}:z-00");
    let mut referrers = Vec::new();
    for i in 0..7 {
        let note = input.path().join(format!("note-{i}.txt"));
        std::fs::write(&note, format!("note {i}\n")).unwrap();
        let out = json(&[
            "push",
            &repo,
            &format!("{}:text/plain", note.display()),
            "--artifact-type",
            "application/vnd.test.note",
            "--subject",
            &subject,
            "-o",
            "json",
        ]);
        referrers.push(out["digest"].as_str().unwrap().to_string());
    }
    referrers.sort();
    assert_eq!(discovered(&subject), referrers, "{profile:?}: discover");

    // Mirror with referrers, in the same registry (a mount, where the profile allows it).
    proxy.forget();
    let copy = format!("{host}/mirrored/app:v1");
    let copied = json(&["copy", "--referrers", &subject, &copy, "-o", "json"]);
    assert_eq!(copied["digest"], digest.as_str(), "{copied:#}");
    assert_eq!(
        discovered(&copy),
        referrers,
        "{profile:?}: the mirror's referrers"
    );
    let seen = proxy.seen();
    let mounts: Vec<_> = seen
        .iter()
        .filter(|s| s.method == "POST" && s.target.contains("mount="))
        .collect();
    if profile.refuses_mounts() {
        assert!(
            mounts.iter().all(|s| s.status == Some(202)) && !mounts.is_empty(),
            "{profile:?}: mounts:\n{}\nall:\n{}",
            describe(&mounts),
            describe(
                &seen
                    .iter()
                    .filter(|s| !s.path().contains("/token"))
                    .collect::<Vec<_>>()
            )
        );
    }

    // Pull: blobs through the redirect, verified; no credentials reach the CDN host.
    let out = tempfile::tempdir().unwrap();
    run_ok(&["pull", &copy, "-o", out.path().to_str().unwrap()]);
    assert_eq!(
        std::fs::read(out.path().join("gl-1.0.release")).unwrap(),
        b"ID=gardenlinux\n"
    );
    let state = proxy.profile().unwrap();
    let cdn = state.cdn_seen();
    if profile.blob_redirect() {
        assert!(!cdn.is_empty(), "{profile:?}: no blob came through the CDN");
        assert!(
            cdn.iter().all(|c| !c.had_authorization && c.status == 200),
            "{profile:?}: {cdn:#?}"
        );
    } else {
        assert!(cdn.is_empty());
    }
}

#[test]
fn ghcr_pages_scopes_tokens_redirects_blobs_and_refuses_mounts() {
    exercise(Profile::Ghcr);
}

#[test]
fn distribution_3_pages_tags_with_link() {
    exercise(Profile::Distribution3);
}

#[test]
fn harbor_pages_referrers_and_scopes_tokens() {
    exercise(Profile::Harbor);
}

#[test]
fn quay_pages_with_absolute_links_and_hands_out_sessions_with_semicolons() {
    exercise(Profile::Quay);
}

/// The proxy's token endpoint: a token for one repository is refused for another.
#[test]
fn a_token_for_one_repository_is_refused_for_another() {
    let registry = Registry::start();
    let proxy = FaultProxy::with_profile(&registry.addr, Profile::Ghcr);
    let curl = |args: &[&str]| {
        let out = std::process::Command::new("curl")
            .args(["-sS", "--max-time", "20", "-o", "-", "-w", "\n%{http_code}"])
            .args(args)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = text.rsplit_once('\n').unwrap();
        (body.to_string(), code.to_string())
    };
    let (body, code) = curl(&[&format!(
        "http://{}/token?service=ghcr&scope=repository:a/one:pull",
        proxy.addr
    )]);
    assert_eq!(code, "200", "{body}");
    let token: Value = serde_json::from_str(&body).unwrap();
    let bearer = format!("Authorization: Bearer {}", token["token"].as_str().unwrap());
    let (_, own) = curl(&[
        "-H",
        &bearer,
        &format!("http://{}/v2/a/one/tags/list", proxy.addr),
    ]);
    let (_, other) = curl(&[
        "-H",
        &bearer,
        &format!("http://{}/v2/a/two/tags/list", proxy.addr),
    ]);
    let (_, none) = curl(&[&format!("http://{}/v2/a/one/tags/list", proxy.addr)]);
    // Nothing is stored: the registry answers 404 for a repository it does not know.
    assert_eq!(
        (own.as_str(), other.as_str(), none.as_str()),
        ("404", "401", "401")
    );
}

/// The referrers API cut into pages of 5: `discover` and `copy --referrers` see all 7.
fn referrers_beyond_one_page(profile: Profile) {
    let registry = Registry::start();
    let proxy = FaultProxy::with_profile(&registry.addr, profile);
    let input = tempfile::tempdir().unwrap();
    let file = input.path().join("gl-1.0.release");
    std::fs::write(&file, "ID=gardenlinux\n").unwrap();
    let subject = format!("{}/refs/app:1.0", proxy.addr);
    run_ok(&["push", &subject, file.to_str().unwrap()]);
    let mut referrers = Vec::new();
    for i in 0..7 {
        let note = input.path().join(format!("note-{i}.txt"));
        std::fs::write(&note, format!("note {i}\n")).unwrap();
        let out = json(&[
            "push",
            &format!("{}/refs/app", proxy.addr),
            &format!("{}:text/plain", note.display()),
            "--subject",
            &subject,
            "-o",
            "json",
        ]);
        assert_eq!(out["subject"]["via"], "referrers-api", "{out:#}");
        referrers.push(out["digest"].as_str().unwrap().to_string());
    }
    referrers.sort();
    assert_eq!(discovered(&subject), referrers, "{profile:?}: discover");
    let copy = format!("{}/refs/mirror:1.0", proxy.addr);
    run_ok(&["copy", "--referrers", &subject, &copy]);
    assert_eq!(discovered(&copy), referrers, "{profile:?}: the mirror");
}

#[test]
fn harbor_referrers_beyond_one_page_are_all_discovered_and_mirrored() {
    referrers_beyond_one_page(Profile::Harbor);
}

#[test]
fn quay_referrers_beyond_one_page_are_all_discovered_and_mirrored() {
    referrers_beyond_one_page(Profile::Quay);
}

/// The controller reconciles an object to Ready through each profile: paged tags, token
/// scopes, redirected blobs and refused mounts included.
#[test]
fn the_controller_reconciles_to_ready_through_every_profile() {
    use common::cluster::{Scene, Watch, artifact_object};
    for profile in Profile::ALL {
        let ns = format!("profile-{}", format!("{profile:?}").to_ascii_lowercase());
        let mut scene = Scene::new(&[&ns], Watch::OwnNamespace);
        let proxy = FaultProxy::with_profile(&scene.registry.addr, profile);
        scene.start_namespaced_controller("c");
        let repository = format!("{}/profiles/controller", proxy.addr);
        let object = artifact_object(
            &ns,
            "through-profile",
            &repository,
            &["v1", "v2"],
            "reconciled through a profile",
            serde_json::json!({}),
        );
        scene.cluster.apply(&object.to_string());
        let ready = scene.wait_ready(&ns, "through-profile");
        let digest = ready["status"]["digest"].as_str().unwrap().to_string();
        let out = json(&["discover", &format!("{repository}:v2"), "--format", "json"]);
        assert_eq!(out["digest"], digest.as_str(), "{profile:?}");
        let seen = proxy.seen();
        assert!(
            seen.iter()
                .any(|s| s.method == "PUT" && s.path().ends_with("/manifests/v1")),
            "{profile:?}: the controller's writes did not go through the profile"
        );
        if profile.token_auth() {
            assert!(
                proxy.profile().unwrap().tokens_issued() > 0,
                "{profile:?}: no token asked for"
            );
        }
    }
}

/// A whole-repository mirror through registries that page: the source lists 123 tags in
/// pages of 50 with Quay's absolute, opaque links, its newest versions on the last page, and
/// pages its referrers API by 5; the target (ghcr: pages of 100, no referrers API) ends with
/// more tags than a page. Every page is read on both sides: `latest` picks from all of them,
/// all 7 referrers arrive, and a resync lists and looks without writing.
#[test]
fn a_mirror_reads_every_page_of_both_sides() {
    let origin = Registry::start();
    let target_registry = Registry::start();
    let source_proxy = FaultProxy::with_profile(&origin.addr, Profile::Quay);
    let target_proxy = FaultProxy::with_profile(&target_registry.addr, Profile::Ghcr);
    let input = tempfile::tempdir().unwrap();
    let shared = input.path().join("shared.txt");
    std::fs::write(&shared, "shared by every tag\n").unwrap();
    let mut tags: Vec<String> = (0..120).map(|i| format!("1877.{i}")).collect();
    tags.extend(["1878.0", "1878.1", "nightly"].map(String::from));
    // Seeded straight into the registry: only the mirror goes through the profiles.
    for tag in &tags {
        let own = input.path().join("own.txt");
        std::fs::write(&own, format!("content of {tag}\n")).unwrap();
        run_ok(&[
            "push",
            &format!("{}/gl/releases:{tag}", origin.addr),
            &format!("{}:text/plain", own.display()),
            &format!("{}:text/plain", shared.display()),
        ]);
    }
    let source = format!("{}/gl/releases", source_proxy.addr);
    let newest = format!("{source}:1878.1");
    let mut referrers = Vec::new();
    for i in 0..7 {
        let note = input.path().join(format!("note-{i}.txt"));
        std::fs::write(&note, format!("note {i}\n")).unwrap();
        let out = json(&[
            "push",
            &source,
            &format!("{}:text/plain", note.display()),
            "--subject",
            &newest,
            "-o",
            "json",
        ]);
        referrers.push(out["digest"].as_str().unwrap().to_string());
    }
    referrers.sort();

    let target = format!("{}/mirror/releases", target_proxy.addr);
    let latest = json(&[
        "mirror",
        &source,
        &target,
        "--latest",
        "3",
        "--referrers",
        "-o",
        "json",
    ]);
    let mut selected: Vec<&str> = latest["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["tag"].as_str().unwrap())
        .collect();
    selected.sort();
    assert_eq!(
        selected,
        ["1877.119", "1878.0", "1878.1"],
        "the newest versions are on the source's last page: {latest:#}"
    );
    let source_pages = source_proxy
        .seen()
        .iter()
        .filter(|s| s.method == "GET" && s.path().ends_with("/tags/list"))
        .count();
    assert!(
        source_pages >= 3,
        "{source_pages} source pages read for 123 tags in pages of 50"
    );
    let arrived = discovered(&format!("{target}:1878.1"));
    assert_eq!(
        arrived, referrers,
        "all referrers, beyond the first page of 5"
    );

    // Everything but `nightly`: the target ends with 122 tags and a fallback tag, two pages.
    let all = json(&["mirror", &source, &target, "--include", "^18", "-o", "json"]);
    assert_eq!(all["selected"], 122, "{all:#}");
    assert_eq!(all["unchanged"], 3, "{all:#}");
    assert_eq!(all["copied"], 119, "{all:#}");
    source_proxy.forget();
    target_proxy.forget();
    let again = json(&[
        "mirror",
        &source,
        &target,
        "--include",
        "^18",
        "--prune",
        "-o",
        "json",
    ]);
    assert_eq!(again["unchanged"], 122, "{again:#}");
    let seen = target_proxy.seen();
    let writes: Vec<&Seen> = registry_requests(&seen)
        .into_iter()
        .filter(|s| s.is_write())
        .collect();
    assert!(writes.is_empty(), "a resync wrote:\n{}", describe(&writes));
    let target_pages = target_proxy
        .seen()
        .iter()
        .filter(|s| s.method == "GET" && s.path().ends_with("/tags/list"))
        .count();
    assert!(
        target_pages >= 2,
        "{target_pages} target pages read for 123 tags in pages of 100"
    );
    // `--prune` with everything selected deleted nothing, on any page.
    for tag in ["1877.0", "1877.99", "1878.1"] {
        assert!(
            common::digest_of(&format!("{}/mirror/releases:{tag}", target_registry.addr)).is_some(),
            "{tag} is still there"
        );
    }
}
