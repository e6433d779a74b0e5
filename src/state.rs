//! Everything a request handler needs, built once at start-up.

use std::collections::HashMap;
use std::ops::Deref;
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use crate::authz::cache::Verified;
use crate::authz::keys::{DataKeys, KeyError, RootKeys};
use crate::authz::policy::{FactSet, Policy, PolicyError, RequestFacts};
use crate::authz::tokens::Claims;
use crate::authz::{AuthError, Authz};
use crate::config::{Clock, Config};
use crate::datadir;
use crate::domain::agents::{Agent, Agents, Grant};
use crate::domain::channels::{current_runtime, Channels};
use crate::domain::chat::Chat;
use crate::domain::delegations::{Delegation, Delegations};
use crate::domain::groups::{Groups, Principal};
use crate::domain::memory::Memory;
use crate::domain::password::Passwords;
use crate::domain::secrets::Secrets;
use crate::domain::users::{AccountSettings, Accounts, User};
use crate::domain::{now, sessions, DomainError};
use crate::forward::table::RouteTable;
use crate::http::ratelimit::RateLimiter;
use crate::store::{CachedStore, PostgresStore, SledStore, Store, StoreError};

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
pub const STEP_UP_NEEDED: &str = "this needs a second factor verified at this session within the last 15 minutes: send a code, or a passkey answer (POST /auth/second-factor/passkey/start first), to POST /auth/second-factor (in the console: Account, Second factors)";

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
    pub groups: Groups,
    pub factors: crate::domain::factors::Factors,
    /// Passkeys: the relying party (`--public-url`) and ceremonies in flight.
    pub passkeys: crate::domain::passkeys::Passkeys,
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
    /// The groups the person belongs to, read with the rest of the caller
    /// on every request (a membership ends on the next one).
    pub groups: Arc<Vec<String>>,
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
        let (store, _starting): (Arc<dyn Store>, _) = match &config.store_url {
            Some(url) => {
                let shared = PostgresStore::connect(url)?;
                // Replicas starting together take turns from here to the
                // end of the schema steps.
                let lock = shared.lock_startup()?;
                (Arc::new(shared), Some(lock))
            }
            None => (Arc::new(SledStore::open(&config.store_dir())?), None),
        };
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
        let authz = Authz::new(
            root,
            policy,
            config.token_cache_capacity,
            config.decision_memo_capacity,
        );
        // Every read and write of the server goes through one cache, so each
        // commit drops the cached values it outdates.
        // On a store other replicas write too, the cache follows their
        // commits and answers only while it keeps up.
        let store: Arc<dyn Store> = match (store.cache(), store.freshness()) {
            (Some(_), _) => store,
            (None, Some(freshness)) => {
                let cache = Arc::new(CachedStore::following(
                    store.clone(),
                    config.read_cache_capacity,
                    freshness,
                ));
                store.follow(Arc::downgrade(&cache));
                cache
            }
            (None, None) => Arc::new(CachedStore::new(store, config.read_cache_capacity)),
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
        let limiter = if store.shared() {
            RateLimiter::shared(config.rate_limit.clone(), store.clone())
        } else {
            RateLimiter::new(config.rate_limit.clone())
        };
        let second_factor_required = config.second_factor_required;
        let passkeys = crate::domain::passkeys::Passkeys::new(store.clone(), &config.public_url)?;
        Ok(Self(Arc::new(Inner {
            config,
            agents: Agents::new(store.clone()),
            delegations: Delegations::new(store.clone()),
            secrets: Secrets::new(store.clone()),
            memory: Memory::new(store.clone()),
            chat: Chat::new(store.clone()),
            channels: Channels::new(store.clone()),
            groups: Groups::new(store.clone()),
            factors: crate::domain::factors::Factors::new(store.clone(), second_factor_required),
            passkeys,
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
        let store_err = AuthError::from_domain;
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
        let groups =
            crate::domain::groups::groups_of(self.store.as_ref(), &user.id).map_err(store_err)?;
        Ok(AnyCaller::Person(Caller {
            user,
            via,
            token: verified,
            groups,
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
        request = caller_facts(caller, request, true);
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
                .map_err(AuthError::from_domain)?;
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

    /// Add the groups `user` belongs to (`member`) and, once they finished
    /// signing up, their being part of everyone (`account`): read per
    /// request, so leaving a group takes effect on the very next one, and
    /// part of the facts a decision is remembered for.
    pub fn with_memberships(
        &self,
        mut request: RequestFacts,
        user: &str,
        active: bool,
    ) -> Result<RequestFacts, AuthError> {
        use biscuit_auth::builder::string;
        let id = string(user);
        if active {
            request = request.fact("account", [id.clone()]);
        }
        let groups = crate::domain::groups::groups_of(self.store.as_ref(), user)
            .map_err(AuthError::from_domain)?;
        for group in groups.iter() {
            let principal = crate::domain::groups::group_principal(group);
            request = request.fact("member", [string(&principal), id.clone()]);
        }
        Ok(request)
    }

    /// The caller's rank on the agent as the policy derives it from the
    /// facts their own requests carry (their memberships), admin rights
    /// counting when `admin`.
    pub fn caller_rank(
        &self,
        agent: &AgentState,
        caller: &Caller,
        admin: bool,
    ) -> Result<i64, AuthError> {
        let id = &caller.user.id;
        let live = agent.live();
        // A membership can only count through a grant to what it names: with
        // none on this agent, the agent's own ranks (shared by every caller)
        // already say it.
        let reached = live.principals.iter().any(|p| match Principal::of(p) {
            Principal::Everyone => !caller.user.pending(),
            Principal::Group(group) => caller.groups.iter().any(|g| g == group),
            Principal::User(_) => false,
        });
        if !reached {
            let admin = (admin && caller.user.is_admin).then_some(id.as_str());
            return Ok(self
                .agent_ranks(agent, admin)?
                .get(id)
                .copied()
                .unwrap_or(0));
        }
        let request = caller_facts(
            caller,
            Self::agent_request("agent:read", agent, id, 0),
            admin,
        );
        Ok(self
            .authz
            .ranks(&request)?
            .iter()
            .filter(|(_, u, _)| u == id)
            .map(|(_, _, r)| *r)
            .max()
            .unwrap_or(0))
    }

    /// Seconds since the epoch by the server's clock (what expiring shares
    /// are judged by).
    pub fn now(&self) -> i64 {
        self.config.clock.now()
    }

    /// The agent named `name` with its grants, owner name and prebuilt
    /// policy facts: read and built once, then shared by every request until
    /// a commit writes the agent, one of its grants, its owner's account or
    /// the membership of a group (or everyone) holding one of its grants.
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
                let (members, deps) = principal_members(engine, &grants, deps)?;
                let state = AgentState::with_members(
                    agent,
                    grants,
                    owner_name,
                    members,
                    self.config.clock.clone(),
                );
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

    /// Effective ranks on the agent, per user and per principal (what a
    /// grant confers on its group, or on everyone), as the policy derives
    /// them from the agent's own facts; `admin` names an admin whose admin
    /// rights count too. Enough to say whether each grant is in effect; a
    /// member reached only through a group is in [`Self::reach_ranks`], and
    /// a caller's own level is [`Self::caller_rank`].
    pub fn agent_ranks(
        &self,
        agent: &AgentState,
        admin: Option<&str>,
    ) -> Result<Arc<HashMap<String, i64>>, AuthError> {
        let live = agent.live();
        self.ranks_on(&live.facts, &live.plain_ranks, admin)
    }

    /// [`Self::agent_ranks`] of everyone the agent reaches: every member of
    /// a grantee group, every account when it is shared with everyone. For
    /// saying who can reach it (the fact set grows with them).
    pub fn reach_ranks(
        &self,
        agent: &AgentState,
        admin: Option<&str>,
    ) -> Result<Arc<HashMap<String, i64>>, AuthError> {
        let live = agent.live();
        self.ranks_on(&live.reach, &live.reach_ranks, admin)
    }

    fn ranks_on(
        &self,
        facts: &Arc<FactSet>,
        plain: &OnceLock<Arc<HashMap<String, i64>>>,
        admin: Option<&str>,
    ) -> Result<Arc<HashMap<String, i64>>, AuthError> {
        if admin.is_none() {
            if let Some(ranks) = plain.get() {
                return Ok(ranks.clone());
            }
        }
        let mut request = RequestFacts::new("agent:read")
            .fact("granting_rank", [biscuit_auth::builder::int(0)])
            .fact("no_grant_at_stake", [biscuit_auth::builder::boolean(true)])
            .with(facts);
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
            let _ = plain.set(best.clone());
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

/// Add what the store says about the caller: whether they finished sign-up,
/// whether they are an admin (`admin`: if it counts), and what they belong
/// to: each group (`member`) and, signed up, everyone (`account`). Read per
/// request and part of the key decisions are remembered under, so leaving a
/// group counts on the very next request.
fn caller_facts(caller: &Caller, mut request: RequestFacts, admin: bool) -> RequestFacts {
    use biscuit_auth::builder::string;
    let user = &caller.user;
    let id = string(&user.id);
    if !user.pending() {
        request = request
            .fact("active", [id.clone()])
            .fact("account", [id.clone()]);
    }
    if admin && user.is_admin {
        request = request.fact("admin", [id.clone()]);
    }
    for group in caller.groups.iter() {
        let principal = crate::domain::groups::group_principal(group);
        request = request.fact("member", [string(&principal), id.clone()]);
    }
    request
}

/// The members of every principal holding a grant on an agent, as the
/// policy's facts need them (`member`, `account` in `datalog/agents.dl`):
/// each grantee group's members, and every account when everyone holds a
/// grant. What is read joins `deps`, so a membership change (or a new
/// account, for everyone) rebuilds the agent's facts before it is
/// acknowledged.
fn principal_members(
    engine: &dyn Store,
    grants: &[Grant],
    mut deps: crate::store::Deps,
) -> Result<(HashMap<String, Vec<String>>, crate::store::Deps), DomainError> {
    use crate::domain::groups::members_in;
    use crate::domain::keyspace::ACTIVE_PREFIX;
    let mut members = HashMap::new();
    for grant in grants {
        if members.contains_key(&grant.grantee) {
            continue;
        }
        let ids = match grant.principal() {
            Principal::User(_) => continue,
            Principal::Group(group) => {
                deps = deps.prefix(crate::domain::keyspace::group_members_prefix(group));
                members_in(engine, group)?
            }
            Principal::Everyone => {
                deps = deps.prefix(ACTIVE_PREFIX);
                engine
                    .scan(ACTIVE_PREFIX.as_bytes(), None, usize::MAX)?
                    .into_iter()
                    .map(|(k, _)| String::from_utf8_lossy(&k[ACTIVE_PREFIX.len()..]).into_owned())
                    .collect()
            }
        };
        members.insert(grant.grantee.clone(), ids);
    }
    Ok((members, deps))
}

/// An agent as requests about it need it, built once per change.
pub struct AgentState {
    pub agent: Agent,
    /// Every grant, expired ones included (they stay listed until removed).
    pub grants: Vec<Grant>,
    /// The owner's username (`None` if the account is gone).
    pub owner_name: Option<String>,
    /// The member ids of each group (by principal) holding a grant, and of
    /// `everyone` when everyone holds one.
    pub members: HashMap<String, Vec<String>>,
    clock: Clock,
    /// The facts as of the clock, rebuilt when a grant in them expires.
    live: RwLock<Arc<Live>>,
    /// The parts of its JSON that do not depend on who asks, rendered once by
    /// the HTTP layer.
    pub rendered: OnceLock<String>,
}

/// The policy's view of an agent while no grant in it expires.
struct Live {
    /// The first expiry among the grants presented: from then on these
    /// facts are stale.
    until: i64,
    /// The agent, its owner and its unexpired grants as policy facts, with
    /// the memberships of those the grants draw on (the caller's own are
    /// added per request, see [`AppState::authorize`]). An expired grant is
    /// never presented, so the facts (and every decision remembered for
    /// them) change the moment one runs out.
    facts: Arc<FactSet>,
    /// The same with every member of every group holding a grant (and every
    /// account, when everyone holds one): for saying who holds what, not
    /// for deciding.
    reach: Arc<FactSet>,
    /// The groups (and everyone) its unexpired grants name.
    principals: Vec<String>,
    /// Who holds what on it, admins aside: from `facts`, and from `reach`.
    plain_ranks: OnceLock<Arc<HashMap<String, i64>>>,
    reach_ranks: OnceLock<Arc<HashMap<String, i64>>>,
    /// `facts` in parts, for [`AgentState::facts_for`]: the agent's own
    /// facts, each live grant with its grantee and grantor, and each
    /// grantor's membership with whose it is.
    own: Vec<Fact>,
    grants: Vec<(String, String, Fact)>,
    memberships: Vec<(String, Fact)>,
    /// `facts` with only the grants some people draw on, by those people.
    slices: Mutex<HashMap<Vec<String>, Arc<FactSet>>>,
}

type Fact = (&'static str, Vec<biscuit_auth::builder::Term>);

impl AgentState {
    /// An agent whose grants name people only (or none), on the system clock.
    pub fn new(agent: Agent, grants: Vec<Grant>, owner_name: Option<String>) -> Self {
        Self::with_members(agent, grants, owner_name, HashMap::new(), Clock::default())
    }

    pub fn with_members(
        agent: Agent,
        grants: Vec<Grant>,
        owner_name: Option<String>,
        members: HashMap<String, Vec<String>>,
        clock: Clock,
    ) -> Self {
        let live = build_live(&agent, &grants, &members, clock.now());
        Self {
            agent,
            grants,
            owner_name,
            members,
            clock,
            live: RwLock::new(Arc::new(live)),
            rendered: OnceLock::new(),
        }
    }

    /// The agent's policy facts at this moment.
    pub fn facts(&self) -> Arc<FactSet> {
        self.live().facts.clone()
    }

    /// The agent's facts with only the grants `people`'s rights can draw
    /// on: their own, and up the chain those of everyone who granted them;
    /// every grant to a group or to everyone (with its grantor's chain),
    /// since the caller's memberships are only known per request; and the
    /// memberships of the grantors kept. agents.dl derives a person's rank
    /// from the grants reaching them and their grantors' ranks and nothing
    /// else, so a decision about `people` is the same as with every grant
    /// presented; and a change to any other grant to a person leaves these
    /// facts, and every decision remembered on them, as they were (a grant
    /// to bob does not make alice's decisions run cold).
    pub fn facts_for(&self, people: &[&str]) -> Arc<FactSet> {
        const MAX_SLICES: usize = 1024;
        let live = self.live();
        let key: Vec<String> = people.iter().map(|p| (*p).to_owned()).collect();
        if let Some(hit) = live.slices.lock().ok().and_then(|s| s.get(&key).cloned()) {
            return hit;
        }
        let to_principal = |grantee: &str| !matches!(Principal::of(grantee), Principal::User(_));
        let mut reached: std::collections::HashSet<&str> = people.iter().copied().collect();
        let mut pending: Vec<&str> = people.to_vec();
        for (grantee, by, _) in &live.grants {
            if to_principal(grantee) && reached.insert(by) {
                pending.push(by);
            }
        }
        while let Some(who) = pending.pop() {
            for (_, by, _) in live.grants.iter().filter(|(to, _, _)| to == who) {
                if reached.insert(by) {
                    pending.push(by);
                }
            }
        }
        let grants = live
            .grants
            .iter()
            .filter(|(to, _, _)| to_principal(to) || reached.contains(to.as_str()))
            .map(|(_, _, fact)| fact.clone());
        let memberships = live
            .memberships
            .iter()
            .filter(|(id, _)| reached.contains(id.as_str()))
            .map(|(_, fact)| fact.clone());
        let set = Arc::new(FactSet::new(
            live.own.iter().cloned().chain(grants).chain(memberships),
        ));
        if let Ok(mut slices) = live.slices.lock() {
            if slices.len() >= MAX_SLICES {
                slices.clear();
            }
            slices.insert(key, set.clone());
        }
        set
    }

    /// Whether `grant` confers anything now.
    pub fn live_grant(&self, grant: &Grant) -> bool {
        grant.live_at(self.clock.now())
    }

    fn live(&self) -> Arc<Live> {
        let now = self.clock.now();
        {
            let live = self.live.read().unwrap_or_else(|e| e.into_inner());
            if now < live.until {
                return live.clone();
            }
        }
        let fresh = Arc::new(build_live(&self.agent, &self.grants, &self.members, now));
        *self.live.write().unwrap_or_else(|e| e.into_inner()) = fresh.clone();
        fresh
    }
}

fn build_live(
    agent: &Agent,
    grants: &[Grant],
    members: &HashMap<String, Vec<String>>,
    now: i64,
) -> Live {
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
    let live: Vec<&Grant> = grants.iter().filter(|g| g.live_at(now)).collect();
    let until = live
        .iter()
        .filter_map(|g| g.expires_at)
        .min()
        .unwrap_or(i64::MAX);
    // Whose memberships a decision may need besides the caller's (added
    // per request): those whose rights a grant draws on, expired grants
    // included (removing one asks whom its grantor draws on).
    let drawers: std::collections::HashSet<&str> =
        grants.iter().map(|g| g.granted_by.as_str()).collect();
    let own = facts.clone();
    let mut grant_parts = Vec::new();
    let mut memberships = Vec::new();
    let mut everyone_else = Vec::new();
    for g in &live {
        let grant: Fact = (
            "grant",
            vec![
                name.clone(),
                string(&g.grantee),
                string(g.level.as_str()),
                string(&g.granted_by),
            ],
        );
        facts.push(grant.clone());
        grant_parts.push((g.grantee.clone(), g.granted_by.clone(), grant));
        let ids = members.get(&g.grantee).map(Vec::as_slice).unwrap_or(&[]);
        let principal = string(&g.grantee);
        for id in ids {
            let fact = match g.principal() {
                Principal::User(_) => continue,
                Principal::Group(_) => ("member", vec![principal.clone(), string(id)]),
                Principal::Everyone => ("account", vec![string(id)]),
            };
            if drawers.contains(id.as_str()) {
                facts.push(fact.clone());
                memberships.push((id.clone(), fact));
            } else {
                everyone_else.push(fact);
            }
        }
    }
    // Shared with people only, an agent reaches no one beyond its own
    // facts: one set serves both.
    let reach = (!everyone_else.is_empty())
        .then(|| Arc::new(FactSet::new(facts.iter().cloned().chain(everyone_else))));
    let facts = Arc::new(FactSet::new(facts));
    let principals = live
        .iter()
        .filter(|g| !matches!(g.principal(), Principal::User(_)))
        .map(|g| g.grantee.clone())
        .collect();
    Live {
        until,
        principals,
        reach: reach.unwrap_or_else(|| facts.clone()),
        facts,
        plain_ranks: OnceLock::new(),
        reach_ranks: OnceLock::new(),
        own,
        grants: grant_parts,
        memberships,
        slices: Mutex::new(HashMap::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::levels::Level;

    fn grant(grantee: &str, expires_at: Option<i64>) -> Grant {
        Grant {
            agent: "a".into(),
            grantee: grantee.into(),
            level: Level::Use,
            granted_by: "olive".into(),
            at: 0,
            expires_at,
        }
    }

    /// An expiring grant leaves the facts the moment it runs out, so the
    /// key remembered decisions are filed under changes with it.
    #[test]
    fn facts_drop_a_grant_when_it_expires() {
        let clock = Clock::default();
        let now = clock.now();
        let agent = Agent {
            name: "a".into(),
            owner: "olive".into(),
            created_at: 0,
            archived: false,
            archived_at: None,
            fields: Default::default(),
        };
        let members = HashMap::from([("group:kids".to_owned(), vec!["carol".to_owned()])]);
        let state = AgentState::with_members(
            agent,
            vec![grant("bob", Some(now + 100)), grant("group:kids", None)],
            None,
            members,
            clock.clone(),
        );
        let before = RequestFacts::new("agent:read").with(&state.facts());
        clock.advance(99);
        let still = RequestFacts::new("agent:read").with(&state.facts());
        assert_eq!(before.key(), still.key());
        clock.advance(1);
        let after = RequestFacts::new("agent:read").with(&state.facts());
        assert_ne!(before.key(), after.key());
        assert!(!state.live_grant(&state.grants[0]));
        assert!(state.live_grant(&state.grants[1]));
    }

    mod drawn_on {
        use super::*;
        use crate::authz::keys::RootKeys;
        use crate::authz::tokens;
        use biscuit_auth::builder::{boolean, int, string};
        use biscuit_auth::AuthorizerLimits;
        use proptest::prelude::*;

        const PEOPLE: [&str; 5] = ["p0", "p1", "p2", "p3", "p4"];
        const PRINCIPALS: [&str; 8] = [
            "p0", "p1", "p2", "p3", "p4", "group:g0", "group:g1", "everyone",
        ];
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

        fn agent(owner: &str) -> Agent {
            Agent {
                name: "a".into(),
                owner: owner.into(),
                created_at: 0,
                archived: false,
                archived_at: None,
                fields: Default::default(),
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

            /// A decision on the grants a person draws on equals the
            /// decision on every grant of the agent, whoever asks, whatever
            /// is at stake, through people, groups and everyone.
            #[test]
            fn the_grants_drawn_on_decide_as_all_grants_do(
                owner in 0usize..5,
                // Mostly `share`, so chains several people long are common.
                grants in prop::collection::vec(
                    (0usize..8, prop_oneof![1 => 0usize..4, 3 => Just(4usize)], 0usize..5),
                    0..12,
                ),
                groups in prop::collection::vec(prop::collection::vec(0usize..5, 0..4), 2),
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
                let grants: Vec<Grant> = grants
                    .into_iter()
                    .map(|(to, lvl, by)| Grant {
                        agent: "a".into(),
                        grantee: PRINCIPALS[to].into(),
                        level: level(lvl),
                        granted_by: PEOPLE[by].into(),
                        at: 0,
                        expires_at: None,
                    })
                    .collect();
                let mut members: HashMap<String, Vec<String>> = HashMap::new();
                for (g, ids) in groups.iter().enumerate() {
                    members.insert(
                        format!("group:g{g}"),
                        ids.iter().map(|i| PEOPLE[*i].to_owned()).collect(),
                    );
                }
                members.insert("everyone".into(), PEOPLE.iter().map(|p| (*p).to_owned()).collect());
                let state = AgentState::with_members(
                    agent(PEOPLE[owner]),
                    grants,
                    None,
                    members,
                    Clock::default(),
                );
                let caller = PEOPLE[caller];
                let at_stake = at_stake.map(|i| PEOPLE[i]);
                SETUP.with(|(policy, keys)| {
                    let token = tokens::mint_session(keys, caller, "s", i64::MAX / 2).expect("mint");
                    let token = tokens::verify(keys, &token).expect("verify");
                    let request = |facts: &Arc<FactSet>| {
                        let mut request = RequestFacts::new(OPERATIONS[operation])
                            .fact("granting_rank", [int(granting)])
                            .fact("active", [string(caller)])
                            .fact("account", [string(caller)]);
                        for (g, ids) in groups.iter().enumerate() {
                            if ids.iter().any(|i| PEOPLE[*i] == caller) {
                                request = request
                                    .fact("member", [string(&format!("group:g{g}")), string(caller)]);
                            }
                        }
                        request = match at_stake {
                            Some(by) => request.fact("grant_at_stake", [string(by)]),
                            None => request.fact("no_grant_at_stake", [boolean(true)]),
                        };
                        if let Some(admin) = admin {
                            request = request.fact("admin", [string(PEOPLE[admin])]);
                        }
                        request.with(facts)
                    };
                    let sliced = match at_stake {
                        Some(by) => state.facts_for(&[caller, by]),
                        None => state.facts_for(&[caller]),
                    };
                    let all = policy.authorize(&token, &request(&state.facts())).map_err(|e| e.to_string());
                    let drawn_on = policy.authorize(&token, &request(&sliced)).map_err(|e| e.to_string());
                    prop_assert_eq!(all, drawn_on);
                    Ok(())
                })?;
            }
        }

        #[test]
        fn a_grant_elsewhere_leaves_the_facts_of_a_person_as_they_were() {
            let grant = |to: &str, by: &str| Grant {
                agent: "a".into(),
                grantee: to.into(),
                level: Level::Share,
                granted_by: by.into(),
                at: 0,
                expires_at: None,
            };
            let before = AgentState::new(agent("owner"), vec![grant("alice", "owner")], None);
            let after = AgentState::new(
                agent("owner"),
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
}
