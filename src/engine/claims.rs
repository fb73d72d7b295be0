//! Pure: each `repository:tag` has one owner. The first claimant keeps a tag; a later one is
//! refused for it, with the owner's name, so two objects never take turns moving a tag.

use std::collections::BTreeMap;

/// One object's claim on tags of a repository.
#[derive(Clone, Debug)]
pub struct Claim<'a> {
    /// `namespace/name`.
    pub owner: &'a str,
    /// The repository's identity ([`crate::oci::Repository::identity`]), so two spellings of
    /// one repository are one claim.
    pub repository: &'a str,
    pub tags: &'a [String],
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    pub tag: String,
    pub owner: String,
}

impl std::fmt::Display for Conflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "tag {:?} is owned by {}", self.tag, self.owner)
    }
}

/// Claims are honoured in the order given (oldest object first); the result names, for each
/// object that lost any tag, the tags it lost.
pub fn conflicts(claims: &[Claim<'_>]) -> BTreeMap<String, Vec<Conflict>> {
    let mut owners: BTreeMap<(&str, &str), &str> = BTreeMap::new();
    let mut lost: BTreeMap<String, Vec<Conflict>> = BTreeMap::new();
    for claim in claims {
        for tag in claim.tags {
            let owner = *owners
                .entry((claim.repository, tag.as_str()))
                .or_insert(claim.owner);
            if owner != claim.owner {
                lost.entry(claim.owner.to_string())
                    .or_default()
                    .push(Conflict {
                        tag: tag.clone(),
                        owner: owner.to_string(),
                    });
            }
        }
    }
    lost
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_claimant_keeps_the_tag() {
        let tags_a = vec!["1".to_string(), "latest".to_string()];
        let tags_b = vec!["latest".to_string(), "2".to_string()];
        let tags_c = vec!["latest".to_string()];
        let claims = [
            Claim {
                owner: "ns/a",
                repository: "r/x",
                tags: &tags_a,
            },
            Claim {
                owner: "ns/b",
                repository: "r/x",
                tags: &tags_b,
            },
            Claim {
                owner: "ns/c",
                repository: "r/y",
                tags: &tags_c,
            },
        ];
        let lost = conflicts(&claims);
        assert_eq!(lost.len(), 1);
        assert_eq!(
            lost["ns/b"],
            vec![Conflict {
                tag: "latest".into(),
                owner: "ns/a".into()
            }]
        );
    }
}
