//! Stage `route`: which AIRoute serves a request (model alias, headers and
//! the caller's principal).
//! Pure: built once per snapshot, then read by every request.

use std::collections::HashMap;

use http::HeaderMap;
use tollgate_config::snapshot::{Principal, Route, glob_matches};

/// Index over a snapshot's routes.
#[derive(Debug, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
    /// Exact alias -> route indices, most specific (most header matches,
    /// principal matches counting one) first, then in snapshot precedence
    /// order.
    exact: HashMap<String, Vec<usize>>,
    /// (pattern, route index), longest literal text first, then most header
    /// matches, then precedence.
    globs: Vec<(String, usize)>,
}

impl RouteTable {
    pub fn new(routes: Vec<Route>) -> Self {
        let mut exact: HashMap<String, Vec<usize>> = HashMap::new();
        let mut globs = Vec::new();
        for (index, route) in routes.iter().enumerate() {
            for alias in &route.aliases {
                exact.entry(alias.clone()).or_default().push(index);
            }
            for glob in &route.globs {
                globs.push((glob.clone(), index));
            }
        }
        for candidates in exact.values_mut() {
            // Stable sort keeps precedence order among equals.
            candidates.sort_by_key(|&i| std::cmp::Reverse(specificity(&routes[i])));
        }
        globs.sort_by_key(|(pattern, i)| {
            (
                std::cmp::Reverse(pattern.len() - pattern.matches('*').count()),
                std::cmp::Reverse(specificity(&routes[*i])),
                *i,
            )
        });
        Self {
            routes,
            exact,
            globs,
        }
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// The route for `model` given the request headers and the caller:
    /// exact aliases beat globs; within each, more specific matches beat
    /// fewer.
    pub fn find(
        &self,
        model: &str,
        headers: &HeaderMap,
        principal: Option<&Principal>,
    ) -> Option<&Route> {
        self.find_exact(model, headers, principal)
            .or_else(|| self.find_glob(model, headers, principal))
    }

    /// Like [`find`](Self::find), and `ALIAS@VERSION` names the prompt
    /// version `VERSION` of the route of `ALIAS`, if that route has prompts.
    /// An exact alias with `@` wins over the split; the split wins over
    /// globs (so a catch-all glob does not swallow versioned names). The
    /// second value is the split `(alias, version)`.
    pub fn find_versioned<'m>(
        &self,
        model: &'m str,
        headers: &HeaderMap,
        principal: Option<&Principal>,
    ) -> Option<(&Route, Option<(&'m str, &'m str)>)> {
        if let Some(route) = self.find_exact(model, headers, principal) {
            return Some((route, None));
        }
        if let Some((alias, version)) = super::prompt::split_version(model)
            && let Some(route) = self.find(alias, headers, principal)
            && route.prompts.is_some()
        {
            return Some((route, Some((alias, version))));
        }
        self.find_glob(model, headers, principal)
            .map(|route| (route, None))
    }

    fn find_exact(
        &self,
        model: &str,
        headers: &HeaderMap,
        principal: Option<&Principal>,
    ) -> Option<&Route> {
        let candidates = self.exact.get(model)?;
        candidates
            .iter()
            .find(|&&i| applies(&self.routes[i], headers, principal))
            .map(|&index| &self.routes[index])
    }

    fn find_glob(
        &self,
        model: &str,
        headers: &HeaderMap,
        principal: Option<&Principal>,
    ) -> Option<&Route> {
        self.globs
            .iter()
            .find(|(pattern, i)| {
                glob_matches(pattern, model) && applies(&self.routes[*i], headers, principal)
            })
            .map(|(_, i)| &self.routes[*i])
    }

    /// Exact aliases this caller with these headers can use, sorted.
    pub fn visible_aliases(&self, headers: &HeaderMap, principal: Option<&Principal>) -> Vec<&str> {
        let mut aliases: Vec<&str> = self
            .exact
            .iter()
            .filter(|(_, candidates)| {
                candidates
                    .iter()
                    .any(|&i| applies(&self.routes[i], headers, principal))
            })
            .map(|(alias, _)| alias.as_str())
            .collect();
        aliases.sort_unstable();
        aliases
    }
}

/// How specific a route's matches are: one per header, one for principals.
fn specificity(route: &Route) -> usize {
    route.headers.len() + usize::from(!route.principals.is_empty())
}

/// Whether `route` serves a request with `headers` from `principal`.
fn applies(route: &Route, headers: &HeaderMap, principal: Option<&Principal>) -> bool {
    let headers_match = route.headers.iter().all(|(name, value)| {
        headers
            .get_all(name.as_str())
            .iter()
            .any(|v| v.as_bytes() == value.as_bytes())
    });
    headers_match
        && (route.principals.is_empty() || route.principals.iter().any(|p| p.matches(principal)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(name: &str, aliases: &[&str], globs: &[&str], headers: &[(&str, &str)]) -> Route {
        Route {
            name: name.into(),
            aliases: aliases.iter().map(|s| s.to_string()).collect(),
            globs: globs.iter().map(|s| s.to_string()).collect(),
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            principals: Vec::new(),
            backends: vec![],
            request_timeout_ms: None,
            stream_idle_timeout_ms: None,
            endpoints: Default::default(),
            tiers: None,
            resilience: Default::default(),
            guard: None,
            prompts: None,
            allowed_regions: Vec::new(),
        }
    }

    #[test]
    fn a_versioned_name_finds_the_route_with_prompts() {
        let mut bot = route("bot", &["support-bot"], &[], &[]);
        bot.prompts = Some(Box::default());
        let t = RouteTable::new(vec![
            bot,
            route("plain", &["plain"], &[], &[]),
            route("at", &["team@bot"], &[], &[]),
            route("catch-all", &[], &["*"], &[]),
        ]);
        let h = headers(&[]);
        let find = |model: &'static str| {
            t.find_versioned(model, &h, None)
                .map(|(r, split)| (r.name.to_string(), split))
        };
        assert_eq!(
            find("support-bot@v3"),
            Some(("bot".into(), Some(("support-bot", "v3")))),
            "the split beats the catch-all glob"
        );
        assert_eq!(find("support-bot"), Some(("bot".into(), None)));
        assert_eq!(
            find("team@bot"),
            Some(("at".into(), None)),
            "an exact alias with @ wins"
        );
        // A route without prompts has no versions: the glob takes the name.
        assert_eq!(find("plain@v3"), Some(("catch-all".into(), None)));
        let no_glob = RouteTable::new(vec![route("plain", &["plain"], &[], &[])]);
        assert!(no_glob.find_versioned("plain@v3", &h, None).is_none());
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (n, v) in pairs {
            map.insert(*n, v.parse().unwrap());
        }
        map
    }

    fn table() -> RouteTable {
        RouteTable::new(vec![
            route("plain", &["chat"], &[], &[]),
            route("canary", &["chat"], &[], &[("x-canary", "yes")]),
            route("wide", &[], &["gpt-*"], &[]),
            route("narrow", &[], &["gpt-4o*"], &[]),
        ])
    }

    #[test]
    fn exact_beats_glob_and_headers_beat_none() {
        let t = table();
        assert_eq!(
            t.find("chat", &headers(&[]), None).unwrap().name.as_ref(),
            "plain"
        );
        assert_eq!(
            t.find("chat", &headers(&[("x-canary", "yes")]), None)
                .unwrap()
                .name
                .as_ref(),
            "canary"
        );
        assert_eq!(
            t.find("chat", &headers(&[("x-canary", "no")]), None)
                .unwrap()
                .name
                .as_ref(),
            "plain"
        );
        assert_eq!(
            t.find("gpt-4o-mini", &headers(&[]), None)
                .unwrap()
                .name
                .as_ref(),
            "narrow"
        );
        assert_eq!(
            t.find("gpt-3.5", &headers(&[]), None)
                .unwrap()
                .name
                .as_ref(),
            "wide"
        );
        assert!(t.find("claude", &headers(&[]), None).is_none());
    }

    #[test]
    fn header_only_alias_is_hidden_without_the_header() {
        let t = RouteTable::new(vec![
            route("a", &["open"], &[], &[]),
            route("b", &["secret"], &[], &[("x-team", "r")]),
        ]);
        assert_eq!(t.visible_aliases(&headers(&[]), None), ["open"]);
        assert_eq!(
            t.visible_aliases(&headers(&[("x-team", "r")]), None),
            ["open", "secret"]
        );
        assert!(t.find("secret", &headers(&[]), None).is_none());
    }

    fn principal(user: &str, team: Option<&str>) -> Principal {
        Principal {
            user: user.into(),
            team: team.map(str::to_string),
            app: None,
            key: String::new(),
            labels: [("tier".to_string(), "gold".to_string())].into(),
        }
    }

    #[test]
    fn a_teams_route_serves_that_team_and_beats_the_shared_one() {
        use tollgate_config::snapshot::budget::Subject;
        let mut research = route("research", &["chat"], &[], &[]);
        research.principals = vec![
            Subject {
                team: Some("research".into()),
                ..Subject::default()
            },
            Subject {
                user: Some("carol".into()),
                match_labels: [("tier".to_string(), "gold".to_string())].into(),
                ..Subject::default()
            },
        ];
        let mut private = route("private", &["secret"], &[], &[]);
        private.principals = vec![Subject {
            user: Some("dave".into()),
            ..Subject::default()
        }];
        let t = RouteTable::new(vec![
            route("shared", &["chat"], &[], &[]),
            research,
            private,
        ]);
        let no_headers = headers(&[]);
        let find = |p: Option<&Principal>| t.find("chat", &no_headers, p).unwrap().name.clone();
        assert_eq!(
            &*find(Some(&principal("ann", Some("research")))),
            "research"
        );
        assert_eq!(&*find(Some(&principal("bob", Some("sales")))), "shared");
        assert_eq!(
            &*find(Some(&principal("carol", None))),
            "research",
            "second entry"
        );
        assert_eq!(
            &*find(None),
            "shared",
            "anonymous callers match no principals"
        );
        assert!(
            t.find("secret", &no_headers, Some(&principal("ann", None)))
                .is_none()
        );
        assert_eq!(
            t.visible_aliases(&no_headers, Some(&principal("dave", None))),
            ["chat", "secret"]
        );
        assert_eq!(t.visible_aliases(&no_headers, None), ["chat"]);
    }
}
