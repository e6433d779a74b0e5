//! Import an existing TinyAgentOS data directory into the per-user model.
//!
//! The source is only read: JSON and YAML files as text, SQLite databases
//! through read-only, immutable connections (no journal, no lock file, no
//! changed modification time). Everything the legacy host kept globally under
//! the fixed id `"user"` goes to one real account: `current_user_id`, else
//! the first admin. Each record is written with its indexes in one
//! transaction guarded by "not there yet", so a second run imports nothing
//! and a run cut short and rerun ends where one clean run would.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rusqlite::{Connection, OpenFlags};
use serde::Serialize;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::authz::keys::DataKeys;
use crate::domain::agents::Agent;
use crate::domain::channels::Channel;
use crate::domain::chat::{Conversation, Message};
use crate::domain::keyspace;
use crate::domain::memory::{Chunk, Memory};
use crate::domain::secrets::{seal, Sealed, Secret};
use crate::domain::sessions::{legacy_digest, LegacySession};
use crate::domain::users::{Invite, User};
use crate::store::{Expect, Store, Transaction};

/// The fixed id the single-user host used for its one person.
const LEGACY_USER: &str = "user";
const DEFAULT_MACHINE_KEY: &str = "tinyagentos-default";

pub struct Options {
    pub from: PathBuf,
    /// The file holding the legacy host's machine id (its secrets key).
    pub machine_id: Option<PathBuf>,
    pub dry_run: bool,
    pub skip_undecryptable: bool,
    pub invite_ttl_secs: i64,
}

#[derive(Debug, Default, Clone, Serialize, PartialEq)]
pub struct Counts {
    pub imported: usize,
    pub already_present: usize,
    pub skipped: usize,
}

#[derive(Debug, Default, Clone, Serialize, PartialEq)]
pub struct Report {
    pub dry_run: bool,
    pub mapped_account: Option<Value>,
    pub kinds: BTreeMap<&'static str, Counts>,
    pub warnings: Vec<String>,
}

impl Report {
    pub fn text(&self) -> String {
        let mut out = String::new();
        if self.dry_run {
            out.push_str("dry run: nothing was written\n");
        }
        if let Some(a) = &self.mapped_account {
            out.push_str(&format!(
                "legacy \"user\" maps to {} ({})\n",
                a["username"], a["id"]
            ));
        }
        for (kind, c) in &self.kinds {
            out.push_str(&format!(
                "{kind:<16} imported {:>5}  already present {:>5}  skipped {:>5}\n",
                c.imported, c.already_present, c.skipped
            ));
        }
        for w in &self.warnings {
            out.push_str(&format!("warning: {w}\n"));
        }
        if self.kinds.values().all(|c| c.imported == 0) && !self.dry_run {
            out.push_str("nothing new to import\n");
        }
        out
    }
}

struct Importer<'a> {
    store: &'a Arc<dyn Store>,
    dry_run: bool,
    report: Report,
}

impl Importer<'_> {
    fn count(&mut self, kind: &'static str) -> &mut Counts {
        self.report.kinds.entry(kind).or_default()
    }

    /// Write `tx` (all of one record) unless its `key` is already there.
    fn write(&mut self, kind: &'static str, key: &str, mut tx: Transaction) -> Result<(), String> {
        if self
            .store
            .get(key.as_bytes())
            .map_err(|e| e.to_string())?
            .is_some()
        {
            self.count(kind).already_present += 1;
            return Ok(());
        }
        if !self.dry_run {
            tx.expect(key, Expect::Absent);
            tx.durable = true;
            match self.store.commit(&tx) {
                Ok(()) => {}
                Err(crate::store::StoreError::Conflict) => {
                    self.count(kind).already_present += 1;
                    return Ok(());
                }
                Err(e) => return Err(e.to_string()),
            }
        }
        self.count(kind).imported += 1;
        Ok(())
    }

    fn skip(&mut self, kind: &'static str, why: String) {
        self.count(kind).skipped += 1;
        self.report.warnings.push(why);
    }
}

fn enc<T: Serialize>(v: &T) -> Result<Vec<u8>, String> {
    serde_json::to_vec(v).map_err(|e| e.to_string())
}

/// Every row of a read-only query, mapped by `row`.
fn query<T>(db: &Connection, sql: &str) -> Result<Vec<T>, String>
where
    T: for<'r> TryFrom<&'r rusqlite::Row<'r>, Error = rusqlite::Error>,
{
    let mut statement = db.prepare(sql).map_err(|e| format!("{sql}: {e}"))?;
    let rows = statement
        .query_map([], |row| T::try_from(row))
        .map_err(|e| format!("{sql}: {e}"))?;
    rows.collect::<Result<_, _>>()
        .map_err(|e| format!("{sql}: {e}"))
}

/// Open a legacy SQLite database strictly read-only, if it exists.
fn open_db(dir: &Path, name: &str) -> Result<Option<Connection>, String> {
    let path = dir.join(name);
    if !path.exists() {
        return Ok(None);
    }
    let uri = format!("file:{}?mode=ro&immutable=1", path.display());
    Connection::open_with_flags(
        uri,
        OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map(Some)
    .map_err(|e| format!("{}: {e}", path.display()))
}

fn yaml_to_json(y: &yaml_rust2::Yaml) -> Value {
    use yaml_rust2::Yaml;
    match y {
        Yaml::Real(s) => s.parse::<f64>().map(|f| json!(f)).unwrap_or(json!(s)),
        Yaml::Integer(i) => json!(i),
        Yaml::String(s) => json!(s),
        Yaml::Boolean(b) => json!(b),
        Yaml::Array(a) => Value::Array(a.iter().map(yaml_to_json).collect()),
        Yaml::Hash(h) => Value::Object(
            h.iter()
                .map(|(k, v)| {
                    let key = match k {
                        Yaml::String(s) => s.clone(),
                        other => yaml_to_json(other).to_string(),
                    };
                    (key, yaml_to_json(v))
                })
                .collect(),
        ),
        _ => Value::Null,
    }
}

fn map_user(id: &str, account: &str) -> String {
    if id == LEGACY_USER {
        account.to_owned()
    } else {
        id.to_owned()
    }
}

/// Legacy secrets: the value XOR-ed with SHA-256 of the machine id, base64.
fn legacy_decrypt(value: &str, key: &[u8; 32]) -> Option<String> {
    let bytes = STANDARD.decode(value.trim()).ok()?;
    let plain: Vec<u8> = bytes
        .iter()
        .enumerate()
        .map(|(i, b)| b ^ key[i % 32])
        .collect();
    String::from_utf8(plain).ok()
}

/// id, name, type, description, members, settings, created_by, created_at
type ChatChannelRow = (String, String, String, String, String, String, String, f64);
/// id, channel, author, author type, content, content type, created, edited,
/// deleted, metadata
type MessageRow = (
    String,
    String,
    String,
    String,
    String,
    String,
    f64,
    Option<f64>,
    Option<f64>,
    String,
);

pub fn import(
    options: &Options,
    store: &Arc<dyn Store>,
    keys: &DataKeys,
) -> Result<Report, String> {
    let dir = &options.from;
    if !dir.is_dir() {
        return Err(format!("{} is not a directory", dir.display()));
    }
    let mut imp = Importer {
        store,
        dry_run: options.dry_run,
        report: Report {
            dry_run: options.dry_run,
            ..Report::default()
        },
    };
    let now = crate::domain::now();

    // Users.
    let mut users: Vec<User> = Vec::new();
    let mut current: Option<String> = None;
    let auth_users = dir.join(".auth_user.json");
    if auth_users.exists() {
        let text = std::fs::read_to_string(&auth_users)
            .map_err(|e| format!("{}: {e}", auth_users.display()))?;
        let doc: Value =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", auth_users.display()))?;
        current = doc["current_user_id"].as_str().map(str::to_owned);
        for u in doc["users"].as_array().cloned().unwrap_or_default() {
            let s = |k: &str| u[k].as_str().unwrap_or("").to_owned();
            // A grant names a user by id, a group as `group:<name>` and
            // everyone as `everyone`: an id read either way would be given
            // what was shared with others.
            let id = s("id");
            if id == crate::domain::groups::EVERYONE || id.contains(':') {
                imp.skip(
                    "users",
                    format!("user id {id:?} is reserved for sharing with groups or everyone"),
                );
                continue;
            }
            let invite = u["pending_invite"].as_str().map(|code| {
                let invited_at = u["invited_at"].as_i64().unwrap_or(now);
                Ok::<_, String>(Invite {
                    // The legacy host kept the code itself; tessera keeps its digest.
                    digest: crate::domain::password::hash_now(code.trim())
                        .map_err(|e| e.to_string())?,
                    // Pending codes keep working: a full validity from the
                    // invitation, or from now if that has already run out.
                    expires_at: if invited_at + options.invite_ttl_secs > now {
                        invited_at + options.invite_ttl_secs
                    } else {
                        now + options.invite_ttl_secs
                    },
                    invited_by: s("invited_by"),
                    invited_at,
                })
            });
            let invite = invite.transpose()?;
            let hash = u["password_hash"].as_str().map(str::to_owned);
            users.push(User {
                id: s("id"),
                username: s("username").to_ascii_lowercase(),
                full_name: s("full_name"),
                email: s("email"),
                is_admin: u["is_admin"].as_bool().unwrap_or(false),
                password_hash: if invite.is_some() { None } else { hash },
                invite,
                created_at: u["created_at"].as_i64(),
                last_login_at: u["last_login_at"].as_i64(),
            });
        }
    } else if dir.join(".auth_password").exists() {
        let hash =
            std::fs::read_to_string(dir.join(".auth_password")).map_err(|e| e.to_string())?;
        users.push(User {
            id: crate::domain::random_id(8),
            username: "admin".into(),
            full_name: String::new(),
            email: String::new(),
            is_admin: true,
            password_hash: Some(hash.trim().to_owned()),
            invite: None,
            created_at: Some(now),
            last_login_at: None,
        });
    }
    for user in &users {
        // An account imported before keeps its id; the same username under
        // another id is someone else and is not overwritten.
        if let Some(existing) = store
            .get(keyspace::username(&user.username).as_bytes())
            .map_err(|e| e.to_string())?
        {
            if existing != user.id.as_bytes() {
                if user.username == "admin" && !auth_users.exists() {
                    imp.count("users").already_present += 1;
                    continue;
                }
                imp.skip(
                    "users",
                    format!("username {} is taken by another account", user.username),
                );
                continue;
            }
        }
        let mut tx = Transaction::new();
        tx.expect(keyspace::username(&user.username), Expect::Absent)
            .put(keyspace::user(&user.id), enc(user)?)
            .put(
                keyspace::username(&user.username),
                user.id.as_bytes().to_vec(),
            );
        if user.is_admin {
            tx.put(keyspace::admin(&user.id), Vec::new());
        }
        if !user.pending() {
            tx.put(keyspace::active(&user.id), Vec::new());
        }
        imp.write("users", &keyspace::user(&user.id), tx)?;
    }
    // The account the fixed "user" id becomes: current user, else first admin;
    // on a rerun of a single-password import, the admin already there.
    let account = current
        .filter(|id| users.iter().any(|u| &u.id == id))
        .or_else(|| users.iter().find(|u| u.is_admin).map(|u| u.id.clone()));
    let account = match (account, users.first()) {
        (Some(a), _)
            if store
                .get(keyspace::user(&a).as_bytes())
                .map_err(|e| e.to_string())?
                .is_some()
                || options.dry_run =>
        {
            a
        }
        (_, Some(u)) if u.username == "admin" => {
            match store
                .get(keyspace::username("admin").as_bytes())
                .map_err(|e| e.to_string())?
            {
                Some(id) => String::from_utf8_lossy(&id).into_owned(),
                None => u.id.clone(),
            }
        }
        (Some(a), _) => a,
        _ => {
            return Err(
                "the legacy directory has no users (.auth_user.json or .auth_password)".into(),
            )
        }
    };
    let username = users
        .iter()
        .find(|u| u.id == account)
        .map(|u| u.username.clone())
        .unwrap_or_else(|| "admin".into());
    imp.report.mapped_account = Some(json!({ "id": account, "username": username }));

    // Agents, live and archived.
    let config = dir.join("config.yaml");
    if config.exists() {
        let text =
            std::fs::read_to_string(&config).map_err(|e| format!("{}: {e}", config.display()))?;
        let docs = yaml_rust2::YamlLoader::load_from_str(&text)
            .map_err(|e| format!("{}: {e}", config.display()))?;
        let doc = docs.first().map(yaml_to_json).unwrap_or(Value::Null);
        let live = doc["agents"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|a| (a, false));
        let archived = doc["archived_agents"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|a| {
                let mut fields = a["original"].clone();
                if let (Some(f), Some(at)) = (fields.as_object_mut(), a["archived_at"].as_str()) {
                    f.insert("legacy_archived_at".into(), json!(at));
                }
                (fields, true)
            });
        for (fields, archived) in live.chain(archived) {
            let Some(mut fields) = fields.as_object().cloned() else {
                continue;
            };
            let Some(name) = fields
                .remove("name")
                .and_then(|n| n.as_str().map(str::to_owned))
            else {
                imp.skip("agents", "an agent without a name".into());
                continue;
            };
            if crate::domain::agents::check_agent_name(&name).is_err() {
                imp.skip("agents", format!("agent name {name:?} is not a valid slug"));
                continue;
            }
            for reserved in crate::domain::agents::RESERVED_FIELDS {
                if let Some(v) = fields.remove(*reserved) {
                    fields.insert(format!("legacy_{reserved}"), v);
                }
            }
            let memory = fields.get("can_read_user_memory").and_then(Value::as_bool) == Some(true);
            let agent = Agent {
                name: name.clone(),
                owner: account.clone(),
                created_at: now,
                archived,
                archived_at: archived.then_some(now),
                fields,
            };
            let mut tx = Transaction::new();
            tx.put(keyspace::agent(&name), enc(&agent)?)
                .put(keyspace::owned(&account, &name), Vec::new());
            if memory {
                tx.put(keyspace::memory_grant(&account, &name), Vec::new())
                    .put(keyspace::agent_memory_grant(&name, &account), Vec::new());
            }
            imp.write("agents", &keyspace::agent(&name), tx)?;
        }
    }

    // Secrets, re-sealed under tessera's data key.
    if let Some(db) = open_db(dir, "secrets.db")? {
        let machine = match &options.machine_id {
            Some(path) => {
                std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?
            }
            // A copy beside the data, else this host's (the import usually
            // runs where the legacy host ran), else the legacy fallback.
            None => std::fs::read_to_string(dir.join("machine-id"))
                .or_else(|_| std::fs::read_to_string("/etc/machine-id"))
                .unwrap_or_else(|_| DEFAULT_MACHINE_KEY.into()),
        };
        let xor_key: [u8; 32] = Sha256::digest(machine.trim().as_bytes()).into();
        let mut bindings: BTreeMap<i64, Vec<String>> = BTreeMap::new();
        let access: Vec<(i64, String)> =
            query(&db, "SELECT secret_id, agent_name FROM secret_access")?;
        for (id, agent) in access {
            bindings.entry(id).or_default().push(agent);
        }
        let rows: Vec<(i64, String, String, String, String, i64, i64)> = query(&db, "SELECT id, name, category, value, COALESCE(description, ''), created_at, updated_at FROM secrets ORDER BY id")?;
        let mut max_id = 0;
        for (id, name, category, value, description, created_at, updated_at) in rows {
            max_id = max_id.max(id);
            let Some(plain) = legacy_decrypt(&value, &xor_key) else {
                let why = format!("secret {name:?} does not decrypt to text with this machine id (--machine-id names the right file)");
                if options.skip_undecryptable {
                    imp.skip("secrets", why);
                    continue;
                }
                return Err(why);
            };
            let sealed: Sealed =
                seal(keys, keys.active().0, &account, &name, &plain).map_err(|e| e.to_string())?;
            let agents = bindings.remove(&id).unwrap_or_default();
            let secret = Secret {
                id: id as u64,
                owner: account.clone(),
                name: name.clone(),
                category,
                description,
                created_at,
                updated_at,
                agents: agents.clone(),
                sealed,
            };
            let mut tx = Transaction::new();
            tx.put(keyspace::secret(&account, &name), enc(&secret)?);
            for agent in &agents {
                tx.put(keyspace::secret_binding(agent, &account, &name), Vec::new());
            }
            imp.write("secrets", &keyspace::secret(&account, &name), tx)?;
        }
        if !options.dry_run && max_id > 0 {
            let seq = keyspace::secret_seq(&account);
            let current = store
                .get(seq.as_bytes())
                .map_err(|e| e.to_string())?
                .and_then(|b| String::from_utf8(b).ok())
                .and_then(|s| s.parse::<i64>().ok())
                .unwrap_or(0);
            if current < max_id {
                let mut tx = Transaction::new();
                tx.put(seq, max_id.to_string());
                store.commit(&tx).map_err(|e| e.to_string())?;
            }
        }
    }

    // Chat conversations, messages and read positions.
    if let Some(db) = open_db(dir, "chat.db")? {
        let rows: Vec<ChatChannelRow> = query(&db, "SELECT id, name, type, description, members, settings, created_by, created_at FROM chat_channels")?;
        let mut owners = BTreeMap::new();
        for (id, name, kind, description, members, settings, created_by, created_at) in rows {
            if created_by != LEGACY_USER && !users.iter().any(|u| u.id == created_by) {
                imp.skip(
                    "chat_channels",
                    format!("conversation {id} was made by {created_by:?}, not a person; left out"),
                );
                continue;
            }
            let owner = map_user(&created_by, &account);
            let members: Vec<String> = serde_json::from_str::<Vec<String>>(&members)
                .unwrap_or_default()
                .iter()
                .map(|m| map_user(m, &account))
                .collect();
            let conv = Conversation {
                id: id.clone(),
                name,
                kind,
                description,
                members,
                created_by: owner.clone(),
                created_at,
                last_message_at: None,
                settings: serde_json::from_str(&settings).unwrap_or(Value::Null),
            };
            let mut tx = Transaction::new();
            tx.put(keyspace::chat(&owner, &id), enc(&conv)?)
                .put(keyspace::chat_owner(&id), owner.as_bytes().to_vec());
            for agent in conv.agents() {
                tx.put(keyspace::agent_conversation(agent, &owner, &id), Vec::new());
            }
            imp.write("chat_channels", &keyspace::chat_owner(&id), tx)?;
            owners.insert(id, owner);
        }
        let rows: Vec<MessageRow> = query(&db, "SELECT id, channel_id, author_id, author_type, content, content_type, created_at, edited_at, deleted_at, metadata FROM chat_messages ORDER BY created_at")?;
        for (
            id,
            channel,
            author,
            author_type,
            content,
            content_type,
            created_at,
            edited_at,
            deleted_at,
            metadata,
        ) in rows
        {
            let Some(owner) = owners.get(&channel).cloned() else {
                imp.skip(
                    "messages",
                    format!("message {id} is in a conversation that was not imported"),
                );
                continue;
            };
            let message = Message {
                id: id.clone(),
                channel_id: channel.clone(),
                author_id: map_user(&author, &account),
                author_type,
                content,
                content_type,
                created_at,
                edited_at,
                deleted_at,
                metadata: serde_json::from_str(&metadata).unwrap_or(Value::Null),
            };
            let mut tx = Transaction::new();
            tx.put(keyspace::message(&owner, &channel, &id), enc(&message)?)
                .put(keyspace::message_index(&id), format!("{owner}/{channel}"))
                .put(
                    keyspace::chat_last(&owner, &channel),
                    created_at.to_string(),
                );
            imp.write("messages", &keyspace::message_index(&id), tx)?;
        }
        let rows: Vec<(String, String, String)> = query(
            &db,
            "SELECT user_id, channel_id, last_read_message_id FROM chat_read_positions",
        )?;
        for (user, channel, last) in rows {
            let reader = map_user(&user, &account);
            let mut tx = Transaction::new();
            tx.put(
                keyspace::read_position(&reader, &channel),
                last.into_bytes(),
            );
            imp.write(
                "read_positions",
                &keyspace::read_position(&reader, &channel),
                tx,
            )?;
        }
    }

    // Bridge channels, each with its conversation.
    if let Some(db) = open_db(dir, "channels.db")? {
        let rows: Vec<(i64, String, String, String, i64, f64)> = query(
            &db,
            "SELECT id, agent_name, type, config, enabled, created_at FROM channels",
        )?;
        for (id, agent, kind, config, enabled, created_at) in rows {
            let id = id.to_string();
            let channel = Channel {
                id: id.clone(),
                owner: account.clone(),
                agent_name: agent.clone(),
                kind: kind.clone(),
                config: serde_json::from_str(&config).unwrap_or(Value::Object(Map::new())),
                enabled: enabled != 0,
                created_at,
                conversation: format!("chan-{id}"),
            };
            let conv = Conversation {
                id: channel.conversation.clone(),
                name: format!("{kind} channel"),
                kind: "channel".into(),
                description: String::new(),
                members: vec![account.clone(), agent.clone()],
                created_by: account.clone(),
                created_at,
                last_message_at: None,
                settings: Value::Object(Map::new()),
            };
            let mut tx = Transaction::new();
            tx.put(keyspace::channel(&account, &id), enc(&channel)?)
                .put(keyspace::channel_owner(&id), account.as_bytes().to_vec())
                .put(keyspace::chat(&account, &conv.id), enc(&conv)?)
                .put(keyspace::chat_owner(&conv.id), account.as_bytes().to_vec())
                .put(
                    keyspace::agent_conversation(&agent, &account, &conv.id),
                    Vec::new(),
                );
            imp.write("channels", &keyspace::channel_owner(&id), tx)?;
        }
    }

    // Memory chunks (with their index entries) and settings.
    if let Some(db) = open_db(dir, "user_memory.db")? {
        let memory = Memory::new(store.clone());
        let rows: Vec<(String, String, String, String, String, String, f64)> = query(&db, "SELECT hash, user_id, collection, COALESCE(title, ''), content, COALESCE(metadata, '{}'), created_at FROM user_memory_chunks")?;
        for (hash, user, collection, title, content, metadata, created_at) in rows {
            let owner = map_user(&user, &account);
            let chunk = Chunk {
                hash: hash.clone(),
                collection,
                title,
                content,
                metadata: serde_json::from_str(&metadata).unwrap_or(Value::Null),
                created_at,
            };
            let mut tx = Transaction::new();
            memory
                .stage_save(&mut tx, &owner, &chunk)
                .map_err(|e| e.to_string())?;
            imp.write("memory_chunks", &keyspace::memory_chunk(&owner, &hash), tx)?;
        }
        let rows: Vec<(String, String)> =
            query(&db, "SELECT user_id, settings FROM user_memory_settings")?;
        for (user, settings) in rows {
            let owner = map_user(&user, &account);
            let mut tx = Transaction::new();
            tx.put(keyspace::memory_settings(&owner), settings.into_bytes());
            imp.write("memory_settings", &keyspace::memory_settings(&owner), tx)?;
        }
    }

    // Live browser sessions: kept as digests, exchanged once for a real one.
    let sessions = dir.join(".auth_sessions");
    if sessions.exists() {
        let text = std::fs::read_to_string(&sessions).map_err(|e| e.to_string())?;
        let doc: Map<String, Value> =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", sessions.display()))?;
        for (value, entry) in doc {
            let (user, expires, long_lived) = match &entry {
                Value::Number(n) => (String::new(), n.as_f64().unwrap_or(0.0), false),
                Value::Object(o) => (
                    o.get("user_id")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_owned(),
                    o.get("expires_at").and_then(Value::as_f64).unwrap_or(0.0),
                    o.get("long_lived")
                        .and_then(Value::as_bool)
                        .unwrap_or(false),
                ),
                _ => continue,
            };
            if (expires as i64) <= now {
                imp.count("sessions").skipped += 1;
                continue;
            }
            let user_id = if user.is_empty() {
                account.clone()
            } else {
                map_user(&user, &account)
            };
            let record = LegacySession {
                user_id,
                expires_at: expires as i64,
                long_lived,
            };
            let key = keyspace::legacy_session(&legacy_digest(&value));
            let mut tx = Transaction::new();
            tx.put(key.clone(), enc(&record)?);
            imp.write("sessions", &key, tx)?;
        }
    }

    if dir.join(".auth_local_token").exists() {
        imp.report.warnings.push(
            "the host-wide .auth_local_token is not imported: it would be a master key. Give each agent its own \
             runtime token instead (POST /api/agents/{name}/runtime-token)"
                .into(),
        );
    }
    Ok(imp.report)
}
