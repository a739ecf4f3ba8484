//! Stage `route`: which AIRoute serves a request (model alias and headers).
//! Pure: built once per snapshot, then read by every request.

use std::collections::HashMap;

use http::HeaderMap;
use tollgate_config::snapshot::{Route, glob_matches};

/// Index over a snapshot's routes.
#[derive(Debug, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
    /// Exact alias -> route indices, most specific (most header matches) first,
    /// then in snapshot precedence order.
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
            candidates.sort_by_key(|&i| std::cmp::Reverse(routes[i].headers.len()));
        }
        globs.sort_by_key(|(pattern, i)| {
            (
                std::cmp::Reverse(pattern.len() - pattern.matches('*').count()),
                std::cmp::Reverse(routes[*i].headers.len()),
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

    /// The route for `model` given the request headers: exact aliases beat
    /// globs; within each, more header matches beat fewer.
    pub fn find(&self, model: &str, headers: &HeaderMap) -> Option<&Route> {
        if let Some(candidates) = self.exact.get(model)
            && let Some(&index) = candidates
                .iter()
                .find(|&&i| headers_match(&self.routes[i], headers))
        {
            return Some(&self.routes[index]);
        }
        self.globs
            .iter()
            .find(|(pattern, i)| {
                glob_matches(pattern, model) && headers_match(&self.routes[*i], headers)
            })
            .map(|(_, i)| &self.routes[*i])
    }

    /// Exact aliases a caller with these headers can use, sorted.
    pub fn visible_aliases(&self, headers: &HeaderMap) -> Vec<&str> {
        let mut aliases: Vec<&str> = self
            .exact
            .iter()
            .filter(|(_, candidates)| {
                candidates
                    .iter()
                    .any(|&i| headers_match(&self.routes[i], headers))
            })
            .map(|(alias, _)| alias.as_str())
            .collect();
        aliases.sort_unstable();
        aliases
    }
}

fn headers_match(route: &Route, headers: &HeaderMap) -> bool {
    route.headers.iter().all(|(name, value)| {
        headers
            .get_all(name.as_str())
            .iter()
            .any(|v| v.as_bytes() == value.as_bytes())
    })
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
            backends: vec![],
            request_timeout_ms: None,
            stream_idle_timeout_ms: None,
            endpoints: Default::default(),
            tiers: None,
            resilience: Default::default(),
            allowed_regions: Vec::new(),
        }
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
            t.find("chat", &headers(&[])).unwrap().name.as_ref(),
            "plain"
        );
        assert_eq!(
            t.find("chat", &headers(&[("x-canary", "yes")]))
                .unwrap()
                .name
                .as_ref(),
            "canary"
        );
        assert_eq!(
            t.find("chat", &headers(&[("x-canary", "no")]))
                .unwrap()
                .name
                .as_ref(),
            "plain"
        );
        assert_eq!(
            t.find("gpt-4o-mini", &headers(&[])).unwrap().name.as_ref(),
            "narrow"
        );
        assert_eq!(
            t.find("gpt-3.5", &headers(&[])).unwrap().name.as_ref(),
            "wide"
        );
        assert!(t.find("claude", &headers(&[])).is_none());
    }

    #[test]
    fn header_only_alias_is_hidden_without_the_header() {
        let t = RouteTable::new(vec![
            route("a", &["open"], &[], &[]),
            route("b", &["secret"], &[], &[("x-team", "r")]),
        ]);
        assert_eq!(t.visible_aliases(&headers(&[])), ["open"]);
        assert_eq!(
            t.visible_aliases(&headers(&[("x-team", "r")])),
            ["open", "secret"]
        );
        assert!(t.find("secret", &headers(&[])).is_none());
    }
}
