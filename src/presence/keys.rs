//! Allocation-free lookups in maps keyed by tuples of `String`s.
//!
//! Presence and typing state are keyed by `(namespace, room[, user])`, and
//! every chat message looks them up. Building owned `String`s for each
//! lookup cost a few allocations per message; these traits let a
//! `(&str, &str)` stand in for a `(String, String)` key (the standard
//! `Borrow` pattern, with hashes equal to the owned tuple's).

use std::borrow::Borrow;
use std::hash::{Hash, Hasher};

/// A two-part key, owned or borrowed.
pub trait Pair {
    fn parts(&self) -> (&str, &str);
}

impl Pair for (String, String) {
    fn parts(&self) -> (&str, &str) {
        (&self.0, &self.1)
    }
}

impl Pair for (&str, &str) {
    fn parts(&self) -> (&str, &str) {
        (self.0, self.1)
    }
}

impl<'a> Borrow<dyn Pair + 'a> for (String, String) {
    fn borrow(&self) -> &(dyn Pair + 'a) {
        self
    }
}

impl Hash for dyn Pair + '_ {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.parts().hash(h)
    }
}

impl PartialEq for dyn Pair + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.parts() == other.parts()
    }
}

impl Eq for dyn Pair + '_ {}

/// A three-part key, owned or borrowed.
pub trait Triple {
    fn parts(&self) -> (&str, &str, &str);
}

impl Triple for (String, String, String) {
    fn parts(&self) -> (&str, &str, &str) {
        (&self.0, &self.1, &self.2)
    }
}

impl Triple for (&str, &str, &str) {
    fn parts(&self) -> (&str, &str, &str) {
        (self.0, self.1, self.2)
    }
}

impl<'a> Borrow<dyn Triple + 'a> for (String, String, String) {
    fn borrow(&self) -> &(dyn Triple + 'a) {
        self
    }
}

impl Hash for dyn Triple + '_ {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.parts().hash(h)
    }
}

impl PartialEq for dyn Triple + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.parts() == other.parts()
    }
}

impl Eq for dyn Triple + '_ {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::hash::BuildHasher;

    #[test]
    fn borrowed_keys_hash_and_find_like_owned_ones() {
        let s = std::collections::hash_map::RandomState::new();
        let owned = ("ns".to_string(), "room".to_string());
        let borrowed: &dyn Pair = &("ns", "room");
        assert_eq!(s.hash_one(&owned), s.hash_one(borrowed));
        let mut m = HashMap::new();
        m.insert(owned, 1);
        assert_eq!(m.get(&("ns", "room") as &dyn Pair), Some(&1));
        assert_eq!(m.get(&("ns", "roo") as &dyn Pair), None);
        assert_eq!(m.get(&("nsr", "oom") as &dyn Pair), None);

        let mut t = HashMap::new();
        t.insert(("a".to_string(), "b".to_string(), "c".to_string()), 2);
        assert_eq!(t.remove(&("a", "b", "c") as &dyn Triple), Some(2));
        assert!(t.is_empty());
    }

    /// Every key hashes alike, so only equality tells entries apart.
    #[derive(Default, Clone)]
    struct Collide;
    struct Zero;
    impl std::hash::Hasher for Zero {
        fn finish(&self) -> u64 {
            0
        }
        fn write(&mut self, _: &[u8]) {}
    }
    impl BuildHasher for Collide {
        type Hasher = Zero;
        fn build_hasher(&self) -> Zero {
            Zero
        }
    }

    #[test]
    fn borrowed_keys_compare_every_part() {
        let mut m: HashMap<(String, String), u8, Collide> = HashMap::default();
        m.insert(("ns".into(), "a".into()), 1);
        m.insert(("ns".into(), "b".into()), 2);
        m.insert(("other".into(), "a".into()), 3);
        assert_eq!(m.get(&("ns", "b") as &dyn Pair), Some(&2));
        assert_eq!(m.get(&("other", "a") as &dyn Pair), Some(&3));
        assert_eq!(m.get(&("ns", "c") as &dyn Pair), None);
        assert_eq!(m.get(&("x", "a") as &dyn Pair), None);

        let mut t: HashMap<(String, String, String), u8, Collide> = HashMap::default();
        t.insert(("n".into(), "r".into(), "u1".into()), 1);
        t.insert(("n".into(), "r".into(), "u2".into()), 2);
        assert_eq!(t.get(&("n", "r", "u2") as &dyn Triple), Some(&2));
        assert_eq!(t.get(&("n", "r", "u3") as &dyn Triple), None);
        assert_eq!(t.get(&("n", "x", "u1") as &dyn Triple), None);
    }
}
