//! A GardenArtifact as the controller watches it: parsed, or (a field of a newer CRD version,
//! a hand edit) invalid, with why and where. One object that does not parse then stays one
//! object reported on itself, instead of a watch that fails for all of them.

use std::borrow::Cow;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::json;

use super::apply::{Settled, now};
use super::context::Context;
use super::events::{self, Failure};
use super::reconcile::{Error, FIELD_MANAGER};
use super::status::{Observation, next_status};
use super::watches;
use crate::api::{API_VERSION, GardenArtifact, GardenArtifactStatus, KIND};

#[derive(Clone, Debug)]
pub struct Watched(pub Result<GardenArtifact, Invalid>);

/// An object that does not deserialize as this version's GardenArtifact.
#[derive(Clone, Debug)]
pub struct Invalid {
    /// The field path and serde's message, as in `spec: unknown field `x``.
    pub error: String,
    pub metadata: ObjectMeta,
    /// Its status, when that still parses: kept, so that a report writes only what changed.
    pub status: Option<GardenArtifactStatus>,
}

impl Watched {
    pub fn valid(&self) -> Option<&GardenArtifact> {
        self.0.as_ref().ok()
    }
}

impl<'de> Deserialize<'de> for Watched {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        match serde_path_to_error::deserialize::<_, GardenArtifact>(&value) {
            Ok(object) => Ok(Watched(Ok(object))),
            Err(error) => {
                let null = serde_json::Value::Null;
                // Without metadata it is no object at all: that fails the watch, as before.
                let metadata = ObjectMeta::deserialize(value.get("metadata").unwrap_or(&null))
                    .map_err(D::Error::custom)?;
                let status = value
                    .get("status")
                    .and_then(|s| GardenArtifactStatus::deserialize(s).ok());
                let path = error.path().to_string();
                let error = match path.as_str() {
                    "." => error.inner().to_string(),
                    path => format!("{path}: {}", error.inner()),
                };
                Ok(Watched(Err(Invalid {
                    error,
                    metadata,
                    status,
                })))
            }
        }
    }
}

/// Only kube's finalizer helper asks for it (its bound), and never sends it: an invalid object
/// serializes as what is known of it.
impl Serialize for Watched {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match &self.0 {
            Ok(object) => object.serialize(serializer),
            Err(invalid) => json!({
                "apiVersion": API_VERSION,
                "kind": KIND,
                "metadata": invalid.metadata,
                "status": invalid.status,
            })
            .serialize(serializer),
        }
    }
}

impl Resource for Watched {
    type DynamicType = ();
    type Scope = <GardenArtifact as Resource>::Scope;

    fn kind(dt: &()) -> Cow<'_, str> {
        GardenArtifact::kind(dt)
    }

    fn group(dt: &()) -> Cow<'_, str> {
        GardenArtifact::group(dt)
    }

    fn version(dt: &()) -> Cow<'_, str> {
        GardenArtifact::version(dt)
    }

    fn plural(dt: &()) -> Cow<'_, str> {
        GardenArtifact::plural(dt)
    }

    fn meta(&self) -> &ObjectMeta {
        match &self.0 {
            Ok(object) => object.meta(),
            Err(invalid) => &invalid.metadata,
        }
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        match &mut self.0 {
            Ok(object) => object.meta_mut(),
            Err(invalid) => &mut invalid.metadata,
        }
    }
}

/// An object that does not parse, reported on itself: `Stalled` with reason `InvalidObject`
/// and the field that failed, and a Warning when that is news. Written by server-side apply of
/// the status alone, from the status as it was, so nothing else of it is lost.
pub async fn report_invalid(
    api: &Api<Watched>,
    invalid: &Invalid,
    ctx: &Context,
) -> Result<Settled, Error> {
    let object = &Watched(Err(invalid.clone()));
    let reason = "InvalidObject";
    let message = format!("this controller cannot read the object: {}", invalid.error);
    let observation = Observation::Stalled {
        reason,
        message: &message,
    };
    let next = next_status(
        invalid.status.as_ref(),
        invalid.metadata.generation,
        &observation,
        &now(),
    );
    let changed = invalid.status.as_ref() != Some(&next);
    if changed {
        let patch = json!({ "apiVersion": API_VERSION, "kind": KIND, "status": next });
        api.patch_status(
            &object.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
        .map_err(Error::Status)?;
        ctx.metrics.status_written();
    }
    events::failure(ctx, object, Failure::Stalled, changed, reason, &message).await;
    Ok(Settled::Stalled(Action::await_change(), "invalid"))
}

/// An object that does not parse is being deleted: what it wrote cannot be known, so the
/// registry is left as it is, a Warning says so, and the finalizer goes instead of hanging.
pub async fn skip_cleanup(object: &Watched, invalid: &Invalid, ctx: &Context) -> Action {
    let note = format!(
        "this controller cannot read the object ({}): the registry is left as it is",
        invalid.error
    );
    tracing::warn!(object = %watches::key(object), "{note}");
    events::publish(
        ctx,
        object,
        EventType::Warning,
        "CleanupSkipped",
        "Delete",
        &note,
    )
    .await;
    Action::await_change()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::api::{API_VERSION, KIND};

    fn watched(spec: serde_json::Value) -> Watched {
        serde_json::from_value(json!({
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": { "name": "a", "namespace": "ns", "generation": 3 },
            "spec": spec,
            "status": { "digest": format!("sha256:{}", "1".repeat(64)) },
        }))
        .expect("any object with metadata deserializes")
    }

    #[test]
    fn a_valid_object_parses() {
        let object = watched(json!({
            "repository": "registry.example.com/a", "tags": ["v1"],
            "source": { "files": [{ "name": "a.txt", "content": "a" }] },
        }));
        assert_eq!(object.valid().expect("valid").spec.tags, ["v1"]);
    }

    #[test]
    fn a_field_of_a_newer_version_is_reported_with_its_path() {
        let object = watched(json!({
            "repository": "registry.example.com/a", "tags": ["v1"],
            "source": { "files": [{ "name": "a.txt", "content": "a", "compression": "zstd" }] },
        }));
        let Err(invalid) = &object.0 else {
            panic!("an unknown field parsed: {object:?}")
        };
        assert!(
            invalid.error.starts_with("spec.source.files[0]")
                && invalid.error.contains("compression"),
            "{}",
            invalid.error
        );
        assert_eq!(object.meta().name.as_deref(), Some("a"));
        assert_eq!(object.meta().generation, Some(3));
        assert!(invalid.status.as_ref().is_some_and(|s| s.digest.is_some()));
    }

    #[test]
    fn a_value_of_the_wrong_type_is_reported_with_its_path() {
        let object = watched(json!({
            "repository": "registry.example.com/a", "tags": "v1", "source": {},
        }));
        let error = &object.0.as_ref().expect_err("a string for a list").error;
        assert!(error.starts_with("spec.tags: invalid type"), "{error}");
    }
}
