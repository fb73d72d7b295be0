//! `garden-artifacts apply -f PATH`: the engine over manifest files.

use std::path::{Component, Path, PathBuf};

use clap::{Args, ValueEnum};
use futures::{StreamExt, stream};
use serde::Serialize;

use super::{common, exit};
use crate::api::validate::{Frontend, validate, validate_component, validate_mirror};
use std::collections::{BTreeMap, BTreeSet};

use super::{RegistryArgs, SourceArgs};
use crate::engine::claims::{self, Claim, Conflict};
use crate::engine::desired::BlobOrigin;
use crate::engine::links::fallback_tag;
use crate::engine::order::{self, Node};
use crate::engine::plan::{Deletion, IndexChange};
use crate::engine::{Engine, Inputs, Mode, Plan, Report};
use crate::intent::{ArtifactIntent, FileOrigin, ReferenceTarget};
use crate::manifests::{self, LoadedObject};
use crate::oci::{Digest, ImageReference, Repository};
use crate::sources::UrlFetcher;

#[derive(Args)]
pub struct ApplyArgs {
    /// A manifest file (several YAML documents allowed), a folder of them, or `-` for standard
    /// input; repeatable.
    #[arg(short = 'f', long = "filename", required = true)]
    files: Vec<PathBuf>,
    /// Read the folders given with -f with their subfolders.
    #[arg(short = 'R', long)]
    recursive: bool,
    /// Print what would be written, write nothing.
    #[arg(long)]
    dry_run: bool,
    #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
    output: Output,
    #[command(flatten)]
    registry: RegistryArgs,
    #[command(flatten)]
    sources: SourceArgs,
    /// Objects reconciled at once.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Blob transfers at once within one object.
    #[arg(long, default_value_t = 4)]
    blob_concurrency: usize,
    /// Let `path` sources read files outside their manifest's folder (`..`, absolute paths,
    /// symlinks that lead out). Without it such a manifest is invalid input: applying the
    /// manifests of a pull request must not upload the runner's other files.
    #[arg(long)]
    allow_path_outside: bool,
}

mod components;
mod layouts;
mod mirrors;

#[derive(Clone, Copy, ValueEnum)]
enum Output {
    Text,
    Json,
}

/// One line of the result, as `-o json` prints it.
#[derive(Serialize)]
struct ObjectResult {
    /// Set for a GardenMirror; a GardenArtifact's line has none, as before mirrors existed.
    #[serde(skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    name: String,
    namespace: String,
    repository: String,
    digest: Option<String>,
    tags: Vec<String>,
    result: String,
    error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    plan: Option<Vec<String>>,
}

pub async fn run(args: ApplyArgs) -> u8 {
    let folders = if args.recursive {
        manifests::Folders::Recursive
    } else {
        manifests::Folders::TopLevel
    };
    let mut loaded = manifests::load_from(&args.files, folders);
    for note in &loaded.notes {
        eprintln!("note: {note}");
    }
    let mut errors = std::mem::take(&mut loaded.errors);
    // Every registry and layout of the run is read and written through these places.
    let mut places = match common::Places::new(&args.registry) {
        Ok(places) => places,
        Err(failure) => {
            eprintln!("error: {failure}");
            return failure.code;
        }
    };
    let mut layouts = layouts::Layouts {
        places: &mut places,
        allow_path_outside: args.allow_path_outside,
    };
    for object in &mut loaded.objects {
        errors.extend(layouts.artifact(object));
    }
    for mirror in &mut loaded.mirrors {
        errors.extend(layouts.mirror(mirror));
    }
    let loaded = loaded;
    let mut intents = Vec::with_capacity(loaded.objects.len());
    for object in &loaded.objects {
        match validate(&object.spec, Frontend::Apply) {
            Ok(intent) => {
                for reference in intent.references() {
                    let ReferenceTarget::Object(name) = &reference.target else {
                        continue;
                    };
                    let known = loaded
                        .objects
                        .iter()
                        .any(|o| o.namespace == object.namespace && o.name == *name);
                    if !known {
                        errors.push(format!(
                            "{}: {}: {}.artifactRef: no GardenArtifact {name:?} in namespace {} among the input",
                            object.origin,
                            object.key(),
                            reference.field,
                            object.namespace
                        ));
                    }
                }
                if !args.allow_path_outside {
                    for file in intent.files() {
                        let FileOrigin::Path(path) = &file.origin else {
                            continue;
                        };
                        if let Some(problem) = outside_folder(&object.base_dir, path) {
                            errors.push(format!(
                                "{}: {}: {}: {problem}; allow it with `apply --allow-path-outside`",
                                object.origin,
                                object.key(),
                                file.field.child("path"),
                            ));
                        }
                    }
                }
                intents.push(intent);
            }
            Err(invalid) => {
                for field in invalid.0 {
                    errors.push(format!("{}: {}: {field}", object.origin, object.key()));
                }
            }
        }
        if object.spec.credentials.is_some() {
            eprintln!(
                "note: {}: spec.credentials is read by the controller; apply uses the docker config",
                object.key()
            );
        }
    }
    let mut mirror_intents = Vec::with_capacity(loaded.mirrors.len());
    for mirror in &loaded.mirrors {
        match validate_mirror(&mirror.spec) {
            Ok(intent) => mirror_intents.push(intent),
            Err(invalid) => {
                for field in invalid.0 {
                    errors.push(format!("{}: {}: {field}", mirror.origin, mirror.key()));
                }
            }
        }
        if mirror.spec.credentials.is_some() || mirror.spec.source.credentials.is_some() {
            eprintln!(
                "note: {}: credentials are read by the controller; apply uses the docker config",
                mirror.key()
            );
        }
    }
    let known: BTreeSet<(String, String)> = loaded
        .objects
        .iter()
        .map(|o| (o.namespace.clone(), o.name.clone()))
        .collect();
    let mut component_intents = Vec::with_capacity(loaded.components.len());
    for component in &loaded.components {
        match validate_component(&component.spec) {
            Ok(intent) => {
                errors.extend(components::unknown_artifact_refs(
                    component, &intent, &known,
                ));
                component_intents.push(intent);
            }
            Err(invalid) => {
                for field in invalid.0 {
                    errors.push(format!(
                        "{}: {}: {field}",
                        component.origin,
                        component.key()
                    ));
                }
            }
        }
        if component.spec.credentials.is_some() {
            eprintln!(
                "note: {}: spec.credentials is read by the controller; apply uses the docker config",
                component.key()
            );
        }
    }
    if component_intents.len() == loaded.components.len() {
        errors.extend(components::same_version_twice(
            &loaded.components,
            &component_intents,
        ));
    }
    let mirror_order = match mirrors::order(&mirror_intents) {
        Ok(order) => order,
        Err(cycle) => {
            let names: Vec<String> = cycle.iter().map(|i| loaded.mirrors[*i].key()).collect();
            errors.push(format!(
                "these GardenMirrors read each other's targets in a cycle: {}",
                names.join(", ")
            ));
            Vec::new()
        }
    };
    if !errors.is_empty() {
        for e in &errors {
            eprintln!("error: {}", common::unmask(e));
        }
        eprintln!("error: invalid input, nothing was written");
        return exit::INVALID;
    }

    let engine = match UrlFetcher::new(args.sources.apply_policy()) {
        Ok(urls) => Engine::new(places.registry(), urls, args.blob_concurrency),
        Err(e) => {
            eprintln!("error: {e}");
            return exit::INVALID;
        }
    };

    let owners: Vec<String> = loaded.objects.iter().map(LoadedObject::key).collect();
    let repositories: Vec<String> = intents.iter().map(|i| i.repository.identity()).collect();
    let claims: Vec<Claim<'_>> = loaded
        .objects
        .iter()
        .zip(&owners)
        .zip(&repositories)
        .map(|((o, owner), repository)| Claim {
            owner,
            repository,
            tags: &o.spec.tags,
        })
        .collect();
    let conflicts = claims::conflicts(&claims);

    let nodes: Vec<Node<'_>> = loaded
        .objects
        .iter()
        .zip(&intents)
        .map(|(o, intent)| Node {
            namespace: &o.namespace,
            name: &o.name,
            intent,
        })
        .collect();
    let dependencies = order::dependencies(&nodes);
    let waves = match order::waves(&nodes) {
        Ok(waves) => waves,
        Err(cycle) => {
            let names: Vec<String> = cycle.iter().map(|i| loaded.objects[*i].key()).collect();
            eprintln!(
                "error: these objects read each other's artefacts in a cycle: {}",
                names.join(", ")
            );
            eprintln!("error: invalid input, nothing was written");
            return exit::INVALID;
        }
    };

    let mode = if args.dry_run {
        Mode::DryRun
    } else {
        Mode::Apply
    };
    let engine = &engine;
    let conflicts = &conflicts;
    let mut results: Vec<Option<ObjectResult>> = loaded.objects.iter().map(|_| None).collect();
    for wave in waves {
        // What earlier waves produced: `artifactRef`s resolve to these digests.
        let produced: BTreeMap<(String, String), ImageReference> = loaded
            .objects
            .iter()
            .zip(&intents)
            .zip(&results)
            .filter_map(|((o, intent), r)| {
                let digest = Digest::parse(r.as_ref()?.digest.as_ref()?).ok()?;
                Some((
                    (o.namespace.clone(), o.name.clone()),
                    intent.repository.with_digest(&digest),
                ))
            })
            .collect();
        let mut done = Vec::new();
        let mut runnable = Vec::new();
        for i in wave {
            let object = &loaded.objects[i];
            let blocked = dependencies[i].iter().find_map(|d| {
                let result = results[*d].as_ref()?;
                let key = loaded.objects[*d].key();
                if result.error.is_some() {
                    Some(failed(object, format!("depends on {key}, which failed")))
                } else if mode == Mode::DryRun && result.result != "unchanged" {
                    Some(pending(object, &key))
                } else {
                    None
                }
            });
            match blocked {
                Some(result) => done.push((i, result)),
                None => runnable.push(i),
            }
        }
        let produced = &produced;
        let reconciled: Vec<(usize, ObjectResult)> = stream::iter(runnable)
            .map(|i| {
                let object = &loaded.objects[i];
                let intent = &intents[i];
                let artifacts: BTreeMap<String, ImageReference> = produced
                    .iter()
                    .filter(|((ns, _), _)| *ns == object.namespace)
                    .map(|((_, name), reference)| (name.clone(), reference.clone()))
                    .collect();
                async move {
                    (
                        i,
                        reconcile_one(engine, conflicts, object, intent, artifacts, mode).await,
                    )
                }
            })
            .buffer_unordered(args.concurrency.max(1))
            .collect()
            .await;
        done.extend(reconciled);
        for (i, result) in done {
            results[i] = Some(result);
        }
    }
    let mut results: Vec<ObjectResult> = results.into_iter().flatten().collect();
    let published: Vec<components::Published> = loaded
        .objects
        .iter()
        .zip(&intents)
        .zip(&results)
        .map(|((object, intent), result)| {
            let settled = mode == Mode::Apply || result.result == "unchanged";
            components::Published {
                namespace: object.namespace.clone(),
                name: object.name.clone(),
                reference: result
                    .digest
                    .as_deref()
                    .filter(|_| settled && result.error.is_none())
                    .and_then(|digest| {
                        components::published_reference(&intent.repository, &intent.tags, digest)
                    }),
                missing_because: if result.error.is_some() {
                    "failed"
                } else {
                    "pending"
                },
            }
        })
        .collect();
    let artefacts: Vec<mirrors::Artefact<'_>> = loaded
        .objects
        .iter()
        .zip(&intents)
        .zip(&results)
        .map(|((object, intent), result)| mirrors::Artefact {
            key: object.key(),
            intent,
            failed: result.error.is_some(),
        })
        .collect();
    results.extend(
        mirrors::run(
            engine,
            &loaded.mirrors,
            &mirror_intents,
            &mirror_order,
            &artefacts,
            mode,
        )
        .await,
    );
    results.extend(
        components::run(
            engine,
            &loaded.components,
            &component_intents,
            &published,
            mode,
        )
        .await,
    );

    // Layouts are named by their folders again.
    for result in &mut results {
        result.repository = common::unmask(&result.repository);
        for text in result
            .error
            .iter_mut()
            .chain(result.plan.iter_mut().flatten())
        {
            *text = common::unmask(text);
        }
    }
    match args.output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&results).expect("results serialize")
        ),
        Output::Text => print_text(&results),
    }
    if results.iter().any(|r| r.error.is_some()) {
        exit::FAILED
    } else {
        exit::OK
    }
}

/// Why `path`, relative to the manifest's folder `base_dir`, is outside that folder; `None`
/// when it is inside. Symlinks are followed where the path exists; a path that does not exist
/// is judged by its words (`..`, absolute) and left to the read to report.
pub(super) fn outside_folder(base_dir: &Path, path: &str) -> Option<String> {
    let folder = base_dir
        .canonicalize()
        .unwrap_or_else(|_| base_dir.to_path_buf());
    let joined = base_dir.join(path);
    match joined.canonicalize() {
        Ok(real) if real.starts_with(&folder) => None,
        Ok(real) => Some(format!(
            "{path:?} resolves to {}, outside the manifest's folder {}",
            real.display(),
            folder.display()
        )),
        Err(_) => {
            let mut depth: usize = 0;
            for component in Path::new(path).components() {
                match component {
                    Component::Normal(_) => depth += 1,
                    Component::CurDir => {}
                    Component::ParentDir if depth > 0 => depth -= 1,
                    Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                        return Some(format!(
                            "{path:?} leads outside the manifest's folder {}",
                            folder.display()
                        ));
                    }
                }
            }
            None
        }
    }
}

async fn reconcile_one(
    engine: &Engine,
    conflicts: &BTreeMap<String, Vec<Conflict>>,
    object: &LoadedObject,
    intent: &ArtifactIntent,
    artifacts: BTreeMap<String, ImageReference>,
    mode: Mode,
) -> ObjectResult {
    if let Some(lost) = conflicts.get(&object.key()) {
        let reason = lost
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        return failed(object, format!("{reason} (listed earlier)"));
    }
    let inputs = Inputs {
        base_dir: Some(object.base_dir.clone()),
        artifacts,
        ..Default::default()
    };
    match engine.reconcile(intent, &inputs, mode).await {
        Ok(report) => succeeded(object, &report, mode),
        Err(e) => failed(object, common::engine_failure(e).message),
    }
}

fn succeeded(object: &LoadedObject, report: &Report, mode: Mode) -> ObjectResult {
    ObjectResult {
        kind: None,
        name: object.name.clone(),
        namespace: object.namespace.clone(),
        repository: report.repository.to_string(),
        digest: Some(report.digest.clone()),
        tags: report.tags.clone(),
        result: report.outcome.to_string(),
        error: None,
        plan: (mode == Mode::DryRun).then(|| describe_plan(report)),
    }
}

/// A dry run cannot plan an object whose input an earlier object would write first.
fn pending(object: &LoadedObject, dependency: &str) -> ObjectResult {
    ObjectResult {
        kind: None,
        name: object.name.clone(),
        namespace: object.namespace.clone(),
        repository: object.spec.repository.clone(),
        digest: None,
        tags: object.spec.tags.clone(),
        result: "pending".into(),
        error: None,
        plan: Some(vec![format!(
            "(planned after {dependency}, which this run would write first)"
        )]),
    }
}

fn failed(object: &LoadedObject, error: String) -> ObjectResult {
    ObjectResult {
        kind: None,
        name: object.name.clone(),
        namespace: object.namespace.clone(),
        repository: object.spec.repository.clone(),
        digest: None,
        tags: object.spec.tags.clone(),
        result: "failed".into(),
        error: Some(error),
        plan: None,
    }
}

/// The writes of a plan, one line each, in the order they would happen.
fn describe_plan(report: &Report) -> Vec<String> {
    let mut lines = Vec::new();
    describe_stages(&report.plan, &report.repository, &report.digest, &mut lines);
    lines
}

fn describe_stages(plan: &Plan, repository: &Repository, digest: &str, lines: &mut Vec<String>) {
    if plan.probe_push {
        lines.push("open and cancel an upload (proof of write access)".to_string());
    }
    for blob in &plan.blobs {
        let from = match &blob.origin {
            BlobOrigin::Inline(_) => "inline content".to_string(),
            BlobOrigin::File(path) => format!("file {}", path.display()),
            BlobOrigin::Url { url, .. } => format!("url {url}"),
            BlobOrigin::Repository(repo) if repo.same_registry(repository) => {
                format!("mount from {repo}")
            }
            BlobOrigin::Repository(repo) => format!("copy from {repo}"),
        };
        lines.push(format!(
            "blob {} ({} bytes) from {from}",
            blob.digest, blob.size
        ));
    }
    for manifest in &plan.manifests {
        lines.push(format!(
            "manifest {} ({}) by digest",
            manifest.digest, manifest.media_type
        ));
    }
    for write in &plan.tags {
        match &write.previous {
            Some(previous) => lines.push(format!("tag {} -> {digest} (now {previous})", write.tag)),
            None => lines.push(format!("tag {} -> {digest} (new)", write.tag)),
        }
    }
    for copy in &plan.referrers {
        if copy.plan.is_empty() {
            continue;
        }
        let what = if copy.cosign_tag {
            "cosign tag"
        } else {
            "referrer"
        };
        lines.push(format!("{what} {}:", copy.desired.manifest.digest));
        let mut nested = Vec::new();
        describe_stages(
            &copy.plan,
            &copy.desired.repository,
            &copy.desired.manifest.digest,
            &mut nested,
        );
        lines.extend(nested.into_iter().map(|line| format!("  {line}")));
    }
    for update in &plan.fallback_indexes {
        let index = format!(
            "fallback index {}:{}",
            update.repository,
            fallback_tag(&update.subject)
        );
        match &update.change {
            IndexChange::Add(entry) => lines.push(format!(
                "{index}: add {}",
                entry.get("digest").and_then(|d| d.as_str()).unwrap_or("?")
            )),
            IndexChange::Remove(digest) => lines.push(format!("{index}: remove {digest}")),
        }
    }
    for deletion in &plan.deletions {
        match deletion {
            Deletion::Tag { tag, digest } => {
                lines.push(format!("delete tag {tag} (points at {digest})"))
            }
            Deletion::Manifest { digest } => lines.push(format!("delete manifest {digest}")),
        }
    }
}

fn print_text(results: &[ObjectResult]) {
    for r in results {
        let target = match &r.digest {
            Some(digest) => format!("{}@{digest}", r.repository),
            None => r.repository.clone(),
        };
        let result = match &r.error {
            Some(e) => format!("failed: {e}"),
            None => r.result.clone(),
        };
        println!(
            "{}/{}  {target}  {}  {result}",
            r.namespace,
            r.name,
            r.tags.join(",")
        );
        for line in r.plan.iter().flatten() {
            println!("  would write {line}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_confined_to_the_manifest_folder() {
        let root = tempfile::tempdir().unwrap();
        let folder = root.path().join("manifests");
        std::fs::create_dir_all(folder.join("files")).unwrap();
        std::fs::write(folder.join("files/a.raw"), "a").unwrap();
        std::fs::write(root.path().join("secret.json"), "{}").unwrap();
        std::os::unix::fs::symlink(root.path().join("secret.json"), folder.join("link.json"))
            .unwrap();
        std::os::unix::fs::symlink(folder.join("files/a.raw"), folder.join("inner.raw")).unwrap();
        for inside in [
            "files/a.raw",
            "./files/../files/a.raw",
            "inner.raw",
            "missing.raw",
            "files/../missing.raw",
        ] {
            assert_eq!(outside_folder(&folder, inside), None, "{inside}");
        }
        let absolute_inside = folder.join("files/a.raw");
        assert_eq!(
            outside_folder(&folder, absolute_inside.to_str().unwrap()),
            None
        );
        for outside in [
            "../secret.json",
            "link.json",
            "/etc/hostname",
            "../missing.json",
            "files/../../missing.json",
            "/nonexistent/x",
        ] {
            assert!(
                outside_folder(&folder, outside).is_some(),
                "{outside} should be outside"
            );
        }
    }
}
