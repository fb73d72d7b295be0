//! Reading a component version back for `discover` and `pull`: a manifest whose config is an
//! OCM (or legacy cnudie) component config holds its descriptor in the layer that config
//! names; the blob is verified against its digest before it is untarred.

use futures::TryStreamExt;

use super::common::{Document, Failure};
use crate::oci::Repository;
use crate::oci::digest::sha256_digest;
use crate::oci::ocm::{self, Descriptor, Format};
use crate::registry::Registry;

/// Descriptors are a few kilobytes; a layer beyond this is not one.
const MAX_DESCRIPTOR_BYTES: u64 = 16 * 1024 * 1024;

/// `component-descriptor.yaml` of the component version `document` (in `repo`), as stored;
/// `None` when the manifest is not a component version.
pub async fn descriptor_yaml(
    client: &dyn Registry,
    repo: &Repository,
    document: &Document,
) -> Result<Option<Vec<u8>>, Failure> {
    let Some(config) = &document.config else {
        return Ok(None);
    };
    if Format::of_config(&config.media_type).is_none() {
        return Ok(None);
    }
    // The config names the layer; readers that find no usable config take layer 0, as
    // gardener-ocm does.
    let config_bytes = blob(client, repo, &config.digest, config.size).await?;
    let named: Option<(String, String)> =
        serde_json::from_slice::<serde_json::Value>(&config_bytes)
            .ok()
            .and_then(|c| {
                let layer = c.get("componentDescriptorLayer")?;
                Some((
                    layer.get("digest")?.as_str()?.to_string(),
                    layer.get("mediaType")?.as_str()?.to_string(),
                ))
            });
    let (digest, media_type, size) = match named {
        Some((digest, media_type)) => {
            let size = document
                .layers
                .iter()
                .find(|l| l.digest == digest)
                .map_or(-1, |l| l.size);
            (digest, media_type, size)
        }
        None => {
            let layer = document.layers.first().ok_or_else(|| {
                Failure::failed(format!(
                    "{repo}: a component version without a descriptor layer"
                ))
            })?;
            (layer.digest.clone(), layer.media_type.clone(), layer.size)
        }
    };
    let bytes = blob(client, repo, &digest, size).await?;
    if !media_type.contains("+tar") {
        return Ok(Some(bytes));
    }
    match ocm::descriptor_from_tar(&bytes) {
        Some(yaml) => Ok(Some(yaml.to_vec())),
        None => Err(Failure::failed(format!(
            "{repo}@{digest}: the descriptor layer holds no {}",
            ocm::DESCRIPTOR_FILE
        ))),
    }
}

/// The descriptor parsed; an error names what does not parse.
pub fn parse(repo: &Repository, yaml: &[u8]) -> Result<Descriptor, Failure> {
    serde_yaml::from_slice(yaml).map_err(|e| {
        Failure::failed(format!(
            "{repo}: {} is not a component descriptor v2: {e}",
            ocm::DESCRIPTOR_FILE
        ))
    })
}

/// A small blob, whole, verified against `digest`.
async fn blob(
    client: &dyn Registry,
    repo: &Repository,
    digest: &str,
    size: i64,
) -> Result<Vec<u8>, Failure> {
    if u64::try_from(size).is_ok_and(|s| s > MAX_DESCRIPTOR_BYTES) {
        return Err(Failure::failed(format!(
            "{repo}@{digest}: {size} bytes, more than a component descriptor has"
        )));
    }
    let mut stream = client.get_blob(repo, digest).await?;
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.try_next().await? {
        bytes.extend_from_slice(&chunk);
        if bytes.len() as u64 > MAX_DESCRIPTOR_BYTES {
            return Err(Failure::failed(format!(
                "{repo}@{digest}: more than {MAX_DESCRIPTOR_BYTES} bytes, more than a component descriptor has"
            )));
        }
    }
    if sha256_digest(&bytes) != digest {
        return Err(Failure::failed(format!(
            "{repo}@{digest}: the registry sent bytes of another digest"
        )));
    }
    Ok(bytes)
}
