//! `ImageReference::parse` and `Repository::parse` never panic, and what they accept prints back
//! as the same text, which parses to the same value.
#![no_main]

use garden_artifacts::oci::{Digest, ImageReference, RelativeReference, Repository, Tag};
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
        let repository = Repository::parse(&reference.repository().to_string())
            .expect("the repository of a reference parses on its own");
        assert_eq!(&repository, reference.repository());
        assert!(!reference.repository().name().contains(':'));
        assert!(!reference.repository().registry().contains('/'));
    }
    // A relative reference prints back as the same text and, resolved anywhere, is a reference.
    if let Ok(relative) = RelativeReference::parse(text) {
        assert_eq!(relative.to_string(), text, "Display changes the relative reference");
        let anywhere = Repository::parse("localhost:5000/x").unwrap();
        let resolved = relative.resolve_in(&anywhere);
        assert_eq!(ImageReference::parse(&resolved.to_string()).unwrap(), resolved);
    }
    if let Ok(repository) = Repository::parse(text) {
        let printed = repository.to_string();
        assert_eq!(printed, text, "Display changes the repository");
        assert_eq!(Repository::parse(&printed).unwrap(), repository);
        // A tag or a digest appended makes a reference that parses back to the parts.
        let tagged = repository.with_tag(&Tag::parse("latest").unwrap());
        assert_eq!(ImageReference::parse(&tagged.to_string()).unwrap(), tagged);
        let digest = Digest::parse(&format!("sha256:{}", "0".repeat(64))).unwrap();
        let pinned = repository.with_digest(&digest);
        assert_eq!(ImageReference::parse(&pinned.to_string()).unwrap(), pinned);
    }
});
