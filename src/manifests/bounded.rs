//! Reading a YAML document into a [`serde_yaml::Value`] with a budget, so that aliases cannot
//! expand a small file into gigabytes.
//!
//! serde_yaml refuses the classic billion laughs (more than 100 alias jumps per event of the
//! document), but one alias of a long list still copies the whole list: an anchored list of 4000
//! items aliased 4000 times is 16 million values from 20 KB of text, within serde_yaml's limit,
//! and takes seconds and gigabytes. Here every value and every byte of a string counts against a
//! budget shared by all documents of a file. Without aliases a document costs at most 2.5 units
//! per byte of its text (`{a,b,c}`: a key and a null value for every two bytes), so a budget of
//! three units per byte, plus some room for ordinary anchors, never refuses a file that uses no
//! aliases, and bounds time and memory by the size of the file.

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, Visitor};
use serde_yaml::value::{Tag, TaggedValue};
use serde_yaml::{Mapping, Value};

/// What one value costs besides the bytes of its strings.
const NODE_COST: usize = 2;
/// Room for ordinary anchors and aliases, on top of three units per byte of text.
const SLACK: usize = 1024 * 1024;

/// The budget of one file: `3 × its length + 1 MiB` units.
pub struct Budget {
    left: Cell<usize>,
    total: usize,
}

impl Budget {
    pub fn for_text(text: &str) -> Self {
        let total = text.len().saturating_mul(3).saturating_add(SLACK);
        Self {
            left: Cell::new(total),
            total,
        }
    }

    fn spend<E: de::Error>(&self, units: usize) -> Result<(), E> {
        match self.left.get().checked_sub(units) {
            Some(left) => {
                self.left.set(left);
                Ok(())
            }
            None => Err(E::custom(format_args!(
                "aliases expand this file beyond {} units of values (3 per byte of the file, plus 1 MiB); a YAML bomb?",
                self.total
            ))),
        }
    }

    /// Reads one document as a `Value`, or fails once the budget is spent.
    pub fn value<'de, D: Deserializer<'de>>(&self, document: D) -> Result<Value, D::Error> {
        BoundedValue(self).deserialize(document)
    }
}

#[derive(Clone, Copy)]
struct BoundedValue<'a>(&'a Budget);

impl<'de> DeserializeSeed<'de> for BoundedValue<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for BoundedValue<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E: de::Error>(self, b: bool) -> Result<Value, E> {
        self.0.spend(NODE_COST)?;
        Ok(Value::Bool(b))
    }

    fn visit_i64<E: de::Error>(self, i: i64) -> Result<Value, E> {
        self.0.spend(NODE_COST)?;
        Ok(Value::Number(i.into()))
    }

    fn visit_u64<E: de::Error>(self, u: u64) -> Result<Value, E> {
        self.0.spend(NODE_COST)?;
        Ok(Value::Number(u.into()))
    }

    fn visit_f64<E: de::Error>(self, f: f64) -> Result<Value, E> {
        self.0.spend(NODE_COST)?;
        Ok(Value::Number(f.into()))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Value, E> {
        self.0.spend(NODE_COST.saturating_add(s.len()))?;
        Ok(Value::String(s.to_owned()))
    }

    fn visit_string<E: de::Error>(self, s: String) -> Result<Value, E> {
        self.0.spend(NODE_COST.saturating_add(s.len()))?;
        Ok(Value::String(s))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        self.0.spend(NODE_COST)?;
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        self.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        self.deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        self.0.spend(NODE_COST)?;
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(self)? {
            items.push(item);
        }
        Ok(Value::Sequence(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        self.0.spend(NODE_COST)?;
        let mut mapping = Mapping::new();
        while let Some(key) = map.next_key_seed(self)? {
            if mapping.contains_key(&key) {
                return Err(de::Error::custom(format_args!(
                    "duplicate entry {}",
                    describe_key(&key)
                )));
            }
            let value = map.next_value_seed(self)?;
            mapping.insert(key, value);
        }
        Ok(Value::Mapping(mapping))
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Value, A::Error> {
        let (tag, contents): (String, _) = data.variant()?;
        if tag.is_empty() {
            return Err(de::Error::custom("empty YAML tag is not allowed"));
        }
        self.0.spend(NODE_COST.saturating_add(tag.len()))?;
        let value = de::VariantAccess::newtype_variant_seed(contents, self)?;
        Ok(Value::Tagged(Box::new(TaggedValue {
            tag: Tag::new(tag),
            value,
        })))
    }
}

/// As serde_yaml words it: `with key "tags"`.
fn describe_key(key: &Value) -> String {
    match key {
        Value::Null => "with null key".into(),
        Value::Bool(b) => format!("with key `{b}`"),
        Value::Number(n) => format!("with key {n}"),
        Value::String(s) => format!("with key {s:?}"),
        _ => "in YAML map".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    fn values(text: &str) -> Result<Vec<Value>, String> {
        let budget = Budget::for_text(text);
        serde_yaml::Deserializer::from_str(text)
            .map(|document| budget.value(document).map_err(|e| e.to_string()))
            .collect()
    }

    #[test]
    fn reads_what_serde_yaml_reads() {
        let text = "a: [1, -2, 3.5, true, ~, x, !tag {b: c}]\n? [k]\n: v\n---\nplain\n---\n";
        let expected: Vec<Value> = serde_yaml::Deserializer::from_str(text)
            .map(|d| Value::deserialize(d).unwrap())
            .collect();
        assert_eq!(values(text).unwrap(), expected);
    }

    #[test]
    fn ordinary_anchors_are_fine() {
        let text = "common: &c {arch: amd64, cname: aws}\na: *c\nb: *c\nc: [*c, *c]\n";
        let v = values(text).unwrap();
        assert_eq!(v[0]["c"][1]["arch"], Value::String("amd64".into()));
    }

    #[test]
    fn duplicate_keys_are_refused_as_serde_yaml_does() {
        let err = values("tags: [a]\ntags: [b]\n").unwrap_err();
        assert!(err.contains(r#"duplicate entry with key "tags""#), "{err}");
    }

    #[test]
    fn a_quadratic_alias_bomb_is_refused_quickly() {
        let n = 4000;
        let text = format!("a: &a [{}x]\nb: [{}*a]\n", "x,".repeat(n), "*a,".repeat(n));
        let started = std::time::Instant::now();
        let err = values(&text).unwrap_err();
        assert!(err.contains("aliases expand this file"), "{err}");
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn the_densest_text_without_aliases_fits_the_budget() {
        // Two bytes per key with a null value: the most values per byte YAML allows.
        let keys: Vec<String> = (0..200_000).map(|i| format!("k{i:x}")).collect();
        let text = format!("{{{}}}", keys.join(","));
        values(&text).unwrap();
        let text = format!("[{}]", "[],".repeat(500_000));
        values(&text).unwrap();
    }
}
