//! The controller's own writes to its objects (the first finalizer, the status) come back as
//! watch events. Reconciling on them again would only repeat the round that made them: a new
//! object would cost a second round (one more HEAD per tag, a check of every input) for
//! nothing. Each write's resourceVersion is remembered until its event arrives, and an event
//! of exactly that version triggers nothing. Any other version (a person's edit, another
//! writer) triggers as ever; the resync and the watches of what an object reads are untouched.

use std::collections::HashMap;
use std::sync::Mutex;

/// Objects with a write not yet seen back, at most. Beyond it nothing more is remembered: the
/// events of those writes then trigger a round, as they would without this.
const CAPACITY: usize = 65_536;

#[derive(Debug, Default)]
pub struct OwnWrites {
    /// By object key: the resourceVersions our writes produced whose events are still to come.
    unseen: Mutex<HashMap<String, Vec<String>>>,
}

impl OwnWrites {
    /// `key`'s object is at `resource_version` because of a write of ours.
    pub fn wrote(&self, key: &str, resource_version: Option<&str>) {
        let Some(version) = resource_version else {
            return;
        };
        let mut unseen = self.unseen.lock().expect("not poisoned");
        if unseen.len() >= CAPACITY && !unseen.contains_key(key) {
            return;
        }
        unseen
            .entry(key.to_string())
            .or_default()
            .push(version.to_string());
    }

    /// Whether the watch event of `key` at `resource_version` is only one of our own writes
    /// coming back: then it triggers nothing. Any other version means someone else wrote;
    /// what we wrote before it is superseded and forgotten.
    pub fn came_back(&self, key: &str, resource_version: Option<&str>) -> bool {
        let mut unseen = self.unseen.lock().expect("not poisoned");
        let Some(versions) = unseen.get_mut(key) else {
            return false;
        };
        let ours = resource_version.and_then(|v| versions.iter().position(|w| w == v));
        match ours {
            Some(at) => {
                versions.remove(at);
                if versions.is_empty() {
                    unseen.remove(key);
                }
                true
            }
            None => {
                unseen.remove(key);
                false
            }
        }
    }

    /// The object is gone; nothing of it will come back.
    pub fn forget(&self, key: &str) {
        self.unseen.lock().expect("not poisoned").remove(key);
    }

    #[cfg(test)]
    pub fn remembered(&self) -> usize {
        self.unseen.lock().expect("not poisoned").len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_writes_coming_back_trigger_nothing_and_anything_else_does() {
        let own = OwnWrites::default();
        own.wrote("ns/a", Some("11"));
        own.wrote("ns/a", Some("12"));
        assert!(own.came_back("ns/a", Some("11")), "the finalizer's event");
        assert!(own.came_back("ns/a", Some("12")), "the status's event");
        assert!(!own.came_back("ns/a", Some("12")), "seen once only");
        assert_eq!(own.remembered(), 0);

        own.wrote("ns/a", Some("20"));
        assert!(!own.came_back("ns/a", Some("21")), "a person's edit");
        assert!(
            !own.came_back("ns/a", Some("20")),
            "superseded by the edit: it may be a relist"
        );
        assert!(!own.came_back("ns/b", Some("20")), "another object");
        own.wrote("ns/b", None);
        assert!(!own.came_back("ns/b", None));
    }

    #[test]
    fn a_deleted_object_is_forgotten_and_the_memory_is_bounded() {
        let own = OwnWrites::default();
        own.wrote("ns/a", Some("1"));
        own.forget("ns/a");
        assert_eq!(own.remembered(), 0);
        for i in 0..CAPACITY + 10 {
            own.wrote(&format!("ns/{i}"), Some("1"));
        }
        assert_eq!(own.remembered(), CAPACITY);
        assert!(!own.came_back(&format!("ns/{}", CAPACITY + 5), Some("1")));
    }
}
