//! How the controller names an object in logs, retries and ownership messages. Which objects a
//! change concerns, and who owns which tag, is the index's (index.rs).

use kube::{Resource, ResourceExt};

pub fn key(object: &impl Resource) -> String {
    format!(
        "{}/{}",
        object.namespace().unwrap_or_default(),
        object.name_any()
    )
}
