//! Media types: the OCI ones we write, and the Garden Linux suffix table (from
//! python-gardenlinux-lib), matched longest suffix first so `.tar.gz` never falls to `.gz`.

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
/// What ORAS writes when an artefact with an empty config names no type; the image spec
/// requires an `artifactType` in that case.
pub const UNKNOWN_ARTIFACT: &str = "application/vnd.unknown.artifact.v1";
/// The layer annotation that names a file.
pub const TITLE_ANNOTATION: &str = "org.opencontainers.image.title";
/// The prefix of the manifest annotations `spec.links` become (`io.gardenlinux.link.<rel>`).
pub const LINK_ANNOTATION_PREFIX: &str = "io.gardenlinux.link.";

/// Every manifest media type we read; sent as `Accept` on manifest requests.
pub const MANIFEST_ACCEPT: &[&str] = &[
    OCI_MANIFEST,
    OCI_INDEX,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
];

pub fn is_index(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_MANIFEST_LIST
}

/// (suffix, media type); the lookup sorts by suffix length, so the order here is for reading.
const GARDENLINUX_SUFFIXES: &[(&str, &str)] = &[
    (
        ".raw",
        "application/io.gardenlinux.image.archive.format.raw",
    ),
    (
        ".tar",
        "application/io.gardenlinux.image.archive.format.tar",
    ),
    (
        ".tar.gz",
        "application/io.gardenlinux.image.archive.format.tar.gz",
    ),
    (
        ".pxe.tar.gz",
        "application/io.gardenlinux.image.archive.format.pxe.tar.gz",
    ),
    (
        ".gcpimage.tar.gz",
        "application/io.gardenlinux.image.format.gcpimage.tar.gz",
    ),
    (".qcow2", "application/io.gardenlinux.image.format.qcow2"),
    (".vhd", "application/io.gardenlinux.image.format.vhd"),
    (".vmdk", "application/io.gardenlinux.image.format.vmdk"),
    (".ova", "application/io.gardenlinux.image.format.ova"),
    (".iso", "application/io.gardenlinux.image.format.iso"),
    (".vmlinuz", "application/io.gardenlinux.kernel"),
    (".initrd", "application/io.gardenlinux.initrd"),
    (".cmdline", "application/io.gardenlinux.cmdline"),
    (".uki", "application/io.gardenlinux.uki"),
    (".manifest", "application/io.gardenlinux.manifest"),
    (".release", "application/io.gardenlinux.release"),
    (".log", "application/io.gardenlinux.log"),
    (".sbom", "application/vnd.cyclonedx+json"),
];

/// The media type for a Garden Linux build file, or `None` for an unknown suffix: an unknown
/// suffix needs an explicit `mediaType`, never a guess.
pub fn for_file_name(name: &str) -> Option<&'static str> {
    GARDENLINUX_SUFFIXES
        .iter()
        .filter(|(suffix, _)| name.len() > suffix.len() && name.ends_with(suffix))
        .max_by_key(|(suffix, _)| suffix.len())
        .map(|(_, media_type)| *media_type)
}

pub fn known_suffixes() -> Vec<&'static str> {
    GARDENLINUX_SUFFIXES.iter().map(|(s, _)| *s).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_suffix_wins() {
        assert_eq!(
            for_file_name("aws-gardener_prod-amd64-1877.5.tar.gz"),
            Some("application/io.gardenlinux.image.archive.format.tar.gz")
        );
        assert_eq!(
            for_file_name("metal-pxe.pxe.tar.gz"),
            Some("application/io.gardenlinux.image.archive.format.pxe.tar.gz")
        );
        assert_eq!(
            for_file_name("x.raw"),
            Some("application/io.gardenlinux.image.archive.format.raw")
        );
        assert_eq!(
            for_file_name("x.sbom"),
            Some("application/vnd.cyclonedx+json")
        );
    }

    #[test]
    fn unknown_or_bare_suffixes_are_not_guessed() {
        assert_eq!(for_file_name("x.gz"), None);
        assert_eq!(for_file_name("README"), None);
        assert_eq!(for_file_name(".raw"), None);
    }
}
