//! Where in an object a value came from, so an error can name it: `spec.source.files[1].digest`
//! for a manifest, `--subject` for a command-line flag.

use std::fmt;

/// A path to one field, built by appending to a root. Cheap to clone; printed as written.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FieldPath(String);

impl FieldPath {
    /// A path that starts at `root` (`spec`, or a flag such as `--subject`).
    pub fn root(root: &str) -> Self {
        Self(root.to_string())
    }

    /// `self.name`
    pub fn child(&self, name: &str) -> Self {
        Self(format!("{}.{name}", self.0))
    }

    /// `self[index]`
    pub fn index(&self, index: usize) -> Self {
        Self(format!("{}[{index}]", self.0))
    }

    /// `self["key"]`
    pub fn key(&self, key: &str) -> Self {
        Self(format!("{}[{key:?}]", self.0))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One problem with one field, e.g. `spec.source.files[1].digest: required with url`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    pub field: FieldPath,
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// All the problems of one object, joined for a one-line condition message or CLI error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidSpec(pub Vec<FieldError>);

impl fmt::Display for InvalidSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&parts.join("; "))
    }
}

impl std::error::Error for InvalidSpec {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_print_as_the_manifest_spells_them() {
        let files = FieldPath::root("spec").child("source").child("files");
        assert_eq!(
            files.index(1).child("digest").to_string(),
            "spec.source.files[1].digest"
        );
        assert_eq!(
            FieldPath::root("spec")
                .child("annotations")
                .key("a b")
                .to_string(),
            r#"spec.annotations["a b"]"#
        );
    }
}
