//! OCI basics: media types, digests, references and their grammar. Every other module may use
//! this one; it uses nothing else of this crate.

pub mod digest;
pub mod grammar;
pub mod media_types;
pub mod ocm;
pub mod reference;

pub use digest::Digest;
pub use reference::{
    ImageReference, RegistryId, RelativeReference, Repository, Tag, repository_identity,
};
