//! Shards: installations that outgrow one controller run several, each reconciling the objects
//! whose labels its selector matches (`--watch-label-selector`, as Flux shards). Every shard
//! still watches and caches all objects: tag ownership and the readers of an object are
//! decided over all of them, so two objects on different shards never both own a tag.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use kube::Resource;
use kube::core::{Expression, Selector, SelectorExt};

/// Which objects this controller reconciles: all (the default), or those its label selector
/// matches.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Shard {
    selector: Option<Selector>,
}

impl Shard {
    /// A label selector in kubectl's syntax: requirements separated by commas, each `k=v`
    /// (or `k==v`), `k!=v`, `k`, `!k`, `k in (a,b)` or `k notin (a,b)`. An empty one selects
    /// everything.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.is_empty() {
            return Ok(Self::default());
        }
        let expressions = requirements(text)?
            .into_iter()
            .map(|requirement| {
                expression(requirement.trim())
                    .map_err(|e| format!("label selector {text:?}: {requirement:?}: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            selector: Some(expressions.into_iter().collect()),
        })
    }

    /// Whether this controller reconciles `object`.
    pub fn selects(&self, object: &impl Resource) -> bool {
        self.selects_labels(object.meta().labels.as_ref().unwrap_or(&BTreeMap::new()))
    }

    fn selects_labels(&self, labels: &BTreeMap<String, String>) -> bool {
        self.selector.as_ref().is_none_or(|s| s.matches(labels))
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.selector {
            None => f.write_str("every object"),
            Some(selector) => write!(f, "objects labelled {selector}"),
        }
    }
}

/// The requirements of a selector: split at the commas outside parentheses.
fn requirements(text: &str) -> Result<Vec<&str>, String> {
    let (mut parts, mut depth, mut start) = (Vec::new(), 0u32, 0);
    for (at, c) in text.char_indices() {
        match c {
            '(' if depth == 0 => depth = 1,
            '(' => return Err(format!("label selector {text:?}: nested parentheses")),
            ')' if depth == 1 => depth = 0,
            ')' => return Err(format!("label selector {text:?}: unbalanced parentheses")),
            ',' if depth == 0 => {
                parts.push(&text[start..at]);
                start = at + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(format!("label selector {text:?}: unbalanced parentheses"));
    }
    parts.push(&text[start..]);
    Ok(parts)
}

fn expression(requirement: &str) -> Result<Expression, String> {
    if let Some(key) = requirement.strip_prefix('!') {
        return Ok(Expression::DoesNotExist(label_key(key.trim())?));
    }
    if let Some((key, value)) = requirement.split_once("!=") {
        return Ok(Expression::NotEqual(
            label_key(key.trim())?,
            label_value(value.trim())?,
        ));
    }
    if let Some((key, value)) = requirement.split_once('=') {
        let value = value.strip_prefix('=').unwrap_or(value);
        return Ok(Expression::Equal(
            label_key(key.trim())?,
            label_value(value.trim())?,
        ));
    }
    let mut words = requirement.splitn(2, char::is_whitespace);
    let key = label_key(words.next().unwrap_or_default())?;
    let Some(rest) = words.next().map(str::trim) else {
        return Ok(Expression::Exists(key));
    };
    let (operator, set) = rest
        .split_once(|c: char| c.is_whitespace() || c == '(')
        .map(|(operator, _)| (operator, &rest[operator.len()..]))
        .ok_or("expected `in (...)` or `notin (...)`")?;
    let values = value_set(set.trim())?;
    match operator {
        "in" => Ok(Expression::In(key, values)),
        "notin" => Ok(Expression::NotIn(key, values)),
        other => Err(format!("unknown operator {other:?}")),
    }
}

fn value_set(set: &str) -> Result<BTreeSet<String>, String> {
    let inner = set
        .strip_prefix('(')
        .and_then(|s| s.strip_suffix(')'))
        .ok_or("a set of values is written `(a,b)`")?;
    inner.split(',').map(|v| label_value(v.trim())).collect()
}

/// `[prefix/]name`: the prefix a DNS subdomain, the name up to 63 characters of
/// alphanumerics, `-`, `_` and `.`, starting and ending alphanumeric.
fn label_key(key: &str) -> Result<String, String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        let valid = !prefix.is_empty()
            && prefix.len() <= 253
            && prefix.split('.').all(|part| {
                !part.is_empty()
                    && part
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                    && !part.starts_with('-')
                    && !part.ends_with('-')
            });
        if !valid {
            return Err(format!(
                "{prefix:?} is not a DNS subdomain (a label key's prefix)"
            ));
        }
    }
    if name.is_empty() {
        return Err("a label key is missing".into());
    }
    match label_value(name) {
        Ok(_) => Ok(key.to_string()),
        Err(_) => Err(format!("{key:?} is not a label key")),
    }
}

/// Up to 63 characters of alphanumerics, `-`, `_` and `.`, starting and ending alphanumeric;
/// or empty.
fn label_value(value: &str) -> Result<String, String> {
    let edges_ok = |c: Option<char>| c.is_none_or(|c| c.is_ascii_alphanumeric());
    let valid = value.len() <= 63
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && edges_ok(value.chars().next())
        && edges_ok(value.chars().last());
    if valid {
        Ok(value.to_string())
    } else {
        Err(format!("{value:?} is not a label value"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn selects(selector: &str, pairs: &[(&str, &str)]) -> bool {
        Shard::parse(selector)
            .unwrap_or_else(|e| panic!("{selector}: {e}"))
            .selects_labels(&labels(pairs))
    }

    #[test]
    fn every_operator_of_kubectl_selects_as_kubernetes_does() {
        let a = [("shard", "a"), ("tier", "os")];
        let b = [("shard", "b")];
        let none: [(&str, &str); 0] = [];
        assert!(selects("shard=a", &a) && !selects("shard=a", &b) && !selects("shard=a", &none));
        assert!(selects("shard==a", &a) && !selects("shard==a", &b));
        assert!(!selects("shard!=a", &a) && selects("shard!=a", &b) && selects("shard!=a", &none));
        assert!(selects("shard", &a) && !selects("shard", &none));
        assert!(!selects("!shard", &a) && selects("!shard", &none));
        assert!(selects("shard in (a, c)", &a) && !selects("shard in (a,c)", &b));
        assert!(!selects("shard in (a,c)", &none));
        assert!(!selects("shard notin (a,c)", &a) && selects("shard notin (a,c)", &b));
        assert!(selects("shard notin (a,c)", &none));
        assert!(selects("shard in (a,b),tier=os", &a) && !selects("shard in (a,b),tier=os", &b));
        assert!(selects(
            "example.com/shard=a",
            &[("example.com/shard", "a")]
        ));
        assert!(selects("", &none) && selects("  ", &b));
    }

    #[test]
    fn malformed_selectors_are_refused_with_the_requirement() {
        for bad in [
            "shard=a,",
            "=a",
            "shard=a b",
            "shard in a",
            "shard in (a",
            "shard in ((a))",
            "shard within (a)",
            "Bad_Prefix/x=a",
            "shard=-a",
            &format!("shard={}", "a".repeat(64)),
        ] {
            assert!(Shard::parse(bad).is_err(), "{bad:?} parsed");
        }
        let error = Shard::parse("shard=a,tier=?").unwrap_err();
        assert!(error.contains("\"tier=?\""), "{error}");
    }

    #[test]
    fn a_shard_reads_as_its_selector() {
        assert_eq!(Shard::default().to_string(), "every object");
        assert_eq!(
            Shard::parse("shard in (b,a)").unwrap().to_string(),
            "objects labelled shard in (a,b)"
        );
    }
}
