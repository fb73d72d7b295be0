//! `oci:PATH` in the manifests of an `apply` run: an OCI image layout folder where a
//! repository or an image reference is expected, spelled as the CLI verbs take it. A relative
//! path is relative to the manifest's folder and, like a file's `path`, confined to it unless
//! `--allow-path-outside`. Before validation each one is replaced by the repository that
//! stands for the layout in the engine ([`Places`]), so from there on a layout is a repository
//! like any other; printing names it by its path again. The controller has no folders: its
//! validation refuses `oci:`.

use std::path::Path;

use super::outside_folder;
use crate::cli::common::{Failure, Places};
use crate::manifests::{LoadedMirror, LoadedObject, Origin};

/// The layouts named by the manifests, gathered into the run's [`Places`].
pub struct Layouts<'a> {
    pub places: &'a mut Places,
    pub allow_path_outside: bool,
}

/// One field that may name a layout.
enum Expected {
    Repository,
    Reference,
}

impl Layouts<'_> {
    /// Replaces the layouts an artefact names (`spec.repository`, `spec.source.image.reference`);
    /// the errors, each naming its field.
    pub fn artifact(&mut self, object: &mut LoadedObject) -> Vec<String> {
        let at = Place {
            origin: &object.origin,
            key: object.key(),
            base_dir: &object.base_dir,
        };
        let mut errors = Vec::new();
        let spec = &mut object.spec;
        self.replace(
            &at,
            "spec.repository",
            Expected::Repository,
            &mut spec.repository,
            &mut errors,
        );
        if let Some(image) = spec.source.image.as_mut() {
            self.replace(
                &at,
                "spec.source.image.reference",
                Expected::Reference,
                &mut image.reference,
                &mut errors,
            );
        }
        errors
    }

    /// Replaces the layouts a mirror names (`spec.source.repository`, `spec.repository`).
    pub fn mirror(&mut self, mirror: &mut LoadedMirror) -> Vec<String> {
        let at = Place {
            origin: &mirror.origin,
            key: mirror.key(),
            base_dir: &mirror.base_dir,
        };
        let mut errors = Vec::new();
        let spec = &mut mirror.spec;
        self.replace(
            &at,
            "spec.source.repository",
            Expected::Repository,
            &mut spec.source.repository,
            &mut errors,
        );
        self.replace(
            &at,
            "spec.repository",
            Expected::Repository,
            &mut spec.repository,
            &mut errors,
        );
        errors
    }

    fn replace(
        &mut self,
        at: &Place<'_>,
        field: &str,
        expected: Expected,
        text: &mut String,
        errors: &mut Vec<String>,
    ) {
        let Some(rest) = text.strip_prefix("oci:") else {
            return;
        };
        // The folder ends where a tag (`:`) or a digest (`@`) begins, as in skopeo's spelling.
        let folder_end = rest.find([':', '@']).unwrap_or(rest.len());
        let (folder, pin) = rest.split_at(folder_end);
        if !folder.is_empty()
            && !self.allow_path_outside
            && let Some(problem) = outside_folder(at.base_dir, folder)
        {
            errors.push(format!(
                "{}: {}: {field}: {problem}; allow it with `apply --allow-path-outside`",
                at.origin, at.key
            ));
            return;
        }
        let resolved = if folder.is_empty() {
            String::new()
        } else {
            at.base_dir.join(folder).display().to_string()
        };
        let spelled = format!("oci:{resolved}{pin}");
        let what = format!("{}: {}: {field}", at.origin, at.key);
        let replaced = match expected {
            Expected::Repository => self
                .places
                .repository(&what, &spelled)
                .map(|r| r.to_string()),
            Expected::Reference => self
                .places
                .reference(&what, &spelled)
                .map(|r| r.to_string()),
        };
        match replaced {
            Ok(replaced) => *text = replaced,
            Err(Failure { message, .. }) => errors.push(message),
        }
    }
}

/// Where a field is, for its errors and its folder.
struct Place<'a> {
    origin: &'a Origin,
    key: String,
    base_dir: &'a Path,
}
