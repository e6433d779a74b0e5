//! User memory: chunks of text a user saves, searched by term.
//!
//! Every key starts with the owner's id. Search reads an inverted index kept
//! per user (`memidx/<user>/<term>\0<hash>` → term count), so a query touches
//! only the posting lists of its own terms in its owner's data: its cost grows
//! with that user's matching chunks, never with the host's.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{commit, decode, encode, keyspace, DomainError, DomainResult};
use crate::store::{Store, Transaction};

pub const MAX_CONTENT_LEN: usize = 64 * 1024;
pub const MAX_TITLE_LEN: usize = 512;
pub const DEFAULT_COLLECTION: &str = "snippets";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Chunk {
    pub hash: String,
    pub collection: String,
    #[serde(default)]
    pub title: String,
    pub content: String,
    #[serde(default)]
    pub metadata: Value,
    pub created_at: f64,
}

/// Fold Latin accents and case so "Café" finds "cafe".
fn fold(c: char) -> Option<char> {
    let base = match c {
        'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' | 'ā' | 'ă' | 'ą' | 'À' | 'Á' | 'Â' | 'Ã' | 'Ä' | 'Å'
        | 'Ā' | 'Ă' | 'Ą' => 'a',
        'ç' | 'ć' | 'č' | 'Ç' | 'Ć' | 'Č' => 'c',
        'ď' | 'đ' | 'Ď' | 'Đ' => 'd',
        'è' | 'é' | 'ê' | 'ë' | 'ē' | 'ė' | 'ę' | 'ě' | 'È' | 'É' | 'Ê' | 'Ë' | 'Ē' | 'Ė' | 'Ę'
        | 'Ě' => 'e',
        'ì' | 'í' | 'î' | 'ï' | 'ī' | 'į' | 'Ì' | 'Í' | 'Î' | 'Ï' | 'Ī' | 'Į' => 'i',
        'ñ' | 'ń' | 'ň' | 'Ñ' | 'Ń' | 'Ň' => 'n',
        'ò' | 'ó' | 'ô' | 'õ' | 'ö' | 'ø' | 'ō' | 'ő' | 'Ò' | 'Ó' | 'Ô' | 'Õ' | 'Ö' | 'Ø' | 'Ō'
        | 'Ő' => 'o',
        'ù' | 'ú' | 'û' | 'ü' | 'ū' | 'ů' | 'ű' | 'Ù' | 'Ú' | 'Û' | 'Ü' | 'Ū' | 'Ů' | 'Ű' => {
            'u'
        }
        'ý' | 'ÿ' | 'Ý' | 'Ÿ' => 'y',
        'ś' | 'š' | 'Ś' | 'Š' => 's',
        'ź' | 'ż' | 'ž' | 'Ź' | 'Ż' | 'Ž' => 'z',
        'ł' | 'Ł' => 'l',
        'ř' | 'Ř' => 'r',
        'ť' | 'Ť' => 't',
        'ß' => 's',
        c if c.is_alphanumeric() => return c.to_lowercase().next(),
        _ => return None,
    };
    Some(base)
}

/// The search terms of a text: folded words of 2 to 40 characters.
pub fn terms(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    for c in text.chars().chain(std::iter::once(' ')) {
        match fold(c) {
            Some(f) => word.push(f),
            None => {
                let n = word.chars().count();
                if (2..=40).contains(&n) {
                    out.push(std::mem::take(&mut word));
                } else {
                    word.clear();
                }
            }
        }
    }
    out
}

fn term_counts(chunk: &Chunk) -> BTreeMap<String, u32> {
    let mut counts = BTreeMap::new();
    // Title words weigh more than body words.
    for t in terms(&chunk.title) {
        *counts.entry(t).or_insert(0) += 3;
    }
    for t in terms(&chunk.content) {
        *counts.entry(t).or_insert(0) += 1;
    }
    counts
}

pub fn chunk_hash(collection: &str, title: &str, content: &str) -> String {
    let digest = Sha256::new()
        .chain_update(collection.as_bytes())
        .chain_update([0])
        .chain_update(title.as_bytes())
        .chain_update([0])
        .chain_update(content.as_bytes())
        .finalize();
    hex::encode(&digest[..8])
}

pub struct Memory {
    store: Arc<dyn Store>,
}

/// Most query terms a search uses.
pub const MAX_QUERY_TERMS: usize = 16;
/// Most index entries a search reads per term; past this a term is treated
/// as too common to enumerate (see [`Memory::search`]).
pub const MAX_POSTINGS_PER_TERM: usize = 2_000;
/// How many of the best chunks a too-common term re-ranks (at least the
/// number of results asked for).
const MAX_RERANKED: usize = 200;

fn idf(postings: usize) -> f64 {
    1.0 + 1.0 / (postings as f64).max(1.0)
}

/// A term's weight in one chunk from its stored count.
fn weight(count: &[u8]) -> f64 {
    let tf: f64 = std::str::from_utf8(count)
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(1.0);
    1.0 + tf.ln()
}

/// Best score first; ties by hash, so results are stable.
fn ranked(scores: HashMap<String, f64>) -> Vec<(String, f64)> {
    let mut ranked: Vec<(String, f64)> = scores.into_iter().collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    ranked
}

impl Memory {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }

    /// Save a chunk; saving the same text again is a no-op that returns the
    /// same hash.
    pub async fn save(
        &self,
        user: &str,
        collection: Option<&str>,
        title: Option<&str>,
        content: &str,
        metadata: Value,
        created_at: f64,
    ) -> DomainResult<Chunk> {
        let collection = collection.unwrap_or(DEFAULT_COLLECTION).trim();
        let title = title.unwrap_or("").trim();
        if content.trim().is_empty() {
            return Err(DomainError::Invalid("content is required".into()));
        }
        if content.len() > MAX_CONTENT_LEN || title.len() > MAX_TITLE_LEN {
            return Err(DomainError::Invalid(format!(
                "content must be at most {MAX_CONTENT_LEN} bytes and title {MAX_TITLE_LEN}"
            )));
        }
        if collection.is_empty()
            || collection.len() > 64
            || collection.chars().any(|c| c.is_control() || c == '/')
        {
            return Err(DomainError::Invalid(
                "collection must be 1 to 64 characters without '/'".into(),
            ));
        }
        let chunk = Chunk {
            hash: chunk_hash(collection, title, content),
            collection: collection.to_owned(),
            title: title.to_owned(),
            content: content.to_owned(),
            metadata,
            created_at,
        };
        if let Some(existing) = self.get(user, &chunk.hash)? {
            return Ok(existing);
        }
        let mut tx = Transaction::new();
        self.stage_save(&mut tx, user, &chunk)?;
        commit(&self.store, tx).await?;
        Ok(chunk)
    }

    /// Add a chunk and its index entries to `tx` (also used by the import).
    pub fn stage_save(&self, tx: &mut Transaction, user: &str, chunk: &Chunk) -> DomainResult<()> {
        tx.put(keyspace::memory_chunk(user, &chunk.hash), encode(chunk)?);
        for (term, count) in term_counts(chunk) {
            tx.put(
                keyspace::memory_term(user, &term, &chunk.hash),
                count.to_string(),
            );
        }
        Ok(())
    }

    pub fn get(&self, user: &str, hash: &str) -> DomainResult<Option<Chunk>> {
        match self
            .store
            .get(keyspace::memory_chunk(user, hash).as_bytes())?
        {
            Some(bytes) => Ok(Some(decode(&bytes)?)),
            None => Ok(None),
        }
    }

    pub async fn delete(&self, user: &str, hash: &str) -> DomainResult<()> {
        let chunk = self
            .get(user, hash)?
            .ok_or(DomainError::NotFound("chunk"))?;
        let mut tx = Transaction::new();
        tx.delete(keyspace::memory_chunk(user, hash));
        for term in term_counts(&chunk).keys() {
            tx.delete(keyspace::memory_term(user, term, hash));
        }
        commit(&self.store, tx).await
    }

    pub fn browse(
        &self,
        user: &str,
        collection: Option<&str>,
        limit: usize,
    ) -> DomainResult<Vec<Chunk>> {
        let mut out = Vec::new();
        let prefix = keyspace::memory_prefix(user);
        let mut after: Option<Vec<u8>> = None;
        while out.len() < limit {
            let page = self.store.scan(prefix.as_bytes(), after.as_deref(), 256)?;
            let Some((last, _)) = page.last() else { break };
            after = Some(last.clone());
            for (_, bytes) in &page {
                let chunk: Chunk = decode(bytes)?;
                if collection.is_none_or(|c| c == chunk.collection) && out.len() < limit {
                    out.push(chunk);
                }
            }
        }
        out.sort_by(|a, b| b.created_at.total_cmp(&a.created_at));
        Ok(out)
    }

    /// Chunk counts per collection.
    pub fn collections(&self, user: &str) -> DomainResult<BTreeMap<String, usize>> {
        let mut counts = BTreeMap::new();
        for chunk in self.browse(user, None, usize::MAX)? {
            *counts.entry(chunk.collection).or_insert(0) += 1;
        }
        Ok(counts)
    }

    /// Ranked term search over the user's own chunks: each query term adds
    /// its count in the chunk weighted by how rare the term is among the
    /// user's chunks.
    ///
    /// The work is bounded whatever the data: a term found in more than
    /// [`MAX_POSTINGS_PER_TERM`] chunks (a stop word, for a large memory) is
    /// not enumerated. It only re-ranks the best chunks the rarer terms found,
    /// by one index lookup each; a query of such terms alone ranks the first
    /// chunks of its first term. At most [`MAX_QUERY_TERMS`] terms count.
    pub fn search(&self, user: &str, query: &str, limit: usize) -> DomainResult<Vec<(Chunk, f64)>> {
        let mut query_terms = terms(query);
        query_terms.sort();
        query_terms.dedup();
        query_terms.truncate(MAX_QUERY_TERMS);
        let mut scores: HashMap<String, f64> = HashMap::new();
        let mut common = Vec::new();
        for term in &query_terms {
            let prefix = keyspace::memory_term_prefix(user, term);
            let postings = self
                .store
                .scan(prefix.as_bytes(), None, MAX_POSTINGS_PER_TERM + 1)?;
            if postings.len() > MAX_POSTINGS_PER_TERM {
                common.push((term, postings));
                continue;
            }
            let idf = idf(postings.len());
            for (key, count) in postings {
                let hash = String::from_utf8_lossy(&key[prefix.len()..]).into_owned();
                *scores.entry(hash).or_insert(0.0) += weight(&count) * idf;
            }
        }
        if !common.is_empty() {
            // Its exact frequency is unknown past the cap, and does not
            // matter: the weight of so common a term is within 1/cap of 1.
            let idf = idf(MAX_POSTINGS_PER_TERM + 1);
            if scores.is_empty() {
                let (term, postings) = common.remove(0);
                let prefix = keyspace::memory_term_prefix(user, term);
                for (key, count) in postings.into_iter().take(MAX_POSTINGS_PER_TERM) {
                    let hash = String::from_utf8_lossy(&key[prefix.len()..]).into_owned();
                    scores.insert(hash, weight(&count) * idf);
                }
            }
            let mut best = ranked(scores);
            best.truncate(limit.max(MAX_RERANKED));
            for (term, _) in &common {
                for (hash, score) in best.iter_mut() {
                    let key = keyspace::memory_term(user, term, hash);
                    if let Some(count) = self.store.get(key.as_bytes())? {
                        *score += weight(&count) * idf;
                    }
                }
            }
            scores = best.into_iter().collect();
        }
        let mut out = Vec::new();
        for (hash, score) in ranked(scores).into_iter().take(limit) {
            if let Some(chunk) = self.get(user, &hash)? {
                out.push((chunk, score));
            }
        }
        Ok(out)
    }

    pub fn settings(&self, user: &str) -> DomainResult<Value> {
        match self.store.get(keyspace::memory_settings(user).as_bytes())? {
            Some(bytes) => decode(&bytes),
            None => Ok(Value::Object(Default::default())),
        }
    }

    pub async fn set_settings(&self, user: &str, settings: &Value) -> DomainResult<()> {
        if !settings.is_object() {
            return Err(DomainError::Invalid(
                "settings must be a JSON object".into(),
            ));
        }
        let mut tx = Transaction::new();
        tx.put(keyspace::memory_settings(user), encode(settings)?);
        commit(&self.store, tx).await
    }

    pub fn granted(&self, user: &str, agent: &str) -> DomainResult<bool> {
        Ok(self
            .store
            .get(keyspace::memory_grant(user, agent).as_bytes())?
            .is_some())
    }

    pub fn grants(&self, user: &str) -> DomainResult<Vec<String>> {
        let prefix = keyspace::memory_grants_prefix(user);
        Ok(self
            .store
            .scan(prefix.as_bytes(), None, usize::MAX)?
            .into_iter()
            .map(|(k, _)| String::from_utf8_lossy(&k[prefix.len()..]).into_owned())
            .collect())
    }

    pub async fn set_grant(&self, user: &str, agent: &str, allowed: bool) -> DomainResult<()> {
        let mut tx = Transaction::durable();
        if allowed {
            tx.put(keyspace::memory_grant(user, agent), Vec::new())
                .put(keyspace::agent_memory_grant(agent, user), Vec::new());
        } else {
            tx.delete(keyspace::memory_grant(user, agent))
                .delete(keyspace::agent_memory_grant(agent, user));
        }
        commit(&self.store, tx).await
    }

    /// Add to `tx` the removal of everything `user` keeps in memory.
    pub fn stage_owner_removal(&self, tx: &mut Transaction, user: &str) -> DomainResult<()> {
        for agent in self.grants(user)? {
            tx.delete(keyspace::agent_memory_grant(&agent, user));
        }
        for prefix in [
            keyspace::memory_prefix(user),
            keyspace::memory_index_prefix(user),
            keyspace::memory_grants_prefix(user),
        ] {
            for (key, _) in self.store.scan(prefix.as_bytes(), None, usize::MAX)? {
                tx.delete(key);
            }
        }
        tx.delete(keyspace::memory_settings(user));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terms_fold_case_and_accents() {
        assert_eq!(
            terms("Café CRÈME, déjà-vu!"),
            ["cafe", "creme", "deja", "vu"]
        );
        assert_eq!(terms("a I x"), Vec::<String>::new());
    }

    #[tokio::test]
    async fn search_ranks_and_stays_within_one_user() {
        let store: Arc<dyn Store> = Arc::new(crate::store::MemoryStore::new());
        let m = Memory::new(store);
        m.save(
            "u1",
            None,
            Some("Teal"),
            "my favourite colour is teal",
            Value::Null,
            1.0,
        )
        .await
        .unwrap();
        m.save(
            "u1",
            None,
            None,
            "the sea was teal and grey",
            Value::Null,
            2.0,
        )
        .await
        .unwrap();
        m.save("u1", None, None, "nothing to see", Value::Null, 3.0)
            .await
            .unwrap();
        m.save(
            "u2",
            None,
            Some("Teal"),
            "u2's teal secret",
            Value::Null,
            4.0,
        )
        .await
        .unwrap();
        let hits = m.search("u1", "TÉAL colour", 10).unwrap();
        assert_eq!(hits.len(), 2);
        assert_eq!(hits[0].0.title, "Teal");
        assert!(hits.iter().all(|(c, _)| !c.content.contains("u2")));
        assert!(m.search("u3", "teal", 10).unwrap().is_empty());
    }

    #[test]
    fn very_common_terms_only_rerank_and_the_work_stays_bounded() {
        let counting = Arc::new(crate::store::CountingStore::new(Arc::new(
            crate::store::MemoryStore::new(),
        )));
        let m = Memory::new(counting.clone());
        let mut tx = Transaction::new();
        let chunk = |i: usize, content: String| Chunk {
            hash: chunk_hash(DEFAULT_COLLECTION, "", &content),
            collection: DEFAULT_COLLECTION.into(),
            title: String::new(),
            content,
            metadata: Value::Null,
            created_at: i as f64,
        };
        let filler = MAX_POSTINGS_PER_TERM + 50;
        for i in 0..filler {
            m.stage_save(&mut tx, "u1", &chunk(i, format!("common filler {i}")))
                .unwrap();
        }
        for i in 0..3 {
            m.stage_save(&mut tx, "u1", &chunk(i, format!("common rare {i}")))
                .unwrap();
        }
        m.stage_save(&mut tx, "u1", &chunk(9, "rare alone".into()))
            .unwrap();
        counting.commit(&tx).unwrap();

        let count = |query: &str, limit: usize| {
            counting.take_count();
            let hits = m.search("u1", query, limit).unwrap();
            (hits, counting.take_count())
        };
        // The common term lifts the chunks that also have it above the one
        // that has only the rare term.
        let (hits, read) = count("common rare", 10);
        let contents: Vec<&str> = hits.iter().map(|(c, _)| c.content.as_str()).collect();
        assert_eq!(contents.len(), 4, "{contents:?}");
        assert!(contents[..3].iter().all(|c| c.starts_with("common rare")));
        assert_eq!(contents[3], "rare alone");
        // The common term's list is read only up to the cap (one past it,
        // to know it is common), never to its end; then a lookup per
        // candidate and the four chunks.
        let (rare, candidates) = (4, 4);
        let tight = MAX_POSTINGS_PER_TERM + 1 + rare + candidates + hits.len();
        assert!(read <= tight, "read {read} entries, more than {tight}");
        // Common terms alone still answer, within a bound of their own.
        let bound = 2 * (MAX_POSTINGS_PER_TERM + 1) + MAX_RERANKED + 10;
        let (hits, read) = count("common filler", 5);
        assert_eq!(hits.len(), 5);
        assert!(hits
            .iter()
            .all(|(c, _)| c.content.starts_with("common filler")));
        assert!(read <= bound, "read {read} entries");
        // Many terms: only the first MAX_QUERY_TERMS count.
        let many: Vec<String> = (0..40).map(|i| format!("word{i}")).collect();
        let (_, read) = count(&format!("common {}", many.join(" ")), 5);
        assert!(
            read <= MAX_QUERY_TERMS * (MAX_POSTINGS_PER_TERM + 1)
                + MAX_RERANKED * MAX_QUERY_TERMS
                + 5
        );
    }
}
