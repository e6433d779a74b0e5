//! The policy's evaluator: biscuit-auth's Datalog semantics, prepared once.
//!
//! biscuit-auth builds an `Authorizer` per request: it clones the whole
//! policy, interns every symbol again (a linear search each), then applies
//! every rule to every fact on each iteration until nothing new appears.
//! That is nearly all of a decision nothing remembers. Here the policy is
//! interned and indexed once at start-up, each token once when first used,
//! and a request's world is evaluated semi-naively: an iteration only tries
//! the bindings that use at least one fact the previous iteration derived.
//!
//! It derives exactly the facts, with exactly the origins, that
//! biscuit-auth's naive iteration derives, iteration by iteration, so the
//! limits on facts and iterations are reached at the same point. Scopes
//! (authority and authorizer facts trusted, a block's own facts visible to
//! that block only), `check if`, `check all`, `reject if`, the order in
//! which checks and policies are tried and the errors reported follow
//! `Authorizer::authorize`. Expressions are evaluated by biscuit-auth
//! itself. What this does not cover (third-party blocks, public-key scopes,
//! more than 62 blocks, a policy with public-key scopes) is decided by
//! biscuit-auth's own authorizer instead; the unit tests below hold the two
//! to the same answers over random tokens, holder blocks and worlds.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Instant;

use biscuit_auth::builder::{self, CheckKind, Convert, PolicyKind, Scope};
use biscuit_auth::datalog::{
    self, Expression, MapKey, Op, SymbolTable, TemporarySymbolTable, Term,
};
use biscuit_auth::error::{
    Expression as ExpressionError, FailedAuthorizerCheck, FailedBlockCheck, FailedCheck, Logic,
    MatchedPolicy, RunLimit, Token as TokenError,
};
use biscuit_auth::format::{convert, schema};
use biscuit_auth::{AuthorizerBuilder, AuthorizerLimits, Biscuit};
use prost::Message;

/// A multiply-rotate hash for the evaluator's small internal maps, keyed
/// by symbol numbers and terms the server or the token's signer chose: the
/// maps live for one request and are bounded by the run limits, so
/// SipHash's protection against chosen collisions buys nothing here.
#[derive(Default, Clone, Copy)]
struct QuickHasher(u64);

impl std::hash::Hasher for QuickHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_u32(&mut self, n: u32) {
        self.write_u64(n.into());
    }
    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
    fn write_u8(&mut self, n: u8) {
        self.write_u64(n.into());
    }
}

type Quick = std::hash::BuildHasherDefault<QuickHasher>;
type QuickMap<K, V> = HashMap<K, V, Quick>;
type QuickSet<T> = HashSet<T, Quick>;

/// Facts of one name compared one by one before they get a hash index.
const SCAN_UP_TO: usize = 16;

/// Origins are sets of block indices; here bits of a word, the authorizer's
/// the top one. Block `i` is bit `i`, so tokens of up to 63 blocks fit.
const AUTHORIZER: u64 = 1 << 63;
const MAX_BLOCKS: usize = 63;
/// What a rule without `trusting` sees: the authority block and the
/// authorizer (biscuit-auth's `TrustedOrigins::default`).
const DEFAULT_TRUST: u64 = AUTHORIZER | 1;

fn block_bit(block: usize) -> u64 {
    if block == usize::MAX {
        AUTHORIZER
    } else {
        1 << block
    }
}

/// The origins a rule or check trusts, as `TrustedOrigins::from_scopes`
/// computes them; `None` for a scope this evaluator leaves to biscuit-auth.
fn trusted(scopes: &[Scope], default: u64, block: usize) -> Option<u64> {
    let own = block_bit(block) | AUTHORIZER;
    if scopes.is_empty() {
        return Some(default | own);
    }
    let mut mask = own;
    for scope in scopes {
        match scope {
            Scope::Authority => mask |= 1,
            Scope::Previous => {
                if block != usize::MAX {
                    // Blocks 0..=block; block < 63, so this cannot overflow.
                    mask |= (1u64 << (block + 1)) - 1;
                }
            }
            Scope::PublicKey(_) | Scope::Parameter(_) => return None,
        }
    }
    Some(mask)
}

/// One position of a rule's body or head.
#[derive(Debug, Clone)]
enum Slot {
    Const(Term),
    /// First occurrence of a variable in body order: binds it.
    Bind(usize),
    /// A variable already bound: must be equal.
    Same(usize),
}

#[derive(Debug, Clone)]
struct Atom {
    name: u64,
    slots: Vec<Slot>,
}

#[derive(Debug, Clone)]
struct Expr {
    expression: Expression,
    /// `(variable symbol, slot)` for every variable the expression names
    /// that the body binds (a closure's own parameters included, as
    /// biscuit-auth passes every bound variable).
    inputs: Vec<(u32, usize)>,
    /// Whether a constant of the expression is a symbol outside the
    /// policy's table (then evaluation may need the request's symbols).
    reads_extra_symbols: bool,
    /// Whether an operation reads a string's text or makes a new string.
    /// Without one, strings are only compared by number, which the
    /// request's symbols do not change, so they are not loaded.
    reads_text: bool,
    /// The expression when it is one comparison of two operands
    /// (`$r >= $need`, `$p != "everyone"`): most of the policy's.
    comparison: Option<Comparison>,
}

/// `left op right`, each a variable the body binds or a constant.
#[derive(Debug, Clone)]
struct Comparison {
    left: Operand,
    op: datalog::Binary,
    right: Operand,
}

#[derive(Debug, Clone)]
enum Operand {
    Slot(usize),
    Const(Term),
}

impl Comparison {
    fn of(ops: &[Op], slot_of: &HashMap<u32, usize>) -> Option<Self> {
        use datalog::Binary;
        let operand = |op: &Op| match op {
            Op::Value(Term::Variable(v)) => slot_of.get(v).map(|&slot| Operand::Slot(slot)),
            Op::Value(term) => Some(Operand::Const(term.clone())),
            _ => None,
        };
        let [left, right, Op::Binary(op)] = ops else {
            return None;
        };
        let op = match op {
            Binary::LessThan
            | Binary::GreaterThan
            | Binary::LessOrEqual
            | Binary::GreaterOrEqual
            | Binary::Equal
            | Binary::NotEqual
            | Binary::HeterogeneousEqual
            | Binary::HeterogeneousNotEqual => op.clone(),
            _ => return None,
        };
        Some(Self {
            left: operand(left)?,
            op,
            right: operand(right)?,
        })
    }

    /// What biscuit-auth's `Binary::evaluate` answers for two integers, or
    /// two strings compared for (in)equality (by number, as it compares
    /// them); `None` for anything else, left to it (other types, errors,
    /// an unbound variable).
    fn decide(&self, binding: &[Option<Term>]) -> Option<bool> {
        use datalog::Binary;
        let value = |operand| match operand {
            &Operand::Slot(slot) => binding.get(slot)?.as_ref(),
            Operand::Const(term) => Some(term),
        };
        match (&self.op, value(&self.left)?, value(&self.right)?) {
            (Binary::LessThan, Term::Integer(i), Term::Integer(j)) => Some(i < j),
            (Binary::GreaterThan, Term::Integer(i), Term::Integer(j)) => Some(i > j),
            (Binary::LessOrEqual, Term::Integer(i), Term::Integer(j)) => Some(i <= j),
            (Binary::GreaterOrEqual, Term::Integer(i), Term::Integer(j)) => Some(i >= j),
            (Binary::Equal | Binary::HeterogeneousEqual, Term::Integer(i), Term::Integer(j)) => {
                Some(i == j)
            }
            (
                Binary::NotEqual | Binary::HeterogeneousNotEqual,
                Term::Integer(i),
                Term::Integer(j),
            ) => Some(i != j),
            (Binary::Equal | Binary::HeterogeneousEqual, Term::Str(i), Term::Str(j)) => {
                Some(i == j)
            }
            (Binary::NotEqual | Binary::HeterogeneousNotEqual, Term::Str(i), Term::Str(j)) => {
                Some(i != j)
            }
            _ => None,
        }
    }
}

/// Whether `op` reads the text of a string or makes a string: all that
/// needs a symbol table. Comparisons, arithmetic, logic, set operations
/// and lookups compare symbols by number.
fn reads_text(op: &Op) -> bool {
    use datalog::{Binary, Unary};
    match op {
        Op::Value(_) | Op::Closure(..) => false,
        Op::Unary(unary) => !matches!(unary, Unary::Negate | Unary::Parens),
        Op::Binary(binary) => matches!(
            binary,
            Binary::Contains
                | Binary::Prefix
                | Binary::Suffix
                | Binary::Regex
                | Binary::Add
                | Binary::Ffi(_)
        ),
    }
}

/// A rule, or one query of a check or policy, ready to evaluate.
#[derive(Debug, Clone)]
struct Query {
    /// The body in its written order, each atom with its position.
    body: Vec<(usize, Atom)>,
    /// For each body position `p`, the body with atom `p` first: how the
    /// bindings using one new fact of that atom are enumerated.
    delta_plans: Vec<Vec<(usize, Atom)>>,
    /// The head's name and positions (`Bind` never appears there: every
    /// head variable is `Same`, or `Unbound` when the body lacks it).
    head_name: u64,
    head: Vec<HeadSlot>,
    expressions: Vec<Expr>,
    slots: usize,
    scope: u64,
    origin: u64,
}

#[derive(Debug, Clone)]
enum HeadSlot {
    Const(Term),
    Var(usize),
    /// A head variable the body does not bind: biscuit-auth derives
    /// nothing from such a binding.
    Unbound,
}

impl Query {
    fn prepare(rule: &datalog::Rule, scope: u64, origin: u64, extra_from: u64) -> Self {
        let mut slot_of: HashMap<u32, usize> = HashMap::new();
        for predicate in &rule.body {
            for term in &predicate.terms {
                if let Term::Variable(v) = term {
                    let next = slot_of.len();
                    slot_of.entry(*v).or_insert(next);
                }
            }
        }
        // Which variables are bound depends on the order atoms are matched
        // in: the first atom to mention one binds it.
        let plan = |order: &[usize]| -> Vec<(usize, Atom)> {
            let mut bound = vec![false; slot_of.len()];
            order
                .iter()
                .map(|&at| {
                    let predicate = &rule.body[at];
                    let slots = predicate
                        .terms
                        .iter()
                        .map(|term| match term {
                            Term::Variable(v) => {
                                let slot = slot_of[v];
                                if std::mem::replace(&mut bound[slot], true) {
                                    Slot::Same(slot)
                                } else {
                                    Slot::Bind(slot)
                                }
                            }
                            other => Slot::Const(other.clone()),
                        })
                        .collect();
                    (
                        at,
                        Atom {
                            name: predicate.name,
                            slots,
                        },
                    )
                })
                .collect()
        };
        let written: Vec<usize> = (0..rule.body.len()).collect();
        let body = plan(&written);
        let delta_plans = written
            .iter()
            .map(|&first| {
                let order: Vec<usize> = std::iter::once(first)
                    .chain(written.iter().copied().filter(|&i| i != first))
                    .collect();
                plan(&order)
            })
            .collect();
        let head = rule
            .head
            .terms
            .iter()
            .map(|term| match term {
                Term::Variable(v) => match slot_of.get(v) {
                    Some(&slot) => HeadSlot::Var(slot),
                    None => HeadSlot::Unbound,
                },
                other => HeadSlot::Const(other.clone()),
            })
            .collect();
        let expressions = rule
            .expressions
            .iter()
            .map(|expression| {
                let mut names = BTreeSet::new();
                let mut reads_extra_symbols = false;
                let mut text = false;
                walk_ops(&expression.ops, &mut |op| {
                    text |= reads_text(op);
                    match op {
                        Op::Value(term) => {
                            if let Term::Variable(v) = term {
                                names.insert(*v);
                            }
                            reads_extra_symbols |= mentions_extra(term, extra_from);
                        }
                        Op::Closure(params, _) => names.extend(params.iter().copied()),
                        _ => {}
                    }
                });
                Expr {
                    expression: expression.clone(),
                    inputs: names
                        .into_iter()
                        .filter_map(|v| slot_of.get(&v).map(|&slot| (v, slot)))
                        .collect(),
                    reads_extra_symbols,
                    reads_text: text,
                    comparison: Comparison::of(&expression.ops, &slot_of),
                }
            })
            .collect();
        Self {
            body,
            delta_plans,
            head_name: rule.head.name,
            head,
            expressions,
            slots: slot_of.len(),
            scope,
            origin,
        }
    }
}

fn walk_ops(ops: &[Op], visit: &mut impl FnMut(&Op)) {
    for op in ops {
        visit(op);
        if let Op::Closure(_, inner) = op {
            walk_ops(inner, visit);
        }
    }
}

/// Whether `term` names a symbol at or beyond `extra_from`.
fn mentions_extra(term: &Term, extra_from: u64) -> bool {
    match term {
        Term::Str(s) => *s >= extra_from,
        Term::Set(set) => set.iter().any(|t| mentions_extra(t, extra_from)),
        Term::Array(items) => items.iter().any(|t| mentions_extra(t, extra_from)),
        Term::Map(map) => map.iter().any(|(k, v)| {
            matches!(k, MapKey::Str(s) if *s >= extra_from) || mentions_extra(v, extra_from)
        }),
        _ => false,
    }
}

/// The policy's facts of one predicate, also by first term: most body atoms
/// over them (`agent_op($op, $lvl)` with `$op` known) look one up.
#[derive(Debug, Default)]
struct PolicyFacts {
    all: Vec<Vec<Term>>,
    by_first: QuickMap<Term, Vec<usize>>,
}

#[derive(Debug, Clone)]
struct PreparedCheck {
    kind: CheckKind,
    queries: Vec<Query>,
    text: CheckText,
}

/// A check as biscuit-auth prints it in a failed-check error: the policy's
/// printed once, a token's only when it fails.
#[derive(Debug, Clone)]
enum CheckText {
    Ready(String),
    /// In the token's own symbols ([`PreparedToken::symbols`]).
    InToken(datalog::Check),
}

impl CheckText {
    fn print(&self, token: &PreparedToken) -> String {
        match self {
            CheckText::Ready(text) => text.clone(),
            CheckText::InToken(check) => token.symbols.print_check(check),
        }
    }
}

/// Renumbers a token's symbols into the policy's (and, for those the
/// policy lacks, the token's own numbers beyond them), by text, as
/// biscuit-auth's conversions do, without copying the policy's table.
struct Remap<'a> {
    engine: &'a Engine,
    from: &'a SymbolTable,
    extras: Vec<String>,
    extra_index: HashMap<String, u64>,
}

/// Symbols below this are biscuit-auth's defaults, numbered the same in
/// every table.
const FIRST_CUSTOM_SYMBOL: u64 = 1024;

impl Remap<'_> {
    fn id(&mut self, id: u64) -> Result<u64, Unsupported> {
        if id < FIRST_CUSTOM_SYMBOL {
            return Ok(id);
        }
        let text = self
            .from
            .get_symbol(id)
            .ok_or(Unsupported("a symbol the token does not define"))?;
        if let Some(&i) = self.engine.index.get(text) {
            return Ok(i);
        }
        if let Some(&i) = self.extra_index.get(text) {
            return Ok(i);
        }
        let i = self.engine.extra_from + self.extras.len() as u64;
        self.extras.push(text.to_owned());
        self.extra_index.insert(text.to_owned(), i);
        Ok(i)
    }

    fn variable(&mut self, v: u32) -> Result<u32, Unsupported> {
        u32::try_from(self.id(v.into())?).map_err(|_| Unsupported("too many symbols"))
    }

    fn term(&mut self, term: &Term) -> Result<Term, Unsupported> {
        Ok(match term {
            Term::Str(id) => Term::Str(self.id(*id)?),
            Term::Variable(v) => Term::Variable(self.variable(*v)?),
            Term::Set(set) => {
                Term::Set(set.iter().map(|t| self.term(t)).collect::<Result<_, _>>()?)
            }
            Term::Array(items) => Term::Array(
                items
                    .iter()
                    .map(|t| self.term(t))
                    .collect::<Result<_, _>>()?,
            ),
            Term::Map(map) => {
                let mut out = BTreeMap::new();
                for (k, v) in map {
                    let key = match k {
                        MapKey::Str(id) => MapKey::Str(self.id(*id)?),
                        MapKey::Integer(i) => MapKey::Integer(*i),
                    };
                    out.insert(key, self.term(v)?);
                }
                Term::Map(out)
            }
            other => other.clone(),
        })
    }

    fn predicate(&mut self, p: &datalog::Predicate) -> Result<datalog::Predicate, Unsupported> {
        Ok(datalog::Predicate {
            name: self.id(p.name)?,
            terms: p
                .terms
                .iter()
                .map(|t| self.term(t))
                .collect::<Result<_, _>>()?,
        })
    }

    fn ops(&mut self, ops: &[Op]) -> Result<Vec<Op>, Unsupported> {
        ops.iter()
            .map(|op| {
                Ok(match op {
                    Op::Value(term) => Op::Value(self.term(term)?),
                    Op::Unary(datalog::Unary::Ffi(_)) | Op::Binary(datalog::Binary::Ffi(_)) => {
                        return Err(Unsupported("an external function"))
                    }
                    Op::Closure(params, body) => Op::Closure(
                        params
                            .iter()
                            .map(|p| self.variable(*p))
                            .collect::<Result<_, _>>()?,
                        self.ops(body)?,
                    ),
                    other => other.clone(),
                })
            })
            .collect()
    }

    fn rule(&mut self, rule: &datalog::Rule) -> Result<datalog::Rule, Unsupported> {
        Ok(datalog::Rule {
            head: self.predicate(&rule.head)?,
            body: rule
                .body
                .iter()
                .map(|p| self.predicate(p))
                .collect::<Result<_, _>>()?,
            expressions: rule
                .expressions
                .iter()
                .map(|e| {
                    Ok(Expression {
                        ops: self.ops(&e.ops)?,
                    })
                })
                .collect::<Result<_, Unsupported>>()?,
            scopes: rule.scopes.clone(),
        })
    }
}

#[derive(Debug, Clone, Default)]
struct PreparedBlock {
    facts: Vec<datalog::Fact>,
    rules: Vec<Query>,
    checks: Vec<PreparedCheck>,
}

/// A token's blocks in the policy's symbols, prepared once per token.
#[derive(Debug, Clone)]
pub struct PreparedToken {
    engine: u64,
    /// The token's symbols the policy does not have, numbered from the
    /// engine's first extra symbol on.
    strings: Vec<String>,
    blocks: Vec<PreparedBlock>,
    /// Every predicate the token's rules derive.
    heads: Vec<u64>,
    /// The token's own symbol table, to print a failed check as
    /// biscuit-auth does.
    symbols: SymbolTable,
}

/// Why a token is left to biscuit-auth's own authorizer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsupported(pub &'static str);

/// The policy, prepared once.
pub struct Engine {
    id: u64,
    symbols: SymbolTable,
    /// Every symbol of `symbols`, the default ones included, by text.
    /// Never written after start-up, so the texts a request looks up
    /// cannot lengthen its chains: the quick hash is enough.
    index: QuickMap<String, u64>,
    /// The first symbol number beyond `symbols` (where a
    /// `TemporarySymbolTable` over it starts numbering).
    extra_from: u64,
    time: u64,
    /// The policy's facts (authorizer origin), by predicate name.
    facts: QuickMap<u64, PolicyFacts>,
    fact_set: QuickMap<u64, QuickSet<Vec<Term>>>,
    /// Where each predicate appears in the policy's rule bodies.
    uses: QuickMap<u64, Vec<(usize, usize)>>,
    fact_count: usize,
    rules: Vec<Query>,
    /// For each rule, what of its body only a request or a token can
    /// provide.
    rule_needs: Vec<Needs>,
    checks: Vec<PreparedCheck>,
    policies: Vec<(PolicyKind, Vec<Query>)>,
    limits: AuthorizerLimits,
    /// The server registers no external functions.
    no_functions: HashMap<String, biscuit_auth::datalog::ExternFunc>,
}

/// What a policy rule's body names that neither the policy's facts nor its
/// rules provide: only a request's or a token's facts (or a token's rules)
/// can. A rule missing one can never match, so a request without it never
/// tries the rule.
#[derive(Debug, Default)]
struct Needs {
    /// The predicates.
    names: Vec<u64>,
    /// Its atoms over them with every term written out
    /// (`operation("agent:create")`): that very fact must be given.
    facts: Vec<(u64, Vec<Term>)>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("rules", &self.rules.len())
            .field("facts", &self.fact_count)
            .finish()
    }
}

impl Engine {
    /// Prepare `policy`; `None` when it uses what this evaluator leaves to
    /// biscuit-auth (public-key scopes).
    pub fn new(
        policy: &AuthorizerBuilder,
        limits: AuthorizerLimits,
    ) -> Result<Option<Self>, String> {
        static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let authorizer = policy
            .clone()
            .build_unauthenticated()
            .map_err(|e| e.to_string())?;
        let (facts, rules, checks, policies) = authorizer.dump();
        let mut symbols = SymbolTable::new();

        let mut by_name: QuickMap<u64, PolicyFacts> = QuickMap::default();
        let mut fact_set: QuickMap<u64, QuickSet<Vec<Term>>> = QuickMap::default();
        let mut fact_count = 0;
        for fact in &facts {
            let fact: datalog::Fact = fact.convert(&mut symbols);
            let new = fact_set
                .entry(fact.predicate.name)
                .or_default()
                .insert(fact.predicate.terms.clone());
            if new {
                fact_count += 1;
                let facts = by_name.entry(fact.predicate.name).or_default();
                if let Some(first) = fact.predicate.terms.first() {
                    facts
                        .by_first
                        .entry(first.clone())
                        .or_default()
                        .push(facts.all.len());
                }
                facts.all.push(fact.predicate.terms);
            }
        }
        let mut converted_rules = Vec::new();
        for rule in &rules {
            let Some(scope) = trusted(&rule.scopes, DEFAULT_TRUST, usize::MAX) else {
                return Ok(None);
            };
            converted_rules.push((rule.convert(&mut symbols), scope));
        }
        let mut converted_checks = Vec::new();
        for check in &checks {
            let mut queries = Vec::new();
            for query in &check.queries {
                let Some(scope) = trusted(&query.scopes, DEFAULT_TRUST, usize::MAX) else {
                    return Ok(None);
                };
                queries.push((query.convert(&mut symbols), scope));
            }
            converted_checks.push((check.kind.clone(), queries, check.to_string()));
        }
        let mut converted_policies = Vec::new();
        for policy in &policies {
            let mut queries = Vec::new();
            for query in &policy.queries {
                let Some(scope) = trusted(&query.scopes, DEFAULT_TRUST, usize::MAX) else {
                    return Ok(None);
                };
                queries.push((query.convert(&mut symbols), scope));
            }
            converted_policies.push((policy.kind.clone(), queries));
        }
        let time = symbols.insert("time");

        // Where symbols beyond the table are numbered from: what the next
        // insertion into it would get.
        let extra_from = symbols.clone().insert("\u{0}tessera: beyond the policy");
        let mut index = QuickMap::default();
        for i in 0.. {
            match symbols.get_symbol(i) {
                Some(s) => index.insert(s.to_owned(), i),
                None => break,
            };
        }
        for s in symbols.strings() {
            if let Some(i) = symbols.get(&s) {
                index.insert(s, i);
            }
        }

        let prepare = |(rule, scope): &(datalog::Rule, u64)| {
            Query::prepare(rule, *scope, AUTHORIZER, extra_from)
        };
        let rules: Vec<Query> = converted_rules.iter().map(prepare).collect();
        let mut uses: QuickMap<u64, Vec<(usize, usize)>> = QuickMap::default();
        for (r, rule) in rules.iter().enumerate() {
            for (at, atom) in &rule.body {
                uses.entry(atom.name).or_default().push((r, *at));
            }
        }
        let provided: QuickSet<u64> = rules
            .iter()
            .map(|rule| rule.head_name)
            .chain(by_name.keys().copied())
            .collect();
        let rule_needs = rules
            .iter()
            .map(|rule| {
                let mut needs = Needs::default();
                for (_, atom) in &rule.body {
                    if provided.contains(&atom.name) {
                        continue;
                    }
                    needs.names.push(atom.name);
                    let ground: Option<Vec<Term>> = atom
                        .slots
                        .iter()
                        .map(|slot| match slot {
                            Slot::Const(term) => Some(term.clone()),
                            _ => None,
                        })
                        .collect();
                    if let Some(terms) = ground {
                        needs.facts.push((atom.name, terms));
                    }
                }
                needs.names.sort_unstable();
                needs.names.dedup();
                needs
            })
            .collect();
        Ok(Some(Self {
            id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            index,
            uses,
            extra_from,
            time,
            fact_count,
            facts: by_name,
            fact_set,
            rules,
            rule_needs,
            checks: converted_checks
                .iter()
                .map(|(kind, queries, text)| PreparedCheck {
                    kind: kind.clone(),
                    queries: queries.iter().map(prepare).collect(),
                    text: CheckText::Ready(text.clone()),
                })
                .collect(),
            policies: converted_policies
                .iter()
                .map(|(kind, queries)| (kind.clone(), queries.iter().map(prepare).collect()))
                .collect(),
            symbols,
            limits,
            no_functions: HashMap::new(),
        }))
    }

    /// Translate `token`'s blocks into the policy's symbols.
    pub fn prepare(&self, token: &Biscuit) -> Result<PreparedToken, Unsupported> {
        if token.block_count() > MAX_BLOCKS {
            return Err(Unsupported("more blocks than the evaluator's origins hold"));
        }
        if token.external_public_keys().iter().any(Option::is_some) {
            return Err(Unsupported("third-party blocks"));
        }
        // The blocks as biscuit-auth verified them (biscuit-auth keeps its
        // own decoding private), decoded once more here.
        let container = token.container().to_proto();
        let mut strings = Vec::new();
        let mut raw = Vec::with_capacity(1 + container.blocks.len());
        for signed in std::iter::once(&container.authority).chain(&container.blocks) {
            let mut block = schema::Block::decode(&signed.block[..])
                .map_err(|_| Unsupported("a block does not decode"))?;
            if !block.public_keys.is_empty() {
                return Err(Unsupported("public keys in a block"));
            }
            // One table for the whole token, built once. biscuit-auth
            // refused the token already if a block's symbols overlapped
            // the defaults or an earlier block's, and converting a block
            // reads none of its symbols, so they are moved, not copied.
            strings.append(&mut block.symbols);
            raw.push(block);
        }
        let token_symbols = token_symbol_table(strings)?;

        let unsupported_format = |_| Unsupported("a block uses an unsupported format");
        let scope_unsupported = Unsupported("a public-key scope");
        let mut remap = Remap {
            engine: self,
            from: &token_symbols,
            extras: Vec::new(),
            extra_index: HashMap::new(),
        };
        // Converted first, prepared once every symbol of the token is known
        // (preparing looks at which symbols lie beyond the policy's).
        type Converted = (
            Vec<datalog::Fact>,
            Vec<(datalog::Rule, u64)>,
            Vec<(CheckKind, Vec<(datalog::Rule, u64)>, datalog::Check)>,
        );
        let mut converted: Vec<Converted> = Vec::with_capacity(raw.len());
        for (i, block) in raw.iter().enumerate() {
            let scopes = block
                .scope
                .iter()
                .map(convert::proto_scope_to_token_scope)
                .collect::<Result<Vec<_>, _>>()
                .map_err(unsupported_format)?;
            let block = BlockParts::convert(block).map_err(unsupported_format)?;
            let trust = |scopes: &[Scope], default: u64| {
                trusted(scopes, default, i).ok_or(scope_unsupported.clone())
            };
            let scopes_of = |scopes: &[_]| {
                scopes
                    .iter()
                    .map(|s| Scope::convert_from(s, &token_symbols))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(unsupported_format)
            };
            let block_trust = trust(&scopes_of(&scopes)?, DEFAULT_TRUST)?;
            let mut facts = Vec::with_capacity(block.facts.len());
            for fact in &block.facts {
                facts.push(datalog::Fact {
                    predicate: remap.predicate(&fact.predicate)?,
                });
            }
            let mut rules = Vec::with_capacity(block.rules.len());
            for rule in &block.rules {
                if rule.validate_variables(&token_symbols).is_err() {
                    return Err(Unsupported("a rule biscuit-auth refuses"));
                }
                let scope = trust(&scopes_of(&rule.scopes)?, block_trust)?;
                rules.push((remap.rule(rule)?, scope));
            }
            let mut checks = Vec::with_capacity(block.checks.len());
            for check in &block.checks {
                let mut queries = Vec::with_capacity(check.queries.len());
                for query in &check.queries {
                    let scope = trust(&scopes_of(&query.scopes)?, block_trust)?;
                    queries.push((remap.rule(query)?, scope));
                }
                checks.push((check.kind.clone(), queries, check.clone()));
            }
            converted.push((facts, rules, checks));
        }
        let strings = remap.extras;
        let extra_from = self.extra_from;
        let blocks: Vec<PreparedBlock> = converted
            .into_iter()
            .enumerate()
            .map(|(i, (facts, rules, checks))| {
                let prepare = |(rule, scope): &(datalog::Rule, u64)| {
                    Query::prepare(rule, *scope, block_bit(i), extra_from)
                };
                PreparedBlock {
                    facts,
                    rules: rules.iter().map(prepare).collect(),
                    checks: checks
                        .into_iter()
                        .map(|(kind, queries, source)| PreparedCheck {
                            kind,
                            queries: queries.iter().map(prepare).collect(),
                            text: CheckText::InToken(source),
                        })
                        .collect(),
                }
            })
            .collect();
        let mut heads: Vec<u64> = blocks
            .iter()
            .flat_map(|block| block.rules.iter().map(|rule| rule.head_name))
            .collect();
        heads.sort_unstable();
        heads.dedup();
        Ok(PreparedToken {
            engine: self.id,
            strings,
            blocks,
            heads,
            symbols: token_symbols,
        })
    }

    /// Whether `token` was prepared by this engine.
    pub fn owns(&self, token: &PreparedToken) -> bool {
        token.engine == self.id
    }

    /// Whether a block of `token` from `from` on names the `time`
    /// predicate anywhere (a fact, a rule's head or body, a check): what
    /// `policy::mentions_time` finds in their printed source, without
    /// printing them.
    pub fn reads_time(&self, token: &PreparedToken, from: usize) -> bool {
        let time = self.time;
        let query_names = |query: &Query| {
            query.head_name == time || query.body.iter().any(|(_, atom)| atom.name == time)
        };
        token.blocks.iter().skip(from).any(|block| {
            block.facts.iter().any(|fact| fact.predicate.name == time)
                || block.rules.iter().any(query_names)
                || block
                    .checks
                    .iter()
                    .any(|check| check.queries.iter().any(query_names))
        })
    }

    /// Decide one request as `Authorizer::authorize` would with the policy,
    /// the token, `time(now)` and `facts`: the index of the allow policy
    /// that matched, or biscuit-auth's error.
    pub fn authorize<'f>(
        &self,
        token: &PreparedToken,
        facts: impl IntoIterator<Item = (&'f str, &'f [builder::Term])>,
        now: u64,
    ) -> Result<usize, TokenError> {
        let started = Instant::now();
        let mut world = World::new(self, token);
        world.add(AUTHORIZER, self.time, vec![Term::Date(now)]);
        for (name, terms) in facts {
            let name = world.intern(name);
            let terms = terms
                .iter()
                .map(|t| world.term(t))
                .collect::<Result<Vec<_>, _>>()?;
            world.add(AUTHORIZER, name, terms);
        }
        for (i, block) in token.blocks.iter().enumerate() {
            for fact in &block.facts {
                world.add(
                    block_bit(i),
                    fact.predicate.name,
                    fact.predicate.terms.clone(),
                );
            }
        }
        world.run(&self.limits, started)?;
        let limit = self.limits.max_time;
        let timed_out = || started.elapsed() >= limit;
        if timed_out() {
            return Err(TokenError::RunLimit(RunLimit::Timeout));
        }

        let mut failed = Vec::new();
        for (i, check) in self.checks.iter().enumerate() {
            if !world.check(check, &timed_out)? {
                failed.push(FailedCheck::Authorizer(FailedAuthorizerCheck {
                    check_id: i as u32,
                    rule: check.text.print(token),
                }));
            }
        }
        if let Some(authority) = token.blocks.first() {
            for (j, check) in authority.checks.iter().enumerate() {
                if !world.check(check, &timed_out)? {
                    failed.push(block_failure(token, 0, j, check));
                }
            }
        }
        let mut matched = None;
        'policies: for (i, (kind, queries)) in self.policies.iter().enumerate() {
            for query in queries {
                let found = world.find(query)?;
                if timed_out() {
                    return Err(TokenError::RunLimit(RunLimit::Timeout));
                }
                if found {
                    matched = Some(match kind {
                        PolicyKind::Allow => Ok(i),
                        PolicyKind::Deny => Err(i),
                    });
                    break 'policies;
                }
            }
        }
        for (i, block) in token.blocks.iter().enumerate().skip(1) {
            for (j, check) in block.checks.iter().enumerate() {
                if !world.check(check, &timed_out)? {
                    failed.push(block_failure(token, i, j, check));
                }
            }
        }
        match (matched, failed.is_empty()) {
            (Some(Ok(i)), true) => Ok(i),
            (None, _) => Err(TokenError::FailedLogic(Logic::NoMatchingPolicy {
                checks: failed,
            })),
            (Some(Ok(i)), _) => Err(TokenError::FailedLogic(Logic::Unauthorized {
                policy: MatchedPolicy::Allow(i),
                checks: failed,
            })),
            (Some(Err(i)), _) => Err(TokenError::FailedLogic(Logic::Unauthorized {
                policy: MatchedPolicy::Deny(i),
                checks: failed,
            })),
        }
    }
}

impl Engine {
    /// Every fact named `predicate` the policy derives from `facts` alone
    /// (no token, no clock), as `Authorizer::query` over an unauthenticated
    /// authorizer returns them.
    ///
    /// Only the server's own facts take part (no token, nothing a holder
    /// wrote), and they grow with the host (everyone's accounts, a large
    /// group's members): the fact limit grows with them, so that saying who
    /// reaches an agent shared with everyone works on a host of any size.
    pub fn derive<'f>(
        &self,
        facts: impl IntoIterator<Item = (&'f str, &'f [builder::Term])>,
        predicate: &str,
    ) -> Result<Vec<Vec<builder::Term>>, TokenError> {
        let started = Instant::now();
        let facts: Vec<_> = facts.into_iter().collect();
        let limits = AuthorizerLimits {
            max_facts: self.limits.max_facts.saturating_add(4 * facts.len() as u64),
            ..self.limits.clone()
        };
        let nothing = PreparedToken {
            engine: self.id,
            strings: Vec::new(),
            blocks: Vec::new(),
            heads: Vec::new(),
            symbols: SymbolTable::new(),
        };
        let mut world = World::new(self, &nothing);
        for (name, terms) in facts {
            let name = world.intern(name);
            let terms = terms
                .iter()
                .map(|t| world.term(t))
                .collect::<Result<Vec<_>, _>>()?;
            world.add(AUTHORIZER, name, terms);
        }
        world.run(&limits, started)?;
        let name = world.intern(predicate);
        let mut found: BTreeSet<&Vec<Term>> = BTreeSet::new();
        if let Some(policy_facts) = self.facts.get(&name) {
            found.extend(policy_facts.all.iter());
        }
        if let Some(stored) = world.facts.get(&name) {
            found.extend(stored.iter().map(|f| &f.terms));
        }
        found
            .into_iter()
            .map(|terms| terms.iter().map(|t| world.builder_term(t)).collect())
            .collect()
    }
}

fn block_failure(
    token: &PreparedToken,
    block: usize,
    check: usize,
    prepared: &PreparedCheck,
) -> FailedCheck {
    FailedCheck::Block(FailedBlockCheck {
        block_id: block as u32,
        check_id: check as u32,
        rule: prepared.text.print(token),
    })
}

/// The token's symbols, numbered as biscuit-auth numbers them. It already
/// refused a token whose blocks' symbols overlap the defaults or each
/// other, so the table is built by appending, without the two hash sets
/// per table `SymbolTable::from` builds to check that again (a tenth of
/// preparing a session token). A block repeating one of its own symbols
/// (allowed) is numbered by `SymbolTable::from` as written.
fn token_symbol_table(strings: Vec<String>) -> Result<SymbolTable, Unsupported> {
    let mut table = SymbolTable::new();
    for s in &strings {
        let before = table.current_offset();
        table.insert(s);
        if table.current_offset() != before + 1 {
            return SymbolTable::from(strings)
                .map_err(|_| Unsupported("a block's symbols overlap"));
        }
    }
    Ok(table)
}

/// What evaluating reads of a block but its scopes (their type is not
/// nameable outside biscuit-auth): `proto_block_to_token_block` without
/// its symbol table (the token's is built once, see
/// [`token_symbol_table`]) or its version checks (biscuit-auth made them
/// converting the same bytes when it verified the token).
struct BlockParts {
    facts: Vec<datalog::Fact>,
    rules: Vec<datalog::Rule>,
    checks: Vec<datalog::Check>,
}

impl BlockParts {
    fn convert(block: &schema::Block) -> Result<Self, biscuit_auth::error::Format> {
        let version = block.version.unwrap_or(0);
        Ok(Self {
            facts: block
                .facts
                .iter()
                .map(convert::proto_fact_to_token_fact)
                .collect::<Result<_, _>>()?,
            rules: block
                .rules
                .iter()
                .map(|rule| convert::proto_rule_to_token_rule(rule, version).map(|(rule, _)| rule))
                .collect::<Result<_, _>>()?,
            checks: block
                .checks
                .iter()
                .map(|check| convert::proto_check_to_token_check(check, version))
                .collect::<Result<_, _>>()?,
        })
    }
}

/// One stored fact of a request's world.
struct Stored {
    origin: u64,
    terms: Vec<Term>,
    /// The iteration that derived it (0: given).
    round: u32,
}

/// Which of a predicate's facts a body atom ranges over in an iteration.
#[derive(Clone, Copy)]
enum Range {
    /// Everything known (queries after the run, and atoms after the delta).
    All,
    /// Derived before the previous iteration.
    Before(u32),
    /// Derived by the previous iteration.
    Exactly(u32),
}

impl Range {
    fn holds(self, round: u32) -> bool {
        match self {
            Range::All => true,
            Range::Before(r) => round < r,
            Range::Exactly(r) => round == r,
        }
    }
}

/// A request's world: the policy's facts (shared, never copied) and the
/// request's, the token's and everything derived.
struct World<'e> {
    engine: &'e Engine,
    token: &'e PreparedToken,
    /// The request's own symbols beyond the policy's and the token's.
    local: Vec<String>,
    local_index: QuickMap<String, u64>,
    facts: QuickMap<u64, Vec<Stored>>,
    /// The stored facts of the predicates in `indexed`, by origin and name,
    /// for telling new from known.
    seen: QuickMap<(u64, u64), QuickSet<Vec<Term>>>,
    indexed: QuickSet<u64>,
    len: usize,
    /// The bindings being built, reused from rule to rule.
    scratch: std::cell::RefCell<Vec<Option<Term>>>,
    /// A derived head being built, and an expression's inputs: reused.
    head_scratch: std::cell::RefCell<Vec<Term>>,
    values: std::cell::RefCell<HashMap<u32, Term>>,
}

/// The facts one iteration derives, new ones only.
#[derive(Default)]
struct Derived {
    facts: Vec<(u64, u64, Vec<Term>)>,
    /// The same, by origin and name, to tell a new fact from one already
    /// derived: only once there are more than a scan is quick for (an
    /// ordinary request's iteration derives a handful).
    seen: QuickMap<(u64, u64), QuickSet<Vec<Term>>>,
}

impl Derived {
    fn contains(&self, origin: u64, name: u64, terms: &[Term]) -> bool {
        if self.facts.len() <= SCAN_UP_TO {
            return self
                .facts
                .iter()
                .any(|(o, n, t)| *n == name && *o == origin && t.as_slice() == terms);
        }
        self.seen
            .get(&(origin, name))
            .is_some_and(|set| set.contains(terms))
    }

    fn push(&mut self, origin: u64, name: u64, terms: Vec<Term>) {
        if self.facts.len() == SCAN_UP_TO {
            for (o, n, t) in &self.facts {
                self.seen.entry((*o, *n)).or_default().insert(t.clone());
            }
        }
        if self.facts.len() >= SCAN_UP_TO {
            self.seen
                .entry((origin, name))
                .or_default()
                .insert(terms.clone());
        }
        self.facts.push((origin, name, terms));
    }

    /// The iteration's facts, leaving it empty for the next.
    fn take(&mut self) -> Vec<(u64, u64, Vec<Term>)> {
        self.seen.clear();
        std::mem::take(&mut self.facts)
    }
}

/// How a search over bindings goes on.
enum Flow {
    Continue,
    Stop,
}

impl<'e> World<'e> {
    fn new(engine: &'e Engine, token: &'e PreparedToken) -> Self {
        Self {
            engine,
            token,
            local: Vec::new(),
            local_index: QuickMap::default(),
            facts: QuickMap::with_capacity_and_hasher(32, Quick::default()),
            seen: QuickMap::default(),
            indexed: QuickSet::default(),
            scratch: std::cell::RefCell::new(Vec::with_capacity(8)),
            head_scratch: std::cell::RefCell::new(Vec::with_capacity(4)),
            values: std::cell::RefCell::new(HashMap::with_capacity(4)),
            len: engine.fact_count,
        }
    }

    /// An empty binding of `slots` variables (enumerations never nest).
    fn binding(&self, slots: usize) -> std::cell::RefMut<'_, Vec<Option<Term>>> {
        let mut binding = self.scratch.borrow_mut();
        binding.clear();
        binding.resize(slots, None);
        binding
    }

    fn intern(&mut self, s: &str) -> u64 {
        if let Some(&i) = self.engine.index.get(s) {
            return i;
        }
        if let Some(at) = self.token.strings.iter().position(|t| t == s) {
            return self.engine.extra_from + at as u64;
        }
        if let Some(&i) = self.local_index.get(s) {
            return i;
        }
        let i = self.engine.extra_from + (self.token.strings.len() + self.local.len()) as u64;
        self.local.push(s.to_owned());
        self.local_index.insert(s.to_owned(), i);
        i
    }

    fn term(&mut self, term: &builder::Term) -> Result<Term, TokenError> {
        Ok(match term {
            builder::Term::Str(s) => Term::Str(self.intern(s)),
            builder::Term::Integer(i) => Term::Integer(*i),
            builder::Term::Date(d) => Term::Date(*d),
            builder::Term::Bytes(b) => Term::Bytes(b.clone()),
            builder::Term::Bool(b) => Term::Bool(*b),
            builder::Term::Null => Term::Null,
            builder::Term::Set(set) => Term::Set(
                set.iter()
                    .map(|t| self.term(t))
                    .collect::<Result<BTreeSet<_>, _>>()?,
            ),
            builder::Term::Array(items) => Term::Array(
                items
                    .iter()
                    .map(|t| self.term(t))
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            builder::Term::Map(map) => {
                let mut out = BTreeMap::new();
                for (k, v) in map {
                    let key = match k {
                        builder::MapKey::Integer(i) => MapKey::Integer(*i),
                        builder::MapKey::Str(s) => MapKey::Str(self.intern(s)),
                        builder::MapKey::Parameter(_) => return Err(not_a_fact()),
                    };
                    out.insert(key, self.term(v)?);
                }
                Term::Map(out)
            }
            builder::Term::Variable(_) | builder::Term::Parameter(_) => return Err(not_a_fact()),
        })
    }

    fn symbol(&self, id: u64) -> Option<&str> {
        if id < self.engine.extra_from {
            return self.engine.symbols.get_symbol(id);
        }
        let at = (id - self.engine.extra_from) as usize;
        match at.checked_sub(self.token.strings.len()) {
            None => self.token.strings.get(at).map(String::as_str),
            Some(local) => self.local.get(local).map(String::as_str),
        }
    }

    fn builder_term(&self, term: &Term) -> Result<builder::Term, TokenError> {
        let text = |id: u64| {
            self.symbol(id)
                .map(str::to_owned)
                .ok_or(TokenError::InternalError)
        };
        Ok(match term {
            Term::Str(id) => builder::Term::Str(text(*id)?),
            Term::Integer(i) => builder::Term::Integer(*i),
            Term::Date(d) => builder::Term::Date(*d),
            Term::Bytes(b) => builder::Term::Bytes(b.clone()),
            Term::Bool(b) => builder::Term::Bool(*b),
            Term::Null => builder::Term::Null,
            Term::Set(set) => builder::Term::Set(
                set.iter()
                    .map(|t| self.builder_term(t))
                    .collect::<Result<_, _>>()?,
            ),
            Term::Array(items) => builder::Term::Array(
                items
                    .iter()
                    .map(|t| self.builder_term(t))
                    .collect::<Result<_, _>>()?,
            ),
            Term::Map(map) => {
                let mut out = BTreeMap::new();
                for (k, v) in map {
                    let key = match k {
                        MapKey::Integer(i) => builder::MapKey::Integer(*i),
                        MapKey::Str(id) => builder::MapKey::Str(text(*id)?),
                    };
                    out.insert(key, self.builder_term(v)?);
                }
                builder::Term::Map(out)
            }
            Term::Variable(_) => return Err(TokenError::InternalError),
        })
    }

    /// Add a given fact (round 0); false if it was known.
    fn add(&mut self, origin: u64, name: u64, terms: Vec<Term>) {
        self.store(origin, name, terms, 0);
    }

    fn store(&mut self, origin: u64, name: u64, terms: Vec<Term>, round: u32) {
        if self.known(origin, name, &terms) {
            return;
        }
        let stored = self.facts.entry(name).or_default();
        // Few facts share a name in an ordinary request: they are compared
        // one by one. A predicate that grows (a hostile block's, up to the
        // fact limit) gets a hash index from then on.
        match stored.len() {
            n if n < SCAN_UP_TO => {}
            SCAN_UP_TO => {
                for fact in stored.iter() {
                    self.seen
                        .entry((fact.origin, name))
                        .or_default()
                        .insert(fact.terms.clone());
                }
                self.indexed.insert(name);
                self.seen
                    .entry((origin, name))
                    .or_default()
                    .insert(terms.clone());
            }
            _ => {
                self.seen
                    .entry((origin, name))
                    .or_default()
                    .insert(terms.clone());
            }
        }
        stored.push(Stored {
            origin,
            terms,
            round,
        });
        self.len += 1;
    }

    fn known(&self, origin: u64, name: u64, terms: &[Term]) -> bool {
        if origin == AUTHORIZER
            && self
                .engine
                .fact_set
                .get(&name)
                .is_some_and(|set| set.contains(terms))
        {
            return true;
        }
        if self.indexed.contains(&name) {
            return self
                .seen
                .get(&(origin, name))
                .is_some_and(|set| set.contains(terms));
        }
        self.facts.get(&name).is_some_and(|facts| {
            facts
                .iter()
                .any(|f| f.origin == origin && f.terms.as_slice() == terms)
        })
    }

    /// Whether any fact named `name` visible to `scope` was derived by
    /// iteration `round` (the policy's and the given facts are round 0).
    fn has_round(&self, name: u64, scope: u64, round: u32) -> bool {
        if round == 0 && scope & AUTHORIZER != 0 && self.engine.facts.contains_key(&name) {
            return true;
        }
        self.facts.get(&name).is_some_and(|facts| {
            facts
                .iter()
                .rev()
                .take_while(|f| f.round >= round)
                .any(|f| f.round == round && f.origin & !scope == 0)
        })
    }

    /// Apply rules until nothing new appears, as `World::run_with_limits`:
    /// the first iteration tries every binding; each later one only those
    /// using a fact the iteration before it derived, which are exactly the
    /// bindings a naive iteration would find that it had not found before.
    fn run(&mut self, limits: &AuthorizerLimits, started: Instant) -> Result<(), TokenError> {
        let deadline = started + limits.max_time;
        let engine = self.engine;
        let token = self.token;
        let token_rules = || token.blocks.iter().flat_map(|b| b.rules.iter());
        let mut iterations: u64 = 0;
        let mut round: u32 = 1;
        let mut fresh_names: Vec<u64> = Vec::new();
        let mut derived = Derived::default();
        // Skipping a rule that can never match derives what trying it
        // would: nothing, and no expression is evaluated either way.
        // Only given facts (round 0) are stored yet, and what a token's
        // rules may derive counts as present.
        let derivable = |name: &u64| token.heads.binary_search(name).is_ok();
        let matchable: Vec<bool> = engine
            .rule_needs
            .iter()
            .zip(&engine.rules)
            .map(|(needs, rule)| {
                needs
                    .names
                    .iter()
                    .all(|name| self.facts.contains_key(name) || derivable(name))
                    && needs.facts.iter().all(|(name, terms)| {
                        derivable(name)
                            || self.facts.get(name).is_some_and(|facts| {
                                facts.iter().any(|fact| {
                                    fact.origin & !rule.scope == 0 && fact.terms == *terms
                                })
                            })
                    })
            })
            .collect();
        loop {
            if round == 1 {
                let policy_rules = engine
                    .rules
                    .iter()
                    .zip(&matchable)
                    .filter(|(_, matchable)| **matchable)
                    .map(|(rule, _)| rule);
                for rule in policy_rules.chain(token_rules()) {
                    self.apply_all(rule, &mut derived)?;
                }
            } else {
                let previous = round - 1;
                for name in &fresh_names {
                    for &(r, at) in engine.uses.get(name).into_iter().flatten() {
                        if !matchable[r] {
                            continue;
                        }
                        self.apply_delta(&engine.rules[r], at, previous, &mut derived)?;
                    }
                    for rule in token_rules() {
                        for (at, atom) in &rule.body {
                            if atom.name == *name {
                                self.apply_delta(rule, *at, previous, &mut derived)?;
                            }
                        }
                    }
                }
            }
            if derived.facts.is_empty() {
                return Ok(());
            }
            fresh_names.clear();
            for (origin, name, terms) in derived.take() {
                if !fresh_names.contains(&name) {
                    fresh_names.push(name);
                }
                self.store(origin, name, terms, round);
            }
            iterations += 1;
            if iterations == limits.max_iterations {
                return Err(TokenError::RunLimit(RunLimit::TooManyIterations));
            }
            if self.len as u64 >= limits.max_facts {
                return Err(TokenError::RunLimit(RunLimit::TooManyFacts));
            }
            if Instant::now() >= deadline {
                return Err(TokenError::RunLimit(RunLimit::Timeout));
            }
            round += 1;
        }
    }

    /// What `rule` derives from everything known (the first iteration).
    fn apply_all(&self, rule: &Query, derived: &mut Derived) -> Result<(), TokenError> {
        if rule.body.is_empty() {
            let binding = self.binding(rule.slots);
            return self.derive(rule, &binding, 0, derived);
        }
        self.derive_over(rule, &rule.body, &|_| Range::All, derived)
    }

    /// What `rule` derives from bindings whose atom `at` is a fact of
    /// iteration `previous`, atoms before it older facts, atoms after it
    /// any: each binding with a new fact is found once.
    fn apply_delta(
        &self,
        rule: &Query,
        at: usize,
        previous: u32,
        derived: &mut Derived,
    ) -> Result<(), TokenError> {
        let Some((_, atom)) = rule.body.get(at) else {
            return Ok(());
        };
        if !self.has_round(atom.name, rule.scope, previous) {
            return Ok(());
        }
        let ranges = |i: usize| match i.cmp(&at) {
            std::cmp::Ordering::Less => Range::Before(previous),
            std::cmp::Ordering::Equal => Range::Exactly(previous),
            std::cmp::Ordering::Greater => Range::All,
        };
        self.derive_over(rule, &rule.delta_plans[at], &ranges, derived)
    }

    /// Everything `rule` derives from the bindings of `plan` over `ranges`.
    fn derive_over(
        &self,
        rule: &Query,
        plan: &[(usize, Atom)],
        ranges: &dyn Fn(usize) -> Range,
        derived: &mut Derived,
    ) -> Result<(), TokenError> {
        let mut binding = self.binding(rule.slots);
        self.join(rule, plan, ranges, &mut binding, 0, &mut |b, o| {
            self.derive(rule, b, o, derived).map(|_| Flow::Continue)
        })
        .map(|_| ())
    }

    /// The head of `rule` for `binding`, if its expressions hold and it is
    /// new.
    fn derive(
        &self,
        rule: &Query,
        binding: &[Option<Term>],
        origin: u64,
        derived: &mut Derived,
    ) -> Result<(), TokenError> {
        if !self.passes(rule, binding)? {
            return Ok(());
        }
        // Most heads a binding yields are already known: build them in a
        // reused buffer, and a fact of their own only when new.
        let mut head = self.head_scratch.borrow_mut();
        if !fill_head(rule, binding, &mut head) {
            return Ok(());
        }
        let origin = origin | rule.origin;
        if self.known(origin, rule.head_name, &head)
            || derived.contains(origin, rule.head_name, &head)
        {
            return Ok(());
        }
        derived.push(origin, rule.head_name, head.clone());
        Ok(())
    }

    /// Enumerate the bindings of `plan` (a rule's body in some order), each
    /// atom over the facts `ranges` gives its written position.
    fn join<E>(
        &self,
        rule: &Query,
        plan: &[(usize, Atom)],
        ranges: &dyn Fn(usize) -> Range,
        binding: &mut Vec<Option<Term>>,
        origin: u64,
        emit: &mut impl FnMut(&[Option<Term>], u64) -> Result<Flow, E>,
    ) -> Result<Flow, E> {
        let Some(((at, atom), rest)) = plan.split_first() else {
            return emit(binding, origin);
        };
        let range = ranges(*at);
        if rule.scope & AUTHORIZER != 0 && range.holds(0) {
            if let Some(facts) = self.engine.facts.get(&atom.name) {
                let first = match atom.slots.first() {
                    Some(Slot::Const(c)) => Some(c),
                    Some(Slot::Same(v)) => binding[*v].as_ref(),
                    _ => None,
                };
                let candidates: &mut dyn Iterator<Item = &Vec<Term>> = match first {
                    Some(first) => &mut facts
                        .by_first
                        .get(first)
                        .into_iter()
                        .flatten()
                        .map(|&i| &facts.all[i]),
                    None => &mut facts.all.iter(),
                };
                for terms in candidates {
                    let matched = bind(atom, terms, binding);
                    let flow = if matched {
                        self.join(rule, rest, ranges, binding, origin | AUTHORIZER, emit)?
                    } else {
                        Flow::Continue
                    };
                    unbind(atom, binding);
                    if let Flow::Stop = flow {
                        return Ok(Flow::Stop);
                    }
                }
            }
        }
        if let Some(facts) = self.facts.get(&atom.name) {
            for fact in facts {
                if !range.holds(fact.round) || fact.origin & !rule.scope != 0 {
                    continue;
                }
                let matched = bind(atom, &fact.terms, binding);
                let flow = if matched {
                    self.join(rule, rest, ranges, binding, origin | fact.origin, emit)?
                } else {
                    Flow::Continue
                };
                unbind(atom, binding);
                if let Flow::Stop = flow {
                    return Ok(Flow::Stop);
                }
            }
        }
        Ok(Flow::Continue)
    }

    /// Whether every expression of `rule` holds for `binding`.
    fn passes(&self, rule: &Query, binding: &[Option<Term>]) -> Result<bool, TokenError> {
        for expr in &rule.expressions {
            let decided = expr.comparison.as_ref().and_then(|c| c.decide(binding));
            let value = match decided {
                Some(holds) => Term::Bool(holds),
                None => self.evaluate(expr, binding)?,
            };
            match value {
                Term::Bool(true) => {}
                Term::Bool(false) => return Ok(false),
                _ => return Err(TokenError::Execution(ExpressionError::InvalidType)),
            }
        }
        Ok(true)
    }

    fn evaluate(&self, expr: &Expr, binding: &[Option<Term>]) -> Result<Term, TokenError> {
        let mut values = self.values.borrow_mut();
        values.clear();
        let mut reads_extra = expr.reads_extra_symbols;
        for (name, slot) in &expr.inputs {
            if let Some(value) = &binding[*slot] {
                reads_extra |= mentions_extra(value, self.engine.extra_from);
                values.insert(*name, value.clone());
            }
        }
        let mut symbols = TemporarySymbolTable::new(&self.engine.symbols);
        if reads_extra && expr.reads_text {
            // The token's and the request's own symbols, numbered as they
            // were numbered here, so the expression can read them.
            for s in self.token.strings.iter().chain(&self.local) {
                symbols.insert(s);
            }
        }
        expr.expression
            .evaluate(&values, &mut symbols, &self.engine.no_functions)
            .map_err(TokenError::Execution)
    }

    /// `query_match`: whether some binding satisfies the query.
    fn find(&self, query: &Query) -> Result<bool, TokenError> {
        let mut found = false;
        let mut binding = self.binding(query.slots);
        self.join(
            query,
            &query.body,
            &|_| Range::All,
            &mut binding,
            0,
            &mut |binding, _| {
                if self.passes(query, binding)? && head_bound(query, binding) {
                    found = true;
                    return Ok(Flow::Stop);
                }
                Ok::<_, TokenError>(Flow::Continue)
            },
        )?;
        Ok(found)
    }

    /// `check_match_all`: some binding, and every binding satisfies it.
    fn all(&self, query: &Query) -> Result<bool, TokenError> {
        let mut found = false;
        let mut holds = true;
        let mut binding = self.binding(query.slots);
        self.join(
            query,
            &query.body,
            &|_| Range::All,
            &mut binding,
            0,
            &mut |binding, _| {
                found = true;
                if !self.passes(query, binding)? {
                    holds = false;
                    return Ok(Flow::Stop);
                }
                Ok::<_, TokenError>(Flow::Continue)
            },
        )?;
        Ok(found && holds)
    }

    fn check(
        &self,
        check: &PreparedCheck,
        timed_out: &dyn Fn() -> bool,
    ) -> Result<bool, TokenError> {
        for query in &check.queries {
            let holds = match check.kind {
                CheckKind::One => self.find(query)?,
                CheckKind::All => self.all(query)?,
                CheckKind::Reject => !self.find(query)?,
            };
            if timed_out() {
                return Err(TokenError::RunLimit(RunLimit::Timeout));
            }
            if holds {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

/// A request fact holding a variable or parameter: the server built it
/// wrong (biscuit-auth refuses to add such a fact to an authorizer).
fn not_a_fact() -> TokenError {
    TokenError::InternalError
}

/// Bind `atom`'s variables to `terms`; false if they do not match. Either
/// way the caller unbinds the atom's first occurrences afterwards.
fn bind(atom: &Atom, terms: &[Term], binding: &mut [Option<Term>]) -> bool {
    if atom.slots.len() != terms.len() {
        return false;
    }
    for (slot, term) in atom.slots.iter().zip(terms) {
        match slot {
            Slot::Const(c) => {
                if c != term {
                    return false;
                }
            }
            Slot::Bind(v) => binding[*v] = Some(term.clone()),
            Slot::Same(v) => {
                if binding[*v].as_ref() != Some(term) {
                    return false;
                }
            }
        }
    }
    true
}

fn unbind(atom: &Atom, binding: &mut [Option<Term>]) {
    for slot in &atom.slots {
        if let Slot::Bind(v) = slot {
            binding[*v] = None;
        }
    }
}

/// Write `rule`'s head for `binding` into `head`; false if a head variable
/// is unbound (biscuit-auth derives nothing then).
fn fill_head(rule: &Query, binding: &[Option<Term>], head: &mut Vec<Term>) -> bool {
    head.clear();
    for slot in &rule.head {
        match slot {
            HeadSlot::Const(t) => head.push(t.clone()),
            HeadSlot::Var(v) => match &binding[*v] {
                Some(t) => head.push(t.clone()),
                None => return false,
            },
            HeadSlot::Unbound => return false,
        }
    }
    true
}

/// Whether [`fill_head`] would find every head variable bound.
fn head_bound(rule: &Query, binding: &[Option<Term>]) -> bool {
    rule.head.iter().all(|slot| match slot {
        HeadSlot::Const(_) => true,
        HeadSlot::Var(v) => binding[*v].is_some(),
        HeadSlot::Unbound => false,
    })
}

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;
