//! The committed CRD is what the code generates: a change to the types without
//! `garden-artifacts crd > crds/gardenartifacts.oci.gardenlinux.io.yaml` fails here.

const COMMITTED: &str = include_str!("../crds/gardenartifacts.oci.gardenlinux.io.yaml");

#[test]
fn committed_crd_is_up_to_date() {
    let generated = garden_artifacts::cli::crd_yaml();
    assert!(
        generated == COMMITTED,
        "crds/gardenartifacts.oci.gardenlinux.io.yaml is stale: run\n  cargo run -- crd > crds/gardenartifacts.oci.gardenlinux.io.yaml"
    );
}

#[test]
fn crd_uses_no_cel_so_kubernetes_1_20_accepts_it() {
    assert!(!COMMITTED.contains("x-kubernetes-validations"));
    assert!(COMMITTED.contains("apiextensions.k8s.io/v1"));
}

const COMMITTED_MIRROR: &str = include_str!("../crds/gardenmirrors.oci.gardenlinux.io.yaml");

#[test]
fn committed_mirror_crd_is_up_to_date() {
    let generated =
        garden_artifacts::cli::crd_yaml_of(garden_artifacts::cli::CrdKind::GardenMirror);
    assert!(
        generated == COMMITTED_MIRROR,
        "crds/gardenmirrors.oci.gardenlinux.io.yaml is stale: run\n  cargo run -- crd GardenMirror > crds/gardenmirrors.oci.gardenlinux.io.yaml"
    );
    assert!(!COMMITTED_MIRROR.contains("x-kubernetes-validations"));
}

const COMMITTED_COMPONENT: &str = include_str!("../crds/gardencomponents.oci.gardenlinux.io.yaml");

#[test]
fn committed_component_crd_is_up_to_date() {
    let generated =
        garden_artifacts::cli::crd_yaml_of(garden_artifacts::cli::CrdKind::GardenComponent);
    assert!(
        generated == COMMITTED_COMPONENT,
        "crds/gardencomponents.oci.gardenlinux.io.yaml is stale: run\n  cargo run -- crd GardenComponent > crds/gardencomponents.oci.gardenlinux.io.yaml"
    );
    assert!(!COMMITTED_COMPONENT.contains("x-kubernetes-validations"));
}
