//! The host's route table: which rule guards each method and path of the
//! agent host behind the reverse proxy. Parsed once at start-up; a malformed
//! table refuses to start, naming the file and the line.
//!
//! One rule a line, `METHODS PATTERN RULE`, first match wins (see
//! `deploy/routes.conf` for the format an operator reads).

use std::path::Path;

/// The table built into the binary: TinyAgentOS's routes.
pub const DEFAULT: &str = include_str!("../../deploy/routes.conf");
/// How errors in the built-in table name it.
pub const DEFAULT_NAME: &str = "deploy/routes.conf (built in)";

/// Methods a table may name. `*` stands for all of them.
const METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

/// What a matched route requires. Every rule but `public` is decided by the
/// policy, with the operation [`Rule::operation`] names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    /// Anyone, without credentials.
    Public,
    /// Any signed-in person (`host:use`).
    SignedIn,
    /// A signed-in admin (`host:admin`).
    Admin,
    /// An agent operation (`agent:read`, `agent:chat`...) on the agent the
    /// pattern's `{agent}` names.
    Agent(String),
}

impl Rule {
    /// The policy operation this rule asks about; `None` for public routes.
    pub fn operation(&self) -> Option<&str> {
        match self {
            Rule::Public => None,
            Rule::SignedIn => Some("host:use"),
            Rule::Admin => Some("host:admin"),
            Rule::Agent(op) => Some(op),
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Rule::Public => "public",
            Rule::SignedIn => "signed-in",
            Rule::Admin => "admin",
            Rule::Agent(op) => op,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    /// `{name}`: any one non-empty segment.
    Param,
    /// `{agent}`: one segment, the agent an agent rule decides on.
    Agent,
}

/// A path pattern: literal segments, `{name}` placeholders and an optional
/// trailing `*` that matches whatever follows, nothing included.
#[derive(Debug, Clone)]
pub struct Pattern {
    segments: Vec<Segment>,
    rest: bool,
    text: String,
}

impl Pattern {
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The placeholder-free shape, for spotting duplicates.
    fn shape(&self) -> String {
        let mut out = String::new();
        for s in &self.segments {
            out.push('/');
            match s {
                Segment::Literal(l) => out.push_str(l),
                Segment::Param | Segment::Agent => out.push_str("{}"),
            }
        }
        if self.rest {
            out.push_str("/*");
        }
        out
    }

    /// Whether `segments` (decoded) match; the `{agent}` segment if so.
    pub fn matches<'a>(&self, segments: &'a [String]) -> Option<Option<&'a str>> {
        if segments.len() < self.segments.len()
            || (!self.rest && segments.len() != self.segments.len())
        {
            return None;
        }
        let mut agent = None;
        for (pattern, given) in self.segments.iter().zip(segments) {
            match pattern {
                Segment::Literal(l) if l == given => {}
                Segment::Literal(_) => return None,
                Segment::Param | Segment::Agent if given.is_empty() => return None,
                Segment::Param => {}
                Segment::Agent => agent = Some(given.as_str()),
            }
        }
        Some(agent)
    }

    /// A path this pattern matches, with `agent` in its `{agent}` segment:
    /// for tests that exercise every rule.
    pub fn example(&self, agent: &str) -> String {
        let mut out = String::new();
        for s in &self.segments {
            out.push('/');
            match s {
                Segment::Literal(l) => out.push_str(l),
                Segment::Param => out.push_str("x1"),
                Segment::Agent => out.push_str(agent),
            }
        }
        if self.rest {
            out.push_str("/x2");
        }
        if out.is_empty() {
            out.push('/');
        }
        out
    }
}

/// The methods a route answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Methods {
    Any,
    Listed(Vec<&'static str>),
}

impl Methods {
    /// A `HEAD` goes where its `GET` goes, unless the table names `HEAD`.
    fn allows(&self, method: &str) -> bool {
        match self {
            Methods::Any => true,
            Methods::Listed(list) => {
                list.contains(&method) || (method == "HEAD" && list.contains(&"GET"))
            }
        }
    }

    /// Whether every method of `later` is already taken by `self`, which
    /// would make a later line with the same path unreachable.
    fn covers(&self, later: &Methods) -> bool {
        match (self, later) {
            (Methods::Any, _) => true,
            (Methods::Listed(_), Methods::Any) => false,
            (Methods::Listed(a), Methods::Listed(b)) => b.iter().all(|m| a.contains(m)),
        }
    }

    /// One method this route answers, for tests.
    pub fn example(&self) -> &'static str {
        match self {
            Methods::Any => "POST",
            Methods::Listed(list) => list.first().copied().unwrap_or("GET"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Route {
    /// Line number in the table, from 1.
    pub line: usize,
    pub methods: Methods,
    pub pattern: Pattern,
    pub rule: Rule,
}

/// A parsed table. Lookups walk the routes in file order.
#[derive(Debug, Clone)]
pub struct RouteTable {
    source: String,
    routes: Vec<Route>,
}

#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("route table {file}, line {line}: {reason}")]
    Line {
        file: String,
        line: usize,
        reason: String,
    },
    #[error("route table {file}: {reason}")]
    File { file: String, reason: String },
}

/// The route that decides a request, and the agent its `{agent}` names.
#[derive(Debug)]
pub struct Found<'a> {
    pub route: &'a Route,
    pub agent: Option<&'a str>,
}

impl RouteTable {
    /// The built-in table, checked against the policy's agent operations.
    pub fn embedded(agent_ops: &[String]) -> Result<Self, TableError> {
        Self::parse(DEFAULT_NAME, DEFAULT, agent_ops)
    }

    /// A table file the operator wrote (`--routes`).
    pub fn load(path: &Path, agent_ops: &[String]) -> Result<Self, TableError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| TableError::File {
            file: file.clone(),
            reason: e.to_string(),
        })?;
        Self::parse(&file, &text, agent_ops)
    }

    /// Parse `text`; `agent_ops` are the operations the policy knows a
    /// level for (`agent_op` facts), the only agent rules accepted.
    pub fn parse(file: &str, text: &str, agent_ops: &[String]) -> Result<Self, TableError> {
        let mut routes: Vec<Route> = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let err = |reason: String| TableError::Line {
                file: file.to_owned(),
                line,
                reason,
            };
            let content = match raw.find('#') {
                Some(at) => &raw[..at],
                None => raw,
            };
            let fields: Vec<&str> = content.split_whitespace().collect();
            if fields.is_empty() {
                continue;
            }
            let [methods, pattern, rule] = fields[..] else {
                return Err(err(format!(
                    "expected `METHODS PATTERN RULE`, found {} field(s)",
                    fields.len()
                )));
            };
            let methods = parse_methods(methods).map_err(&err)?;
            let rule = parse_rule(rule, agent_ops).map_err(&err)?;
            let pattern = parse_pattern(pattern, &rule).map_err(&err)?;
            if let Some(earlier) = routes
                .iter()
                .find(|r| r.pattern.shape() == pattern.shape() && r.methods.covers(&methods))
            {
                return Err(err(format!(
                    "duplicate: line {} already has {} for these methods, so this line \
                     would never match",
                    earlier.line,
                    pattern.text()
                )));
            }
            routes.push(Route {
                line,
                methods,
                pattern,
                rule,
            });
        }
        if routes.is_empty() {
            return Err(TableError::File {
                file: file.to_owned(),
                reason: "the table has no routes, so it would refuse everything".into(),
            });
        }
        Ok(Self {
            source: file.to_owned(),
            routes,
        })
    }

    /// Where the table came from, for logs.
    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// The first route matching `method` on the decoded `segments`.
    pub fn find<'a>(&'a self, method: &str, segments: &'a [String]) -> Option<Found<'a>> {
        self.routes.iter().find_map(|route| {
            if !route.methods.allows(method) {
                return None;
            }
            let agent = route.pattern.matches(segments)?;
            Some(Found { route, agent })
        })
    }
}

fn parse_methods(text: &str) -> Result<Methods, String> {
    if text == "*" {
        return Ok(Methods::Any);
    }
    let mut listed = Vec::new();
    for name in text.split(',') {
        let known = METHODS.iter().find(|m| **m == name).ok_or_else(|| {
            format!(
                "bad method `{name}` (expected `*` or a comma-separated list of {})",
                METHODS.join(", ")
            )
        })?;
        if listed.contains(known) {
            return Err(format!("method `{name}` is listed twice"));
        }
        listed.push(*known);
    }
    Ok(Methods::Listed(listed))
}

fn parse_rule(text: &str, agent_ops: &[String]) -> Result<Rule, String> {
    match text {
        "public" => Ok(Rule::Public),
        "signed-in" => Ok(Rule::SignedIn),
        "admin" => Ok(Rule::Admin),
        op if agent_ops.iter().any(|known| known == op) => Ok(Rule::Agent(op.to_owned())),
        other => Err(format!(
            "unknown rule `{other}` (expected public, signed-in, admin or an agent operation \
             the policy knows: {})",
            agent_ops.join(", ")
        )),
    }
}

fn parse_pattern(text: &str, rule: &Rule) -> Result<Pattern, String> {
    let Some(rest_of_path) = text.strip_prefix('/') else {
        return Err(format!("pattern `{text}` must start with `/`"));
    };
    let parts: Vec<&str> = if rest_of_path.is_empty() {
        Vec::new()
    } else {
        rest_of_path.split('/').collect()
    };
    let mut segments = Vec::new();
    let mut rest = false;
    let mut names: Vec<&str> = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        if *part == "*" {
            if !last {
                return Err(format!(
                    "`*` in `{text}` must be the last segment (it matches the rest of the path)"
                ));
            }
            rest = true;
            continue;
        }
        if let Some(name) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
                return Err(format!(
                    "placeholder `{part}` in `{text}`: names are lowercase letters and `_`"
                ));
            }
            if names.contains(&name) {
                return Err(format!("placeholder `{part}` appears twice in `{text}`"));
            }
            names.push(name);
            segments.push(if name == "agent" {
                Segment::Agent
            } else {
                Segment::Param
            });
            continue;
        }
        if part.is_empty() && !last {
            return Err(format!("empty segment (`//`) in `{text}`"));
        }
        if part.contains(['{', '}', '*', '%', '?', '#', '\\']) || *part == "." || *part == ".." {
            return Err(format!(
                "segment `{part}` of `{text}`: a placeholder is a whole segment like `{{agent}}`, \
                 `*` only ends a pattern, and literals are written decoded without `%?#\\`, \
                 `.` or `..`"
            ));
        }
        segments.push(Segment::Literal((*part).to_owned()));
    }
    let has_agent = segments.contains(&Segment::Agent);
    match rule {
        Rule::Agent(op) if !has_agent => {
            return Err(format!(
                "rule `{op}` decides on an agent: its pattern needs an `{{agent}}` segment"
            ))
        }
        Rule::Public | Rule::SignedIn | Rule::Admin if has_agent => {
            return Err(format!(
                "`{{agent}}` names the agent an agent rule decides on; rule `{}` does not \
                 (use another placeholder name)",
                rule.name()
            ))
        }
        _ => {}
    }
    Ok(Pattern {
        segments,
        rest,
        text: text.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ops() -> Vec<String> {
        ["agent:read", "agent:chat", "agent:update"]
            .map(String::from)
            .to_vec()
    }

    fn parse(text: &str) -> Result<RouteTable, TableError> {
        RouteTable::parse("t.conf", text, &ops())
    }

    fn segs(path: &str) -> Vec<String> {
        crate::forward::OriginalRequest::parse("GET", path)
            .unwrap()
            .segments
    }

    fn line_error(text: &str) -> (usize, String) {
        match parse(text) {
            Err(TableError::Line { line, reason, .. }) => (line, reason),
            other => panic!("expected a line error for {text:?}, got {other:?}"),
        }
    }

    #[test]
    fn the_default_table_parses_against_the_embedded_policy() {
        let policy = crate::authz::policy::Policy::embedded(Default::default()).unwrap();
        let table = RouteTable::embedded(&policy.agent_operations().unwrap()).unwrap();
        assert!(table.routes().len() > 20);
    }

    #[test]
    fn first_match_wins_and_agent_is_captured() {
        let t = parse(
            "GET /api/agents/archived admin\n\
             GET /api/agents/{agent} agent:read  # trailing comment\n\
             POST,PUT /api/agents/{agent}/* agent:update\n\
             * /static/* public\n",
        )
        .unwrap();
        let (archived, helper, deep) = (
            segs("/api/agents/archived"),
            segs("/api/agents/helper"),
            segs("/api/agents/helper/a/b"),
        );
        let found = t.find("GET", &archived).unwrap();
        assert_eq!(found.route.rule, Rule::Admin);
        let found = t.find("GET", &helper).unwrap();
        assert_eq!(found.route.rule, Rule::Agent("agent:read".into()));
        assert_eq!(found.agent, Some("helper"));
        assert_eq!(found.route.line, 2);
        // HEAD follows GET.
        assert!(t.find("HEAD", &segs("/api/agents/helper")).is_some());
        assert!(t.find("DELETE", &segs("/api/agents/helper")).is_none());
        let found = t.find("PUT", &deep).unwrap();
        assert_eq!(found.agent, Some("helper"));
        // `*` matches nothing too, and a trailing slash.
        assert!(t.find("GET", &segs("/static")).is_some());
        assert!(t.find("GET", &segs("/static/")).is_some());
        assert!(t.find("GET", &segs("/static/a/b.css")).is_some());
        assert!(t.find("GET", &segs("/staticx")).is_none());
        assert!(t.find("GET", &segs("/unknown")).is_none());
        // An empty agent segment is no agent.
        assert!(t.find("GET", &segs("/api/agents/")).is_none());
    }

    #[test]
    fn malformed_tables_name_the_line() {
        let (line, reason) = line_error("GET /a public\nFETCH /b public\n");
        assert_eq!(line, 2);
        assert!(reason.contains("bad method `FETCH`"), "{reason}");
        let (line, reason) = line_error("# c\n\nGET /a everyone\n");
        assert_eq!(line, 3);
        assert!(reason.contains("unknown rule `everyone`"), "{reason}");
        assert!(reason.contains("agent:chat"), "{reason}");
        let (_, reason) = line_error("GET /a/{agent} public\n");
        assert!(reason.contains("`{agent}`"), "{reason}");
        let (_, reason) = line_error("GET /a/{name} agent:read\n");
        assert!(reason.contains("needs an `{agent}`"), "{reason}");
        let (_, reason) = line_error("GET /a/*/b public\n");
        assert!(reason.contains("last segment"), "{reason}");
        let (_, reason) = line_error("GET /a/x{agent} agent:read\n");
        assert!(reason.contains("whole segment"), "{reason}");
        let (_, reason) = line_error("GET /a/{agent}/{agent} agent:read\n");
        assert!(reason.contains("twice"), "{reason}");
        let (_, reason) = line_error("GET a public\n");
        assert!(reason.contains("start with `/`"), "{reason}");
        let (_, reason) = line_error("GET /a\n");
        assert!(reason.contains("found 2 field"), "{reason}");
        let (line, reason) = line_error("GET,POST /a/{x} public\nPOST /a/{y} admin\n");
        assert_eq!(line, 2);
        assert!(reason.contains("duplicate: line 1"), "{reason}");
        let (_, reason) = line_error("* /a public\nPOST /a admin\n");
        assert!(reason.contains("duplicate"), "{reason}");
        let (_, reason) = line_error("GET /a//b public\n");
        assert!(reason.contains("empty segment"), "{reason}");
        let (_, reason) = line_error("GET /a/../b public\n");
        assert!(reason.contains("`..`"), "{reason}");
        // Same path, other methods: not a duplicate; nor a fallback for
        // the methods an earlier line leaves.
        assert!(parse("GET /a public\nPOST /a admin\n").is_ok());
        assert!(parse("GET /a/* public\n* /a/* admin\n").is_ok());
        assert!(matches!(parse("# nothing\n"), Err(TableError::File { .. })));
    }

    #[test]
    fn examples_match_their_own_route() {
        let t = parse("GET /api/agents/{agent}/x/{id} agent:read\n* /a/* admin\nGET / public\n")
            .unwrap();
        for route in t.routes() {
            let path = route.pattern.example("helper");
            let segments = segs(&path);
            let found = t.find(route.methods.example(), &segments).unwrap();
            assert_eq!(found.route.line, route.line, "{path}");
        }
    }

    fn segment() -> impl Strategy<Value = String> {
        "[a-z0-9_-]{1,8}"
    }

    proptest! {
        #[test]
        fn literal_patterns_match_exactly_their_path(
            parts in proptest::collection::vec(segment(), 0..6),
            extra in segment(),
        ) {
            let path = format!("/{}", parts.join("/"));
            let t = parse(&format!("GET {path} public\n")).unwrap();
            prop_assert!(t.find("GET", &segs(&path)).is_some());
            let longer = format!("{}/{extra}", path.trim_end_matches('/'));
            prop_assert!(t.find("GET", &segs(&longer)).is_none());
            if !parts.is_empty() {
                let shorter = format!("/{}", parts[..parts.len() - 1].join("/"));
                prop_assert!(t.find("GET", &segs(&shorter)).is_none());
            }
        }

        #[test]
        fn placeholders_capture_one_segment_and_wildcards_the_rest(
            prefix in proptest::collection::vec(segment(), 0..3),
            agent in segment(),
            tail in proptest::collection::vec(segment(), 0..4),
        ) {
            let base = prefix.iter().map(|p| format!("/{p}")).collect::<String>();
            let t = parse(&format!("GET {base}/{{agent}}/* agent:read\n")).unwrap();
            let path = format!("{base}/{agent}{}", tail.iter().map(|p| format!("/{p}")).collect::<String>());
            let path_segments = segs(&path);
            let found = t.find("GET", &path_segments);
            prop_assert!(found.is_some());
            prop_assert_eq!(found.and_then(|f| f.agent), Some(agent.as_str()));
        }

        #[test]
        fn dot_segments_and_encoded_slashes_never_parse(
            parts in proptest::collection::vec(segment(), 1..4),
            bad in prop_oneof![Just(".."), Just("."), Just("%2e%2e"), Just("a%2Fb"), Just("%2E"), Just("a%5cb")],
        ) {
            let path = format!("/{}/{bad}/x", parts.join("/"));
            prop_assert!(crate::forward::OriginalRequest::parse("GET", &path).is_err());
        }
    }
}
