//! Everything a request handler needs, built once at start-up.

use std::collections::HashMap;
use std::ops::Deref;
use std::sync::{Arc, Mutex, OnceLock};

use crate::authz::cache::Verified;
use crate::authz::keys::{DataKeys, KeyError, RootKeys};
use crate::authz::policy::{FactSet, Policy, PolicyError, RequestFacts};
use crate::authz::tokens::Claims;
use crate::authz::{AuthError, Authz};
use crate::config::Config;
use crate::datadir;
use crate::domain::agents::{Agent, Agents, Grant};
use crate::domain::channels::{current_runtime, Channels};
use crate::domain::chat::Chat;
use crate::domain::delegations::{Delegation, Delegations};
use crate::domain::memory::Memory;
use crate::domain::password::Passwords;
use crate::domain::secrets::Secrets;
use crate::domain::users::{AccountSettings, Accounts, User};
use crate::domain::{now, sessions, DomainError};
use crate::forward::table::RouteTable;
use crate::http::ratelimit::RateLimiter;
use crate::store::{CachedStore, SledStore, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Keys(#[from] KeyError),
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error(transparent)]
    Domain(#[from] DomainError),
    #[error("{0}")]
    Schema(String),
    #[error(transparent)]
    DataDir(#[from] datadir::DataDirError),
    #[error(transparent)]
    Routes(#[from] crate::forward::table::TableError),
}

/// Why a step-up operation was refused, when a recent second factor is
/// what it lacks.
pub const STEP_UP_NEEDED: &str = "this needs a second factor verified at this session within the last 15 minutes: send a code to POST /auth/second-factor (in the console: Account, Second factors)";

/// Cheap to clone: one `Arc`.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub config: Config,
    pub store: Arc<dyn Store>,
    pub authz: Authz,
    pub data_keys: DataKeys,
    pub accounts: Accounts,
    pub agents: Agents,
    pub delegations: Delegations,
    pub secrets: Secrets,
    pub memory: Memory,
    pub chat: Chat,
    pub channels: Channels,
    pub factors: crate::domain::factors::Factors,
    pub limiter: RateLimiter,
    pub metrics: crate::http::metrics::Metrics,
    /// Forward auth: the host's route table and the assertion cache.
    pub forward: crate::forward::Forward,
}

impl Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

/// A request's proven identity: a verified token backed by a live session
/// or delegation record of an existing user.
#[derive(Clone)]
pub struct Caller {
    /// The account as read for this request (shared, not copied).
    pub user: Arc<User>,
    pub via: Via,
    pub token: Arc<Verified>,
    /// The login session record, read for this request (`None` for a
    /// delegated or bot token): how far signing in got, how, and when a
    /// second factor was last verified.
    pub session: Option<Arc<sessions::Session>>,
}

/// What keeps the caller's token alive.
#[derive(Clone, Debug, PartialEq)]
pub enum Via {
    Session(String),
    /// A delegated token: its record (agent, level, expiry).
    Delegation(Arc<Delegation>),
    /// A channel bot: the channel (enabled, owned by the caller).
    ChannelBot(String),
}

/// An agent's runtime, calling back for its secrets, granted memory and
/// conversations.
#[derive(Clone)]
pub struct AgentCaller {
    pub agent: String,
    pub token: Arc<Verified>,
}

/// Whoever a token speaks for.
#[derive(Clone)]
#[allow(clippy::large_enum_variant)] // built once per request, never stored
pub enum AnyCaller {
    Person(Caller),
    Agent(AgentCaller),
}

impl AnyCaller {
    /// The person, for what serves people (and their delegated or bot
    /// tokens) only.
    pub fn person(self) -> Result<Caller, AuthError> {
        match self {
            AnyCaller::Person(caller) => Ok(caller),
            AnyCaller::Agent(_) => Err(AuthError::Denied(
                "an agent runtime token cannot be used here".into(),
            )),
        }
    }
}

impl Caller {
    /// The login session, when the caller is a person at their session
    /// rather than a delegated token.
    pub fn session_id(&self) -> Option<&str> {
        match &self.via {
            Via::Session(id) => Some(id),
            Via::Delegation(_) | Via::ChannelBot(_) => None,
        }
    }
}

impl AppState {
    /// Open the data directory: the sled store (which locks the directory
    /// against a second server), then the key files, then the policy.
    pub fn open(config: Config) -> Result<Self, StartError> {
        let (store, root, data) = Self::open_data_dir(&config)?;
        Self::build(config, store, root, data)
    }

    /// The store and keys of the data directory, proven to belong together
    /// and private (see `datadir`), with the schema brought up to date.
    pub fn open_data_dir(
        config: &Config,
    ) -> Result<(Arc<dyn Store>, RootKeys, DataKeys), StartError> {
        let data_dir = &config.data_dir;
        datadir::create_private(data_dir)?;
        // Listed before the store opens: what the engine creates now is not
        // the operator's doing.
        let exposed = datadir::exposed_dirs(data_dir)?;
        let store: Arc<dyn Store> = Arc::new(SledStore::open(&config.store_dir())?);
        datadir::check_private(data_dir, &exposed, store.as_ref())?;
        let had_data = crate::migrate::schema::version(store.as_ref())
            .map_err(|e| StartError::Schema(e.to_string()))?
            .is_some();
        let (root, data) =
            datadir::keys_for(data_dir, &config.keys_dir(), store.as_ref(), had_data)?;
        Self::upgrade_schema(config, store.as_ref())?;
        datadir::claim(data_dir, store.as_ref(), &root, &data)?;
        Ok((store, root, data))
    }

    /// Bring an older store to the current schema, after a backup of it in
    /// `<data>/backups/`; refuse a store newer than this binary.
    pub fn upgrade_schema(
        config: &Config,
        store: &dyn Store,
    ) -> Result<Vec<&'static str>, StartError> {
        let backups = config.data_dir.join("backups");
        let applied = crate::migrate::schema::upgrade(store, |from| {
            std::fs::create_dir_all(&backups).map_err(|e| format!("{}: {e}", backups.display()))?;
            let snapshot = crate::migrate::backup::snapshot(store, &config.keys_dir())?;
            let file = backups.join(format!("pre-schema-v{from}-{}.tbk", now()));
            crate::migrate::backup::write_file(&file, &crate::migrate::backup::encode(&snapshot))?;
            tracing::info!(backup = %file.display(), from, "store backed up before a schema upgrade");
            Ok(())
        })
        .map_err(StartError::Schema)?;
        for step in &applied {
            tracing::info!(step, "schema step applied");
        }
        Ok(applied)
    }

    /// Assemble a state from parts: tests use an in-memory store and
    /// ephemeral keys.
    pub fn build(
        config: Config,
        store: Arc<dyn Store>,
        root: RootKeys,
        data_keys: DataKeys,
    ) -> Result<Self, StartError> {
        let policy = match &config.policy_dir {
            Some(dir) => Policy::from_dir(dir, config.authorizer_limits.clone())?,
            None => Policy::embedded(config.authorizer_limits.clone())?,
        };
        // The table's agent rules are the policy's agent operations, so the
        // two are checked against each other before anything is served.
        let agent_ops = policy.agent_ops().to_vec();
        let table = match &config.routes {
            Some(file) => RouteTable::load(file, &agent_ops)?,
            None => RouteTable::embedded(&agent_ops)?,
        };
        let forward =
            crate::forward::Forward::new(table, config.assertion_ttl, config.token_cache_capacity);
        let authz = Authz::new(root, policy, config.token_cache_capacity);
        // Every read and write of the server goes through one cache, so each
        // commit drops the cached values it outdates.
        let store: Arc<dyn Store> = match store.cache() {
            Some(_) => store,
            None => Arc::new(CachedStore::new(store, config.read_cache_capacity)),
        };
        let passwords = Passwords::new(config.password_hash_concurrency)?;
        let accounts = Accounts::new(
            store.clone(),
            passwords,
            AccountSettings {
                session_ttl: config.session_ttl,
                long_session_ttl: config.long_session_ttl,
                invite_ttl: config.invite_ttl,
                second_factor_required: config.second_factor_required,
            },
        );
        let limiter = RateLimiter::new(config.rate_limit.clone());
        let second_factor_required = config.second_factor_required;
        Ok(Self(Arc::new(Inner {
            config,
            agents: Agents::new(store.clone()),
            delegations: Delegations::new(store.clone()),
            secrets: Secrets::new(store.clone()),
            memory: Memory::new(store.clone()),
            chat: Chat::new(store.clone()),
            channels: Channels::new(store.clone()),
            factors: crate::domain::factors::Factors::new(store.clone(), second_factor_required),
            store,
            authz,
            data_keys,
            accounts,
            limiter,
            metrics: Default::default(),
            forward,
        })))
    }

    /// Verify a token and check it still speaks for someone: the signature
    /// (or the cache), the expiry, then the record that keeps it alive (session,
    /// delegation, channel, runtime) and the user, all read from the store on
    /// every request so revocation is immediate.
    pub fn authenticate_any(&self, token: &str) -> Result<AnyCaller, AuthError> {
        let at = now();
        let verified = self.authz.verify(token, at)?;
        let store_err = |e: DomainError| AuthError::Internal(e.to_string());
        let mut record = None;
        let via = match &verified.claims {
            Claims::Session { user, session, .. } => {
                record = Some(
                    sessions::live(self.store.as_ref(), session, user, at)
                        .map_err(store_err)?
                        .ok_or(AuthError::Revoked)?,
                );
                Via::Session(session.clone())
            }
            Claims::Delegated {
                user, delegation, ..
            } => {
                let record = self
                    .delegations
                    .live(delegation, user, at)
                    .map_err(store_err)?
                    .ok_or(AuthError::Revoked)?;
                Via::Delegation(record)
            }
            Claims::ChannelBot { user, channel, .. } => {
                let live = self
                    .channels
                    .get(user, channel)
                    .map_err(store_err)?
                    .is_some_and(|c| c.enabled);
                if !live {
                    return Err(AuthError::Revoked);
                }
                Via::ChannelBot(channel.clone())
            }
            // A statement for upstreams about one request: accepting it
            // here would turn a leaked header into a session.
            Claims::Assertion { .. } => {
                return Err(AuthError::Invalid(
                    "a forward-auth assertion is not a credential",
                ))
            }
            Claims::Runtime { agent, runtime, .. } => {
                let current = current_runtime(self.store.as_ref(), agent).map_err(store_err)?;
                let Some(current) = current.filter(|r| &r.id == runtime) else {
                    return Err(AuthError::Revoked);
                };
                // The token is its minter's, and only while they still own
                // the agent, it is active, and their account exists (the
                // records are dropped on each of these changes; this holds
                // even if one was missed).
                let loaded = self.agent(agent).map_err(store_err)?;
                let live = loaded.is_some_and(|a| {
                    !a.agent.archived && a.agent.owner == current.owner && a.owner_name.is_some()
                });
                if !live {
                    return Err(AuthError::Revoked);
                }
                return Ok(AnyCaller::Agent(AgentCaller {
                    agent: agent.clone(),
                    token: verified.clone(),
                }));
            }
        };
        let user_id = verified.claims.user().ok_or(AuthError::Revoked)?;
        let user = self
            .accounts
            .get(user_id)
            .map_err(store_err)?
            .ok_or(AuthError::Revoked)?;
        Ok(AnyCaller::Person(Caller {
            user,
            via,
            token: verified,
            session: record,
        }))
    }

    /// Like [`Self::authenticate_any`], for routes that serve people (and
    /// their delegated or bot tokens) only.
    pub fn authenticate(&self, token: &str) -> Result<Caller, AuthError> {
        self.authenticate_any(token)?.person()
    }

    /// Decide `request` for an agent runtime: only what its token's authority
    /// block says about it counts.
    pub fn authorize_agent(
        &self,
        caller: &AgentCaller,
        request: RequestFacts,
    ) -> Result<(), AuthError> {
        self.authz.authorize(&caller.token, &request)
    }

    /// Decide `request` for `caller`, adding what the store says about them:
    /// whether they finished sign-up and whether they are an admin. Read per
    /// request, so a demotion or reset takes effect at once.
    pub fn authorize(&self, caller: &Caller, request: RequestFacts) -> Result<(), AuthError> {
        match self.decide(caller, request.clone(), false) {
            // Refused where a factor verified just now would be allowed: the
            // step-up is what is missing, and the person is told so.
            Err(AuthError::Denied(reason)) => match self.decide(caller, request, true) {
                Ok(()) => Err(AuthError::Denied(STEP_UP_NEEDED.into())),
                Err(_) => Err(AuthError::Denied(reason)),
            },
            decided => decided,
        }
    }

    /// Whether a page should offer `request`: as [`Self::authorize`], but as
    /// if a second factor had just been verified, so controls behind a
    /// step-up stay in view (using one asks for the code, in words).
    pub fn offers(&self, caller: &Caller, request: RequestFacts) -> bool {
        self.decide(caller, request, true).is_ok()
    }

    fn decide(
        &self,
        caller: &Caller,
        mut request: RequestFacts,
        assume_recent_factor: bool,
    ) -> Result<(), AuthError> {
        let id = biscuit_auth::builder::string(&caller.user.id);
        if !caller.user.pending() {
            request = request.fact("active", [id.clone()]);
        }
        if caller.user.is_admin {
            request = request.fact("admin", [id.clone()]);
        }
        if let Some(session) = &caller.session {
            request = self.session_facts(caller, session, id, request, assume_recent_factor)?;
        }
        self.authz.authorize(&caller.token, &request)
    }

    /// What a login session adds (second factors, issue 14): its stage and
    /// how it was established, from the session record (the server's own
    /// facts, which no token block can forge); and for the operations the
    /// policy names as step-up ones, whether the person has a second factor
    /// and how many seconds ago this session last verified one.
    fn session_facts(
        &self,
        caller: &Caller,
        session: &sessions::Session,
        id: biscuit_auth::builder::Term,
        mut request: RequestFacts,
        assume_recent_factor: bool,
    ) -> Result<RequestFacts, AuthError> {
        use crate::domain::sessions::Stage;
        use biscuit_auth::builder::{int, string};
        request = request.fact("established", [string(session.method.as_str())]);
        match session.stage {
            Stage::Complete => {}
            Stage::SecondFactor => request = request.fact("second_factor_pending", [id.clone()]),
            Stage::Enrol => request = request.fact("must_enrol", [id.clone()]),
        }
        if self.authz.is_step_up(request.operation()) && session.stage == Stage::Complete {
            let factors = self
                .factors
                .of(&caller.user.id)
                .map_err(|e| AuthError::Internal(e.to_string()))?;
            if factors.any() {
                // Never verified in this session: older than any window.
                let age = match session.factor_at {
                    _ if assume_recent_factor => 0,
                    Some(at) => now() - at,
                    None => i64::MAX,
                };
                request = request
                    .fact("has_second_factor", [id])
                    .fact("second_factor_age", [int(age)]);
            }
        }
        Ok(request)
    }

    /// The agent named `name` with its grants, owner name and prebuilt
    /// policy facts: read and built once, then shared by every request until
    /// a commit writes the agent, one of its grants or its owner's account.
    pub fn agent(&self, name: &str) -> Result<Option<Arc<AgentState>>, DomainError> {
        let loaded = crate::domain::cached(
            self.store.as_ref(),
            &crate::domain::keyspace::agent(name),
            |engine| {
                let (found, deps) = crate::domain::agents::read_with_grants(engine, name)?;
                let Some((agent, grants)) = found else {
                    return Ok((None, deps));
                };
                let owner_key = crate::domain::keyspace::user(&agent.owner);
                let owner_name = match engine.get(owner_key.as_bytes())? {
                    Some(bytes) => Some(crate::domain::decode::<User>(&bytes)?.username),
                    None => None,
                };
                let state = AgentState::new(agent, grants, owner_name);
                Ok((Some(Arc::new(state)), deps.key(owner_key)))
            },
        )?;
        Ok(loaded.as_ref().clone())
    }

    /// The facts for `operation` on `agent` by `acting` (the caller, or
    /// the person whose data a runtime asks for): the agent, its owner, the
    /// grants `acting`'s rights draw on (see [`AgentState::facts_for`]), and
    /// the rank the request would confer (0 if none).
    pub fn agent_request(
        operation: &str,
        agent: &AgentState,
        acting: &str,
        granting: i64,
    ) -> RequestFacts {
        Self::grant_request(operation, agent, acting, granting, None)
    }

    /// A request that would replace or remove a grant drawn by `grantor`
    /// (`None`: no grant is at stake). The policy leaves a grant to those
    /// its grantor answers to, so the grants `grantor` draws on are
    /// presented too.
    pub fn grant_request(
        operation: &str,
        agent: &AgentState,
        acting: &str,
        granting: i64,
        grantor: Option<&str>,
    ) -> RequestFacts {
        let request = RequestFacts::new(operation)
            .fact("granting_rank", [biscuit_auth::builder::int(granting)]);
        let facts = match grantor {
            Some(by) => agent.facts_for(&[acting, by]),
            None => agent.facts_for(&[acting]),
        };
        match grantor {
            Some(by) => request.fact("grant_at_stake", [biscuit_auth::builder::string(by)]),
            None => request.fact("no_grant_at_stake", [biscuit_auth::builder::boolean(true)]),
        }
        .with(&facts)
    }

    /// Effective ranks on the agent, per user, as the policy derives them;
    /// `admin` names an admin whose admin rights count too.
    pub fn agent_ranks(
        &self,
        agent: &AgentState,
        admin: Option<&str>,
    ) -> Result<Arc<HashMap<String, i64>>, AuthError> {
        if admin.is_none() {
            if let Some(ranks) = agent.plain_ranks.get() {
                return Ok(ranks.clone());
            }
        }
        // Everyone's ranks: every grant on the agent.
        let mut request = RequestFacts::new("agent:read").with(&agent.facts);
        if let Some(admin) = admin {
            request = request.fact("admin", [biscuit_auth::builder::string(admin)]);
        }
        let mut best = HashMap::new();
        for (_, user, rank) in self.authz.ranks(&request)?.iter() {
            let entry = best.entry(user.clone()).or_insert(0);
            *entry = (*entry).max(*rank);
        }
        let best = Arc::new(best);
        if admin.is_none() {
            let _ = agent.plain_ranks.set(best.clone());
        }
        Ok(best)
    }

    /// The rank being an admin alone gives on the agent, as the policy
    /// derives it.
    pub fn admin_rank(&self, agent: &AgentState) -> Result<i64, AuthError> {
        // No account id holds a NUL: this admin holds nothing else.
        const NOBODY: &str = "\0admin";
        let ranks = self.agent_ranks(agent, Some(NOBODY))?;
        Ok(ranks.get(NOBODY).copied().unwrap_or(0))
    }
}

/// An agent as requests about it need it, built once per change.
pub struct AgentState {
    pub agent: Agent,
    pub grants: Vec<Grant>,
    /// The owner's username (`None` if the account is gone).
    pub owner_name: Option<String>,
    /// The agent, its owner and all its grants as policy facts.
    facts: Arc<FactSet>,
    /// The agent's facts with only the grants some people draw on, by those
    /// people (see [`Self::facts_for`]).
    slices: Mutex<HashMap<Vec<String>, Arc<FactSet>>>,
    /// Who holds what on it, admins aside.
    plain_ranks: OnceLock<Arc<HashMap<String, i64>>>,
    /// The parts of its JSON that do not depend on who asks, rendered once by
    /// the HTTP layer.
    pub rendered: OnceLock<String>,
}

impl AgentState {
    pub fn new(agent: Agent, grants: Vec<Grant>, owner_name: Option<String>) -> Self {
        let facts = agent_facts(&agent, grants.iter());
        Self {
            agent,
            grants,
            owner_name,
            facts: Arc::new(facts),
            slices: Mutex::new(HashMap::new()),
            plain_ranks: OnceLock::new(),
            rendered: OnceLock::new(),
        }
    }

    /// The agent's facts with only the grants `people`'s rights can draw
    /// on: their own, and up the chain those of everyone who granted them.
    /// agents.dl derives a person's rank from their grants and their
    /// grantors' ranks and nothing else, so a decision about `people` is
    /// the same as with every grant presented; and a change to any other
    /// grant leaves these facts, and every decision remembered on them, as
    /// they were (a grant to bob does not make alice's decisions run cold).
    pub fn facts_for(&self, people: &[&str]) -> Arc<FactSet> {
        const MAX_SLICES: usize = 1024;
        let key: Vec<String> = people.iter().map(|p| (*p).to_owned()).collect();
        if let Some(hit) = self.slices.lock().ok().and_then(|s| s.get(&key).cloned()) {
            return hit;
        }
        let mut reached: std::collections::HashSet<&str> = people.iter().copied().collect();
        let mut pending: Vec<&str> = people.to_vec();
        while let Some(who) = pending.pop() {
            for grant in self.grants.iter().filter(|g| g.grantee == who) {
                if reached.insert(&grant.granted_by) {
                    pending.push(&grant.granted_by);
                }
            }
        }
        let drawn_on = self
            .grants
            .iter()
            .filter(|g| reached.contains(g.grantee.as_str()));
        let set = Arc::new(agent_facts(&self.agent, drawn_on));
        if let Ok(mut slices) = self.slices.lock() {
            if slices.len() >= MAX_SLICES {
                slices.clear();
            }
            slices.insert(key, set.clone());
        }
        set
    }
}

/// The agent, its owner, whether it is active, and `grants`, as policy facts.
fn agent_facts<'g>(agent: &Agent, grants: impl Iterator<Item = &'g Grant>) -> FactSet {
    use biscuit_auth::builder::string;
    let name = string(&agent.name);
    let mut facts = vec![
        ("resource_agent", vec![name.clone()]),
        ("agent", vec![name.clone()]),
        ("owner", vec![name.clone(), string(&agent.owner)]),
    ];
    if !agent.archived {
        facts.push(("active_agent", vec![name.clone()]));
    }
    for g in grants {
        facts.push((
            "grant",
            vec![
                name.clone(),
                string(&g.grantee),
                string(g.level.as_str()),
                string(&g.granted_by),
            ],
        ));
    }
    FactSet::new(facts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authz::keys::RootKeys;
    use crate::authz::tokens;
    use crate::domain::levels::Level;
    use biscuit_auth::AuthorizerLimits;
    use proptest::prelude::*;

    const PEOPLE: [&str; 5] = ["p0", "p1", "p2", "p3", "p4"];
    const OPERATIONS: [&str; 6] = [
        "agent:read",
        "agent:update",
        "agent:share",
        "agent:unshare",
        "agent:tokens:mint",
        "agent:delete",
    ];

    fn level(i: usize) -> Level {
        [
            Level::View,
            Level::Use,
            Level::Edit,
            Level::Manage,
            Level::Share,
        ][i]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]
        /// A decision on the grants a person draws on equals the decision on
        /// every grant of the agent, whoever asks, whatever is at stake.
        #[test]
        fn the_grants_drawn_on_decide_as_all_grants_do(
            owner in 0usize..5,
            // Mostly `share`, so chains of sharing several people long are common.
            grants in prop::collection::vec((0usize..5, prop_oneof![1 => 0usize..4, 3 => Just(4usize)], 0usize..5), 0..12),
            caller in 0usize..5,
            admin in prop::option::of(0usize..5),
            at_stake in prop::option::of(0usize..5),
            operation in 0usize..OPERATIONS.len(),
            granting in 0i64..=6,
        ) {
            thread_local! {
                static SETUP: (Policy, RootKeys) = (
                    Policy::embedded(AuthorizerLimits {
                        max_time: std::time::Duration::from_secs(10),
                        ..AuthorizerLimits::default()
                    })
                    .expect("policy"),
                    RootKeys::ephemeral(),
                );
            }
            let agent = Agent {
                name: "a".into(),
                owner: PEOPLE[owner].into(),
                created_at: 0,
                archived: false,
                archived_at: None,
                fields: Default::default(),
            };
            let grants: Vec<Grant> = grants
                .into_iter()
                .map(|(to, lvl, by)| Grant {
                    agent: "a".into(),
                    grantee: PEOPLE[to].into(),
                    level: level(lvl),
                    granted_by: PEOPLE[by].into(),
                    at: 0,
                })
                .collect();
            let state = AgentState::new(agent, grants, None);
            let caller = PEOPLE[caller];
            let at_stake = at_stake.map(|i| PEOPLE[i]);
            SETUP.with(|(policy, keys)| {
                let token = tokens::mint_session(keys, caller, "s", i64::MAX / 2).expect("mint");
                let token = tokens::verify(keys, &token).expect("verify");
                let request = |facts: &Arc<FactSet>| {
                    let mut request = RequestFacts::new(OPERATIONS[operation])
                        .fact("granting_rank", [biscuit_auth::builder::int(granting)])
                        .fact("active", [biscuit_auth::builder::string(caller)]);
                    request = match at_stake {
                        Some(by) => request.fact("grant_at_stake", [biscuit_auth::builder::string(by)]),
                        None => request.fact("no_grant_at_stake", [biscuit_auth::builder::boolean(true)]),
                    };
                    if let Some(admin) = admin {
                        request = request.fact("admin", [biscuit_auth::builder::string(PEOPLE[admin])]);
                    }
                    request.with(facts)
                };
                let sliced = match at_stake {
                    Some(by) => state.facts_for(&[caller, by]),
                    None => state.facts_for(&[caller]),
                };
                let all = policy.authorize(&token, &request(&state.facts)).map_err(|e| e.to_string());
                let drawn_on = policy.authorize(&token, &request(&sliced)).map_err(|e| e.to_string());
                prop_assert_eq!(all, drawn_on);
                Ok(())
            })?;
        }
    }

    #[test]
    fn a_grant_elsewhere_leaves_the_facts_of_a_person_as_they_were() {
        let agent = || Agent {
            name: "a".into(),
            owner: "owner".into(),
            created_at: 0,
            archived: false,
            archived_at: None,
            fields: Default::default(),
        };
        let grant = |to: &str, by: &str| Grant {
            agent: "a".into(),
            grantee: to.into(),
            level: Level::Share,
            granted_by: by.into(),
            at: 0,
        };
        let before = AgentState::new(agent(), vec![grant("alice", "owner")], None);
        let after = AgentState::new(
            agent(),
            vec![
                grant("alice", "owner"),
                grant("bob", "owner"),
                grant("carol", "alice"),
            ],
            None,
        );
        let key = |state: &AgentState, who: &str| {
            RequestFacts::new("op")
                .with(&state.facts_for(&[who]))
                .key()
                .clone()
        };
        assert_eq!(key(&before, "alice"), key(&after, "alice"));
        assert_ne!(key(&before, "bob"), key(&after, "bob"));
        // carol draws on alice: alice's grant is among carol's facts.
        assert_ne!(key(&after, "carol"), key(&after, "bob"));
    }
}
