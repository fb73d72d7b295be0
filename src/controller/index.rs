//! Every GardenArtifact of the cluster, indexed for the two questions a round and a watch event
//! ask: who owns a `repository:tag`, and who reads what. Kept up to date from the watch (an
//! object in, an object out), so a lookup costs O(log N) and no round scans the cache.
//!
//! [`Index`] is pure and tested with plain values; [`SharedIndex`] feeds it from the watch's
//! events and says which objects each event concerns.

use std::collections::{BTreeSet, HashMap};
use std::sync::RwLock;

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use tokio::sync::watch;

use super::watched::Watched;
use crate::api::{AccessResult, GardenArtifact};
use crate::engine::claims::Conflict;
use crate::oci::{RelativeReference, Repository, repository_identity};

/// `namespace/name` of a GardenArtifact (or of a Secret or ConfigMap it reads).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    pub fn new(namespace: &str, name: &str) -> Self {
        Self {
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }

    pub fn of(object: &impl ResourceExt) -> Self {
        Self {
            namespace: object.namespace().unwrap_or_default(),
            name: object.name_any(),
        }
    }

    pub fn to_ref<K: kube::Resource<DynamicType = ()>>(&self) -> ObjectRef<K> {
        ObjectRef::new(&self.name).within(&self.namespace)
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// How strong an object's claim on its tags is, strongest first. A claim is earned by a write
/// the registry accepted; an object that was never able to write does not keep one that can
/// from a tag, whenever it was created.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Rank {
    /// The registry accepted this object's credentials for a write to the repository.
    Earned,
    /// Nothing is known yet.
    NotYetTried,
    /// The registry refused them (401, 403) at the last try, or the object could not try.
    Denied,
}

/// The rank `status.writeAccess` gives the object, for the repository its spec names now.
pub fn rank(object: &GardenArtifact) -> Rank {
    let access = object.status.as_ref().and_then(|s| s.write_access.as_ref());
    match access {
        Some(access) if access.repository == repository_identity(&object.spec.repository) => {
            match access.result {
                AccessResult::Granted => Rank::Earned,
                AccessResult::Denied | AccessResult::Unable => Rank::Denied,
            }
        }
        _ => Rank::NotYetTried,
    }
}

/// One claimant of a tag, ordered as ownership goes: rank, then age (creation time, then
/// namespace/name, so every replica and every resync agrees on ties).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Claimant {
    rank: Rank,
    created: Option<Timestamp>,
    key: ObjectKey,
}

impl Claimant {
    fn of(object: &GardenArtifact) -> Self {
        Self {
            rank: rank(object),
            created: object.creation_timestamp().map(|t| t.0),
            key: ObjectKey::of(object),
        }
    }
}

/// A `repository:tag`, the repository by its identity.
type TagKey = (String, String);

/// The claimants of one tag in ownership order: the first owns it. Nearly every tag has one
/// claimant, which a sorted Vec holds in an allocation of its own size; a BTreeSet would
/// allocate a node for eleven (about 900 bytes a tag, most of the index at 10,000 objects).
#[derive(Clone, Debug, Default)]
struct Claimants(Vec<Claimant>);

impl Claimants {
    fn insert(&mut self, claimant: Claimant) {
        if let Err(at) = self.0.binary_search(&claimant) {
            self.0.reserve_exact(1);
            self.0.insert(at, claimant);
        }
    }

    fn remove(&mut self, claimant: &Claimant) {
        if let Ok(at) = self.0.binary_search(claimant) {
            self.0.remove(at);
        }
    }

    fn first(&self) -> Option<&Claimant> {
        self.0.first()
    }

    fn iter(&self) -> std::slice::Iter<'_, Claimant> {
        self.0.iter()
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'a> IntoIterator for &'a Claimants {
    type Item = &'a Claimant;
    type IntoIter = std::slice::Iter<'a, Claimant>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// Something an object reads, so that a change to it reconciles the object.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Read {
    /// An `artifactRef`: the GardenArtifact of that name in the reader's namespace.
    Object(ObjectKey),
    /// A reference by tag (a copied image, an index entry, a subject).
    Tag {
        repository: String,
        tag: String,
    },
    /// A reference by digest.
    Digest {
        repository: String,
        digest: String,
    },
    Secret(ObjectKey),
    ConfigMap(ObjectKey),
}

/// What one object put into the index, so an update or a delete takes out exactly that.
#[derive(Clone, Debug, PartialEq)]
struct Entry {
    claimant: Claimant,
    repository: String,
    tags: Vec<String>,
    digest: Option<String>,
    reads: BTreeSet<Read>,
}

impl Entry {
    fn of(object: &GardenArtifact) -> Self {
        Self {
            claimant: Claimant::of(object),
            repository: repository_identity(&object.spec.repository),
            tags: object.spec.tags.clone(),
            digest: object.status.as_ref().and_then(|s| s.digest.clone()),
            reads: reads(object),
        }
    }

    fn tag_keys(&self) -> impl Iterator<Item = TagKey> + '_ {
        self.tags
            .iter()
            .map(|tag| (self.repository.clone(), tag.clone()))
    }

    /// What readers of this object's output read: it by name, its tags, its digest.
    fn produces(&self) -> Vec<Read> {
        let mut produced = vec![Read::Object(self.claimant.key.clone())];
        produced.extend(self.tags.iter().map(|tag| Read::Tag {
            repository: self.repository.clone(),
            tag: tag.clone(),
        }));
        produced.extend(self.digest.iter().map(|digest| Read::Digest {
            repository: self.repository.clone(),
            digest: digest.clone(),
        }));
        produced
    }
}

/// Everything the object's spec reads: its credentials, file sources, copied image, index
/// entries and subject. Two spellings of one registry are one repository.
fn reads(object: &GardenArtifact) -> BTreeSet<Read> {
    let namespace = object.namespace().unwrap_or_default();
    let key = |name: &str| ObjectKey::new(&namespace, name);
    let spec = &object.spec;
    let mut reads = BTreeSet::new();
    if let Some(credentials) = &spec.credentials {
        reads.insert(Read::Secret(key(&credentials.secret_ref.name)));
    }
    for file in spec.source.files.iter().flatten() {
        if let Some(k) = &file.secret_key_ref {
            reads.insert(Read::Secret(key(&k.name)));
        }
        if let Some(k) = &file.config_map_key_ref {
            reads.insert(Read::ConfigMap(key(&k.name)));
        }
    }
    let repository = Repository::parse(&spec.repository).ok();
    let by_reference = |reference: &str| {
        let resolved = RelativeReference::parse(reference)
            .ok()
            .zip(repository.as_ref())
            .map(|(reference, repository)| reference.resolve_in(repository))?;
        let repository = resolved.repository().identity().to_string();
        match (resolved.digest(), resolved.tag()) {
            (Some(digest), _) => Some(Read::Digest {
                repository,
                digest: digest.to_string(),
            }),
            (None, Some(tag)) => Some(Read::Tag {
                repository,
                tag: tag.to_string(),
            }),
            (None, None) => None,
        }
    };
    if let Some(image) = &spec.source.image {
        reads.extend(by_reference(&image.reference));
    }
    let links = spec
        .source
        .index
        .iter()
        .flat_map(|i| &i.manifests)
        .map(|e| (e.artifact_ref.as_ref(), e.reference.as_deref()))
        .chain(
            spec.subject
                .iter()
                .map(|s| (s.artifact_ref.as_ref(), s.reference.as_deref())),
        );
    for (artifact_ref, reference) in links {
        if let Some(r) = artifact_ref {
            reads.insert(Read::Object(key(&r.name)));
        }
        reads.extend(reference.and_then(by_reference));
    }
    reads
}

/// Tag claims and readers of every GardenArtifact that parses.
#[derive(Clone, Debug, Default)]
pub struct Index {
    entries: HashMap<ObjectKey, Entry>,
    /// Each `repository:tag` with its claimants.
    claims: HashMap<TagKey, Claimants>,
    readers: HashMap<Read, BTreeSet<ObjectKey>>,
}

impl Index {
    /// Puts the object in (or its new version in place of the old one). Returns the objects
    /// whose ownership of some tag changed with it: they must be reconciled again.
    pub fn apply(&mut self, object: &GardenArtifact) -> BTreeSet<ObjectKey> {
        let entry = Entry::of(object);
        let key = entry.claimant.key.clone();
        if self.entries.get(&key) == Some(&entry) {
            return BTreeSet::new();
        }
        let old = self.take_out(&key);
        let affected: BTreeSet<TagKey> = old
            .iter()
            .flat_map(Entry::tag_keys)
            .chain(entry.tag_keys())
            .collect();
        let before = self.owners(&affected, old.as_ref());
        for tag in entry.tag_keys() {
            self.claims
                .entry(tag)
                .or_default()
                .insert(entry.claimant.clone());
        }
        for read in &entry.reads {
            self.readers
                .entry(read.clone())
                .or_default()
                .insert(key.clone());
        }
        self.entries.insert(key, entry);
        self.ownership_changes(&affected, before)
    }

    /// Takes the object out (deleted, or no longer parsing). Returns the objects whose
    /// ownership of some tag changed with it.
    pub fn delete(&mut self, key: &ObjectKey) -> BTreeSet<ObjectKey> {
        let Some(old) = self.take_out(key) else {
            return BTreeSet::new();
        };
        let affected: BTreeSet<TagKey> = old.tag_keys().collect();
        let before = self.owners(&affected, Some(&old));
        self.ownership_changes(&affected, before)
    }

    /// The tags `object` may not have because another object owns them. The object's own
    /// claim is taken as it is now, should the index hold an older version of it.
    pub fn lost_tags(&self, object: &GardenArtifact) -> Vec<Conflict> {
        let own = Claimant::of(object);
        let repository = repository_identity(&object.spec.repository);
        object
            .spec
            .tags
            .iter()
            .filter_map(|tag| {
                let owner = self.strongest_other(&repository, tag, &own.key)?;
                (owner < &own).then(|| Conflict {
                    tag: tag.clone(),
                    owner: owner.key.to_string(),
                })
            })
            .collect()
    }

    /// True when the object would own some tag it has lost, were its claim earned, and the
    /// owner is not one still to try: only then is proving write access worth a request. An
    /// older earned owner keeps its tags anyway, and an untried owner tries first (were the
    /// two to race, the tag could move to the newer one and back).
    pub fn takeable(&self, object: &GardenArtifact) -> bool {
        let earned = Claimant {
            rank: Rank::Earned,
            ..Claimant::of(object)
        };
        let repository = repository_identity(&object.spec.repository);
        object.spec.tags.iter().any(|tag| {
            self.strongest_other(&repository, tag, &earned.key)
                .is_some_and(|owner| owner.rank != Rank::NotYetTried && &earned < owner)
        })
    }

    /// True when an object other than `me` claims `tag` of the repository (its identity).
    pub fn claimed_by_another(&self, repository: &str, tag: &str, me: &ObjectKey) -> bool {
        self.strongest_other(repository, tag, me).is_some()
    }

    /// The object that owns `tag` of the repository (its identity), if any claims it.
    pub fn owner_of(&self, repository: &str, tag: &str) -> Option<&ObjectKey> {
        self.claims
            .get(&(repository.to_string(), tag.to_string()))?
            .first()
            .map(|c| &c.key)
    }

    /// Every claimed tag of the repository (its identity) with its owner. A scan of all
    /// claims: for a GardenMirror's round (one per interval), never a GardenArtifact's.
    pub fn claims_in<'a>(
        &'a self,
        repository: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a ObjectKey)> + 'a {
        self.claims
            .iter()
            .filter(move |((repo, _), _)| repo == repository)
            .filter_map(|((_, tag), claimants)| Some((tag.as_str(), &claimants.first()?.key)))
    }

    /// True when another object claims one of the object's tags.
    pub fn contested(&self, object: &GardenArtifact) -> bool {
        let key = ObjectKey::of(object);
        let repository = repository_identity(&object.spec.repository);
        object
            .spec
            .tags
            .iter()
            .any(|tag| self.strongest_other(&repository, tag, &key).is_some())
    }

    /// The objects that read what `key` produces (a copied tag, an index entry, a subject, an
    /// `artifactRef`), as the index holds it: when it changes, they follow.
    pub fn readers_of(&self, key: &ObjectKey) -> BTreeSet<ObjectKey> {
        let Some(entry) = self.entries.get(key) else {
            return BTreeSet::new();
        };
        self.readers_of_entry(entry)
    }

    /// The objects that read this Secret (credentials or a file source).
    pub fn secret_readers(&self, secret: &ObjectKey) -> BTreeSet<ObjectKey> {
        self.readers_of_read(&Read::Secret(secret.clone()))
    }

    /// The objects that read this ConfigMap.
    pub fn config_map_readers(&self, map: &ObjectKey) -> BTreeSet<ObjectKey> {
        self.readers_of_read(&Read::ConfigMap(map.clone()))
    }

    /// The objects whose ownership of some tag differs between `old` and `self` (after a
    /// relist: changes the watch may have missed).
    pub fn changes_since(&self, old: &Index) -> BTreeSet<ObjectKey> {
        let tags: BTreeSet<&TagKey> = self.claims.keys().chain(old.claims.keys()).collect();
        let mut changed = BTreeSet::new();
        for tag in tags {
            let (before, after) = (
                old.claims.get(tag).and_then(|c| c.first()),
                self.claims.get(tag).and_then(|c| c.first()),
            );
            if let (Some(before), Some(after)) = (before, after)
                && before.key != after.key
            {
                changed.insert(before.key.clone());
                changed.extend(self.claims[tag].iter().map(|c| c.key.clone()));
            }
        }
        changed.retain(|key| self.entries.contains_key(key));
        changed
    }

    fn readers_of_read(&self, read: &Read) -> BTreeSet<ObjectKey> {
        self.readers.get(read).cloned().unwrap_or_default()
    }

    fn readers_of_entry(&self, entry: &Entry) -> BTreeSet<ObjectKey> {
        let mut readers: BTreeSet<ObjectKey> = entry
            .produces()
            .iter()
            .flat_map(|read| self.readers.get(read).into_iter().flatten().cloned())
            .collect();
        readers.remove(&entry.claimant.key);
        readers
    }

    /// The first claimant of `repository:tag` other than `except`.
    fn strongest_other(
        &self,
        repository: &str,
        tag: &str,
        except: &ObjectKey,
    ) -> Option<&Claimant> {
        self.claims
            .get(&(repository.to_string(), tag.to_string()))?
            .iter()
            .find(|c| &c.key != except)
    }

    fn take_out(&mut self, key: &ObjectKey) -> Option<Entry> {
        let old = self.entries.remove(key)?;
        for tag in old.tag_keys() {
            if let Some(claimants) = self.claims.get_mut(&tag) {
                claimants.remove(&old.claimant);
                if claimants.is_empty() {
                    self.claims.remove(&tag);
                }
            }
        }
        for read in &old.reads {
            if let Some(readers) = self.readers.get_mut(read) {
                readers.remove(key);
                if readers.is_empty() {
                    self.readers.remove(read);
                }
            }
        }
        Some(old)
    }

    /// The owner of each tag before a change; `taken_out` is the object's old entry, already
    /// removed from the claims, that was a claimant then.
    fn owners(&self, tags: &BTreeSet<TagKey>, taken_out: Option<&Entry>) -> Vec<Option<ObjectKey>> {
        tags.iter()
            .map(|tag| {
                let first = self.claims.get(tag).and_then(|c| c.first());
                let old = taken_out
                    .filter(|e| e.tag_keys().any(|t| &t == tag))
                    .map(|e| &e.claimant);
                match (first, old) {
                    (Some(first), Some(old)) => Some(first.min(old).key.clone()),
                    (first, old) => first.or(old).map(|c| c.key.clone()),
                }
            })
            .collect()
    }

    fn ownership_changes(
        &self,
        tags: &BTreeSet<TagKey>,
        before: Vec<Option<ObjectKey>>,
    ) -> BTreeSet<ObjectKey> {
        let mut changed = BTreeSet::new();
        for (tag, before) in tags.iter().zip(before) {
            let claimants = self.claims.get(tag);
            let after = claimants.and_then(|c| c.first()).map(|c| &c.key);
            // A tag that gains its first claimant or loses its last concerns only the object
            // whose own event this is.
            if let (Some(before), Some(after)) = (before, after)
                && &before != after
            {
                changed.extend(claimants.into_iter().flatten().map(|c| c.key.clone()));
                changed.insert(before);
            }
        }
        changed.retain(|key| self.entries.contains_key(key));
        changed
    }
}

/// The index the controller shares between its watch and its rounds. The watch of all
/// GardenArtifacts feeds it first (before anything decides which objects this replica
/// reconciles: ownership is decided over the whole cluster); after a relist it is rebuilt and
/// swapped in whole.
#[derive(Default)]
pub struct SharedIndex {
    current: RwLock<Index>,
    /// Filled by a relist (`Init` .. `InitDone`) while `current` still answers.
    relisting: RwLock<Option<Index>>,
    ready: watch::Sender<bool>,
    /// Which objects may claim tags at all (the operator's namespace policy); `None`: all.
    may_claim: Option<ClaimFilter>,
}

/// Whether an object may claim the tags it names.
pub type ClaimFilter = Box<dyn Fn(&GardenArtifact) -> bool + Send + Sync>;

impl SharedIndex {
    /// An index where only the objects `may_claim` admits claim tags: an object that may
    /// not write its repository (the namespace policy refuses it) writes nothing, so it owns
    /// nothing; it is still indexed as a reader.
    pub fn with_claim_filter(may_claim: ClaimFilter) -> Self {
        Self {
            may_claim: Some(may_claim),
            ..Self::default()
        }
    }

    /// Puts `object` into `index` as it may claim: without tags when the filter refuses it.
    fn put(&self, index: &mut Index, object: &GardenArtifact) -> BTreeSet<ObjectKey> {
        match &self.may_claim {
            Some(may_claim) if !may_claim(object) => {
                let mut claims_nothing = object.clone();
                claims_nothing.spec.tags.clear();
                index.apply(&claims_nothing)
            }
            _ => index.apply(object),
        }
    }

    /// One watch event in; out, the objects it concerns: those whose tag ownership changed,
    /// and the readers of what changed.
    pub fn event(&self, event: watcher::Event<Watched>) -> BTreeSet<ObjectKey> {
        match event {
            watcher::Event::Init => {
                *self.relisting.write().expect("not poisoned") = Some(Index::default());
                BTreeSet::new()
            }
            watcher::Event::InitApply(object) => {
                if let Some(index) = self.relisting.write().expect("not poisoned").as_mut() {
                    match object.valid() {
                        Some(valid) => self.put(index, valid),
                        None => index.delete(&ObjectKey::of(&object)),
                    };
                }
                BTreeSet::new()
            }
            watcher::Event::InitDone => {
                let Some(fresh) = self.relisting.write().expect("not poisoned").take() else {
                    return BTreeSet::new();
                };
                let mut current = self.current.write().expect("not poisoned");
                // After the first listing every object is reconciled anyway.
                let changed = if *self.ready.borrow() {
                    fresh.changes_since(&current)
                } else {
                    BTreeSet::new()
                };
                *current = fresh;
                drop(current);
                self.ready.send_replace(true);
                changed
            }
            watcher::Event::Apply(object) => {
                let key = ObjectKey::of(&object);
                let mut index = self.current.write().expect("not poisoned");
                let mut concerned = index.readers_of(&key);
                concerned.extend(match object.valid() {
                    Some(valid) => self.put(&mut index, valid),
                    // What it produces is unknown; once it parses again, its readers follow.
                    None => index.delete(&key),
                });
                if object.valid().is_some() {
                    concerned.extend(index.readers_of(&key));
                }
                concerned
            }
            watcher::Event::Delete(object) => {
                let key = ObjectKey::of(&object);
                let mut index = self.current.write().expect("not poisoned");
                let mut concerned = index.readers_of(&key);
                concerned.extend(index.delete(&key));
                concerned
            }
        }
    }

    /// An index that has listed `objects`, for tests.
    #[cfg(test)]
    pub fn ready_with(objects: &[GardenArtifact]) -> Self {
        let shared = Self::default();
        shared.event(watcher::Event::Init);
        for object in objects {
            shared.event(watcher::Event::InitApply(Watched(Ok(object.clone()))));
        }
        shared.event(watcher::Event::InitDone);
        shared
    }

    /// Waits until the first full listing is in: before, a newer object could take a tag.
    pub async fn wait_until_ready(&self) {
        let mut ready = self.ready.subscribe();
        // The sender lives as long as `self`.
        let _ = ready.wait_for(|ready| *ready).await;
    }

    /// A lookup in the index as it is now.
    pub fn read<T>(&self, lookup: impl FnOnce(&Index) -> T) -> T {
        lookup(&self.current.read().expect("not poisoned"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{GardenArtifactStatus, WriteAccess};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn object(ns: &str, name: &str, created: i64, yaml: &str) -> GardenArtifact {
        let mut o = GardenArtifact::new(name, serde_yaml::from_str(yaml).unwrap());
        o.metadata.namespace = Some(ns.into());
        o.metadata.uid = Some(format!("{ns}-{name}"));
        o.metadata.creation_timestamp = Some(Time(Timestamp::from_second(created).unwrap()));
        o
    }

    fn files(repository: &str, tags: &str) -> String {
        format!(
            "{{repository: '{repository}', tags: [{tags}], source: {{files: [{{name: x.raw, content: x}}]}}}}"
        )
    }

    fn with_access(mut o: GardenArtifact, result: AccessResult) -> GardenArtifact {
        o.status = Some(GardenArtifactStatus {
            write_access: Some(WriteAccess {
                repository: repository_identity(&o.spec.repository),
                result,
            }),
            ..Default::default()
        });
        o
    }

    fn keys(names: &[&str]) -> BTreeSet<ObjectKey> {
        names
            .iter()
            .map(|n| {
                let (ns, name) = n.split_once('/').unwrap();
                ObjectKey::new(ns, name)
            })
            .collect()
    }

    fn owners(index: &Index, object: &GardenArtifact) -> Vec<(String, String)> {
        index
            .lost_tags(object)
            .into_iter()
            .map(|c| (c.tag, c.owner))
            .collect()
    }

    #[test]
    fn claimants_stay_in_ownership_order_once_each_in_an_allocation_of_their_size() {
        let claimant = |name: &str, created: i64| {
            Claimant::of(&object("a", name, created, &files("h:1/gl", "t")))
        };
        let mut claimants = Claimants::default();
        claimants.insert(claimant("second", 2));
        assert_eq!(claimants.0.capacity(), 1, "one claimant, room for one");
        for c in [
            claimant("third", 3),
            claimant("first", 1),
            claimant("second", 2),
        ] {
            claimants.insert(c);
        }
        let names = |c: &Claimants| c.iter().map(|c| c.key.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(&claimants), ["first", "second", "third"]);
        claimants.remove(&claimant("first", 1));
        claimants.remove(&claimant("absent", 9));
        assert_eq!(names(&claimants), ["second", "third"]);
        assert_eq!(
            claimants.first().map(|c| c.key.name.as_str()),
            Some("second")
        );
        claimants.remove(&claimant("second", 2));
        claimants.remove(&claimant("third", 3));
        assert!(claimants.is_empty());
    }

    #[test]
    fn earned_ranks_before_not_yet_tried_before_denied_then_age() {
        let old = object("a", "old", 1, &files("h:1/gl", "t"));
        let young = object("b", "young", 2, &files("h:1/gl", "t"));
        assert_eq!(rank(&old), Rank::NotYetTried);
        let ranked = |o: &GardenArtifact| Claimant::of(o);
        assert!(ranked(&old) < ranked(&young), "untried: the older first");
        let young_earned = with_access(young.clone(), AccessResult::Granted);
        assert_eq!(rank(&young_earned), Rank::Earned);
        assert!(
            ranked(&young_earned) < ranked(&old),
            "earned before untried"
        );
        let old_denied = with_access(old.clone(), AccessResult::Denied);
        assert!(
            ranked(&young) < ranked(&old_denied),
            "untried before denied"
        );
        let old_unable = with_access(old.clone(), AccessResult::Unable);
        assert_eq!(
            rank(&old_unable),
            Rank::Denied,
            "unable to try: as if refused"
        );
        let old_earned = with_access(old.clone(), AccessResult::Granted);
        assert!(
            ranked(&old_earned) < ranked(&young_earned),
            "both earned: the older"
        );
    }

    #[test]
    fn access_earned_for_another_repository_counts_for_nothing() {
        let mut o = with_access(
            object("a", "o", 1, &files("h:1/gl", "t")),
            AccessResult::Granted,
        );
        o.spec.repository = "h:1/other".into();
        assert_eq!(rank(&o), Rank::NotYetTried);
        let mut respelled = with_access(
            object("a", "o", 1, &files("localhost:5000/gl", "t")),
            AccessResult::Denied,
        );
        respelled.spec.repository = "127.0.0.1:5000/gl".into();
        assert_eq!(
            rank(&respelled),
            Rank::Denied,
            "one registry, two spellings"
        );
    }

    #[test]
    fn insert_gives_the_tag_to_the_strongest_claimant_and_names_whom_it_moved() {
        let mut index = Index::default();
        let squatter = object("a", "squatter", 1, &files("h:1/gl", "latest"));
        let legit = object("b", "legit", 2, &files("h:1/gl", "latest, v1"));
        assert_eq!(index.apply(&squatter), BTreeSet::new(), "its own event");
        assert!(!index.contested(&squatter));
        assert_eq!(index.apply(&legit), BTreeSet::new(), "the owner stays");
        assert!(index.contested(&squatter) && index.contested(&legit));
        assert_eq!(
            owners(&index, &legit),
            [("latest".into(), "a/squatter".into())]
        );
        assert!(index.lost_tags(&squatter).is_empty());

        // The squatter is refused: the tag goes to the legitimate object.
        let denied = with_access(squatter.clone(), AccessResult::Denied);
        assert_eq!(index.apply(&denied), keys(&["a/squatter", "b/legit"]));
        assert!(index.lost_tags(&legit).is_empty());
        assert_eq!(
            owners(&index, &denied),
            [("latest".into(), "b/legit".into())]
        );
        assert!(
            !index.takeable(&denied),
            "the owner has not tried yet: it tries first"
        );
        // Earned, it keeps it against anyone not earned, however old.
        let earned = with_access(legit.clone(), AccessResult::Granted);
        assert_eq!(index.apply(&earned), BTreeSet::new());
        assert!(
            index.takeable(&denied),
            "older: it tries again, and takes the tag once its credentials are accepted"
        );
        let squatter_again = object("a", "squatter", 1, &files("h:1/gl", "latest"));
        assert_eq!(index.apply(&squatter_again), BTreeSet::new());
        assert!(
            index.takeable(&squatter_again),
            "older: earning would win the tag"
        );
        let younger = object("c", "younger", 3, &files("h:1/gl", "latest"));
        index.apply(&younger);
        assert!(!index.takeable(&younger), "the earned owner is older");
        assert_eq!(
            owners(&index, &squatter_again),
            [("latest".into(), "b/legit".into())]
        );
    }

    #[test]
    fn the_object_as_it_is_now_counts_for_itself() {
        let mut index = Index::default();
        let older = object("a", "older", 1, &files("h:1/gl", "latest"));
        let newer = object("b", "newer", 2, &files("h:1/gl", "latest"));
        index.apply(&older);
        index.apply(&newer);
        // The index has not seen the newer object earn its claim yet; its round has.
        let earned = with_access(newer, AccessResult::Granted);
        assert!(index.lost_tags(&earned).is_empty());
        assert!(
            index.lost_tags(&older).is_empty(),
            "until the watch brings the change"
        );
    }

    #[test]
    fn an_update_of_tags_moves_claims_and_names_the_new_owners() {
        let mut index = Index::default();
        let a = object("n", "a", 1, &files("h:1/gl", "x, y"));
        let b = object("n", "b", 2, &files("h:1/gl", "x"));
        index.apply(&a);
        index.apply(&b);
        assert_eq!(owners(&index, &b), [("x".into(), "n/a".into())]);
        let a_without_x = object("n", "a", 1, &files("h:1/gl", "y"));
        assert_eq!(index.apply(&a_without_x), keys(&["n/a", "n/b"]));
        assert!(index.lost_tags(&b).is_empty());
        let a_moved = object("n", "a", 1, &files("h:1/other", "x"));
        assert_eq!(index.apply(&a_moved), BTreeSet::new(), "another repository");
        assert!(index.lost_tags(&b).is_empty() && index.lost_tags(&a_moved).is_empty());
        let a_back = object("n", "a", 1, &files("h:1/gl", "x"));
        assert_eq!(index.apply(&a_back), keys(&["n/a", "n/b"]));
        assert_eq!(owners(&index, &b), [("x".into(), "n/a".into())]);
    }

    #[test]
    fn a_delete_hands_the_tag_to_the_next_claimant() {
        let mut index = Index::default();
        let a = object("n", "a", 1, &files("h:1/gl", "x"));
        let b = object("n", "b", 2, &files("h:1/gl", "x"));
        let c = object("n", "c", 3, &files("h:1/gl", "x"));
        for o in [&a, &b, &c] {
            index.apply(o);
        }
        assert_eq!(
            index.delete(&ObjectKey::of(&b)),
            BTreeSet::new(),
            "not the owner"
        );
        assert_eq!(index.delete(&ObjectKey::of(&a)), keys(&["n/c"]));
        assert!(index.lost_tags(&c).is_empty());
        assert_eq!(
            index.delete(&ObjectKey::of(&c)),
            BTreeSet::new(),
            "the last one"
        );
        assert!(index.claims.is_empty() && index.entries.is_empty());
        assert_eq!(index.delete(&ObjectKey::of(&c)), BTreeSet::new(), "twice");
    }

    #[test]
    fn ties_in_creation_time_go_by_namespace_then_name() {
        let mut index = Index::default();
        let objects = [
            object("b", "a", 5, &files("h:1/gl", "t")),
            object("a", "z", 5, &files("h:1/gl", "t")),
            object("a", "y", 5, &files("h:1/gl", "t")),
        ];
        for o in &objects {
            index.apply(o);
        }
        for o in &objects {
            let lost = owners(&index, o);
            if o.name_any() == "y" {
                assert!(lost.is_empty());
            } else {
                assert_eq!(lost, [("t".into(), "a/y".into())]);
            }
        }
        // In any order of arrival.
        let mut reversed = Index::default();
        for o in objects.iter().rev() {
            reversed.apply(o);
        }
        assert_eq!(owners(&reversed, &objects[0]), [("t".into(), "a/y".into())]);
    }

    #[test]
    fn two_spellings_of_one_registry_are_one_contested_tag() {
        let older = object("a", "older", 10, &files("localhost:5000/gl", "latest"));
        for spelling in ["127.0.0.1:5000/gl", "LOCALHOST:5000/gl", "[::1]:5000/gl"] {
            let mut index = Index::default();
            let newer = object("b", "newer", 20, &files(spelling, "latest"));
            index.apply(&newer);
            index.apply(&older);
            assert!(index.lost_tags(&older).is_empty(), "{spelling}");
            assert_eq!(
                owners(&index, &newer),
                [("latest".into(), "a/older".into())],
                "{spelling}"
            );
        }
    }

    #[test]
    fn secrets_and_config_maps_map_to_their_readers_in_the_same_namespace() {
        let mut index = Index::default();
        index.apply(&object(
            "r",
            "a",
            1,
            "{repository: h:1/a, tags: [t], credentials: {secretRef: {name: regcred}}, source: {files: [{name: x.raw, content: x}]}}",
        ));
        index.apply(&object(
            "r",
            "b",
            2,
            "{repository: h:1/a, tags: [u], source: {files: [{name: x.raw, configMapKeyRef: {name: cm, key: k}}, {name: y.raw, secretKeyRef: {name: s, key: k}}]}}",
        ));
        index.apply(&object(
            "other",
            "c",
            3,
            "{repository: h:1/a, tags: [v], credentials: {secretRef: {name: regcred}}, source: {files: [{name: x.raw, content: x}]}}",
        ));
        assert_eq!(
            index.secret_readers(&ObjectKey::new("r", "regcred")),
            keys(&["r/a"])
        );
        assert_eq!(
            index.secret_readers(&ObjectKey::new("r", "s")),
            keys(&["r/b"])
        );
        assert_eq!(
            index.config_map_readers(&ObjectKey::new("r", "cm")),
            keys(&["r/b"])
        );
        assert!(index.secret_readers(&ObjectKey::new("r", "cm")).is_empty());
        index.delete(&ObjectKey::new("r", "a"));
        assert!(
            index
                .secret_readers(&ObjectKey::new("r", "regcred"))
                .is_empty()
        );
        assert!(
            index.readers.keys().all(
                |r| !matches!(r, Read::Secret(k) if k.name == "regcred" && k.namespace == "r")
            )
        );
    }

    #[test]
    fn copies_follow_their_producer() {
        let mut index = Index::default();
        let mut producer = object(
            "r",
            "release",
            1,
            "{repository: h:1/gl, tags: ['1877.5'], source: {files: [{name: x.raw, content: x}]}}",
        );
        let digest = format!("sha256:{}", "a".repeat(64));
        producer.status = Some(GardenArtifactStatus {
            digest: Some(digest.clone()),
            ..Default::default()
        });
        let readers = [
            ("latest", "{repository: h:1/gl, tags: [latest], source: {image: {reference: 'h:1/gl:1877.5'}}}".to_string()),
            ("other", "{repository: h:1/gl, tags: [old], source: {image: {reference: 'h:1/gl:1443'}}}".to_string()),
            ("index", "{repository: h:1/gl, tags: ['1877'], source: {index: {manifests: [{artifactRef: {name: release}}]}}}".to_string()),
            ("sbom", "{repository: h:1/gl, subject: {reference: '1877.5'}, source: {files: [{name: a.sbom, content: x}]}}".to_string()),
            ("pinned", format!("{{repository: h:1/mirror, tags: [p], source: {{image: {{reference: 'h:1/gl@{digest}'}}}}}}")),
        ];
        for (i, (name, yaml)) in readers.iter().enumerate() {
            index.apply(&object("r", name, 2 + i as i64, yaml));
        }
        index.apply(&object(
            "other",
            "index",
            9,
            "{repository: h:1/gl, tags: ['x'], source: {index: {manifests: [{artifactRef: {name: release}}]}}}",
        ));
        index.apply(&producer);
        assert_eq!(
            index.readers_of(&ObjectKey::of(&producer)),
            keys(&["r/index", "r/latest", "r/pinned", "r/sbom"])
        );
    }

    #[test]
    fn a_copy_follows_its_producer_under_another_spelling_of_the_registry() {
        let mut index = Index::default();
        let producer = object(
            "r",
            "release",
            1,
            "{repository: '127.0.0.1:5000/gl', tags: ['1877.5'], source: {files: [{name: x.raw, content: x}]}}",
        );
        index.apply(&producer);
        index.apply(&object(
            "r",
            "mirror",
            2,
            "{repository: 'localhost:5000/mirror', tags: ['1'], source: {image: {reference: 'LOCALHOST:5000/gl:1877.5'}}}",
        ));
        assert_eq!(
            index.readers_of(&ObjectKey::of(&producer)),
            keys(&["r/mirror"])
        );
    }

    fn watched(o: &GardenArtifact) -> Watched {
        Watched(Ok(o.clone()))
    }

    #[test]
    fn events_feed_the_index_and_name_whom_they_concern() {
        let shared = SharedIndex::default();
        let producer = object("r", "p", 1, &files("h:1/gl", "1"));
        let copy = object(
            "r",
            "copy",
            2,
            "{repository: h:1/gl, tags: [latest], source: {image: {reference: 'h:1/gl:1'}}}",
        );
        let rival = object("s", "rival", 3, &files("h:1/gl", "latest"));
        shared.event(watcher::Event::Init);
        for o in [&producer, &copy] {
            assert!(
                shared
                    .event(watcher::Event::InitApply(watched(o)))
                    .is_empty()
            );
        }
        assert!(
            shared.read(|i| i.entries.is_empty()),
            "swapped in at InitDone only"
        );
        assert_eq!(shared.event(watcher::Event::InitDone), BTreeSet::new());
        assert_eq!(
            shared.event(watcher::Event::Apply(watched(&producer))),
            keys(&["r/copy"])
        );
        assert_eq!(
            shared.event(watcher::Event::Apply(watched(&rival))),
            BTreeSet::new()
        );
        let rival_earned = with_access(rival.clone(), AccessResult::Granted);
        assert_eq!(
            shared.event(watcher::Event::Apply(watched(&rival_earned))),
            keys(&["r/copy", "s/rival"])
        );
        assert_eq!(
            shared.read(|i| owners(i, &copy)),
            [("latest".to_string(), "s/rival".to_string())]
        );
        assert_eq!(
            shared.event(watcher::Event::Delete(watched(&producer))),
            keys(&["r/copy"])
        );
    }

    #[test]
    fn a_relist_replaces_the_index_and_names_what_it_changed() {
        let shared = SharedIndex::default();
        let a = object("n", "a", 1, &files("h:1/gl", "x"));
        let b = object("n", "b", 2, &files("h:1/gl", "x"));
        shared.event(watcher::Event::Init);
        shared.event(watcher::Event::InitApply(watched(&a)));
        shared.event(watcher::Event::InitApply(watched(&b)));
        shared.event(watcher::Event::InitDone);
        // `a` was deleted while the watch was down: the relist does not list it.
        shared.event(watcher::Event::Init);
        shared.event(watcher::Event::InitApply(watched(&b)));
        assert_eq!(
            shared.read(|i| owners(i, &b)),
            [("x".to_string(), "n/a".to_string())],
            "the old index answers while relisting"
        );
        assert_eq!(shared.event(watcher::Event::InitDone), keys(&["n/b"]));
        assert!(shared.read(|i| i.lost_tags(&b).is_empty()));
        assert!(shared.read(|i| i.entries.len() == 1));
    }

    #[test]
    fn an_object_that_no_longer_parses_claims_nothing() {
        let shared = SharedIndex::default();
        let a = object("n", "a", 1, &files("h:1/gl", "x"));
        let b = object("n", "b", 2, &files("h:1/gl", "x"));
        shared.event(watcher::Event::Apply(watched(&a)));
        shared.event(watcher::Event::Apply(watched(&b)));
        let invalid = Watched(Err(crate::controller::watched::Invalid {
            error: "spec: unknown field".into(),
            metadata: a.metadata.clone(),
            status: None,
        }));
        assert_eq!(shared.event(watcher::Event::Apply(invalid)), keys(&["n/b"]));
        assert!(shared.read(|i| i.lost_tags(&b).is_empty()));
    }
}
