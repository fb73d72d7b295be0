//! `ImageReference::parse` and `Repository::parse` never panic, and what they accept prints back
//! as the same text, which parses to the same value.
#![no_main]

use garden_artifacts::registry::{ImageReference, Repository};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(reference) = ImageReference::parse(text) {
        let printed = reference.to_string();
        assert_eq!(printed, text, "Display changes the reference");
        let again = ImageReference::parse(&printed).expect("the printed reference parses");
        assert_eq!(again, reference);
        // What goes into /v2/<name>/manifests/<reference>: a tag or a digest, never empty.
        let wire = reference.reference();
        assert!(!wire.is_empty());
        assert!(
            !wire.contains('/'),
            "{wire:?} would change the request path"
        );
        let repository = Repository::parse(&reference.repository.to_string())
            .expect("the repository of a reference parses on its own");
        assert_eq!(repository, reference.repository);
        assert!(!reference.repository.name.contains(':'));
        assert!(!reference.repository.registry.contains('/'));
    }
    if let Ok(repository) = Repository::parse(text) {
        let printed = repository.to_string();
        assert_eq!(printed, text, "Display changes the repository");
        assert_eq!(Repository::parse(&printed).unwrap(), repository);
        // A tag or a digest appended makes a reference that parses back to the parts.
        let tagged = repository.with_tag("latest");
        assert_eq!(ImageReference::parse(&tagged.to_string()).unwrap(), tagged);
        let digest = format!("sha256:{}", "0".repeat(64));
        let pinned = repository.with_digest(&digest);
        assert_eq!(ImageReference::parse(&pinned.to_string()).unwrap(), pinned);
    }
});
