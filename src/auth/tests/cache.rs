use crate::auth::cache::*;
use crate::auth::Claims;
use std::sync::Arc;

fn claims() -> Arc<Claims> {
    Arc::new(Claims::default())
}

#[test]
fn hit_requires_identical_token_and_unexpired_entry() {
    let c = TokenCache::new(100);
    c.insert("aaaa.bbbb.sig", claims(), 110, 100);
    assert!(c.get("aaaa.bbbb.sig", 109).is_some());
    // Same tail (hash key), different bytes elsewhere: must miss.
    assert!(c.get("aaab.bbbb.sig", 100).is_none());
    assert_eq!(c.hits(), 1);
    // At exp the entry is gone and removed.
    assert!(c.get("aaaa.bbbb.sig", 110).is_none());
    assert_eq!(c.len(), 0);
    // Already-expired entries are not inserted.
    c.insert("x.y.z", claims(), 100, 100);
    assert_eq!(c.len(), 0);
}

#[test]
fn capacity_is_a_hard_bound() {
    for cap in [1, 5, 16, 100] {
        let c = TokenCache::new(cap);
        for i in 0..(cap * 10) {
            c.insert(&format!("tok.{i}.sig{i}"), claims(), 1000, 0);
            assert!(c.len() <= cap, "cap {cap}: {} entries", c.len());
        }
        assert!(c.len() >= cap / 2, "cap {cap}: only {} entries", c.len());
    }
    let off = TokenCache::new(0);
    off.insert("a.b.c", claims(), 1000, 0);
    assert_eq!(off.len(), 0);
    assert!(off.get("a.b.c", 0).is_none());
}

#[test]
fn full_shard_prefers_evicting_expired_entries() {
    let c = TokenCache::new(1);
    c.insert("old.token.a", claims(), 50, 0);
    c.insert("new.token.b", claims(), 500, 60);
    assert_eq!(c.len(), 1);
    assert!(c.get("new.token.b", 60).is_some());
}
