//! Which tags of a source repository a mirror carries: `include` / `exclude` regexes, then
//! optionally only the newest `count` versions. The regexes are Rust's `regex` crate, whose
//! syntax is RE2's (no backreferences, no lookaround), so matching is linear in the tag.

use std::cmp::Ordering;
use std::collections::BTreeSet;

use regex::Regex;

use crate::oci::Tag;

/// A parsed `spec.tags` of a mirror (or the `mirror` verb's `--include`/`--exclude`/`--latest`).
#[derive(Clone, Debug, Default)]
pub struct TagSelection {
    /// A tag is a candidate when one of these matches; empty: every tag.
    pub include: Vec<Regex>,
    /// ... and none of these match.
    pub exclude: Vec<Regex>,
    pub latest: Option<Latest>,
}

/// Only the tags of the newest `count` versions.
#[derive(Clone, Debug)]
pub struct Latest {
    pub count: usize,
    /// The version is this regex's first group; `None`: the whole tag. A tag it does not
    /// match has no version and is not selected.
    pub extract: Option<Regex>,
    pub order: VersionOrder,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum VersionOrder {
    /// Dotted numbers compared as numbers (`1877.10` > `1877.9`), then SemVer's pre-release
    /// rules (`1.2.0-rc.1` < `1.2.0`). A version that does not start with a number is none.
    #[default]
    Version,
    /// Byte-wise comparison of the version text.
    Alphabetical,
}

/// A tag pattern as a user wrote it, compiled with bounds: the `regex` crate matches in linear
/// time, and the size limit keeps a hostile pattern (`(a{1000}){1000}`) from taking memory.
pub fn tag_pattern(text: &str) -> Result<Regex, String> {
    regex::RegexBuilder::new(text)
        .size_limit(1 << 20)
        .dfa_size_limit(1 << 20)
        .build()
        .map_err(|e| match e {
            regex::Error::CompiledTooBig(_) => {
                format!("{text:?}: the pattern is too large to match tags with")
            }
            other => format!("{text:?} is not a regular expression (RE2 syntax): {other}"),
        })
}

impl PartialEq for TagSelection {
    fn eq(&self, other: &Self) -> bool {
        fn texts(list: &[Regex]) -> Vec<&str> {
            list.iter().map(Regex::as_str).collect()
        }
        texts(&self.include) == texts(&other.include)
            && texts(&self.exclude) == texts(&other.exclude)
            && self.latest == other.latest
    }
}

impl PartialEq for Latest {
    fn eq(&self, other: &Self) -> bool {
        self.count == other.count
            && self.order == other.order
            && self.extract.as_ref().map(Regex::as_str) == other.extract.as_ref().map(Regex::as_str)
    }
}

impl TagSelection {
    /// The selected tags of `available`, in the order given.
    pub fn select<'t>(&self, available: &'t [Tag]) -> Vec<&'t Tag> {
        let candidates: Vec<&Tag> = available
            .iter()
            .filter(|tag| self.admits(tag.as_str()))
            .collect();
        let Some(latest) = &self.latest else {
            return candidates;
        };
        let versioned: Vec<(&Tag, String)> = candidates
            .into_iter()
            .filter_map(|tag| latest.version_of(tag.as_str()).map(|v| (tag, v)))
            .collect();
        let mut versions: Vec<&str> = versioned.iter().map(|(_, v)| v.as_str()).collect();
        versions.sort_by(|a, b| latest.order.compare(b, a));
        versions.dedup();
        let newest: BTreeSet<&str> = versions.into_iter().take(latest.count).collect();
        versioned
            .iter()
            .filter(|(_, version)| newest.contains(version.as_str()))
            .map(|(tag, _)| *tag)
            .collect()
    }

    fn admits(&self, tag: &str) -> bool {
        (self.include.is_empty() || self.include.iter().any(|re| re.is_match(tag)))
            && !self.exclude.iter().any(|re| re.is_match(tag))
    }
}

impl Latest {
    /// The version a tag stands for, when it has one this order can rank.
    fn version_of(&self, tag: &str) -> Option<String> {
        let text = match &self.extract {
            None => tag,
            Some(re) => re.captures(tag)?.get(1)?.as_str(),
        };
        match self.order {
            VersionOrder::Version => Version::parse(text).map(|_| text.to_string()),
            VersionOrder::Alphabetical => Some(text.to_string()),
        }
    }
}

impl VersionOrder {
    /// Compares two version texts that `Latest::version_of` admitted.
    pub fn compare(self, a: &str, b: &str) -> Ordering {
        match self {
            VersionOrder::Alphabetical => a.cmp(b),
            VersionOrder::Version => match (Version::parse(a), Version::parse(b)) {
                // Equal ranks (`1.0` and `1.0.0`) still order by text, so the order is total.
                (Some(x), Some(y)) => x.cmp(&y).then_with(|| a.cmp(b)),
                _ => a.cmp(b),
            },
        }
    }
}

/// `1877.10`, `v1.2.3-rc.1+build.5`: numbers, then an optional pre-release; build metadata
/// does not rank (SemVer §10).
#[derive(Debug, PartialEq, Eq)]
struct Version<'a> {
    numbers: Vec<u64>,
    pre_release: Vec<&'a str>,
}

impl<'a> Version<'a> {
    fn parse(text: &'a str) -> Option<Self> {
        let text = text.strip_prefix('v').unwrap_or(text);
        let text = text
            .split_once('+')
            .map_or(text, |(version, _build)| version);
        let (core, pre_release) = match text.split_once('-') {
            Some((core, pre)) if !pre.is_empty() => (core, pre.split('.').collect()),
            Some(_) => return None,
            None => (text, Vec::new()),
        };
        let numbers = core
            .split('.')
            .map(|part| {
                if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                    None
                } else {
                    part.parse::<u64>().ok()
                }
            })
            .collect::<Option<Vec<u64>>>()?;
        Some(Self {
            numbers,
            pre_release,
        })
    }
}

impl Ord for Version<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        let width = self.numbers.len().max(other.numbers.len());
        let number = |v: &Version, i: usize| v.numbers.get(i).copied().unwrap_or(0);
        (0..width)
            .map(|i| number(self, i).cmp(&number(other, i)))
            .find(|o| o.is_ne())
            .unwrap_or(Ordering::Equal)
            .then_with(|| compare_pre_release(&self.pre_release, &other.pre_release))
    }
}

impl PartialOrd for Version<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// SemVer §11: a release ranks above its pre-releases; identifiers compare numerically when
/// both are numbers, numbers rank below words, and a longer list wins a common prefix.
fn compare_pre_release(a: &[&str], b: &[&str]) -> Ordering {
    match (a.is_empty(), b.is_empty()) {
        (true, true) => return Ordering::Equal,
        (true, false) => return Ordering::Greater,
        (false, true) => return Ordering::Less,
        (false, false) => {}
    }
    for (x, y) in a.iter().zip(b) {
        let numeric = |s: &str| s.bytes().all(|c| c.is_ascii_digit()) && !s.is_empty();
        let order = match (numeric(x), numeric(y)) {
            (true, true) => x
                .parse::<u128>()
                .unwrap_or(u128::MAX)
                .cmp(&y.parse::<u128>().unwrap_or(u128::MAX)),
            (true, false) => Ordering::Less,
            (false, true) => Ordering::Greater,
            (false, false) => x.cmp(y),
        };
        if order.is_ne() {
            return order;
        }
    }
    a.len().cmp(&b.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(texts: &[&str]) -> Vec<Tag> {
        texts.iter().map(|t| Tag::parse(t).unwrap()).collect()
    }

    fn selected(selection: &TagSelection, available: &[&str]) -> Vec<String> {
        let available = tags(available);
        selection
            .select(&available)
            .into_iter()
            .map(|t| t.as_str().to_string())
            .collect()
    }

    fn re(text: &str) -> Regex {
        Regex::new(text).unwrap()
    }

    #[test]
    fn without_rules_every_tag_is_selected() {
        let all = ["1", "latest", "1877.5"];
        assert_eq!(selected(&TagSelection::default(), &all), all);
    }

    #[test]
    fn include_admits_and_exclude_removes() {
        let selection = TagSelection {
            include: vec![re(r"^1877\."), re("^nightly$")],
            exclude: vec![re("-arm64$")],
            latest: None,
        };
        let got = selected(
            &selection,
            &["1877.5", "1877.5-arm64", "1592.1", "nightly", "x1877.5"],
        );
        assert_eq!(got, ["1877.5", "nightly"]);
    }

    #[test]
    fn version_order_compares_numbers_as_numbers() {
        let selection = TagSelection {
            latest: Some(Latest {
                count: 2,
                extract: None,
                order: VersionOrder::Version,
            }),
            ..Default::default()
        };
        let got = selected(
            &selection,
            &["1877.9", "1877.10", "1877.2", "latest", "999"],
        );
        // `latest` has no version; `999` is 999.0 < 1877.x.
        assert_eq!(got, ["1877.9", "1877.10"]);
    }

    #[test]
    fn alphabetical_order_compares_text() {
        let selection = TagSelection {
            latest: Some(Latest {
                count: 1,
                extract: None,
                order: VersionOrder::Alphabetical,
            }),
            ..Default::default()
        };
        assert_eq!(selected(&selection, &["1877.10", "1877.9"]), ["1877.9"]);
    }

    #[test]
    fn extract_counts_versions_and_keeps_every_tag_of_them() {
        let selection = TagSelection {
            include: vec![],
            exclude: vec![],
            latest: Some(Latest {
                count: 2,
                extract: Some(re(r"^([0-9]+\.[0-9]+)")),
                order: VersionOrder::Version,
            }),
        };
        let got = selected(
            &selection,
            &[
                "1877.5-aws-amd64",
                "1877.10-aws-amd64",
                "1877.10-metal-arm64",
                "1877.9-aws-amd64",
                "main-aws",
            ],
        );
        assert_eq!(
            got,
            [
                "1877.10-aws-amd64",
                "1877.10-metal-arm64",
                "1877.9-aws-amd64"
            ]
        );
    }

    #[test]
    fn pre_releases_rank_below_their_release_by_semver_rules() {
        let order = VersionOrder::Version;
        let ascending = [
            "1.0.0-alpha",
            "1.0.0-alpha.1",
            "1.0.0-alpha.beta",
            "1.0.0-beta",
            "1.0.0-beta.2",
            "1.0.0-beta.11",
            "1.0.0-rc.1",
            "1.0.0",
            "v1.0.1",
            "1.1",
        ];
        for pair in ascending.windows(2) {
            assert_eq!(order.compare(pair[0], pair[1]), Ordering::Less, "{pair:?}");
            assert_eq!(
                order.compare(pair[1], pair[0]),
                Ordering::Greater,
                "{pair:?}"
            );
        }
    }

    #[test]
    fn texts_that_are_no_version_are_not_ranked() {
        for text in ["latest", "1..2", "1.x", "-1", "1.0-", ""] {
            assert!(Version::parse(text).is_none(), "{text}");
        }
        assert!(Version::parse("1.0+build.7").is_some());
    }

    #[test]
    fn hostile_patterns_are_refused_with_the_pattern_named() {
        let too_big = tag_pattern("(a{1000}){1000}").unwrap_err();
        assert!(too_big.contains("too large"), "{too_big}");
        let backreference = tag_pattern(r"(a)\1").unwrap_err();
        assert!(backreference.contains("RE2"), "{backreference}");
        assert!(tag_pattern(r"^1877\.").is_ok());
    }

    #[test]
    fn huge_numbers_do_not_panic() {
        let order = VersionOrder::Version;
        // Past u64: not a version, so compared as text rather than overflowing.
        assert!(Version::parse("99999999999999999999999").is_none());
        assert_eq!(
            order.compare("1.0.0-99999999999999999999999999999999999999999", "1.0.0-1"),
            Ordering::Greater
        );
    }
}
