//! Reading GardenArtifact objects from YAML files and folders, the way `kubectl apply -f` does,
//! with errors that name the file, the document, the object and the field.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::api::{API_VERSION, GROUP, GardenArtifactSpec, KIND, patterns::OBJECT_NAME_RE};

mod bounded;

/// Files larger than this are refused before parsing.
const MAX_FILE_BYTES: u64 = 8 * 1024 * 1024;

/// One GardenArtifact read from a file.
#[derive(Clone, Debug)]
pub struct LoadedObject {
    pub namespace: String,
    pub name: String,
    pub spec: GardenArtifactSpec,
    /// Folder of the file it came from: `path` sources are relative to it.
    pub base_dir: PathBuf,
    pub origin: Origin,
}

impl LoadedObject {
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// `file.yaml (document 2)`.
#[derive(Clone, Debug)]
pub struct Origin {
    pub file: PathBuf,
    pub document: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (document {})", self.file.display(), self.document)
    }
}

#[derive(Default, Debug)]
pub struct Loaded {
    pub objects: Vec<LoadedObject>,
    /// Documents that are not GardenArtifacts, skipped.
    pub notes: Vec<String>,
    pub errors: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Header {
    api_version: Option<String>,
    kind: Option<String>,
    #[serde(default)]
    metadata: Metadata,
}

#[derive(Deserialize, Default)]
struct Metadata {
    name: Option<String>,
    namespace: Option<String>,
}

/// Reads every path: a file, or a folder's `*.yaml` and `*.yml` files in name order.
pub fn load(paths: &[PathBuf]) -> Loaded {
    let mut loaded = Loaded::default();
    for path in paths {
        match files_of(path) {
            Ok(files) => {
                for file in files {
                    load_file(&file, &mut loaded);
                }
            }
            Err(e) => loaded.errors.push(e),
        }
    }
    let mut seen = BTreeSet::new();
    for object in &loaded.objects {
        if !seen.insert(object.key()) {
            loaded.errors.push(format!(
                "{}: {}: the same GardenArtifact is defined twice",
                object.origin,
                object.key()
            ));
        }
    }
    loaded
}

fn files_of(path: &Path) -> Result<Vec<PathBuf>, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if !meta.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|p| {
            p.is_file()
                && p.extension()
                    .is_some_and(|ext| ext == "yaml" || ext == "yml")
        })
        .collect();
    files.sort();
    Ok(files)
}

/// Deeper `[`/`{` nesting than any manifest needs.
const MAX_FLOW_NESTING: usize = 64;

/// The depth of `[` and `{` nesting outside quoted strings and comments, when it passes `max`.
fn flow_nesting_beyond(text: &str, max: usize) -> Option<usize> {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let mut quote: Option<char> = None;
    let mut comment = false;
    for c in text.chars() {
        match (quote, c) {
            (_, '\n') if comment => comment = false,
            _ if comment => {}
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '#') => comment = true,
            (None, '[' | '{') => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            (None, ']' | '}') => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    (deepest > max).then_some(deepest)
}

fn load_file(file: &Path, loaded: &mut Loaded) {
    let text = match std::fs::metadata(file) {
        Ok(meta) if meta.len() > MAX_FILE_BYTES => {
            loaded.errors.push(format!(
                "{}: {} bytes, larger than the {MAX_FILE_BYTES} a manifest file may have",
                file.display(),
                meta.len()
            ));
            return;
        }
        Ok(_) => match std::fs::read_to_string(file) {
            Ok(text) => text,
            Err(e) => {
                loaded.errors.push(format!("{}: {e}", file.display()));
                return;
            }
        },
        Err(e) => {
            loaded.errors.push(format!("{}: {e}", file.display()));
            return;
        }
    };
    let base_dir = file
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    // The YAML parser spends time quadratic in the nesting of flow collections (`[[[[...`),
    // before any budget applies; manifests nest a handful of levels.
    if let Some(depth) = flow_nesting_beyond(&text, MAX_FLOW_NESTING) {
        loaded.errors.push(format!(
            "{}: flow collections nest {depth} levels deep, at most {MAX_FLOW_NESTING} allowed",
            file.display()
        ));
        return;
    }
    // Aliases may not expand the file's documents beyond a multiple of its size.
    let budget = bounded::Budget::for_text(&text);
    for (i, document) in serde_yaml::Deserializer::from_str(&text).enumerate() {
        let origin = Origin {
            file: file.to_path_buf(),
            document: i + 1,
        };
        let value = match budget.value(document) {
            Ok(serde_yaml::Value::Null) => continue,
            Ok(value) => value,
            Err(e) => {
                loaded.errors.push(format!("{origin}: not valid YAML: {e}"));
                // The parser cannot resynchronise after an error; the rest of the file is lost.
                return;
            }
        };
        match parse_object(&value, &origin, &base_dir) {
            Ok(Some(object)) => loaded.objects.push(object),
            Ok(None) => {
                let header: Option<Header> = serde_yaml::from_value(value).ok();
                let kind = header
                    .and_then(|h| h.kind)
                    .unwrap_or_else(|| "a document without kind".into());
                loaded
                    .notes
                    .push(format!("{origin}: skipped {kind}, not a {KIND}"));
            }
            Err(e) => loaded.errors.push(format!("{origin}: {e}")),
        }
    }
}

/// `Ok(None)` for documents of other kinds.
fn parse_object(
    value: &serde_yaml::Value,
    origin: &Origin,
    base_dir: &Path,
) -> Result<Option<LoadedObject>, String> {
    let header: Header = serde_yaml::from_value(value.clone())
        .map_err(|e| format!("apiVersion, kind and metadata are not readable: {e}"))?;
    if header.api_version.is_none() && header.kind.as_deref() == Some(KIND) {
        // A typo (`apiversion:`) or a forgotten line, not a document of another kind.
        return Err(format!(
            "a {KIND} without apiVersion (expected {API_VERSION})"
        ));
    }
    let api_version = header.api_version.unwrap_or_default();
    let is_ours = api_version.split('/').next() == Some(GROUP);
    if header.kind.as_deref() != Some(KIND) || !is_ours {
        if is_ours {
            return Err(format!(
                "kind {:?} is not served by {API_VERSION}",
                header.kind.unwrap_or_default()
            ));
        }
        return Ok(None);
    }
    if api_version != API_VERSION {
        return Err(format!(
            "apiVersion {api_version:?}: this version reads {API_VERSION}"
        ));
    }
    let name = header.metadata.name.ok_or("metadata.name is required")?;
    if !OBJECT_NAME_RE.is_match(&name) || name.len() > 253 {
        return Err(format!(
            "metadata.name {name:?} is not a valid object name (lowercase DNS subdomain)"
        ));
    }
    let namespace = header
        .metadata
        .namespace
        .unwrap_or_else(|| "default".into());
    if !OBJECT_NAME_RE.is_match(&namespace) || namespace.len() > 63 {
        return Err(format!(
            "metadata.namespace {namespace:?} is not a valid namespace name"
        ));
    }
    let spec_value = value
        .get("spec")
        .ok_or_else(|| format!("{namespace}/{name}: spec is required"))?;
    let spec: GardenArtifactSpec =
        serde_path_to_error::deserialize(spec_value.clone()).map_err(|e| {
            // The path of an error at the top of the spec is `.`.
            let path = e.path().to_string();
            let field = match path.as_str() {
                "." => "spec".to_string(),
                path => format!("spec.{path}"),
            };
            format!("{namespace}/{name}: {field}: {}", e.inner())
        })?;
    Ok(Some(LoadedObject {
        namespace,
        name,
        spec,
        base_dir: base_dir.to_path_buf(),
        origin: origin.clone(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_text(text: &str) -> Loaded {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("m.yaml");
        std::fs::write(&file, text).unwrap();
        load(&[file])
    }

    #[test]
    fn deep_flow_nesting_is_refused_before_parsing() {
        let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
        let started = std::time::Instant::now();
        let loaded = load_text(&deep);
        assert!(
            loaded.errors[0].contains("nest 5000 levels deep"),
            "{:?}",
            loaded.errors
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        assert_eq!(
            flow_nesting_beyond("a: '[[[[' # {{{{\nb: [1, {c: 2}]", 2),
            None
        );
    }

    #[test]
    fn reads_our_objects_and_skips_others() {
        let loaded = load_text(
            r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: x}
---
apiVersion: oci.gardenlinux.io/v1alpha1
kind: GardenArtifact
metadata: {name: a, namespace: releases}
spec:
  repository: 127.0.0.1:5000/a
  tags: [v1]
  source: {files: [{name: a.release, content: x}]}
"#,
        );
        assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
        assert_eq!(loaded.objects.len(), 1);
        assert_eq!(loaded.objects[0].key(), "releases/a");
        assert_eq!(loaded.notes.len(), 1);
        assert!(loaded.notes[0].contains("ConfigMap"));
    }

    #[test]
    fn an_unknown_field_is_named_with_its_path() {
        let loaded = load_text(
            r#"
apiVersion: oci.gardenlinux.io/v1alpha1
kind: GardenArtifact
metadata: {name: a}
spec:
  repository: 127.0.0.1:5000/a
  tags: [v1]
  source: {files: [{name: a.release, contnet: x}]}
"#,
        );
        assert_eq!(loaded.errors.len(), 1);
        let e = &loaded.errors[0];
        assert!(e.contains("default/a: spec.source.files[0]"), "{e}");
        assert!(e.contains("contnet"), "{e}");
    }

    #[test]
    fn duplicates_and_missing_names_are_errors() {
        let loaded = load_text(
            r#"
apiVersion: oci.gardenlinux.io/v1alpha1
kind: GardenArtifact
metadata: {name: a}
spec: {repository: 127.0.0.1:5000/a, tags: [v1], source: {files: [{name: a.release, content: x}]}}
---
apiVersion: oci.gardenlinux.io/v1alpha1
kind: GardenArtifact
metadata: {name: a}
spec: {repository: 127.0.0.1:5000/a, tags: [v2], source: {files: [{name: a.release, content: x}]}}
---
apiVersion: oci.gardenlinux.io/v1alpha1
kind: GardenArtifact
metadata: {}
spec: {repository: 127.0.0.1:5000/a, tags: [v2], source: {files: [{name: a.release, content: x}]}}
"#,
        );
        assert_eq!(loaded.errors.len(), 2, "{:?}", loaded.errors);
        assert!(
            loaded
                .errors
                .iter()
                .any(|e| e.contains("metadata.name is required"))
        );
        assert!(loaded.errors.iter().any(|e| e.contains("defined twice")));
    }
}
