//! Reading GardenArtifact objects from YAML files and folders, the way `kubectl apply -f` does,
//! with errors that name the file, the document, the object and the field.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::api::component::COMPONENT_KIND;
use crate::api::mirror::MIRROR_KIND;
use crate::api::{
    API_VERSION, GROUP, GardenArtifactSpec, GardenComponentSpec, GardenMirrorSpec, KIND,
    patterns::OBJECT_NAME_RE,
};

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

/// One GardenMirror read from a file.
#[derive(Clone, Debug)]
pub struct LoadedMirror {
    pub namespace: String,
    pub name: String,
    pub spec: GardenMirrorSpec,
    /// Folder of the file it came from: `oci:PATH` layouts are relative to it.
    pub base_dir: PathBuf,
    pub origin: Origin,
}

impl LoadedMirror {
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// One GardenComponent read from a file.
#[derive(Clone, Debug)]
pub struct LoadedComponent {
    pub namespace: String,
    pub name: String,
    pub spec: GardenComponentSpec,
    pub origin: Origin,
}

impl LoadedComponent {
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// A document of one of our kinds.
enum Document {
    Artifact(Box<LoadedObject>),
    Mirror(Box<LoadedMirror>),
    Component(Box<LoadedComponent>),
}

/// `file.yaml (document 2)`, `file.yaml (document 1, item 3)` for an object of a `kind: List`.
#[derive(Clone, Debug)]
pub struct Origin {
    pub file: PathBuf,
    pub document: usize,
    /// The place in a `kind: List` document's `items`, counted from 1.
    pub item: Option<usize>,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = if self.file == Path::new(STDIN) {
            "standard input".to_string()
        } else {
            self.file.display().to_string()
        };
        match self.item {
            Some(item) => write!(f, "{file} (document {}, item {item})", self.document),
            None => write!(f, "{file} (document {})", self.document),
        }
    }
}

/// The path that means standard input, as with `kubectl apply -f -`.
pub const STDIN: &str = "-";

/// Whether the folders among the paths are read with their subfolders (`-R`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Folders {
    TopLevel,
    Recursive,
}

#[derive(Default, Debug)]
pub struct Loaded {
    pub objects: Vec<LoadedObject>,
    pub mirrors: Vec<LoadedMirror>,
    pub components: Vec<LoadedComponent>,
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
    load_from(paths, Folders::TopLevel)
}

/// Reads every path: `-` (standard input), a file, or a folder's `*.yaml`, `*.yml` and `*.json`
/// files in name order (with `Folders::Recursive`, its subfolders' too). A path that yields no
/// GardenArtifact is named in the notes: a wrong path should not look like nothing to do.
pub fn load_from(paths: &[PathBuf], folders: Folders) -> Loaded {
    let mut loaded = Loaded::default();
    let mut stdin_read = false;
    for path in paths {
        let before = loaded.objects.len() + loaded.mirrors.len() + loaded.components.len();
        let problems_before = loaded.errors.len();
        if path == Path::new(STDIN) {
            if stdin_read {
                loaded
                    .errors
                    .push("-f -: standard input can be read only once".into());
                continue;
            }
            stdin_read = true;
            load_file(path, &mut loaded);
        } else {
            match files_of(path, folders) {
                Ok(files) => {
                    for file in files {
                        load_file(&file, &mut loaded);
                    }
                }
                Err(e) => loaded.errors.push(e),
            }
        }
        if loaded.objects.len() + loaded.mirrors.len() + loaded.components.len() == before
            && loaded.errors.len() == problems_before
        {
            let shown = if path == Path::new(STDIN) {
                "standard input".to_string()
            } else {
                path.display().to_string()
            };
            let hint = if folders == Folders::TopLevel && path.is_dir() {
                " (subfolders are read with -R)"
            } else {
                ""
            };
            loaded
                .notes
                .push(format!("{shown}: no {KIND} or {MIRROR_KIND} in it{hint}"));
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
    let mut seen = BTreeSet::new();
    for mirror in &loaded.mirrors {
        if !seen.insert(mirror.key()) {
            loaded.errors.push(format!(
                "{}: {}: the same {MIRROR_KIND} is defined twice",
                mirror.origin,
                mirror.key()
            ));
        }
    }
    let mut seen = BTreeSet::new();
    for component in &loaded.components {
        if !seen.insert(component.key()) {
            loaded.errors.push(format!(
                "{}: {}: the same {COMPONENT_KIND} is defined twice",
                component.origin,
                component.key()
            ));
        }
    }
    loaded
}

fn files_of(path: &Path, folders: Folders) -> Result<Vec<PathBuf>, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if !meta.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .collect();
    entries.sort();
    let mut files = Vec::new();
    for entry in entries {
        if entry.is_dir() {
            if folders == Folders::Recursive {
                files.extend(files_of(&entry, folders)?);
            }
        } else if entry.is_file()
            && entry
                .extension()
                .is_some_and(|ext| ext == "yaml" || ext == "yml" || ext == "json")
        {
            files.push(entry);
        }
    }
    Ok(files)
}

/// The text of a manifest file, or of standard input for `-`, at most `MAX_FILE_BYTES`.
fn read_text(file: &Path) -> Result<String, String> {
    use std::io::Read;
    let too_large = |len: u64| {
        format!(
            "{}: {len} bytes, larger than the {MAX_FILE_BYTES} a manifest file may have",
            file.display()
        )
    };
    let mut bytes = Vec::new();
    if file == Path::new(STDIN) {
        std::io::stdin()
            .lock()
            .take(MAX_FILE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| format!("standard input: {e}"))?;
        if bytes.len() as u64 > MAX_FILE_BYTES {
            return Err(format!(
                "standard input: larger than the {MAX_FILE_BYTES} bytes a manifest may have"
            ));
        }
    } else {
        let meta = std::fs::metadata(file).map_err(|e| format!("{}: {e}", file.display()))?;
        if meta.len() > MAX_FILE_BYTES {
            return Err(too_large(meta.len()));
        }
        bytes = std::fs::read(file).map_err(|e| format!("{}: {e}", file.display()))?;
    }
    let text = String::from_utf8(bytes).map_err(|_| {
        format!(
            "{}: not UTF-8 text",
            if file == Path::new(STDIN) {
                "standard input".to_string()
            } else {
                file.display().to_string()
            }
        )
    })?;
    // Editors on Windows start UTF-8 files with a byte-order mark; kubectl reads them.
    Ok(match text.strip_prefix('\u{feff}') {
        Some(rest) => rest.to_string(),
        None => text,
    })
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
    let text = match read_text(file) {
        Ok(text) => text,
        Err(e) => {
            loaded.errors.push(e);
            return;
        }
    };
    // `path` sources of standard input are relative to the working folder, as kubectl's.
    let base_dir = match file.parent() {
        Some(parent) if file != Path::new(STDIN) && !parent.as_os_str().is_empty() => {
            parent.to_path_buf()
        }
        _ => PathBuf::from("."),
    };
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
            item: None,
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
        match list_items(&value) {
            Some(items) => {
                for (j, item) in items.iter().enumerate() {
                    let origin = Origin {
                        item: Some(j + 1),
                        ..origin.clone()
                    };
                    load_value(item.clone(), &origin, &base_dir, loaded);
                }
            }
            None => load_value(value, &origin, &base_dir, loaded),
        }
    }
}

/// The `items` of a `kind: List` (what `kubectl get -o yaml` writes) or `kind: ...List`
/// document, which kubectl unpacks.
fn list_items(value: &serde_yaml::Value) -> Option<&Vec<serde_yaml::Value>> {
    let kind = value.get("kind")?.as_str()?;
    if !kind.ends_with("List") {
        return None;
    }
    value.get("items")?.as_sequence()
}

fn load_value(value: serde_yaml::Value, origin: &Origin, base_dir: &Path, loaded: &mut Loaded) {
    match parse_object(&value, origin, base_dir) {
        Ok(Some(Document::Artifact(object))) => loaded.objects.push(*object),
        Ok(Some(Document::Mirror(mirror))) => loaded.mirrors.push(*mirror),
        Ok(Some(Document::Component(component))) => loaded.components.push(*component),
        Ok(None) => {
            let header: Option<Header> = serde_yaml::from_value(value).ok();
            let kind = header
                .and_then(|h| h.kind)
                .unwrap_or_else(|| "a document without kind".into());
            loaded.notes.push(format!(
                "{origin}: skipped {kind}, not a {KIND}, {MIRROR_KIND} or {COMPONENT_KIND}"
            ));
        }
        Err(e) => loaded.errors.push(format!("{origin}: {e}")),
    }
}

/// `Ok(None)` for documents of other kinds.
fn parse_object(
    value: &serde_yaml::Value,
    origin: &Origin,
    base_dir: &Path,
) -> Result<Option<Document>, String> {
    let header: Header = serde_yaml::from_value(value.clone())
        .map_err(|e| format!("apiVersion, kind and metadata are not readable: {e}"))?;
    let kind = header.kind.clone().unwrap_or_default();
    let known = kind == KIND || kind == MIRROR_KIND || kind == COMPONENT_KIND;
    if header.api_version.is_none() && known {
        // A typo (`apiversion:`) or a forgotten line, not a document of another kind.
        return Err(format!(
            "a {kind} without apiVersion (expected {API_VERSION})"
        ));
    }
    let api_version = header.api_version.unwrap_or_default();
    let is_ours = api_version.split('/').next() == Some(GROUP);
    if !known || !is_ours {
        if is_ours {
            return Err(format!("kind {kind:?} is not served by {API_VERSION}"));
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
    let spec_error = |e: serde_path_to_error::Error<serde_yaml::Error>| {
        // The path of an error at the top of the spec is `.`.
        let path = e.path().to_string();
        let field = match path.as_str() {
            "." => "spec".to_string(),
            path => format!("spec.{path}"),
        };
        format!("{namespace}/{name}: {field}: {}", e.inner())
    };
    if kind == MIRROR_KIND {
        let spec: GardenMirrorSpec =
            serde_path_to_error::deserialize(spec_value.clone()).map_err(spec_error)?;
        return Ok(Some(Document::Mirror(Box::new(LoadedMirror {
            namespace,
            name,
            spec,
            base_dir: base_dir.to_path_buf(),
            origin: origin.clone(),
        }))));
    }
    if kind == COMPONENT_KIND {
        let spec: GardenComponentSpec =
            serde_path_to_error::deserialize(spec_value.clone()).map_err(spec_error)?;
        return Ok(Some(Document::Component(Box::new(LoadedComponent {
            namespace,
            name,
            spec,
            origin: origin.clone(),
        }))));
    }
    let spec: GardenArtifactSpec =
        serde_path_to_error::deserialize(spec_value.clone()).map_err(spec_error)?;
    Ok(Some(Document::Artifact(Box::new(LoadedObject {
        namespace,
        name,
        spec,
        base_dir: base_dir.to_path_buf(),
        origin: origin.clone(),
    }))))
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

    const OBJECT: &str = "apiVersion: oci.gardenlinux.io/v1alpha1\nkind: GardenArtifact\nmetadata: {name: NAME}\nspec: {repository: 127.0.0.1:5000/a, tags: [NAME], source: {files: [{name: a.release, content: x}]}}\n";

    fn object(name: &str) -> String {
        OBJECT.replace("NAME", name)
    }

    #[test]
    fn a_byte_order_mark_and_lists_are_read_as_kubectl_reads_them() {
        let loaded = load_text(&format!("\u{feff}{}", object("bom")));
        assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
        assert_eq!(loaded.objects[0].key(), "default/bom");

        let items: Vec<serde_yaml::Value> = ["a", "b"]
            .iter()
            .map(|n| serde_yaml::from_str(&object(n)).unwrap())
            .collect();
        let mut list = serde_yaml::Mapping::new();
        list.insert("apiVersion".into(), "v1".into());
        list.insert("kind".into(), "List".into());
        list.insert("items".into(), serde_yaml::Value::Sequence(items));
        let loaded = load_text(&serde_yaml::to_string(&list).unwrap());
        assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
        let keys: Vec<String> = loaded.objects.iter().map(LoadedObject::key).collect();
        assert_eq!(keys, ["default/a", "default/b"]);
        assert_eq!(
            loaded.objects[1]
                .origin
                .to_string()
                .rsplit_once(' ')
                .unwrap()
                .0
                .rsplit_once('(')
                .unwrap()
                .1,
            "document 1, item"
        );
    }

    #[test]
    fn recursion_is_asked_for_and_paths_without_objects_are_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/a.yaml"), object("a")).unwrap();
        std::fs::write(
            dir.path().join("b.json"),
            "{\"apiVersion\": \"v1\", \"kind\": \"ConfigMap\"}",
        )
        .unwrap();
        let paths = [dir.path().to_path_buf()];
        let top = load_from(&paths, Folders::TopLevel);
        assert!(top.objects.is_empty());
        assert!(
            top.notes
                .iter()
                .any(|n| n.contains("no GardenArtifact or GardenMirror in it") && n.contains("-R")),
            "{:?}",
            top.notes
        );
        let deep = load_from(&paths, Folders::Recursive);
        assert_eq!(deep.objects.len(), 1, "{:?}", deep.errors);
        assert!(
            !deep
                .notes
                .iter()
                .any(|n| n.contains("no GardenArtifact or GardenMirror in it"))
        );
    }
}
